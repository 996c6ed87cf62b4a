"""``deepnet`` command line (also ``python -m deepnet``).

``deepnet train`` with no options reproduces the book's ``ch08/train_deepnet.py``;
``deepnet evaluate --half-check`` is its ``half_float_network.py`` and
``deepnet misclassified`` its ``misclassified_mnist.py`` (figure 8-2).  ``--recipe beyond``
goes past the book (chapter 8.1.2); ``deepnet ensemble`` trains several members and
``deepnet evaluate --params a.npz b.npz ...`` averages their probabilities.

One module per command: ``train``, ``ensemble``, ``evaluate`` (evaluate, misclassified),
``plot``, ``quantize`` (an int8 model), ``export`` (an ONNX file); predict and serve (deepnet.cli.digits) run
deepnet.app. ``options`` holds the argument types and CommandError, ``common`` what the
commands share when they run, ``training`` what train and ensemble share. This module
assembles the parser and turns errors into one line and an exit code.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import argparse

from .common import PLOT_INSTALL_HINT
from .options import USER_ERRORS, CommandError, Parser, RanksDisagree, fail, one_line

__all__ = ["main", "build_parser", "CommandError", "PLOT_INSTALL_HINT"]


def main(argv: Optional[Sequence[str]] = None) -> Union[int, str, None]:
    """Run the command line; return the exit code (0 on success)."""
    parser = build_parser()
    args = argparse.Namespace()
    try:
        args = parser.parse_args(argv)
        code = args.command(args)  # None, or an exit code for a command that reported its errors
    except USER_ERRORS as exc:
        return fail(
            args,
            f"error: {one_line(exc)}",
            2 if isinstance(exc, CommandError) else 1,
            every_rank=isinstance(exc, RanksDisagree),
        )
    except MemoryError:  # each command's own advice (predict and serve have no --batch-size)
        hint = getattr(args, "memory_hint", "try a smaller --batch-size (or fewer images)")
        return fail(args, f"error: out of memory; {hint}", 1)
    except KeyboardInterrupt:
        return fail(args, f"interrupted{getattr(args, 'interrupt_hint', '')}", 130)
    except SystemExit as exc:  # --help and --version
        return exc.code
    except BaseException:
        communicator = getattr(args, "communicator", None)
        if communicator is not None and communicator.size > 1:
            import traceback

            traceback.print_exc()
            communicator.abort(1)  # a bug on one rank must not leave the others waiting
        raise
    return code or 0


def build_parser() -> Parser:
    """The parser of every command (each command's module imported only now)."""
    from .._version import __version__
    from .digits import add_predict, add_serve
    from .evaluate import add_evaluate, add_misclassified
    from .export import add_export
    from .plot import add_plot
    from .quantize import add_quantize
    from .ensemble import add_ensemble
    from .train import add_train

    parser = Parser(prog="deepnet", description="DeepConvNet on MNIST (Deep Learning from Scratch, chapter 8).")
    parser.add_argument("--version", action="version", version=f"deepnet {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)
    add_train(commands)
    add_ensemble(commands)
    add_evaluate(commands)
    add_misclassified(commands)
    add_quantize(commands)
    add_export(commands)
    add_plot(commands)
    add_predict(commands)
    add_serve(commands)
    return parser
