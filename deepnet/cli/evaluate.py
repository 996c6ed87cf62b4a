"""``deepnet evaluate`` (test accuracy; ``--half-check`` is the book's ``half_float_network.py``;
several ``--params`` files are an ensemble) and ``deepnet misclassified`` (figure 8-2, the
book's ``misclassified_mnist.py``)."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Union

import numpy as np

from . import common
from .options import DTYPES, MAX_SHOWN, CommandError, add_common, existing_file, int_in

if TYPE_CHECKING:
    import argparse

    from numpy.typing import DTypeLike, NDArray

    from ..models import Sequential
    from ..quant import Int8Model

__all__ = ["add_evaluate", "add_misclassified", "run_evaluate", "run_misclassified", "ensemble_report"]


def add_evaluate(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet evaluate`` to the commands."""
    p = commands.add_parser("evaluate", help="test accuracy on all 10,000 test images")
    p.add_argument(
        "--params",
        required=True,
        nargs="+",
        type=existing_file,
        metavar="FILE",
        help="a saved model (deepnet train), a parameter .npz or the book's .pkl; several "
        "files are evaluated as an ensemble (averaged softmax probabilities)",
    )
    p.add_argument(
        "--half-check",
        action="store_true",
        help="compare float64, float32 and float16 (the book's half_float_network.py)",
    )
    add_common(p, dtype_default="float32")
    p.set_defaults(command=run_evaluate)


def add_misclassified(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet misclassified`` to the commands."""
    p = commands.add_parser("misclassified", help="figure of misclassified test digits (fig. 8-2)")
    p.add_argument(
        "--params",
        required=True,
        type=existing_file,
        metavar="FILE",
        help="a saved model (deepnet train), a parameter .npz or the book's .pkl",
    )
    p.add_argument("--out", required=True, metavar="FILE.png", help="the figure (.png, .pdf or .svg)")
    p.add_argument(
        "--max",
        type=int_in(1, MAX_SHOWN),
        default=20,
        help="show at most this many misclassified digits (default %(default)s)",
    )
    add_common(p, dtype_default="float32")
    p.set_defaults(command=run_misclassified)


def load_network(path: str, dtype: DTypeLike) -> Union[Sequential, Int8Model]:
    """Any saved model (a parameter file, an int8 model file) for inference; ValueError (one
    line, exit code 1) for parameters that could only give meaningless predictions."""
    from ..app.inference import load_for_inference

    return load_for_inference(path, dtype)


def run_evaluate(args: argparse.Namespace) -> None:
    """Print the test accuracy of --params (an ensemble's for several files)."""
    from ..models.compiled import for_inference
    from ..quant import Int8Model

    common.configure_kernels(args)
    if args.half_check and len(args.params) > 1:
        raise CommandError("--half-check compares dtypes of one network: give one --params file")
    dtype = "float64" if args.half_check else args.dtype
    networks = [load_network(path, dtype) for path in args.params]  # a bad file fails before MNIST loads
    if args.half_check and isinstance(networks[0], Int8Model):
        raise CommandError(f"--half-check compares float dtypes; {args.params[0]} is an int8 model (deepnet quantize)")
    (_, _), (x_test, t_test) = common.load_mnist(args.data, np.dtype(dtype))
    if len(args.params) > 1:
        ensemble_report(args.params, networks, args.dtype, x_test, t_test)
        return
    network = networks[0]
    print(f"test accuracy on {len(x_test)} images ({args.params[0]}):")
    if isinstance(network, Int8Model):  # computes in int8: no dtype to choose
        print(f"  {'int8':8s} {for_inference(network).accuracy(x_test.astype(np.float32), t_test):.4f}")
        return
    for dtype in DTYPES[::-1] if args.half_check else (args.dtype,):
        accuracy = for_inference(network.astype(dtype)).accuracy(x_test.astype(dtype), t_test)
        print(f"  {dtype:8s} {accuracy:.4f}")


def ensemble_report(
    paths: Sequence[str],
    networks: Sequence[Union[Sequential, Int8Model]],
    dtype: DTypeLike,
    x_test: NDArray[Any],
    t_test: NDArray[Any],
) -> Dict[str, Any]:
    """Each member's test accuracy and the accuracy of their averaged probabilities
    (``networks``: the members, loaded from ``paths``)."""
    from ..models.compiled import for_inference

    probabilities: Optional[NDArray[Any]] = None
    members: List[Dict[str, Any]] = []
    x = x_test.astype(dtype, copy=False)
    for path, network in zip(paths, networks):
        p = for_inference(network).probabilities(x)
        members.append({"file": os.fspath(path), "accuracy": float(np.mean(p.argmax(axis=1) == t_test))})
        probabilities = p if probabilities is None else probabilities + p
    assert probabilities is not None  # --params takes one file or more
    accuracy = float(np.mean(probabilities.argmax(axis=1) == t_test))
    print(f"test accuracy on all {len(x_test)} test images (evaluated once per model):")
    for member in members:
        print(f"  {member['accuracy']:.4f}  {member['file']}")
    print(f"  {accuracy:.4f}  ensemble of {len(paths)} (averaged softmax probabilities)")
    return {"members": members, "ensemble_accuracy": accuracy, "test_images": len(x_test)}


def run_misclassified(args: argparse.Namespace) -> None:
    """Write the figure of misclassified test digits (figure 8-2)."""
    Figure = common.figure_class()  # fail early if matplotlib is missing
    figure_format = common.figure_format(args.out)
    common.check_writable({"--out": args.out})
    common.configure_kernels(args)
    from ..models.compiled import for_inference

    network = load_network(args.params, args.dtype)
    (_, _), (x_test, t_test) = common.load_mnist(args.data, network.dtype)
    predicted = for_inference(network).classify(x_test)
    wrong = np.flatnonzero(predicted != t_test)
    shown = wrong[: args.max]
    print(f"{len(wrong)} of {len(t_test)} test images misclassified; showing {len(shown)}")
    print("index: (label, inference)")
    print({int(i): (int(t_test[i]), int(predicted[i])) for i in shown})
    figure = _misclassified_figure(Figure, x_test, t_test, predicted, shown)
    common.save_figure(figure, args.out, figure_format)
    print(f"wrote {args.out}")


def _misclassified_figure(
    Figure: Any,
    images: NDArray[Any],
    labels: NDArray[Any],
    predicted: NDArray[Any],
    indices: NDArray[Any],
    columns: int = 5,
) -> Any:
    rows = max(1, math.ceil(len(indices) / columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), layout="tight")
    if len(indices) == 0:
        figure.text(0.5, 0.5, "no misclassified test images", ha="center")
    for position, i in enumerate(indices, 1):
        axes = figure.add_subplot(rows, columns, position, xticks=[], yticks=[])
        axes.imshow(images[i].reshape(images.shape[-2:]), cmap="gray_r", interpolation="nearest")
        axes.set_title(f"true {labels[i]}, pred {predicted[i]}", fontsize=9)
    return figure
