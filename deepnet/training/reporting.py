"""The trainer's own callbacks: the progress bar, the printed per-epoch lines, the history
file and the checkpoints.  Each trainer runs them after the callbacks it was given (so a
checkpoint holds their state after the epoch), in this order; they keep no state."""

from __future__ import annotations

import json
from typing import Any, List, Optional, Sized, cast

import numpy as np
from tqdm.auto import tqdm  # a widget in a notebook, text in a terminal

from .. import io
from . import checkpoint
from .callbacks import Callback, TrainerView

__all__ = ["ProgressBar", "EpochReport", "HistoryFile", "Checkpointing", "standard_callbacks"]


def standard_callbacks() -> List[Callback]:
    return [ProgressBar(), EpochReport(), HistoryFile(), Checkpointing()]


def _shows(trainer: TrainerView) -> bool:
    return trainer.verbose and trainer.communicator.is_root


class ProgressBar(Callback):
    """A tqdm bar per epoch counting images, so its rate reads images/s, with the last
    loss; none unless stderr is a terminal (no redraws in a log file)."""

    name = "progress_bar"

    def __init__(self) -> None:
        self.bar: Optional[Any] = None  # a tqdm bar

    def on_epoch_begin(self, trainer: TrainerView) -> None:
        self.close()
        self.bar = tqdm(
            total=len(trainer.x_train),
            desc=f"epoch {trainer.epoch + 1}/{trainer.epochs}",
            unit="img",
            unit_scale=True,
            disable=None if _shows(trainer) else True,
            leave=False,
            dynamic_ncols=True,
        )

    def on_step_end(self, trainer: TrainerView) -> None:
        if self.bar is not None:
            self.bar.update(trainer.step_images)
            self.bar.set_postfix(loss=f"{trainer.train_loss_list[-1]:.4f}", refresh=False)

    def on_epoch_end(self, trainer: TrainerView) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class EpochReport(Callback):
    """Prints each epoch's measurements, and the final test accuracy (with verbose=True, on
    rank 0)."""

    name = "epoch_report"

    def on_epoch_end(self, trainer: TrainerView) -> None:
        if not _shows(trainer):
            return
        seconds = f"{trainer.epoch_times[-1]:.1f} s"
        loss = float(np.mean(trainer.train_loss_list[-trainer._steps_per_epoch() :]))
        if trainer.x_val is not None:  # validating
            print(
                f"epoch {trainer.epoch}/{trainer.epochs}: train loss {loss:.4f}, val acc "
                f"{trainer.val_acc_list[-1]:.4f} (all {len(trainer.x_val)} validation images), "
                f"lr {trainer.optimizer.lr:.3g}, {seconds}"
            )
            return
        n = trainer.evaluate_sample_num_per_epoch
        measured = [f"train acc {trainer.train_acc_list[-1]:.4f} ({_first(n, len(trainer.x_train))} training images)"]
        if trainer.test_acc_list:
            measured.append(
                f"test acc {trainer.test_acc_list[-1]:.4f} ({_first(n, len(cast(Sized, trainer.x_test)))} test images)"
            )
        print(f"epoch {trainer.epoch}/{trainer.epochs}: {', '.join(measured)}, {seconds}")

    def on_train_end(self, trainer: TrainerView) -> None:
        if trainer.final_test is None or not _shows(trainer):
            return
        print("=============== Final Test Accuracy ===============")
        print(
            f"test acc: {trainer.final_test['accuracy']:.4f} on all {len(cast(Sized, trainer.x_test))} test images "
            f"(evaluated once, after training; weights: {trainer._selected_description()})"
        )


class HistoryFile(Callback):
    """Writes ``trainer.history()`` (JSON) to ``trainer.history_path`` after each epoch and
    once training ends (rank 0)."""

    name = "history"

    def on_epoch_end(self, trainer: TrainerView) -> None:
        if trainer.history_path and trainer.communicator.is_root:
            with io.atomic_write(trainer.history_path, "w") as f:
                json.dump(trainer.history(), f, indent=1)

    on_train_end = on_epoch_end


class Checkpointing(Callback):
    """Saves a checkpoint to ``trainer.checkpoint_path`` after each epoch (rank 0)."""

    name = "checkpointing"

    def on_epoch_end(self, trainer: TrainerView) -> None:
        if not trainer.checkpoint_path or not trainer.communicator.is_root:
            return
        checkpoint.save(trainer, trainer.checkpoint_path)
        trainer.checkpoint_epoch = trainer.epoch


def _first(n: Optional[int], total: int) -> str:
    return f"first {n}" if n is not None and n < total else f"all {total}"
