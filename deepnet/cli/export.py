"""``deepnet export``: a saved model as an ONNX file (deepnet.onnx), for other runtimes."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from . import common
from .options import CommandError, existing_file

if TYPE_CHECKING:
    import argparse

__all__ = ["add_export", "run_export"]


def add_export(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet export`` to the commands."""
    p = commands.add_parser("export", help="a saved model as an ONNX file (opset 17), for ONNX Runtime and others")
    p.add_argument(
        "params",
        type=existing_file,
        metavar="MODEL",
        help="the model: a saved model (deepnet train), a parameter .npz or the book's .pkl",
    )
    p.add_argument("--out", required=True, metavar="MODEL.onnx", help="where to write the ONNX file")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists (else export refuses)")
    p.add_argument(
        "--fold-bn",
        action="store_true",
        help="fold each BatchNormalization into the convolution before it (else a BatchNormalization node)",
    )
    p.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="the graph's dtype (default %(default)s; ONNX Runtime's CPU Conv runs float32 only)",
    )
    p.set_defaults(command=run_export)


def run_export(args: argparse.Namespace) -> None:
    """Write --out, the ONNX graph of MODEL's inference pass."""
    from ..app.inference import load_for_inference

    out = args.out if args.out.endswith(".onnx") else args.out + ".onnx"
    if os.path.exists(out) and not args.overwrite:
        raise CommandError(f"{out} already exists (--out): replace it with --overwrite, or choose another path")
    common.check_writable({"--out": out})
    try:
        from .. import onnx as deepnet_onnx
    except ImportError as exc:  # the onnx package, an optional extra
        raise CommandError(str(exc)) from exc
    network = load_for_inference(args.params, args.dtype)
    try:
        deepnet_onnx.export(network, out, fold_batch_norm=args.fold_bn, dtype=args.dtype)  # type: ignore[arg-type]
    except ImportError as exc:
        raise CommandError(str(exc)) from exc
    print(f"wrote {out}: the ONNX graph (opset {deepnet_onnx.OPSET}, {args.dtype}) of {args.params}")
