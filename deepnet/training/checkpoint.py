"""A trainer's checkpoints: what they hold, and the checks a resumed run makes of them.

A checkpoint is an ``.npz`` file (``deepnet.io.read_params`` reads it) with the entries

- ``param/<name>``: the network's parameters and buffers (``param/buffers/<name>``);
- ``optimizer/<name>``: the optimizer's state (``optimizer/iter``, moments per parameter);
- ``callbacks/<callback name>/<key>``: each callback's ``state_dict()``, keyed by the
  callback's name, so the order the callbacks are given in does not matter;
- ``batch_transform/<key>``: the batch transform's state, where it has one;
- ``best/<name>`` and ``best_epoch_and_accuracy``: the weights kept by select="best-val";
- ``trainer_rng``, ``network_rng``, ``history``, ``config`` (JSON) and ``epoch``.

``config`` holds the settings a resumed run must share; a resume with other settings is
refused, naming each setting that differs.  Checkpoints of deepnet before version 2 of
this layout kept callback state by position (``hook0/...``); they are refused, with a
message that says so.
"""

from __future__ import annotations

import json
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Dict, Mapping, NoReturn, Optional, Tuple

import numpy as np

from .. import _array, io
from .._dtypes import compute_dtype, is_bfloat16
from .._errors import Parts, SettingError, template
from .callbacks import PathLike, TrainerView, entries, snapshot
from .optimizers import Optimizer

if TYPE_CHECKING:
    from ..models import Sequential

__all__ = ["save", "load", "state", "apply_state", "config", "CHECKPOINT_TEXT", "FORMAT"]

CHECKPOINT_TEXT = ("config", "history", "trainer_rng", "network_rng")  # JSON entries of a checkpoint
FORMAT = 2  # config["format"]: 2 keys callback state by name
HISTORY_LISTS = ("train_loss_list", "train_acc_list", "val_acc_list", "test_acc_list", "lr_list", "epoch_times")
# The settings' names of the optimizer settings in config() (templates of deepnet._errors).
_OPTIMIZER_SETTING_NAMES = {"lr": "{lr}", "weight_decay": "{weight_decay}"}
_OLD_KEY = re.compile(r"hook\d+/")


def save(trainer: TrainerView, path: PathLike) -> None:
    """Write ``trainer``'s state to ``path`` (atomically).

    Parameters
    ----------
    trainer : Trainer
        The trainer to save.
    path : str or os.PathLike
        The checkpoint file (``.npz``).
    """
    with io.atomic_write(path) as f:
        np.savez(f, **state(trainer))


def _storable(value: Any) -> Any:
    """bfloat16 widened to float32 (exact: .npz has no bfloat16; loading rounds it back to the
    same bits), any other array as it is."""
    return value.astype(np.float32) if is_bfloat16(value.dtype) else value


def load(path: PathLike) -> Dict[str, Any]:
    """A checkpoint's entries, as ``apply_state`` takes them.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    dict
        Entry name -> array (the JSON entries as text).
    """
    return io.read_params(path, text=CHECKPOINT_TEXT)


def state(trainer: TrainerView) -> Dict[str, Any]:
    """Everything a resumed run needs, as the arrays of a checkpoint.

    Parameters
    ----------
    trainer : Trainer
        The trainer whose state is taken.

    Returns
    -------
    dict
        Entry name -> array or JSON text (the module docstring lists the entries).
    """
    arrays: Dict[str, Any] = {
        f"param/{name}": _storable(_array.to_cpu(value))
        for name, value in snapshot(trainer.network, copy=False).items()
    }
    arrays.update({f"optimizer/{name}": value for name, value in trainer.optimizer.state_dict().items()})
    for callback in trainer.callbacks:
        arrays.update(
            {f"callbacks/{callback.callback_name}/{name}": value for name, value in callback.state_dict().items()}
        )
    transform: Any = trainer.batch_transform  # a callable, with a state where it has one
    if hasattr(transform, "state_dict"):
        arrays.update({f"batch_transform/{name}": value for name, value in transform.state_dict().items()})
    if trainer.best is not None:
        arrays.update({f"best/{name}": value for name, value in trainer.best[2].items()})
        arrays["best_epoch_and_accuracy"] = np.array([trainer.best[0], trainer.best[1]])
    arrays["trainer_rng"] = json.dumps(trainer.rng.bit_generator.state)
    arrays["network_rng"] = json.dumps(trainer.network.random_state())
    arrays["epoch"] = trainer.epoch
    arrays["history"] = json.dumps(trainer.history())
    arrays["config"] = json.dumps(config(trainer))
    return arrays


