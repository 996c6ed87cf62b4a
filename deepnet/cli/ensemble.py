"""``deepnet ensemble``: train several members with different seeds (under mpiexec, one per
rank), then evaluate each and their averaged probabilities on the test set."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Optional

import numpy as np

from . import common, training
from .evaluate import ensemble_report, load_network
from .options import MAX_MEMBERS, int_in

__all__ = ["add_ensemble", "run_ensemble"]


def add_ensemble(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``deepnet ensemble`` to the commands."""
    p = commands.add_parser(
        "ensemble", help="train K members with different seeds, then evaluate their averaged probabilities"
    )
    p.add_argument(
        "--members",
        type=int_in(1, MAX_MEMBERS),
        required=True,
        metavar="K",
        help="number of members to train (seeds --seed, --seed + 1, ...; default seed 0)",
    )
    p.add_argument(
        "--out-dir",
        default="ensemble",
        metavar="DIR",
        help="member models, checkpoints, histories and the report (default %(default)s)",
    )
    p.add_argument("--resume", action="store_true", help="continue unfinished members from their checkpoints")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier ensemble's files in --out-dir (without this or --resume, "
        "ensemble refuses to overwrite them)",
    )
    training.add_training_options(p)
    p.set_defaults(command=run_ensemble)


def run_ensemble(args: argparse.Namespace) -> None:
    """Train the members (under mpiexec, rank r trains members r, r + K, ...), then rank 0
    evaluates each and the ensemble on the test set."""
    from ..distributed import mpi_world_size

    settings = training.training_settings(args)
    args.communicator = training.make_communicator(mpi_world_size() > 1)
    comm = args.communicator
    training.check_ranks_agree(args)
    files = [
        os.path.join(args.out_dir, f"member{member}{suffix}")
        for member in range(args.members)
        for suffix in (".npz", ".checkpoint.npz", ".history.json")
    ] + [os.path.join(args.out_dir, "report.json")]
    training.refuse_to_overwrite(args, [("--out-dir", path) for path in files], "ensemble")
    os.makedirs(args.out_dir, exist_ok=True)
    common.check_writable({"--out-dir": os.path.join(args.out_dir, "report.json")})
    common.configure_kernels(args)
    data = training.training_data(args, settings)
    base_seed = 0 if args.seed is None else args.seed
    seconds: Dict[int, float] = {}
    finished: List[int] = []
    args.interrupt_hint = _ensemble_interrupt_hint(args, finished)
    for member in range(comm.rank, args.members, comm.size):
        stem = os.path.join(args.out_dir, f"member{member}")
        print(
            f"--- member {member + 1}/{args.members} (seed {base_seed + member})"
            + (f" on rank {comm.rank}" if comm.size > 1 else ""),
            flush=True,
        )
        try:
            model, seconds[member], _ = training.train_one(
                args,
                settings,
                data,
                base_seed + member,
                stem + ".checkpoint.npz",
                stem + ".history.json",
                quiet=comm.size > 1,
            )
        except KeyboardInterrupt:
            args.interrupt_hint = _ensemble_interrupt_hint(args, finished, member, stem + ".checkpoint.npz")
            raise
        model.save(stem + ".npz")
        finished.append(member)
        args.interrupt_hint = _ensemble_interrupt_hint(args, finished)
    gathered = comm.gather(seconds)  # also waits for every rank's members
    if not comm.is_root:
        return
    seconds = {member: value for part in gathered for member, value in part.items()}
    paths = [os.path.join(args.out_dir, f"member{member}.npz") for member in range(args.members)]
    networks = [load_network(path, args.dtype) for path in paths]
    (_, _), (x_test, t_test) = common.load_mnist(args.data, np.dtype(args.dtype))
    report = ensemble_report(paths, networks, args.dtype, x_test, t_test)
    report["training_seconds"] = [seconds[member] for member in range(args.members)]
    report["settings"] = settings
    from ..io import atomic_write

    with atomic_write(os.path.join(args.out_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {os.path.join(args.out_dir, 'report.json')}")


def _ensemble_interrupt_hint(
    args: argparse.Namespace, finished: List[int], member: Optional[int] = None, checkpoint: Optional[str] = None
) -> str:
    """What Ctrl-C leaves of an ensemble (on this rank): the finished members, and the
    interrupted member's checkpoint if it wrote one."""
    written = getattr(args, "interrupted_checkpoint_epoch", None) if member is not None else None
    parts = [
        f"{common.count(len(finished), 'member')} finished in {args.out_dir}"
        + (f" (member{', member'.join(map(str, finished))})" if finished else "")
    ]
    if written:
        parts.append(f"member {member}'s checkpoint after epoch {written} is {checkpoint}")
    if finished or written or args.resume:
        return "; " + "; ".join(parts) + ": run the same command with --resume to continue"
    return f"; {parts[0]} and no checkpoint was written: run the same command to start over"
