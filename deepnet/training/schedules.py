"""Learning-rate schedules: the learning rate as a pure function of the optimizer step.

Each schedule maps step t = 0, 1, 2, ... (the number of updates done so far) to a learning
rate, and is described by a small spec (its name and settings), so a checkpoint stores the
spec and a resumed run computes exactly the same rates.  Settings are in epochs where a
person thinks in epochs; the trainer passes ``steps_per_epoch``.

- ``constant``:    lr
- ``step``:        lr * gamma ** floor(epoch / every)               (every=..., gamma=...)
- ``exponential``: lr * gamma ** epoch, epoch = t / steps_per_epoch (gamma=...; smooth, per step)
- ``cosine``:      from lr down to min_lr along half a cosine over the run (min_lr=...)
- ``one-cycle``:   up from lr/div to lr over the first pct of the run, then cosine down to
                   lr/final_div (Smith & Topin 2017; pct=..., div=..., final_div=...)

``warmup`` (epochs) wraps any of them: over the first ``warmup`` epochs the rate rises
linearly to the schedule's own, from 1/(warmup steps) of it at the first step (Goyal et
al. 2017, for large batches).

    schedule = parse("cosine:min_lr=1e-5", lr=1e-3, steps_per_epoch=600, epochs=20, warmup=1)
    schedule(0), schedule(599)
"""

from __future__ import annotations

import math
from typing import Any, Dict

from .callbacks import Callback, TrainerView

__all__ = ["Schedule", "parse", "NAMES"]

# name -> {setting: default}
NAMES: Dict[str, Dict[str, float]] = {
    "constant": {},
    "step": {"every": 5.0, "gamma": 0.5},
    "exponential": {"gamma": 0.9},
    "cosine": {"min_lr": 0.0},
    "one-cycle": {"pct": 0.25, "div": 25.0, "final_div": 1e4},
}