def config(trainer: TrainerView) -> Dict[str, Any]:
    """Settings that must match for a resumed run to continue the same run.

    Parameters
    ----------
    trainer : Trainer
        The trainer whose settings are taken.

    Returns
    -------
    dict
        JSON data: the format, optimizer, batch size, data sizes, model, callbacks' and
        batch transform's specs.
    """
    transform: Any = trainer.batch_transform
    return {
        "format": FORMAT,
        "optimizer": type(trainer.optimizer).__name__,
        "optimizer_settings": trainer._optimizer_settings,
        "mini_batch_size": trainer.batch_size,
        "train_size": len(trainer.x_train),
        "val_size": len(trainer.x_val) if trainer.x_val is not None else 0,
        "validation": trainer._validation_digest,
        "select": trainer.select,
        "dtype": str(trainer.network.dtype),
        "model": _model_spec_or_none(trainer.network),
        "callbacks": {
            callback.callback_name: callback.spec() for callback in trainer.callbacks if callback.spec() is not None
        },
        "batch_transform": transform.spec() if hasattr(transform, "spec") else None,
    }


def apply_state(trainer: TrainerView, state: Mapping[str, Any], path: str) -> None:
    """Restore ``trainer`` from a checkpoint's entries, after checking each.

    Parameters
    ----------
    trainer : Trainer
        The trainer to restore, built with the checkpoint's settings.
    state : mapping
        The checkpoint's entries (``load``'s or ``state``'s).
    path : str
        Where they came from, for the error messages (ValueError naming the entry).
    """
    if "config" not in state:
        raise ValueError(f"{path} is not a deepnet training checkpoint")
    try:
        saved = json.loads(str(state["config"]))
        if (isinstance(saved, dict) and "hooks" in saved) or any(_OLD_KEY.match(name) for name in state):
            raise ValueError(
                f"{path} was written by an older deepnet (callback state kept by position, "
                "'hook0/...'): it cannot be resumed; start a new run"
            )
        _check_config(trainer, saved, path)
        check = EntryCheck(path)
        targets = snapshot(trainer.network, copy=False)
        params = entries(state, "param/")
        for name, value in params.items():
            check.finite_float(f"param/{name}", value)
            if "running_var" in name:
                check.non_negative(f"param/{name}", value)
        trainer.network.set_params(params, source=path)
        optimizer_state = entries(state, "optimizer/")
        _check_optimizer_state(trainer, check, optimizer_state)
        try:
            trainer.optimizer.load_state_dict(optimizer_state, prefix="optimizer/")
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        known = {callback.callback_name for callback in trainer.callbacks}
        unknown = sorted({name.split("/")[1] for name in state if name.startswith("callbacks/")} - known)
        if unknown:
            check.fail(f"callbacks/{unknown[0]}", "is the state of a callback this run does not have")
        for callback in trainer.callbacks:
            prefix = f"callbacks/{callback.callback_name}/"
            callback_state = entries(state, prefix)
            for name, value in callback_state.items():
                if name.startswith("average/"):
                    check.like(prefix + name, value, targets.get(name[len("average/") :]))
                    if "running_var" in name:
                        check.non_negative(prefix + name, value)
                elif np.ndim(value) == 0:
                    check.count(prefix + name, value)
            callback.load_state_dict(callback_state)
        transform: Any = trainer.batch_transform
        if hasattr(transform, "load_state_dict"):
            transform.load_state_dict(entries(state, "batch_transform/"))
        epoch = check.count("epoch", state["epoch"], upper=trainer.epochs)
        steps = trainer._steps_per_epoch()
        if trainer.optimizer.iter != epoch * steps:
            raise ValueError(
                f"{path}: 'optimizer/iter' is {trainer.optimizer.iter}, expected {epoch * steps} "
                f"after {epoch} epochs of {steps} steps"
            )
        best = entries(state, "best/")
        if best:
            for name, value in best.items():
                check.like(f"best/{name}", value, targets.get(name))
                if "running_var" in name:
                    check.non_negative(f"best/{name}", value)
            best_epoch, accuracy = check.pair("best_epoch_and_accuracy", state["best_epoch_and_accuracy"])
            if not (1 <= best_epoch <= epoch and best_epoch == int(best_epoch) and 0 <= accuracy <= 1):
                raise ValueError(
                    f"{path}: 'best_epoch_and_accuracy' must be an epoch in [1, {epoch}] and an "
                    f"accuracy in [0, 1], got {best_epoch!r}, {accuracy!r}"
                )
            trainer.best = (int(best_epoch), float(accuracy), best)
        check.random_state(
            "trainer_rng", lambda value: setattr(trainer.rng.bit_generator, "state", value), state["trainer_rng"]
        )
        check.random_state("network_rng", trainer.network.set_random_state, state["network_rng"])
        history = check.history(state["history"], epoch, trainer.optimizer.iter)
        trainer.epoch = epoch
        for key in HISTORY_LISTS:
            setattr(trainer, key, list(history[key]))
    except (KeyError, TypeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: damaged training checkpoint ({type(exc).__name__}: {exc})") from None


def _check_optimizer_state(trainer: TrainerView, check: EntryCheck, state: Mapping[str, Any]) -> None:
    """Each optimizer state array belongs to a parameter and has its shape and state dtype."""
    for entry, value in state.items():
        name, _, key = entry.partition("/")
        if key:
            param = trainer.network.params.get(key)
            if param is None:
                raise ValueError(f"{check.path}: 'optimizer/{entry}' is for no parameter of this network")
            check.like(f"optimizer/{entry}", value, param, dtype=compute_dtype(param.dtype))


def _check_config(trainer: TrainerView, saved: Dict[str, Any], path: str) -> None:
    current = json.loads(json.dumps(config(trainer)))  # the same JSON types as the saved one
    differences = _setting_differences(saved, current)
    if differences:
        parts: Parts = [f"checkpoint {path} was made with other settings ("]
        for index, (name, (was, now)) in enumerate(differences.items()):
            parts += (["; "] if index else []) + template(name) + [f": saved {_brief(was)}, now {_brief(now)}"]
        raise SettingError(*parts, template("): resume with the same settings, or start a new run{overwrite|}"))


def optimizer_settings(optimizer: Optimizer) -> Dict[str, Any]:
    return {
        key: value
        for key, value in vars(optimizer).items()
        if not key.startswith("_") and key != "iter" and isinstance(value, (int, float, str, bool))
    }


def _model_spec_or_none(network: Sequential) -> Optional[Dict[str, Any]]:
    try:
        return network.spec()
    except (AttributeError, ValueError):
        return None


def _named_settings(config: Mapping[str, Any], validating: bool) -> Dict[str, Any]:
    """A checkpoint's config as {a setting's name: value}, one entry per setting, so a
    refused resume names exactly the ones that differ.  A name is a template of
    deepnet._errors: ``{lr}`` is the setting lr (which a command line shows as its flag)."""
    named: Dict[str, Any] = {}
    for key, value in config.items():
        if key == "optimizer":
            named["{optimizer}"] = value
        elif key == "optimizer_settings":
            for setting, number in value.items():
                named[_OPTIMIZER_SETTING_NAMES.get(setting, f"optimizer setting {setting}")] = number
        elif key == "mini_batch_size":
            named["{batch_size}"] = value
        elif key == "train_size":
            name = "training images ({train_size} less {val_size})" if validating else "{train_size}"
            named[name] = value
        elif key == "validation":
            named["validation images (drawn with {seed})"] = value
        elif key == "callbacks":
            for name, spec in value.items():
                named.update(_named_hook_settings(spec, name))
        elif key == "batch_transform":
            if value is not None:
                named.update(_named_hook_settings(value))
        elif key == "format":
            continue
        else:
            named[
                {"val_size": "{val_size}", "select": "{select}", "dtype": "{dtype}", "model": "{model}"}.get(key, key)
            ] = value
    named.setdefault("{augment}", "none")
    named.setdefault("{ema}", "none")
    return named


def _named_hook_settings(spec: Any, name: str = "batch_transform") -> Dict[str, Any]:
    if isinstance(spec, str):
        return {"{augment}": spec}
    if isinstance(spec, dict) and "weight_average" in spec:
        return {"{ema}": spec["weight_average"]}
    if isinstance(spec, dict) and "name" in spec:  # a learning-rate schedule
        settings = {k: v for k, v in spec.items() if k not in ("name", "lr", "steps_per_epoch", "warmup", "epochs")}
        named = {
            "{lr_schedule}": spec["name"]
            + "".join((":" if i == 0 else ",") + f"{k}={v:g}" for i, (k, v) in enumerate(sorted(settings.items()))),
            "{warmup}": spec.get("warmup"),
            "steps per epoch (training images / {batch_size})": spec.get("steps_per_epoch"),
        }
        if "epochs" in spec:
            named["{epochs} (the length of the " + spec["name"] + " schedule)"] = spec["epochs"]
        return named
    return {f"the settings of {name}": spec}


def _setting_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """{name: (saved, current)} for the settings that differ, leaving out those that only
    follow from another difference (steps per epoch from the training set, say)."""
    validating = bool(saved.get("val_size") or current.get("val_size"))
    was, now = _named_settings(saved, validating), _named_settings(current, validating)
    differences = {
        name: (was.get(name, "none"), now.get(name, "none"))
        for name in {**was, **now}
        if was.get(name, "none") != now.get(name, "none")
    }
    train = {name for name in differences if name.startswith("training images") or name == "{train_size}"}
    if train or "{batch_size}" in differences:
        differences.pop("steps per epoch (training images / {batch_size})", None)
    if train or "{val_size}" in differences:
        differences.pop("validation images (drawn with {seed})", None)
    if "{lr_schedule}" in differences:  # a schedule's length is known to only some schedules
        for name in [name for name in differences if name.startswith("{epochs} (the length")]:
            differences.pop(name)
    if "{val_size}" in differences and len(train) == 1:
        (name,) = train
        if differences[name][0] + differences["{val_size}"][0] == differences[name][1] + differences["{val_size}"][1]:
            differences.pop(name)  # the same images, split otherwise
    return differences


def _brief(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


class EntryCheck:
    """Checks of a checkpoint's entries; each failure is a ValueError naming the file and the entry."""

    def __init__(self, path: str) -> None:
        self.path = path

    def fail(self, entry: str, what: str) -> NoReturn:
        raise ValueError(f"{self.path}: {entry!r} {what}")

    def finite_float(self, entry: str, value: Any) -> None:
        value = np.asarray(value)
        if value.dtype.kind != "f":
            self.fail(entry, f"must be a floating-point array, got {value.dtype}")
        if not np.isfinite(value).all():
            self.fail(entry, "holds NaN or infinite values (a diverged run?)")

    def non_negative(self, entry: str, value: Any) -> None:
        if np.asarray(value).size and np.asarray(value).min() < 0:
            self.fail(entry, f"(a variance) must be >= 0, got a minimum of {float(np.asarray(value).min())!r}")

    def like(self, entry: str, value: Any, target: Any, dtype: Any = None) -> None:
        """A finite float array with ``target``'s shape (and ``dtype``, default target's)."""
        if target is None:
            self.fail(entry, "is for no parameter or buffer of this network")
        value = np.asarray(value)
        self.finite_float(entry, value)
        if value.shape != tuple(target.shape):
            self.fail(entry, f"has shape {value.shape}, the parameter has {tuple(target.shape)}")
        if value.dtype != np.dtype(dtype or target.dtype):
            self.fail(entry, f"has dtype {value.dtype}, expected {np.dtype(dtype or target.dtype)}")

    def count(self, entry: str, value: Any, upper: Optional[int] = None) -> int:
        """An integer (0-d integer array) in [0, upper]."""
        value = np.asarray(value)
        number = value.item() if value.shape == () else None
        bounds = f"[0, {upper}]" if upper is not None else ">= 0"
        if value.dtype.kind not in "iu" or number is None:
            self.fail(entry, f"must be an integer in {bounds}, got {_value_text(value)}")
        if upper is not None and number > upper:
            raise SettingError(
                f"{self.path}: {entry!r} must be an integer in {bounds}, got {number}",
                template(" (more epochs than this run's {epochs})"),
            )
        if number < 0:
            self.fail(entry, f"must be an integer in {bounds}, got {number}")
        return int(number)

    def pair(self, entry: str, value: Any) -> Tuple[float, float]:
        value = np.asarray(value)
        if value.shape != (2,) or value.dtype.kind not in "fiu" or not np.isfinite(value).all():
            self.fail(entry, f"must be two finite numbers, got {_value_text(value)}")
        return float(value[0]), float(value[1])

    def random_state(self, entry: str, apply: Callable[[Any], Any], text: Any) -> None:
        try:
            value = json.loads(str(text))
            for state in value if isinstance(value, list) else [value]:
                if not isinstance(state, dict):
                    raise TypeError(f"expected a generator state (a JSON object), got {_brief(state)}")
                if state.get("has_uint32", 0) not in (0, 1) or not 0 <= state.get("uinteger", 0) < 2**32:
                    raise ValueError(
                        f"has_uint32 {state.get('has_uint32')!r} / uinteger {state.get('uinteger')!r} out of range"
                    )
            apply(value)
        except (TypeError, ValueError, KeyError, OverflowError, AttributeError) as exc:
            self.fail(entry, f"is not a valid random generator state ({type(exc).__name__}: {exc})")

    def history(self, text: Any, epochs: int, steps: int) -> Dict[str, Any]:
        """The history's per-epoch lists (``epochs`` entries each, or none for the accuracies
        not measured) and per-step losses (``steps``), as lists of numbers."""
        try:
            history = json.loads(str(text))
        except json.JSONDecodeError as exc:
            self.fail("history", f"is not JSON ({exc})")
        if not isinstance(history, dict):
            self.fail("history", f"must be a JSON object, got {type(history).__name__}")
        for key in HISTORY_LISTS:
            values = history.get(key)
            if not isinstance(values, list) or not all(_is_number(v) for v in values):
                self.fail("history", f"must hold a list of numbers {key!r}, got {_brief(values)}")
            expected = steps if key == "train_loss_list" else epochs
            optional = key in ("train_acc_list", "val_acc_list", "test_acc_list")
            if len(values) != expected and not (optional and not values):
                self.fail("history", f"{key!r} has {len(values)} entries, expected {expected}")
            if key.endswith("acc_list") and not all(0 <= v <= 1 for v in values):
                self.fail("history", f"{key!r} holds an accuracy outside [0, 1]")
            if key in ("lr_list", "epoch_times") and not all(math.isfinite(v) and v >= 0 for v in values):
                self.fail("history", f"{key!r} must hold finite numbers >= 0")
        return history


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _value_text(value: np.ndarray) -> str:
    return repr(value.item()) if value.shape == () else f"an array of shape {value.shape} ({value.dtype})"
