"""``deepnet`` command line (also ``python -m deepnet``): train, evaluate, misclassified, plot.

``deepnet train`` with no options reproduces the book's ``ch08/train_deepnet.py``;
``deepnet evaluate --half-check`` is its ``half_float_network.py`` and
``deepnet misclassified`` its ``misclassified_mnist.py`` (figure 8-2).
"""
import argparse
import json
import math
import os
import pickle
import sys
import time
import zipfile

import numpy as np

__all__ = ["main", "build_parser"]

DTYPES = ("float16", "float32", "float64")
PLOT_INSTALL_HINT = 'this command needs matplotlib: pip install "deepnet[plot]"'


class CommandError(Exception):
    """A mistake of the user's (bad option, missing file...): one line on stderr, no traceback."""


# Errors that come from the user's input or environment, not from a bug in deepnet.
USER_ERRORS = (CommandError, OSError, ValueError, EOFError,
               pickle.UnpicklingError, zipfile.BadZipFile)


def main(argv=None):
    """Run the command line; return the exit code (0 on success)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.command(args)
    except USER_ERRORS as exc:
        print(f"deepnet: error: {_one_line(exc)}", file=sys.stderr)
        return 2 if isinstance(exc, CommandError) else 1
    except KeyboardInterrupt:
        print("deepnet: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help and --version
        return exc.code
    return 0


def _one_line(exc):
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the parser ----------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """Raises CommandError instead of printing usage and exiting, so main() reports it."""

    def error(self, message):
        raise CommandError(message)


def build_parser():
    from ._version import __version__
    from .app.commands import add_predict, add_serve

    parser = _Parser(prog="deepnet", description="DeepConvNet on MNIST "
                     "(Deep Learning from Scratch, chapter 8).")
    parser.add_argument("--version", action="version", version=f"deepnet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    _add_train(commands)
    _add_evaluate(commands)
    _add_misclassified(commands)
    _add_plot(commands)
    add_predict(commands)
    add_serve(commands)
    return parser


def _add_train(commands):
    p = commands.add_parser("train", help="train DeepConvNet (the book's train_deepnet.py)")
    p.add_argument("--epochs", type=_positive_int, default=20, help="epochs to train (default 20)")
    p.add_argument("--batch-size", type=_positive_int, default=100, help="mini-batch size (default 100)")
    p.add_argument("--lr", type=float, default=0.001, help="Adam learning rate (default 0.001)")
    p.add_argument("--seed", type=int, help="seed for the weights, dropout and batch order")
    p.add_argument("--out", default="deep_convnet_params.npz", metavar="PARAMS.npz",
                   help="where to save the trained parameters (default %(default)s)")
    p.add_argument("--checkpoint", default="deep_convnet_checkpoint.npz", metavar="PATH",
                   help="checkpoint written (atomically) after every epoch (default %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument("--history", default="deep_convnet_history.json", metavar="PATH",
                   help="accuracy and loss history as JSON, for 'deepnet plot' (default %(default)s)")
    p.add_argument("--train-size", type=_positive_int, metavar="N",
                   help="train on the first N training images only (quick demos)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train (default cpu)")
    _add_common(p, dtype_default="float32")
    p.set_defaults(command=run_train)


def _add_evaluate(commands):
    p = commands.add_parser("evaluate", help="test accuracy on all 10,000 test images")
    p.add_argument("--params", required=True, type=_existing_file, metavar="FILE",
                   help="parameters: .npz from 'deepnet train' or the book's .pkl")
    p.add_argument("--half-check", action="store_true",
                   help="compare float64, float32 and float16 (the book's half_float_network.py)")
    _add_common(p, dtype_default="float32")
    p.set_defaults(command=run_evaluate)


def _add_misclassified(commands):
    p = commands.add_parser("misclassified", help="figure of misclassified test digits (fig. 8-2)")
    p.add_argument("--params", required=True, type=_existing_file, metavar="FILE")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.add_argument("--max", type=_positive_int, default=20, help="most digits to show")
    _add_common(p, dtype_default="float32")
    p.set_defaults(command=run_misclassified)


def _add_plot(commands):
    p = commands.add_parser("plot", help="accuracy and loss curves of a training history")
    p.add_argument("--history", required=True, type=_existing_file, metavar="FILE.json")
    p.add_argument("--out", required=True, metavar="FILE.png")
    p.set_defaults(command=run_plot)


def _add_common(p, dtype_default):
    p.add_argument("--dtype", choices=DTYPES, default=dtype_default, help="floating-point type (default %(default)s)")
    p.add_argument("--data", metavar="DIR", help="directory holding the MNIST files")
    p.add_argument("--backend", choices=("cython", "numpy"),
                   help="CPU kernels: compiled (cython) or the NumPy reference")
    p.add_argument("--threads", type=_positive_int, metavar="N", help="threads for the kernels")


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _existing_file(path):
    if not os.path.isfile(path):
        raise argparse.ArgumentTypeError(f"file not found: {path!r}")
    return path


# -- commands ------------------------------------------------------------------------------

def run_train(args):
    from .nets import DeepConvNet
    from .trainer import Trainer

    if not args.checkpoint:
        raise CommandError("--checkpoint needs a PATH (every epoch is checkpointed)")
    _configure_kernels(args)
    dtype = np.dtype(args.dtype)
    (x_train, t_train), (x_test, t_test) = _load_mnist(args.data, dtype)
    if args.train_size:
        x_train, t_train = x_train[:args.train_size], t_train[:args.train_size]

    # Independent streams for the initial weights/dropout and for the batch order.
    network_seed, trainer_seed = np.random.SeedSequence(args.seed).spawn(2)
    network = DeepConvNet(dtype=dtype, seed=network_seed)
    if args.device == "cuda":
        _require_gpu()
        network.to_gpu()
    print(f"DeepConvNet on {len(x_train)} training images: {args.epochs} epochs, "
          f"batch {args.batch_size}, Adam lr {args.lr}, {dtype.name}, {args.device}")
    trainer = Trainer(network, x_train, t_train, x_test, t_test,
                      epochs=args.epochs, mini_batch_size=args.batch_size,
                      optimizer="Adam", optimizer_param={"lr": args.lr},
                      evaluate_sample_num_per_epoch=1000, seed=trainer_seed,
                      checkpoint_path=args.checkpoint, history_path=args.history,
                      resume=args.resume)
    first_epoch = trainer.epoch
    start = time.perf_counter()
    trainer.train()
    elapsed = time.perf_counter() - start

    path = network.save_params(args.out)
    print(f"saved parameters to {path}")
    epoch_times = trainer.epoch_times[first_epoch:]
    per_epoch = f", {np.mean(epoch_times):.1f} s per epoch" if epoch_times else ""
    print(f"wall time: {elapsed:.1f} s for {len(epoch_times)} epochs{per_epoch}")


def run_evaluate(args):
    _configure_kernels(args)
    dtypes = DTYPES[::-1] if args.half_check else (args.dtype,)
    network = _load_network(args.params, "float64" if args.half_check else args.dtype)
    (_, _), (x_test, t_test) = _load_mnist(args.data, network.dtype)
    print(f"test accuracy on {len(x_test)} images ({args.params}):")
    for dtype in dtypes:
        accuracy = network.astype(dtype).accuracy(x_test, t_test)
        print(f"  {dtype:8s} {accuracy:.4f}")


def run_misclassified(args):
    Figure = _figure_class()  # fail early if matplotlib is missing
    _configure_kernels(args)
    network = _load_network(args.params, args.dtype)
    (_, _), (x_test, t_test) = _load_mnist(args.data, network.dtype)
    predicted = network.classify(x_test)
    wrong = np.flatnonzero(predicted != t_test)
    shown = wrong[:args.max]
    print(f"{len(wrong)} of {len(t_test)} test images misclassified; showing {len(shown)}")
    print("index: (label, inference)")
    print({int(i): (int(t_test[i]), int(predicted[i])) for i in shown})
    figure = _misclassified_figure(Figure, x_test, t_test, predicted, shown)
    _save_png(figure, args.out)
    print(f"wrote {args.out}")


def run_plot(args):
    Figure = _figure_class()
    from matplotlib.ticker import MaxNLocator

    history = _read_history(args.history)
    figure = Figure(figsize=(10, 4), layout="tight")
    accuracy_axes, loss_axes = figure.subplots(1, 2)
    epochs = np.arange(1, len(history["train_acc_list"]) + 1)
    accuracy_axes.plot(epochs, history["train_acc_list"], marker="o", label="train")
    accuracy_axes.plot(epochs, history["test_acc_list"], marker="s", label="test")
    accuracy_axes.set(xlabel="epochs", ylabel="accuracy", ylim=(0, 1.0), title="accuracy")
    accuracy_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    accuracy_axes.legend(loc="lower right")
    loss_axes.plot(history["train_loss_list"], linewidth=0.8)
    loss_axes.set(xlabel="iterations", ylabel="loss", title="training loss")
    _save_png(figure, args.out)
    print(f"wrote {args.out}")


# -- helpers -------------------------------------------------------------------------------

def _configure_kernels(args):
    import deepnet

    if args.backend:
        try:
            deepnet.set_backend(args.backend)
        except ImportError as exc:  # the compiled kernels are not built
            raise CommandError(str(exc)) from None
    if args.threads:
        deepnet.set_num_threads(args.threads)


def _require_gpu():
    from . import _cuda

    if not _cuda.gpu_available():
        raise CommandError("--device cuda: no usable GPU (needs CuPy and a CUDA device)")


def _load_mnist(root, dtype):
    from .datasets import load_mnist

    return load_mnist(normalize=True, flatten=False, one_hot_label=False, dtype=dtype, root=root)


def _load_network(path, dtype):
    from .nets import DeepConvNet

    network = DeepConvNet(dtype=dtype)
    network.load_params(path)
    return network


def _read_history(path):
    with open(path) as f:
        history = json.load(f)
    for key in ("train_acc_list", "test_acc_list", "train_loss_list"):
        if key not in history:
            raise CommandError(f"{path}: not a training history (no {key!r})")
    return history


def _figure_class():
    """matplotlib's Figure, imported only now: plotting is an optional extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError(PLOT_INSTALL_HINT) from None
    return Figure


def _misclassified_figure(Figure, images, labels, predicted, indices, columns=5):
    rows = max(1, math.ceil(len(indices) / columns))
    figure = Figure(figsize=(1.6 * columns, 1.9 * rows), layout="tight")
    if len(indices) == 0:
        figure.text(0.5, 0.5, "no misclassified test images", ha="center")
    for position, i in enumerate(indices, 1):
        axes = figure.add_subplot(rows, columns, position, xticks=[], yticks=[])
        axes.imshow(images[i].reshape(images.shape[-2:]), cmap="gray_r", interpolation="nearest")
        axes.set_title(f"true {labels[i]}, pred {predicted[i]}", fontsize=9)
    return figure


def _save_png(figure, path):
    """Render with the Agg backend (no display needed) and write the file atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from .io import atomic_write

    FigureCanvasAgg(figure)
    with atomic_write(path) as f:
        figure.savefig(f, format="png", dpi=100)