class Schedule(Callback):
    """A learning-rate schedule; ``schedule(t)`` is the rate for the update after t updates.
    As a trainer callback it sets the optimizer's rate before each step.  (Its ``name`` is
    the schedule's, e.g. "cosine"; as a callback it is "lr_schedule".)

    Parameters
    ----------
    name : str
        One of ``NAMES``: "constant", "step", "exponential", "cosine", "one-cycle".
    lr : float
        The peak (and starting) learning rate, > 0.
    steps_per_epoch : int
        Optimizer steps per epoch, >= 1.
    epochs : float
        The run's length in epochs (cosine and one-cycle span it).
    warmup : float
        Epochs of linear warm-up, >= 0.
    **settings : float
        The schedule's own settings (``NAMES[name]`` lists them with their defaults).
    """

    @property
    def callback_name(self) -> str:
        """The name its checkpoint state is kept under."""
        return "lr_schedule"

    def __init__(
        self, name: str, lr: float, steps_per_epoch: int, epochs: float, warmup: float = 0.0, **settings: float
    ) -> None:
        if name not in NAMES:
            raise ValueError(f"Schedule: unknown schedule {name!r}; expected one of {', '.join(NAMES)}")
        unknown = sorted(set(settings) - set(NAMES[name]))
        if unknown:
            raise ValueError(
                f"Schedule: {name} has no setting {unknown[0]!r}; its settings: {', '.join(NAMES[name]) or 'none'}"
            )
        _check(_finite(lr) and lr > 0, "lr", lr, "a finite number > 0")
        _check(isinstance(steps_per_epoch, int) and steps_per_epoch >= 1, "steps_per_epoch", steps_per_epoch, ">= 1")
        _check(_finite(epochs) and epochs > 0, "epochs", epochs, "a finite number > 0")
        _check(_finite(warmup) and warmup >= 0, "warmup", warmup, "a finite number >= 0")
        self.name, self.lr, self.steps_per_epoch, self.epochs = name, float(lr), steps_per_epoch, float(epochs)
        self.warmup = float(warmup)
        self.settings = {**NAMES[name], **{k: float(v) for k, v in settings.items()}}
        for key, value in self.settings.items():
            _check(_finite(value) and value >= 0, key, value, "a finite number >= 0")
        if name == "step":
            _check(self.settings["every"] > 0, "every", self.settings["every"], "> 0")
        if "gamma" in self.settings:  # a decay: above 1 the rate grows (and 1e308 overflowed at step 2)
            _check(self.settings["gamma"] <= 1, "gamma", self.settings["gamma"], "in [0, 1]")
        if name == "cosine":
            _check(self.settings["min_lr"] <= self.lr, "min_lr", self.settings["min_lr"], f"<= lr ({self.lr:g})")
        if name == "one-cycle":
            _check(0 < self.settings["pct"] < 1, "pct", self.settings["pct"], "in (0, 1)")
            for key in ("div", "final_div"):
                _check(self.settings[key] >= 1, key, self.settings[key], ">= 1")

    def __call__(self, step: int) -> float:
        """The learning rate of the update after ``step`` updates.

        Parameters
        ----------
        step : int
            Updates done so far (0 for the first).

        Returns
        -------
        float
            The learning rate.
        """
        rate = self._rate(step)
        warmup_steps = self.warmup * self.steps_per_epoch
        if step + 1 < warmup_steps:
            rate *= (step + 1) / warmup_steps
        return rate

    def _rate(self, step: int) -> float:
        s, lr = self.settings, self.lr
        epoch = step / self.steps_per_epoch
        progress = min(epoch / self.epochs, 1.0)
        if self.name == "constant":
            return lr
        if self.name == "step":
            # Counted in steps, with a margin for rounding: every=0.1 at 10 steps an epoch is 1 step.
            return lr * s["gamma"] ** math.floor(step / (s["every"] * self.steps_per_epoch) + 1e-9)
        if self.name == "exponential":
            return lr * s["gamma"] ** epoch
        if self.name == "cosine":
            return s["min_lr"] + (lr - s["min_lr"]) * 0.5 * (1 + math.cos(math.pi * progress))
        # one-cycle: a linear rise, then a cosine fall
        low, final = lr / s["div"], lr / s["final_div"]
        if progress < s["pct"]:
            return low + (lr - low) * progress / s["pct"]
        fall = (progress - s["pct"]) / (1 - s["pct"])
        return final + (lr - final) * 0.5 * (1 + math.cos(math.pi * fall))

    def spec(self) -> Dict[str, Any]:
        """The settings that define this schedule (stored in checkpoints).  The run's length
        only where the rates depend on it, so a constant/step/exponential run can be resumed
        for more epochs.

        Returns
        -------
        dict
            JSON data: "name", "lr", "steps_per_epoch", "warmup", the settings (and "epochs").
        """
        spec: Dict[str, Any] = {
            "name": self.name,
            "lr": self.lr,
            "steps_per_epoch": self.steps_per_epoch,
            "warmup": self.warmup,
            **self.settings,
        }
        if self.name in ("cosine", "one-cycle"):
            spec["epochs"] = self.epochs
        return spec

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v:g}" for k, v in self.settings.items())
        warmup = f", warmup {self.warmup:g} epochs" if self.warmup else ""
        return f"{self.name}({settings}){warmup}" if settings else f"{self.name}{warmup}"

    def on_step_begin(self, trainer: TrainerView) -> None:
        trainer.optimizer.lr = self(trainer.optimizer.iter)


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _check(ok: bool, name: str, value: object, what: str) -> None:
    if not ok:
        raise ValueError(f"Schedule: {name} must be {what}, got {value!r}")


def parse(text: str, lr: float, steps_per_epoch: int, epochs: float, warmup: float = 0.0) -> Schedule:
    """A Schedule from ``NAME[:key=value,...]``, e.g. ``"exponential:gamma=0.85"``.

    Parameters
    ----------
    text : str
        The schedule's name and settings.
    lr, steps_per_epoch, epochs, warmup
        As for ``Schedule``.

    Returns
    -------
    Schedule
        The schedule; ValueError for a malformed ``text`` or a setting out of range.
    """
    name, _, rest = text.partition(":")
    settings: Dict[str, float] = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            settings[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"Schedule: expected key=value in {text!r}, got {item!r}") from None
        if not math.isfinite(settings[key.strip()]):
            raise ValueError(f"Schedule: {key.strip()} must be finite, got {value!r}")
    return Schedule(name.strip(), lr, steps_per_epoch, epochs, warmup, **settings)
