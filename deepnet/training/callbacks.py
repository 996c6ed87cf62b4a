"""The trainer's callbacks: what plugs into the training loop.

A callback is a ``Callback`` with a ``name`` (unique among a trainer's callbacks: its
state is saved in checkpoints under ``callbacks/<name>/``; the class's name by default;
a class whose ``name`` means something else overrides ``callback_name`` instead) and any of these methods, which
the loop calls in the order the callbacks were given:

- ``on_train_begin(trainer)``: once, before the first epoch this run trains;
- ``on_epoch_begin(trainer)``: before each epoch;
- ``on_step_begin(trainer)``: before each optimizer step (a learning-rate schedule);
- ``on_step_end(trainer)``: after each optimizer step (a weight average);
- ``on_epoch_end(trainer)``: after each epoch, once its evaluation is recorded;
- ``on_train_end(trainer)``: once training ends (not when interrupted), after the test
  set's evaluation;
- ``evaluation_params(trainer)``: the weights to evaluate and keep (e.g. the average),
  or None (the default) to leave the network's own;
- ``state_dict()`` / ``load_state_dict(state)``: the callback's own state, as arrays
  (saved in checkpoints, restored on resume);
- ``spec()``: the settings a resumed run must share (JSON data), or None.
"""

from __future__ import annotations

import contextlib
import os
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    TypeVar,
    Union,
)

import numpy as np

from .. import _array
from .._dtypes import compute_dtype

if TYPE_CHECKING:
    from ..distributed import SingleProcess
    from ..functional import Array
    from ..models import Sequential
    from .optimizers import Optimizer

V = TypeVar("V")

__all__ = ["Callback", "TrainerView", "WeightAverage", "check_callbacks"]

# A file path: a str or an os.PathLike such as pathlib.Path.
PathLike = Union[str, "os.PathLike[str]"]
# ``batch_transform(x_batch, rng=generator)``: the transformed batch (e.g. training.augment.Augment).
BatchTransform = Callable[..., Any]


class TrainerView(Protocol):
    """The trainer as its callbacks and checkpoints see it: deepnet.training.Trainer is one.
    (A protocol, so that these modules need not import the trainer, which imports them.)"""

    network: Sequential
    optimizer: Optimizer
    communicator: SingleProcess
    callbacks: List[Callback]
    batch_transform: Optional[BatchTransform]
    rng: np.random.Generator
    x_train: Array
    t_train: Array
    x_val: Optional[Array]
    t_val: Optional[Array]
    x_test: Optional[Array]
    t_test: Optional[Array]
    epoch: int
    epochs: int
    batch_size: int
    evaluate_sample_num_per_epoch: Optional[int]
    verbose: bool
    select: str
    checkpoint_path: Optional[PathLike]
    history_path: Optional[PathLike]
    checkpoint_epoch: Optional[int]
    step_images: int
    train_loss_list: List[float]
    train_acc_list: List[float]
    val_acc_list: List[float]
    test_acc_list: List[float]
    lr_list: List[float]
    epoch_times: List[float]
    best: Optional[Tuple[int, float, Dict[str, Array]]]
    final_test: Optional[Dict[str, Any]]
    _optimizer_settings: Dict[str, Any]
    _validation_digest: Optional[str]

    @property
    def validating(self) -> bool: ...

    def history(self) -> Dict[str, Any]: ...

    def evaluation_weights(self) -> ContextManager[None]: ...

    def _accuracy(self, x: Array, t: Array) -> float: ...

    def _supplied_weights(self) -> Optional[Dict[str, Array]]: ...

    def _selected_description(self) -> str: ...

    def _steps_per_epoch(self) -> int: ...


