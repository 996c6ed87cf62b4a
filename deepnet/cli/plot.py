"""``deepnet plot``: the accuracy and loss curves of a training history (needs matplotlib)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict

import numpy as np

from . import common
from .options import CommandError, existing_file

if TYPE_CHECKING:
    import argparse

__all__ = ["add_plot", "run_plot"]


def add_plot(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet plot`` to the commands."""
    p = commands.add_parser("plot", help="accuracy and loss curves of a training history")
    p.add_argument(
        "--history",
        required=True,
        type=existing_file,
        metavar="FILE.json",
        help="a training history written by 'deepnet train --history' (or an ensemble member's)",
    )
    p.add_argument("--out", required=True, metavar="FILE.png", help="the figure (.png, .pdf or .svg)")
    p.set_defaults(command=run_plot)


def run_plot(args: argparse.Namespace) -> None:
    """Write the accuracy and loss curves of --history."""
    Figure = common.figure_class()
    from matplotlib.ticker import MaxNLocator

    figure_format = common.figure_format(args.out)
    history = _read_history(args.history)
    figure = Figure(figsize=(10, 4), layout="tight")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    for key, label, marker in (
        ("train_acc_list", "train", "o"),
        ("val_acc_list", "validation", "^"),
        ("test_acc_list", "test", "s"),
    ):
        values = history.get(key) or []
        if values:
            accuracy_axes.plot(np.arange(1, len(values) + 1), values, marker=marker, label=label)
    accuracy_axes.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0), title="accuracy")
    accuracy_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy_axes.legend(loc="lower right")
    loss_axes.plot(history["train_loss_list"], linewidth=0.8)
    # Measured on each mini-batch as trained: with dropout on (the book's net), so higher than
    # the loss of the network evaluated, next to its accuracy.
    dropout = " (with dropout)" if history.get("dropout", True) else ""
    loss_axes.set(xlabel="iterations", ylabel=f"mini-batch loss{dropout}", title=f"training loss{dropout}")
    common.save_figure(figure, args.out, figure_format)
    print(f"wrote {args.out}")


def _read_history(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            history = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"{path}: not a training history (not JSON: {exc})") from None
    if not isinstance(history, dict):
        raise CommandError(f"{path}: not a training history (not a JSON object)")
    for key in ("train_acc_list", "train_loss_list"):
        if not isinstance(history.get(key), list):
            raise CommandError(f"{path}: not a training history (no {key!r})")
    return history
