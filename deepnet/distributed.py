"""Data-parallel training (chapter 8.3.3) over MPI: every rank computes the gradient of its
slice of each global batch, the gradients are summed across ranks, and every rank applies
the same update, so K ranks compute what one process would, up to the order of summation.

- ``SingleProcess``: the stand-in the trainer uses by default, so every code path runs
  without MPI (and importing deepnet never needs mpi4py);
- ``MPICommunicator``: mpi4py's COMM_WORLD (``pip install -e ".[mpi]"`` in the source directory, then
  ``mpiexec -n K deepnet train --distributed``).

How the equivalence is kept:

- rank 0's whole training state (parameters, buffers, optimizer, random generators) is
  broadcast when training starts or resumes;
- each rank computes the gradient of (its slice's summed loss) / (global batch), so the
  sum over ranks is the global batch's mean gradient: one reduction of a single flat
  buffer per step;
- dropout masks are drawn for the whole global batch from the shared generator, each rank
  keeps its rows; BatchNormalization sums its statistics over the ranks;
- every sum is reduced on rank 0 and broadcast from there, so all ranks hold bit-identical
  results (an allreduce may add in a different order on different ranks).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, TypeVar

import numpy as np

from . import _array
from ._errors import SettingImportError, template

if TYPE_CHECKING:
    from .functional import Array
    from .models import Sequential

T = TypeVar("T")

ABORT_GRACE_SECONDS = 1.0  # before MPI_Abort, for mpiexec to forward the rank's last words

__all__ = ["SingleProcess", "MPICommunicator", "mpi_world_size"]


class SingleProcess:
    """One process: the whole batch, nothing to sum or broadcast."""

    rank = 0
    size = 1
    is_root = True

    def shard(self, global_batch: int) -> Tuple[int, int]:
        """(first, stop) of this rank's rows of a global batch."""
        return 0, global_batch

    @contextlib.contextmanager
    def global_batch(self, network: Sequential, global_batch: int, first: int) -> Iterator[None]:
        """Inside the block the network's layers work on a slice of a global batch."""
        yield

    def sum(self, array: Array) -> Array:
        """The elementwise sum of ``array`` over all ranks."""
        return array

    def sum_gradients(self, loss: float, grads: Dict[str, Array]) -> Tuple[float, Dict[str, Array]]:
        """(loss, grads) summed over all ranks."""
        return loss, grads

    def broadcast_object(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        return value

    def gather(self, value: T) -> Optional[List[T]]:
        """On rank 0 the list of every rank's ``value`` (None on the others)."""
        return [value]

    def differences(self, values: Mapping[str, Any]) -> Optional[str]:
        """Compare ``values`` (a dict name -> picklable value) across the ranks: None if every
        rank has the same, else one line naming each name that differs and which ranks hold
        which value (the same answer on every rank).  Collective: every rank must call it."""
        return None


class MPICommunicator(SingleProcess):
    """Data-parallel training over an mpi4py communicator (COMM_WORLD by default)."""

    def __init__(self, comm: Any = None) -> None:
        try:
            from mpi4py import MPI
        except ImportError:
            raise SettingImportError(
                template(
                    "{distributed|distributed training} needs mpi4py and an MPI: pip install -e "
                    '".[mpi]" in deepnet\'s source directory (or pip install mpi4py mpich)'
                )
            ) from None
        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.is_root = self.rank == 0
        self.node_size = self.comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()  # ranks on this machine

    def shard(self, global_batch: int) -> Tuple[int, int]:
        return global_batch * self.rank // self.size, global_batch * (self.rank + 1) // self.size

    @contextlib.contextmanager
    def global_batch(self, network: Sequential, global_batch: int, first: int) -> Iterator[None]:
        dropouts, norms = network.dropout_layers(), network.batch_norm_layers()
        for layer in dropouts:
            layer.shard = (global_batch, first)
        for norm in norms:
            norm.sum_across = self.sum
        try:
            yield
        finally:
            for layer in dropouts:
                layer.shard = None
            for norm in norms:
                norm.sum_across = None

    def sum(self, array: Array) -> Array:
        xp = _array.get_array_module(array)
        host = np.ascontiguousarray(_array.to_cpu(array))
        total = np.empty_like(host)
        # Reduce on rank 0, then broadcast: every rank gets the very same bits.
        self.comm.Reduce(host, total, op=self._MPI.SUM, root=0)
        self.comm.Bcast(total, root=0)
        return xp.asarray(total) if xp is not np else total

    def sum_gradients(self, loss: float, grads: Dict[str, Array]) -> Tuple[float, Dict[str, Array]]:
        names = sorted(grads)
        dtype = np.result_type(np.float32, *(grads[name].dtype for name in names))
        flat = np.concatenate(
            [np.asarray(_array.to_cpu(grads[name]), dtype=dtype).ravel() for name in names]
            + [np.array([loss], dtype=dtype)]
        )
        total = self.sum(flat)  # one reduction of one buffer per step
        summed, offset = {}, 0
        for name in names:
            g = grads[name]
            piece = total[offset : offset + g.size].reshape(g.shape).astype(g.dtype)
            summed[name] = _array.get_array_module(g).asarray(piece) if _array.is_cupy_array(g) else piece
            offset += g.size
        return float(total[-1]), summed

    def broadcast_object(self, value: T) -> T:
        return self.comm.bcast(value, root=0)

    def gather(self, value: T) -> Optional[List[T]]:
        return self.comm.gather(value, root=0)

    def differences(self, values: Mapping[str, Any]) -> Optional[str]:
        every = self.gather(values)
        return self.broadcast_object(describe_differences(every) if self.is_root and every is not None else None)

    def abort(self, code: int = 1) -> None:
        """End every rank now (MPI_Abort): a failed rank must not leave the others waiting."""
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec forwards each rank's output through its proxies, and an abort can kill them
        # before they pass on the message this rank just wrote: give them a moment.
        time.sleep(ABORT_GRACE_SECONDS)
        self.comm.Abort(code)

    def wait_for_abort(self) -> None:
        """Block until rank 0 ends every rank (it reports an error all ranks found, then
        aborts): a rank that exited first would have mpiexec kill rank 0 before it spoke."""
        self.comm.Barrier()  # rank 0 never joins it


def describe_differences(every: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """None if the dicts in ``every`` (one a rank) are equal, else e.g. "epochs 1 on rank 0
    vs 2 on rank 1; ..." ("not given" for None or a missing name)."""
    parts: List[str] = []
    for name in sorted(set().union(*every), key=str):
        holders: Dict[str, List[int]] = {}
        for rank, values in enumerate(every):
            value = values.get(name)
            holders.setdefault(
                "not given" if value is None else repr(value) if isinstance(value, str) else str(value), []
            ).append(rank)
        if len(holders) > 1:
            parts.append(
                f"{name} "
                + " vs ".join(
                    f"{value} on rank{'s' if len(ranks) > 1 else ''} {','.join(map(str, ranks))}"
                    for value, ranks in holders.items()
                )
            )
    return "; ".join(parts) or None


def mpi_world_size() -> int:
    """The number of ranks mpiexec started, from its environment (1 when not under MPI),
    without importing mpi4py."""
    for variable in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):  # MPICH's and Open MPI's
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return 1
