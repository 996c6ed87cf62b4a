"""What ``deepnet train`` and ``deepnet ensemble`` share: the training options, the settings
they give (a recipe's, overridden), the data, the checks across MPI ranks, and one model trained.

The two commands call these through the module (``training.train_one(...)``), so a test can
replace one of them in one place.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import common
from .options import (
    MAX_EPOCHS,
    MAX_IMAGES,
    MAX_LR,
    MAX_SEED,
    MAX_WEIGHT_DECAY,
    CommandError,
    RanksDisagree,
    add_common,
    augment_spec,
    decay,
    float_between,
    int_in,
    one_line,
    schedule_spec,
)

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from ..distributed import SingleProcess
    from ..models import Sequential

# (x_train, t_train, x_test, t_test), as training_data returns them.
Data = Tuple[Any, Any, Any, Any]

__all__ = [
    "BOOK_EVALUATION_SAMPLES",
    "VALIDATION_SHARE",
    "add_training_options",
    "training_settings",
    "training_data",
    "train_one",
    "make_communicator",
    "refuse_to_overwrite",
    "interrupt_hint",
    "check_ranks_agree",
]

BOOK_EVALUATION_SAMPLES = 1000  # the book's evaluate_sample_num_per_epoch
VALIDATION_SHARE = 10  # a recipe's --val-size is at most 1/VALIDATION_SHARE of the training images


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options that choose the training, for train and ensemble (each has a recipe's default)."""
    from ..recipes import RECIPES

    p.add_argument(
        "--recipe",
        choices=tuple(RECIPES),
        default="book",
        help="defaults for every option below: 'book' (ch08/train_deepnet.py, the default) or "
        "'beyond' (the BN variant, augmentation, LR schedule, weight averaging, validation split)",
    )
    p.add_argument(
        "--model",
        metavar="NAME|SPEC.json",
        help="deepconvnet (the book's), deepconvnet-bn, resnet, googlenet, simpleconvnet, or a JSON spec file",
    )
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), help="epochs to train (book: 20)")
    p.add_argument(
        "--batch-size",
        type=int_in(1, MAX_IMAGES),
        help="mini-batch size; the global batch with --distributed (book: 100)",
    )
    p.add_argument(
        "--optimizer",
        choices=("sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"),
        help="update rule (book: adam)",
    )
    p.add_argument("--lr", type=float_between(0, MAX_LR, low_open=True), help="learning rate (book: 0.001)")
    p.add_argument(
        "--weight-decay",
        type=float_between(0, MAX_WEIGHT_DECAY),
        metavar="L2",
        help="L2 weight decay on the weights (book: 0)",
    )
    p.add_argument(
        "--lr-schedule",
        type=schedule_spec,
        metavar="NAME[:k=v,...]",
        help="constant, step:every=5,gamma=0.5, exponential:gamma=0.9, cosine:min_lr=0, "
        "one-cycle:pct=0.25 (book: constant); applied per step",
    )
    p.add_argument(
        "--warmup",
        type=float_between(0, MAX_EPOCHS),
        metavar="EPOCHS",
        help="linear learning-rate warmup over the first EPOCHS epochs",
    )
    p.add_argument(
        "--augment",
        type=augment_spec,
        metavar="SPEC",
        help="random transforms per batch, e.g. rotation=10,scale=0.1,shear=5,shift=2.5,"
        "elastic=34:4 (degrees, fraction, degrees, pixels, alpha:sigma; see deepnet.augment); "
        "'none' for none",
    )
    p.add_argument(
        "--ema",
        type=decay,
        metavar="DECAY",
        help="evaluate and save an exponential moving average of the weights, e.g. 0.999",
    )
    p.add_argument(
        "--val-size",
        type=int_in(0, MAX_IMAGES),
        metavar="N",
        help="hold out N training images (stratified, seeded) and evaluate all of them every "
        "epoch; the test set is then evaluated once, at the end (a recipe's value is capped "
        "at 10%% of the training images)",
    )
    p.add_argument(
        "--select",
        choices=("last", "best-val"),
        help="which weights to keep: the last epoch's or the best validation epoch's",
    )
    p.add_argument(
        "--seed", type=int_in(0, MAX_SEED), help="seed for the weights, dropout, batch order, split, augmentation"
    )
    p.add_argument(
        "--train-size",
        type=int_in(1, MAX_IMAGES),
        metavar="N",
        help="train on the first N training images only (quick demos)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    add_common(p, dtype_default="float32")


def make_communicator(distributed: bool) -> SingleProcess:
    """MPI's ranks for --distributed (or an ensemble started by mpiexec), else one process."""
    from ..distributed import MPICommunicator, SingleProcess

    if not distributed:
        return SingleProcess()
    try:
        return MPICommunicator()
    except ImportError as exc:
        raise CommandError(one_line(exc)) from None


def refuse_to_overwrite(args: argparse.Namespace, outputs: Iterable[Tuple[str, str]], command: str) -> None:
    """No silent overwrite: outputs of an earlier run are replaced only with --overwrite
    (or continued with --resume).  Rank 0 looks and tells the others."""
    comm = args.communicator
    problem = None
    if comm.is_root and not (args.resume or args.overwrite):
        existing = [(option, path) for option, path in outputs if path and os.path.exists(path)]
        if existing:
            options = sorted({option for option, _ in existing})
            shown = ", ".join(path for _, path in existing[:3]) + (
                f" and {len(existing) - 3} more files" if len(existing) > 3 else ""
            )
            problem = (
                f"{shown} already exist{'s' if len(existing) == 1 else ''} "
                f"({', '.join(options)} of an earlier run): continue that run with --resume, "
                f"replace {'it' if len(existing) == 1 else 'them'} with --overwrite, or choose other "
                f"{'paths' if command == 'train' else 'a directory'}"
            )
    problem = comm.broadcast_object(problem)
    if problem:
        raise CommandError(problem)


def interrupt_hint(checkpoint: str, written: Optional[int], previous: int = 0, resume: bool = False) -> str:
    """What Ctrl-C leaves, said as it is: ``written``, the last epoch this run checkpointed
    (None: none yet); ``previous``, the epoch of the checkpoint it resumed from (0: none)."""
    again = "run the same command with --resume to continue"
    if written:
        return f"; the checkpoint after epoch {written} is {checkpoint}: {again}"
    if previous:
        return (
            f"; no epoch finished in this run: {checkpoint} still holds the checkpoint after epoch {previous}: {again}"
        )
    if resume and os.path.exists(checkpoint):
        return f"; no epoch finished in this run: {checkpoint} is as it was: {again}"
    earlier = " (the file there is an earlier run's)" if os.path.exists(checkpoint) else ""
    return (
        f"; no epoch finished, so this run wrote no checkpoint to {checkpoint}{earlier}: "
        "run the same command to start over"
    )


def check_ranks_agree(args: argparse.Namespace) -> None:
    """Every setting that changes the sequence of collective calls (and the training) must be
    the same on every rank (mpiexec's MPMD form can start ranks with other options); else the
    ranks would wait for each other forever or exchange mismatched messages."""
    comm = args.communicator
    if comm.size == 1:
        return
    # Not options, or per host: where the MNIST files are, how many cores.
    exempt = {"command", "communicator", "interrupt_hint", "interrupted_checkpoint_epoch", "data", "threads"}
    differences = comm.differences(
        {"--" + name.replace("_", "-"): value for name, value in vars(args).items() if name not in exempt}
    )
    if differences:
        raise RanksDisagree(
            f"the MPI ranks were started with different options ({differences}): start every rank with the same ones"
        )


def training_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The recipe's defaults, overridden by the options given."""
    from ..recipes import RECIPES

    settings = dict(RECIPES[args.recipe])
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    if settings["augment"] in ("none", ""):
        settings["augment"] = None
    if settings["select"] == "best-val" and not settings["val_size"]:
        raise CommandError("--select best-val needs a validation split: --val-size N")
    from ..training.schedules import parse as parse_schedule

    try:  # with this run's --lr (cosine's min_lr <= lr), before any data is read
        parse_schedule(settings["lr_schedule"], settings["lr"], 1, settings["epochs"], settings["warmup"])
    except ValueError as exc:
        raise CommandError(f"--lr-schedule {settings['lr_schedule']}: {str(exc).replace('Schedule: ', '')}") from None
    settings["val_size_from_recipe"] = args.val_size is None
    return settings


def save_model(model: Sequential, path: str) -> Any:
    """model.save(path), a bfloat16 model's arrays widened to float32 (exact; .npz has no
    bfloat16): loading the file as bfloat16 gives back the same bits."""
    from .._dtypes import is_bfloat16

    if not is_bfloat16(model.dtype):
        return model.save(path)
    import json

    from .. import io
    from ..models.sequential import SPEC_KEY

    arrays = {name: value.astype(np.float32) for name, value in model.named_arrays().items()}
    arrays[SPEC_KEY] = np.frombuffer(json.dumps(model.spec()).encode(), dtype=np.uint8)
    return io.save_params(path, arrays)


def training_data(args: argparse.Namespace, settings: Dict[str, Any]) -> Data:
    """(x_train, t_train, x_test, t_test) as the options ask."""
    dtype = np.dtype(args.dtype)
    # The loader makes NumPy floating types; bfloat16 (ml_dtypes', kind "V") is rounded from float32.
    loaded = common.load_mnist(args.data, dtype if dtype.kind == "f" else np.dtype(np.float32))
    (x_train, t_train), (x_test, t_test) = ((x.astype(dtype, copy=False), t) for x, t in loaded)
    if args.train_size:
        x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    from_recipe = settings.pop("val_size_from_recipe", False)
    if from_recipe and settings["val_size"] > len(x_train) // VALIDATION_SHARE:
        recipe_value = settings["val_size"]
        settings["val_size"] = max(1, len(x_train) // VALIDATION_SHARE)
        communicator = getattr(args, "communicator", None)
        if communicator is None or communicator.is_root:
            print(
                f"--val-size {settings['val_size']}: the recipe's {recipe_value} validation images, capped at "
                f"{100 // VALIDATION_SHARE}% of the {len(x_train)} training images (give --val-size to choose)"
            )
    if settings["val_size"] >= len(x_train):
        source = f" (recipe {args.recipe}'s value)" if from_recipe else ""
        raise CommandError(
            f"--val-size {settings['val_size']}{source} leaves no training images: there are "
            f"{len(x_train)} training images"
        )
    return x_train, t_train, x_test, t_test


def train_one(
    args: argparse.Namespace,
    settings: Dict[str, Any],
    data: Data,
    seed: Optional[int],
    checkpoint: str,
    history: str,
    quiet: bool = False,
    communicator: Optional[SingleProcess] = None,
) -> Tuple[Sequential, float, List[float]]:
    """Build and train one model; return it, the seconds taken and this run's epoch times."""
    from ..datasets import stratified_split
    from ..training.optimizers import get_optimizer
    from ..recipes import make_model
    from ..training.schedules import parse as parse_schedule
    from ..training import Trainer, WeightAverage, batch_starts

    x_train, t_train, x_test, t_test = data
    x_val = t_val = None
    # Independent streams for the initial weights/dropout, the batch order (and the
    # augmentation, drawn by the trainer) and the validation split; the first two as in
    # every earlier version.
    network_seed, trainer_seed, split_seed = np.random.SeedSequence(seed).spawn(3)
    if settings["val_size"]:
        train_index, val_index = stratified_split(t_train, settings["val_size"], split_seed)
        x_val, t_val = x_train[val_index], t_train[val_index]
        x_train, t_train = x_train[train_index], t_train[train_index]
    dtype = np.dtype(args.dtype)
    model = make_model(settings["model"], dtype, network_seed)
    if args.device == "cuda":
        common.require_gpu()
        model.to_gpu()
    steps_per_epoch = len(batch_starts(len(x_train), settings["batch_size"], bool(model.batch_norm_layers())))
    schedule = parse_schedule(
        settings["lr_schedule"], settings["lr"], steps_per_epoch, settings["epochs"], settings["warmup"]
    )
    hooks = [schedule] + ([WeightAverage(settings["ema"])] if settings["ema"] else [])
    transform = None
    if settings["augment"]:
        from ..training.augment import Augment

        transform = Augment.from_spec(settings["augment"])
    optimizer = get_optimizer(settings["optimizer"], lr=settings["lr"], weight_decay=settings["weight_decay"])
    root = communicator is None or communicator.is_root
    if not quiet and root:
        print(_describe(settings, model, len(x_train), x_val, dtype, args.device, schedule, transform))
    trainer = Trainer(
        model,
        x_train,
        t_train,
        x_test,
        t_test,
        epochs=settings["epochs"],
        mini_batch_size=settings["batch_size"],
        optimizer=optimizer,
        evaluate_sample_num_per_epoch=None if x_val is not None else BOOK_EVALUATION_SAMPLES,
        verbose=not quiet,
        seed=trainer_seed,
        checkpoint_path=checkpoint,
        history_path=history,
        resume=args.resume,
        x_val=x_val,
        t_val=t_val,
        select=settings["select"],
        hooks=hooks,
        batch_transform=transform,
        communicator=communicator,
    )
    first_epoch = trainer.epoch
    start = time.perf_counter()
    try:
        trainer.train()
    except KeyboardInterrupt:
        args.interrupt_hint = interrupt_hint(checkpoint, trainer.checkpoint_epoch, first_epoch, args.resume)
        args.interrupted_checkpoint_epoch = trainer.checkpoint_epoch or first_epoch or None
        raise
    return model, time.perf_counter() - start, trainer.epoch_times[first_epoch:]


def _describe(
    settings: Dict[str, Any],
    model: Sequential,
    train_size: int,
    x_val: Optional[NDArray[Any]],
    dtype: np.dtype[Any],
    device: str,
    schedule: Any,
    transform: Any,
) -> str:
    """One line that says what train_one trains, and how."""
    parts = [
        f"{settings['model']} ({sum(p.size for p in model.params.values()):,} parameters) on "
        f"{train_size} training images",
        common.count(settings["epochs"], "epoch"),
        f"batch {settings['batch_size']}",
        f"{settings['optimizer']} lr {settings['lr']:g}",
    ]
    if settings["weight_decay"]:
        parts.append(f"weight decay {settings['weight_decay']:g}")
    if schedule.name != "constant" or schedule.warmup:
        parts.append(f"schedule {schedule!r}")
    if transform is not None:
        parts.append(f"augment {settings['augment']}")
    if settings["ema"]:
        parts.append(f"weight average {settings['ema']:g}")
    if x_val is not None:
        parts.append(f"{len(x_val)} validation images, keep {settings['select']}")
    parts += [dtype.name, device]
    return ", ".join(parts)
