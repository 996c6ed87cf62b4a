"""``deepnet quantize``: a trained model's int8 form, calibrated on the validation split of MNIST's training set.

The calibration images are the first ``--calibration-size`` of the validation split that
``deepnet train --val-size N --seed S`` holds out (the same stratified, seeded split), so
they are never the test set and, with the run's own --val-size and --seed, never images the
model was trained on.  ``--compare`` also prints the float and int8 accuracies on the whole
validation split (to choose --percentile there, not on the test set).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np

from . import common
from .options import MAX_IMAGES, MAX_SEED, CommandError, add_common, existing_file, float_between, int_in

if TYPE_CHECKING:
    import argparse

__all__ = ["add_quantize", "run_quantize", "calibration_images"]


def add_quantize(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet quantize`` to the commands."""
    p = commands.add_parser("quantize", help="an int8 model from a trained one (calibrated on validation images)")
    p.add_argument(
        "--params",
        required=True,
        type=existing_file,
        metavar="MODEL",
        help="the trained float model: a saved model (deepnet train), a parameter .npz or the book's .pkl",
    )
    p.add_argument("--out", required=True, metavar="MODEL_INT8.npz", help="where to save the int8 model")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else quantize refuses)")
    p.add_argument(
        "--val-size",
        type=int_in(1, MAX_IMAGES),
        default=5000,
        metavar="N",
        help="the validation split of the training images, as 'deepnet train --val-size N' made it "
        "(default %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int_in(0, MAX_SEED),
        default=0,
        help="the training run's --seed, which drew the split (default %(default)s)",
    )
    p.add_argument(
        "--train-size",
        type=int_in(1, MAX_IMAGES),
        metavar="N",
        help="the training run's --train-size, if it had one (the split is drawn from the first N images)",
    )
    p.add_argument(
        "--calibration-size",
        type=int_in(1, MAX_IMAGES),
        default=1000,
        metavar="N",
        help="calibrate the activation scales on the first N validation images (default %(default)s)",
    )
    p.add_argument(
        "--percentile",
        type=float_between(50, 100, low_open=True),
        metavar="P",
        help="calibrate each activation's range on its P-th percentile instead of its maximum",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="print the float and int8 accuracies on the whole validation split",
    )
    add_common(p, dtype_default="float32")
    p.set_defaults(command=run_quantize)


def calibration_images(
    args: argparse.Namespace, x_train: np.ndarray[Any, Any], t_train: np.ndarray[Any, Any]
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The validation split (images, labels) ``deepnet train`` holds out with these options."""
    from ..datasets import stratified_split

    if args.train_size:
        x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    if args.val_size >= len(x_train):
        raise CommandError(f"--val-size {args.val_size} leaves no training images: there are {len(x_train)}")
    if args.calibration_size > args.val_size:
        raise CommandError(
            f"--calibration-size {args.calibration_size} is more than the {args.val_size} validation images (--val-size)"
        )
    split_seed = np.random.SeedSequence(args.seed).spawn(3)[2]  # deepnet train's: weights, batches, split
    _, val_index = stratified_split(t_train, args.val_size, split_seed)
    return x_train[val_index], t_train[val_index]


def run_quantize(args: argparse.Namespace) -> None:
    """Quantize --params, calibrated on validation images, and save the int8 model to --out."""
    from ..quant import Int8Model, quantize
    from .evaluate import load_network

    out = args.out if args.out.endswith(".npz") else args.out + ".npz"
    if os.path.exists(out) and not args.overwrite:
        raise CommandError(f"{out} already exists (--out): replace it with --overwrite, or choose another path")
    common.check_writable({"--out": out})
    common.configure_kernels(args)
    network = load_network(args.params, args.dtype)
    if isinstance(network, Int8Model):
        raise CommandError(f"--params {args.params} is an int8 model already: give the float model it came from")
    (x_train, t_train), _ = common.load_mnist(args.data, np.dtype(args.dtype))
    x_val, t_val = calibration_images(args, x_train, t_train)
    model = quantize(network, x_val[: args.calibration_size], percentile=args.percentile)
    summary = model.describe()
    how = "maximum" if args.percentile is None else f"{args.percentile:g}th percentile"
    print(
        f"quantized {args.params}: {summary['int8_steps']} int8 steps, {summary['float_steps']} float steps; "
        f"activation scales from the {how} on {args.calibration_size} validation images "
        f"(--val-size {args.val_size} --seed {args.seed})"
    )
    if args.compare:
        predicted_float, predicted_int8 = network.classify(x_val), model.classify(x_val)
        print(f"validation accuracy on {len(x_val)} images:")
        print(f"  float  {np.mean(predicted_float == t_val):.4f}")
        print(f"  int8   {np.mean(predicted_int8 == t_val):.4f}")
        print(f"  same prediction on {np.mean(predicted_float == predicted_int8):.2%} of them")
    path = model.save(out)
    print(f"saved the int8 model to {path}")
