"""The trainer's evaluation as callbacks: the per-epoch measurements, the weights kept
(select="best-val": the epoch with the best validation accuracy), the one evaluation of
the test set, and the epoch's wall-clock time.  They run before the callbacks a trainer is
given, so those see this epoch's measurements."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional, cast

from .callbacks import Callback, TrainerView, load_snapshot, snapshot

if TYPE_CHECKING:
    from ..functional import Array

__all__ = ["EpochTimer", "Evaluation"]


class EpochTimer(Callback):
    """Records each epoch's wall-clock seconds (training and evaluation) in ``trainer.epoch_times``."""

    name = "epoch_timer"

    def __init__(self) -> None:
        self.start: Optional[float] = None

    def on_epoch_begin(self, trainer: TrainerView) -> None:
        self.start = time.perf_counter()

    def on_epoch_end(self, trainer: TrainerView) -> None:
        start = cast(float, self.start)  # set by on_epoch_begin
        trainer.epoch_times.append(time.perf_counter() - start)


class Evaluation(Callback):
    """Per epoch: with validation data the accuracy on all of it (and, with
    select="best-val", the best epoch's weights in ``trainer.best``); without, the book's
    train and test accuracy on the first ``evaluate_sample_num_per_epoch`` images.  When
    training ends: the selected weights into the network, then the test set's accuracy
    (``trainer.final_test``)."""

    name = "evaluation"

    def on_epoch_end(self, trainer: TrainerView) -> None:
        accuracy = trainer._accuracy
        with trainer.evaluation_weights():
            if trainer.x_val is not None:  # validating
                val_acc = accuracy(trainer.x_val, cast("Array", trainer.t_val))
                trainer.val_acc_list.append(val_acc)
                if trainer.select == "best-val" and (trainer.best is None or val_acc > trainer.best[1]):
                    trainer.best = (trainer.epoch, val_acc, snapshot(trainer.network))
            else:
                n = trainer.evaluate_sample_num_per_epoch  # None: every sample
                trainer.train_acc_list.append(accuracy(trainer.x_train[:n], trainer.t_train[:n]))
                if trainer.x_test is not None:
                    trainer.test_acc_list.append(accuracy(trainer.x_test[:n], cast("Array", trainer.t_test)[:n]))

    def on_train_end(self, trainer: TrainerView) -> None:
        if trainer.select == "best-val" and trainer.best is not None:
            load_snapshot(trainer.network, trainer.best[2])
        else:
            supplied = trainer._supplied_weights()
            if supplied is not None:
                load_snapshot(trainer.network, supplied)
        if trainer.x_test is not None:
            trainer.final_test = {
                "accuracy": trainer._accuracy(trainer.x_test, cast("Array", trainer.t_test)),
                "images": len(trainer.x_test),
            }
