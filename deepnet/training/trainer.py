"""Training loop of the book's ``common/trainer.py``, with validation, callbacks and checkpoints.

Each epoch visits every training sample once, in an order drawn from a seeded Generator
(the last, smaller batch included).  The loop itself is fixed; what varies plugs in:

- ``batch_transform(x_batch, rng)``: e.g. ``deepnet.training.augment.Augment`` (data
  augmentation), drawing from the trainer's own seeded generator, so a checkpoint holds its
  state too;
- ``callbacks`` (``hooks`` is another name for them): ``deepnet.training.Callback``
  instances, e.g. a learning-rate schedule (``deepnet.training.schedules.Schedule``) or a
  weight average (``WeightAverage``); the loop calls their ``on_train_begin``,
  ``on_epoch_begin``, ``on_step_begin``, ``on_step_end``, ``on_epoch_end`` and
  ``on_train_end``, and checkpoints keep each one's state under its name
  (``deepnet.training.callbacks``).  After them come the trainer's own: the progress bar,
  the printed epoch lines, the history file and the checkpoints (``reporting``);
- ``communicator``: data-parallel training (``deepnet.distributed``); each rank computes
  the gradient of its slice of every global batch and the gradients are averaged.

Two ways to measure progress:

- with validation data (``x_val``): per epoch the whole validation set is evaluated; the
  test set is evaluated once, at the end; ``select="best-val"`` keeps the weights of the
  epoch with the best validation accuracy;
- without (the book's recipe): per epoch, train and test accuracy on the first
  ``evaluate_sample_num_per_epoch`` images of each, as the book prints them.

After each epoch the trainer writes the history (JSON) and a checkpoint from which
``resume`` continues bit-exactly: same parameters as an uninterrupted run
(``deepnet.training.checkpoint``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from typing import TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Union, cast

import numpy as np

from .. import _array, _memory
from ..distributed import SingleProcess
from . import checkpoint, evaluation, reporting
from .callbacks import BatchTransform, Callback, PathLike, check_callbacks, swapped_in
from .optimizers import Optimizer, get_optimizer

if TYPE_CHECKING:
    from ..functional import Array
    from ..models import Sequential

__all__ = ["Trainer", "batch_starts"]

SELECT = ("last", "best-val")


def batch_starts(n: int, batch_size: int, batch_norm: bool = False) -> List[int]:
    """Where each mini-batch of an epoch of ``n`` examples starts.  With BatchNormalization
    a last batch of one example joins the batch before it: BN cannot train on one value
    per channel.

    Parameters
    ----------
    n : int
        Examples in the epoch.
    batch_size : int
        Examples per mini-batch.
    batch_norm : bool
        The network has BatchNormalization layers.

    Returns
    -------
    list of int
        The index of each batch's first example, in order.
    """
    starts = list(range(0, n, batch_size))
    if batch_norm and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return starts


class Trainer:
    """Trains ``network`` (a deepnet.models.Sequential, e.g. DeepConvNet) with mini-batches.

    Parameters
    ----------
    network : deepnet.models.Sequential
        The model to train (its parameters are updated in place).
    x_train, t_train : array
        Training images (N, C, H, W) and their labels (N,) or one-hot (N, classes).
    x_test, t_test : array, optional
        Test images and labels: evaluated once, after training (and, without validation
        data, on the first ``evaluate_sample_num_per_epoch`` images each epoch).
    epochs : int
        Epochs to train (a resumed run trains the remaining ones).
    mini_batch_size : int
        Images per optimizer step.
    optimizer : str or Optimizer
        A name (``get_optimizer``'s, e.g. "Adam") or an Optimizer instance.
    optimizer_param : mapping, optional
        The named optimizer's settings; default ``{"lr": 0.001}``.
    evaluate_sample_num_per_epoch : int, optional
        Without validation data: the images of each set measured per epoch (None: all).
    verbose : bool
        Print each epoch's measurements and show a progress bar (on rank 0).
    seed : int or numpy.random.Generator, optional
        Seeds the trainer's generator (the epochs' order, the batch transform's draws).
    checkpoint_path : str or os.PathLike, optional
        Saved after every epoch; with ``resume=True`` training continues from it when it
        exists (and starts afresh when it does not yet).
    history_path : str or os.PathLike, optional
        Where the history (JSON) is written after every epoch.
    resume : bool
        Continue from ``checkpoint_path`` when it exists.
    x_val, t_val : array, optional
        Validation images and labels, evaluated in full after every epoch.
    select : {"last", "best-val"}
        The weights kept: the last (or the callbacks' average), or the epoch's with the
        best validation accuracy.
    hooks : iterable of Callback
        The earlier name of ``callbacks`` (both may be given: hooks come first).
    batch_transform : callable, optional
        ``batch_transform(x_batch, rng=generator)`` -> the batch to train on, e.g.
        ``deepnet.training.augment.Augment``.
    communicator : deepnet.distributed.SingleProcess, optional
        Data-parallel training (``MPICommunicator``); default one process.
    callbacks : iterable of Callback
        ``Callback`` instances with distinct names, called in the order given.
    """

    def __init__(
        self,
        network: Sequential,
        x_train: Array,
        t_train: Array,
        x_test: Optional[Array] = None,
        t_test: Optional[Array] = None,
        epochs: int = 20,
        mini_batch_size: int = 100,
        optimizer: Union[str, Optimizer] = "Adam",
        optimizer_param: Optional[Mapping[str, Any]] = None,
        evaluate_sample_num_per_epoch: Optional[int] = None,
        verbose: bool = True,
        seed: Union[None, int, np.random.Generator] = None,
        checkpoint_path: Optional[PathLike] = None,
        history_path: Optional[PathLike] = None,
        resume: bool = False,
        x_val: Optional[Array] = None,
        t_val: Optional[Array] = None,
        select: str = "last",
        hooks: Iterable[Callback] = (),
        batch_transform: Optional[BatchTransform] = None,
        communicator: Optional[SingleProcess] = None,
        callbacks: Iterable[Callback] = (),
    ) -> None:
        if select not in SELECT:
            raise ValueError(f"Trainer: select must be one of {SELECT}, got {select!r}")
        if select == "best-val" and x_val is None:
            raise ValueError("Trainer: select='best-val' needs validation data (x_val, t_val)")
        if len(x_train) == 0 or len(x_train) != len(t_train):
            raise ValueError(f"Trainer: {len(x_train)} training images and {len(t_train)} labels")
        self.network = network
        self.x_train, self.t_train = x_train, t_train
        self.x_val, self.t_val = x_val, t_val
        self.x_test, self.t_test = x_test, t_test
        self.epochs = epochs
        self.batch_size = mini_batch_size
        self.optimizer = get_optimizer(optimizer, **({"lr": 0.001} if optimizer_param is None else optimizer_param))
        self.evaluate_sample_num_per_epoch = evaluate_sample_num_per_epoch
        self.verbose = verbose
        self.rng = np.random.default_rng(seed)
        self.checkpoint_path = checkpoint_path
        self.history_path = history_path
        self.select = select
        self.callbacks = check_callbacks(list(hooks) + list(callbacks))
        self.hooks = self.callbacks  # the earlier name
        self.batch_transform = batch_transform
        self.communicator = communicator or SingleProcess()
        self._optimizer_settings = checkpoint.optimizer_settings(self.optimizer)
        # Which images are held out (a resumed run must keep them out of training).
        self._validation_digest = (
            hashlib.sha256(np.ascontiguousarray(_array.to_cpu(x_val)).tobytes()).hexdigest()[:16]
            if x_val is not None
            else None
        )

        self.epoch = 0  # epochs completed so far
        self.train_loss_list: List[float] = []
        self.train_acc_list: List[float] = []
        self.val_acc_list: List[float] = []
        self.test_acc_list: List[float] = []
        self.lr_list: List[float] = []  # the learning rate at the end of each epoch
        self.epoch_times: List[float] = []  # wall-clock seconds of each epoch (training + evaluation)
        # (epoch, val accuracy, {name: array}) with select="best-val"
        self.best: Optional[Tuple[int, float, Dict[str, Array]]] = None
        self.final_test: Optional[Dict[str, Any]] = None  # {"accuracy", "images"}: the one evaluation of the test set
        self.checkpoint_epoch: Optional[int] = None  # the epoch of the last checkpoint this trainer wrote
        self.step_images = 0  # the images of the last step
        self._measuring: List[Callback] = [evaluation.Evaluation(), evaluation.EpochTimer()]
        self._standard = reporting.standard_callbacks()
        self._progress = cast(reporting.ProgressBar, self._standard[0])

        if self.communicator.size > 1:
            self._check_ranks_agree(resume)
        resumed = resume and self._resume_if_possible()
        if not resumed and self.communicator.size > 1:  # every rank starts from rank 0's state
            checkpoint.apply_state(self, self.communicator.broadcast_object(checkpoint.state(self)), "rank 0's state")

    @property
    def validating(self) -> bool:
        return self.x_val is not None

    # -- training ----------------------------------------------------------------------

    def train(self) -> Optional[float]:
        """Train for the remaining epochs and keep the selected weights in the network.

        Returns
        -------
        float or None
            The accuracy on the whole test set (evaluated once, here); None without one.
        """
        _memory.keep_freed_memory()  # a step's freed activations are reused by the next
        everyone = self.all_callbacks
        for callback in everyone:
            callback.on_train_begin(self)
        try:
            for epoch in range(self.epoch, self.epochs):
                for callback in everyone:
                    callback.on_epoch_begin(self)
                self._train_epoch()
                self.lr_list.append(float(self.optimizer.lr))
                self.epoch = epoch + 1
                for callback in everyone:  # the evaluation first
                    callback.on_epoch_end(self)
        finally:
            self._progress.close()  # also when interrupted
        for callback in everyone:  # the evaluation keeps the selected weights and tests them
            callback.on_train_end(self)
        return cast(Dict[str, Any], self.final_test)["accuracy"] if self.x_test is not None else None

    @property
    def all_callbacks(self) -> List[Callback]:
        """The trainer's evaluation and epoch timer, the callbacks given, then the trainer's
        own reporting (reporting.standard_callbacks)."""
        return self._measuring + self.callbacks + self._standard

    def _train_epoch(self) -> None:
        order = self.rng.permutation(len(self.x_train))
        starts = self._batch_starts()
        for start, stop in zip(starts, starts[1:] + [len(order)]):
            batch = order[start:stop]
            self.train_step(self.x_train[batch], self.t_train[batch])

    def train_step(self, x_batch: Array, t_batch: Array) -> float:
        """One optimizer step on one (global) mini-batch, its loss recorded.

        Parameters
        ----------
        x_batch, t_batch : array
            The mini-batch's images and labels (before ``batch_transform``).

        Returns
        -------
        float
            The mini-batch's mean loss (over every rank's share).
        """
        if self.batch_transform is not None:
            x_batch = self.batch_transform(x_batch, rng=self.rng)
        self.step_images = len(x_batch)
        for callback in self.all_callbacks:
            callback.on_step_begin(self)
        comm = self.communicator
        first, stop = comm.shard(len(x_batch))
        share = (stop - first) / len(x_batch)  # of the global batch's mean loss
        with comm.global_batch(self.network, len(x_batch), first):
            loss, grads = self.network.loss_and_gradient(x_batch[first:stop], t_batch[first:stop], share)
        loss, grads = comm.sum_gradients(float(loss) * share if share else 0.0, grads)
        self.optimizer.update(self.network.params, grads)
        self.train_loss_list.append(loss)
        for callback in self.all_callbacks:
            callback.on_step_end(self)
        return loss

    # -- evaluation and the weights kept --------------------------------------------------

    @contextlib.contextmanager
    def evaluation_weights(self) -> Iterator[None]:
        """Inside the block the network holds the weights to evaluate (e.g. the average)."""
        supplied = self._supplied_weights()
        if supplied is None:
            yield
            return
        with swapped_in(self.network, supplied):
            yield

    def _supplied_weights(self) -> Optional[Dict[str, Array]]:
        """The weights a callback supplies for evaluation (the last such callback's), or None."""
        offered = [callback.evaluation_params(self) for callback in self.callbacks]
        supplied = [weights for weights in offered if weights is not None]
        return supplied[-1] if supplied else None

    def _accuracy(self, x: Array, t: Array) -> float:
        """Accuracy on all of x; with several ranks each classifies its share."""
        if len(x) == 0:
            raise ValueError("Trainer: no images to evaluate")
        first, stop = self.communicator.shard(len(x))
        labels = _array.to_cpu(t[first:stop])
        if labels.ndim != 1:
            labels = labels.argmax(axis=1)
        correct = np.count_nonzero(self.network.classify(x[first:stop]) == labels)
        return float(self.communicator.sum(np.array([correct], dtype=np.float64))[0]) / len(x)

    def _selected_description(self) -> str:
        if self.select == "best-val" and self.best is not None:
            return f"epoch {self.best[0]}, best validation accuracy {self.best[1]:.4f}"
        averaged = "the weight average" if self._supplied_weights() is not None else "the last"
        return f"{averaged} after epoch {self.epoch}"

    def _batch_starts(self) -> List[int]:
        batch_norm = bool(getattr(self.network, "batch_norm_layers", list)())
        return batch_starts(len(self.x_train), self.batch_size, batch_norm)

    def _steps_per_epoch(self) -> int:
        return len(self._batch_starts())

    # -- history and checkpoints -------------------------------------------------------

    def history(self) -> Dict[str, Any]:
        """The per-epoch and per-iteration records.

        Returns
        -------
        dict
            Plain (JSON-ready) Python data: the losses of every step, the accuracies, learning
            rates and times of every epoch, the images they were measured on, the final test.
        """
        n = self.evaluate_sample_num_per_epoch
        evaluated = (
            {"val": len(self.x_val)}
            if self.x_val is not None
            else {
                "train": min(n or len(self.x_train), len(self.x_train)),
                "test": min(n or len(self.x_test), len(self.x_test)) if self.x_test is not None else 0,
            }
        )
        return {
            "epochs_done": self.epoch,
            "train_loss_list": self.train_loss_list,
            "train_acc_list": self.train_acc_list,
            "val_acc_list": self.val_acc_list,
            "test_acc_list": self.test_acc_list,
            "lr_list": self.lr_list,
            "epoch_times": self.epoch_times,
            "images_evaluated_per_epoch": evaluated,
            "final_test": self.final_test,
            "dropout": bool(getattr(self.network, "dropout_layers", list)()),  # in the training loss
        }

    def resume(self, checkpoint_path: Optional[PathLike] = None) -> Trainer:
        """Restore parameters, optimizer, callbacks, RNGs, epoch and history from a checkpoint
        (read by rank 0 and broadcast to the others).

        Parameters
        ----------
        checkpoint_path : str or os.PathLike, optional
            The checkpoint; default the trainer's ``checkpoint_path``.

        Returns
        -------
        Trainer
            This trainer.
        """
        path = os.fspath(cast(PathLike, checkpoint_path or self.checkpoint_path))  # TypeError if neither
        state = self.communicator.broadcast_object(checkpoint.load(path) if self.communicator.is_root else None)
        checkpoint.apply_state(self, cast(Dict[str, Any], state), path)
        return self

    def _check_ranks_agree(self, resume: bool) -> None:
        """Settings that change the sequence of collective calls must be the same on every
        rank: with another number of epochs or another resume, the ranks would wait for each
        other forever, or exchange mismatched messages."""
        differences = self.communicator.differences(
            {
                "epochs": self.epochs,
                "resume": bool(resume),
                "checkpoint_path": bool(self.checkpoint_path),
                "evaluate_sample_num_per_epoch": self.evaluate_sample_num_per_epoch,
                "test images": None if self.x_test is None else len(self.x_test),
                "validation images": len(self.x_val) if self.x_val is not None else None,
                "training images": len(self.x_train),
                "batch size": self.batch_size,
                "select": self.select,
                "callbacks": [callback.callback_name for callback in self.callbacks],
                "batch_transform": type(self.batch_transform).__name__ if self.batch_transform is not None else None,
            }
        )
        if differences:
            raise ValueError(f"Trainer: the ranks were given different settings ({differences})")

    def _resume_if_possible(self) -> bool:
        """Resume if the checkpoint exists (rank 0 looks, and tells the others); True if so."""
        if not self.checkpoint_path:
            raise ValueError("resume=True needs a checkpoint_path")
        comm = self.communicator
        exists = comm.broadcast_object(os.path.exists(self.checkpoint_path) if comm.is_root else None)
        if exists:
            self.resume()
        if self.verbose and comm.is_root:
            print(
                f"resumed from {self.checkpoint_path} after epoch {self.epoch}"
                if exists
                else f"no checkpoint at {self.checkpoint_path} yet: starting from epoch 1"
            )
        return bool(exists)
