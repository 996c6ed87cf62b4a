"""Data-parallel training (chapter 8.3.3): every rank computes the gradient of its slice of
each global batch; the gradients are averaged, so K ranks compute what one process would.

``SingleProcess`` is the stand-in the trainer uses by default: every code path runs
without MPI.
"""
import contextlib

__all__ = ["SingleProcess"]


class SingleProcess:
    """One process: the whole batch, nothing to average or broadcast."""

    rank = 0
    size = 1
    is_root = True

    def shard(self, global_batch):
        """(first, stop) of this rank's rows of a global batch."""
        return 0, global_batch

    @contextlib.contextmanager
    def global_batch(self, network, global_batch, first):
        """Inside the block the network's layers know the global batch (nothing to do here)."""
        yield

    def average(self, loss, grads, local_batch, global_batch):
        """The global batch's loss and gradients: here, this process's own."""
        return loss, grads

    def broadcast_model(self, network):
        """Make every rank hold rank 0's parameters: here, nothing to do."""