class Callback:
    """The base class of the trainer's callbacks: every method does nothing."""

    name: Optional[str] = None  # None: the class's name

    @property
    def callback_name(self) -> str:
        """The name its checkpoint state is kept under."""
        return self.name or type(self).__name__

    def on_train_begin(self, trainer: TrainerView) -> None:
        pass

    def on_epoch_begin(self, trainer: TrainerView) -> None:
        pass

    def on_step_begin(self, trainer: TrainerView) -> None:
        pass

    def on_step_end(self, trainer: TrainerView) -> None:
        pass

    def on_epoch_end(self, trainer: TrainerView) -> None:
        pass

    def on_train_end(self, trainer: TrainerView) -> None:
        pass

    def evaluation_params(self, trainer: TrainerView) -> Optional[Dict[str, Array]]:
        return None

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass

    def spec(self) -> Any:
        return None


def check_callbacks(callbacks: Iterable[Callback]) -> List[Callback]:
    """``callbacks`` as a list, refusing anything that is not a Callback and names given twice.

    Parameters
    ----------
    callbacks : iterable of Callback
        A trainer's callbacks.

    Returns
    -------
    list of Callback
        The same callbacks, in the same order.
    """
    callbacks = list(callbacks)
    seen = set()
    for callback in callbacks:
        if not isinstance(callback, Callback):
            raise TypeError(
                f"Trainer: callbacks must be deepnet.training.Callback instances, got {type(callback).__name__}"
            )
        name = callback.callback_name
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"Trainer: a callback's name must be a non-empty string without '/', got {name!r}")
        if name in seen:
            raise ValueError(
                f"Trainer: two callbacks are named {name!r} (their checkpoint state is keyed by "
                "name): give one another name"
            )
        seen.add(name)
    return callbacks


class WeightAverage(Callback):
    """An exponential moving average of the weights (Polyak averaging), as a callback.

    After every step, average = d * average + (1 - d) * weights, with d = min(decay,
    (1 + t) / (10 + t)) so that the early, random weights are soon forgotten.  Buffers
    (BN running statistics) are averaged too.  The trainer evaluates and keeps the
    average instead of the last weights.

    Parameters
    ----------
    decay : float
        The average's decay d, in (0, 1).
    """

    name = "weight_average"

    def __init__(self, decay: float = 0.999) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must be in (0, 1), got {decay!r}")
        self.decay = decay
        self.average: Optional[Dict[str, Array]] = None
        self.steps = 0

    def on_step_end(self, trainer: TrainerView) -> None:
        current = snapshot(trainer.network, copy=False)
        if self.average is None:
            self.average = {
                name: value.astype(compute_dtype(value.dtype), copy=True) for name, value in current.items()
            }
        else:
            self.steps += 1
            d = min(self.decay, (1 + self.steps) / (10 + self.steps))
            for name, value in current.items():
                average = self.average[name]
                if type(average) is not type(value):  # restored on the host, training on the GPU
                    average = self.average[name] = _array.get_array_module(value).asarray(average)
                average *= d
                average += (1 - d) * value.astype(average.dtype, copy=False)

    def evaluation_params(self, trainer: TrainerView) -> Dict[str, Array]:
        return self.average if self.average is not None else snapshot(trainer.network)

    def state_dict(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"steps": np.array(self.steps)}
        if self.average is not None:
            state.update({f"average/{name}": _array.to_cpu(value) for name, value in self.average.items()})
        return state

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])
        average = entries(state, "average/")
        self.average = average or None

    def spec(self) -> Dict[str, float]:
        return {"weight_average": self.decay}


def snapshot(network: Sequential, copy: bool = True) -> Dict[str, Array]:
    """The network's parameters and buffers (``buffers/<name>``), copied by default."""
    arrays = network.named_arrays()
    if copy:
        arrays = {name: value.copy() for name, value in arrays.items()}
    return arrays


def load_snapshot(network: Sequential, arrays: Dict[str, Array]) -> None:
    network.set_params(arrays, source="kept weights")


@contextlib.contextmanager
def swapped_in(network: Sequential, arrays: Dict[str, Array]) -> Iterator[None]:
    saved = snapshot(network)
    load_snapshot(network, arrays)
    try:
        yield
    finally:
        load_snapshot(network, saved)


def entries(state: Mapping[str, V], prefix: str) -> Dict[str, V]:
    """The entries of ``state`` named ``prefix...``, with the prefix removed."""
    return {name[len(prefix) :]: value for name, value in state.items() if name.startswith(prefix)}
