"""fit: training from Python in one call (as Keras's model.fit): a validation split, a schedule in epochs, augmentation, and the history as a dict."""

from __future__ import annotations
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from ..datasets import stratified_split
from ..functional import Array
from ..models.sequential import Sequential
from .augment import Augment
from .optimizers import Optimizer
from .schedules import parse as parse_schedule
from .trainer import Trainer, batch_starts


def fit(
    model: Sequential,
    x: Array,
    t: Array,
    *,
    epochs: int = 10,
    batch_size: int = 100,
    optimizer: Union[str, Optimizer] = "Adam",
    lr: float = 0.001,
    lr_schedule: Optional[str] = None,
    warmup: float = 0.0,
    validation_split: float = 0.0,
    validation_data: Optional[Tuple[Array, Array]] = None,
    augment: Union[None, str, Augment] = None,
    select: str = "last",
    seed: Optional[int] = None,
    verbose: bool = True,
) -> Dict[str, Any]:
    """Train ``model`` on images ``x`` and labels ``t``; return the history.

    A wrapper of deepnet.trainer.Trainer that works out what it needs: the validation
    split, the schedule's steps per epoch, the augmentation.

    Parameters
    ----------
    model : deepnet.models.Sequential
        The model; its parameters are updated in place.
    x, t : array
        Training images (N, C, H, W) and their labels (N,) or one-hot rows.
    epochs, batch_size : int
        Epochs, and images per optimizer step.
    optimizer : str or Optimizer
        "Adam", "SGD", "Momentum", ... (with learning rate ``lr``) or an Optimizer.
    lr : float
        The learning rate (the schedule's peak).
    lr_schedule : str, optional
        A schedule in epochs, e.g. "cosine", "step:every=5,gamma=0.5", "one-cycle"
        (deepnet.training.schedules); ``warmup`` epochs of linear warm-up before it.
    validation_split : float
        The share of ``x`` held out for validation (stratified by label, drawn with
        ``seed``), measured after every epoch.  Ignored when ``validation_data`` is given.
    validation_data : (x_val, t_val), optional
        Validation images and labels of their own.
    augment : str or Augment, optional
        Augmentation of each training batch: an Augment, or its spec such as
        "rotation=10,scale=0.1,shift=2" (deepnet.training.augment).
    select : {"last", "best-val"}
        Keep the last epoch's weights, or the epoch's with the best validation accuracy.
    seed : int, optional
        Seeds the split, the batches' order and the augmentation.
    verbose : bool
        A progress bar (tqdm.auto: in a notebook too) and a line per epoch.

    Returns
    -------
    dict
        ``loss`` (the mean training loss of each epoch), ``val_accuracy`` (each epoch's,
        with validation), ``lr`` (at the end of each epoch), ``seconds`` (of each epoch),
        and ``trainer``, the full record (Trainer.history()).
    """
    if not 0 <= validation_split < 1:
        raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
    x_val = t_val = None
    if validation_data is not None:
        x_val, t_val = validation_data
    elif validation_split > 0:
        size = int(round(len(x) * validation_split))
        if not 0 < size < len(x):
            raise ValueError(f"fit: validation_split {validation_split} of {len(x)} images holds out {size}")
        train_index, val_index = stratified_split(np.asarray(t), size, seed)
        x, t, x_val, t_val = x[train_index], t[train_index], x[val_index], t[val_index]
    callbacks = []
    if lr_schedule is not None or warmup:
        steps = len(batch_starts(len(x), batch_size, bool(model.batch_norm_layers())))
        callbacks.append(parse_schedule(lr_schedule or "constant", lr, steps, epochs, warmup))
    transform = Augment.from_spec(augment, rng=seed) if isinstance(augment, str) else augment
    trainer = Trainer(
        model,
        x,
        t,
        epochs=epochs,
        mini_batch_size=batch_size,
        optimizer=optimizer,
        optimizer_param={"lr": lr},
        verbose=verbose,
        seed=seed,
        x_val=x_val,
        t_val=t_val,
        select=select,
        batch_transform=transform,
        callbacks=callbacks,
    )
    trainer.train()
    record = trainer.history()
    epochs_done = record["epochs_done"]
    losses = np.asarray(record["train_loss_list"], dtype=np.float64)
    per_epoch = np.array_split(losses, epochs_done) if epochs_done else []
    return {
        "loss": [float(chunk.mean()) for chunk in per_epoch if chunk.size],
        "val_accuracy": list(record["val_acc_list"]),
        "lr": list(record["lr_list"]),
        "seconds": list(record["epoch_times"]),
        "trainer": record,
    }
