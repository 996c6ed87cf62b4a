"""``deepnet train``: train one network (with no options, the book's ``ch08/train_deepnet.py``),
on one process or data-parallel over MPI's ranks.

``--recipe beyond`` goes past the book (chapter 8.1.2). What ``deepnet train`` shares with
``deepnet ensemble`` (``deepnet.cli.ensemble``, whose names are importable from here too) is
in ``deepnet.cli.training``.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, cast

import numpy as np

from . import common, training
from .ensemble import add_ensemble, run_ensemble
from .options import CommandError
from .training import BOOK_EVALUATION_SAMPLES as BOOK_EVALUATION_SAMPLES
from .training import VALIDATION_SHARE as VALIDATION_SHARE

__all__ = ["add_train", "add_ensemble", "run_train", "run_ensemble"]


def add_train(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet train`` to the commands."""
    p = commands.add_parser("train", help="train a network (default: the book's train_deepnet.py)")
    training.add_training_options(p)
    p.add_argument(
        "--out",
        default="deep_convnet_params.npz",
        metavar="MODEL.npz",
        help="where to save the trained model (default %(default)s)",
    )
    p.add_argument(
        "--checkpoint",
        default="deep_convnet_checkpoint.npz",
        metavar="PATH",
        help="checkpoint written (atomically) after every epoch (default %(default)s)",
    )
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the --out, --checkpoint and --history files of an earlier run (without this "
        "or --resume, train refuses to overwrite them)",
    )
    p.add_argument(
        "--history",
        default="deep_convnet_history.json",
        metavar="PATH",
        help="accuracy and loss history as JSON, for 'deepnet plot' (default %(default)s)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over the ranks of mpiexec -n K (MPI, deepnet[mpi]); --batch-size is "
        "the global batch, so the training computed is the same",
    )
    p.set_defaults(command=run_train)


def run_train(args: argparse.Namespace) -> None:
    """Train one network (data-parallel with --distributed) and save it to --out."""
    started = time.perf_counter()
    settings = training.training_settings(args)
    outputs = {"--out": args.out, "--checkpoint": args.checkpoint, "--history": args.history}
    if not args.checkpoint:
        raise CommandError("--checkpoint needs a PATH (every epoch is checkpointed)")
    from ..distributed import mpi_world_size

    if not args.distributed and mpi_world_size() > 1:  # each rank would train alone, into the same files
        raise CommandError(
            f"mpiexec started {mpi_world_size()} ranks, but without --distributed each would "
            "train alone into the same files: add --distributed to every rank"
        )
    args.communicator = training.make_communicator(args.distributed)
    training.check_ranks_agree(args)
    root = args.communicator.is_root
    training.refuse_to_overwrite(args, outputs.items(), "train")
    if args.seed is None and args.communicator.size > 1:  # one seed for all ranks: rank 0's
        args.seed = args.communicator.broadcast_object(
            int(cast(int, np.random.SeedSequence().entropy)) if root else None
        )
    if root:
        common.check_writable(outputs)
    common.configure_kernels(args)
    args.interrupt_hint = training.interrupt_hint(args.checkpoint, None, resume=args.resume)
    data = training.training_data(args, settings)
    model, _, epoch_times = training.train_one(
        args, settings, data, args.seed, args.checkpoint, args.history, communicator=args.communicator
    )
    if not root:
        return
    path = training.save_model(model, args.out)
    print(f"saved the model to {path}")
    per_epoch = (
        f"; {np.mean(epoch_times):.1f} s per epoch (training and the per-epoch evaluation), "
        f"{common.count(len(epoch_times), 'epoch')}"
        if epoch_times
        else "; no epoch to train"
    )
    print(f"wall time: {time.perf_counter() - started:.1f} s in all (setup, training and evaluation){per_epoch}")
