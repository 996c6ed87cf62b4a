"""Gradient-descent optimizers with the update rules of the book's ``common/optimizer.py``.

Every optimizer updates ``params`` (a dict name -> array) in place, so layers that hold
the same array objects see the new values without any copying back. (``param -= x`` on
an ndarray is an in-place ufunc; ``param[...] -= x`` would add a needless self-copy.)

Works unchanged with NumPy and CuPy arrays: the array module is taken from each
parameter, and only array methods / operators are used.

Dtypes: optimizer state (velocity, squared-gradient sums, Adam moments) has the
parameter's dtype, except for float16 parameters, whose state is kept in float32
because float16 state underflows (g*g is already 0 in float16 for ``|g|`` below ~1.7e-4).
The update is computed in float32, on a float32 copy of a float16 parameter, and rounded
back into it.  bfloat16 parameters (8 significant bits: an update below 1/256 of the weight
would round away) are the rounded copies of float32 master weights, which the optimizer
keeps (state ``master``, saved with the rest) and updates; while a parameter still holds
its master's rounding the master goes on, else (weights loaded or swapped in since) it
starts again from the parameter.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Mapping, Tuple, Type, Union

import numpy as np

from deepnet import functional as F
from deepnet._array import get_array_module as _array_module  # cupy only where it is in use
from deepnet._array import to_cpu
from deepnet._dtypes import compute_dtype, is_bfloat16
from deepnet.functional import Array

__all__ = [
    "Optimizer",
    "SGD",
    "Momentum",
    "Nesterov",
    "AdaGrad",
    "RMSprop",
    "Adam",
    "get_optimizer",
]

MASTER = "master"  # the state_dict name of bfloat16 parameters' float32 master weights

# The book's small constant that keeps the AdaGrad/RMSprop/Adam divisions finite.
_EPS = 1e-7


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _to_numpy(a: Array) -> np.ndarray:
    """A NumPy copy of a NumPy or CuPy array (a snapshot: later updates do not change it)."""
    return np.array(to_cpu(a), copy=True)


class Optimizer:
    """Base class: counts update steps and owns the per-parameter state arrays.

    Subclasses list their state in ``state_names`` (e.g. ``("m", "v")``) and implement
    ``_update_one(key, param, grad)``.

    ``weight_decay``: L2 regularisation as the book's ``weight_decay_lambda`` (the loss
    gains weight_decay/2 * ||W||^2), i.e. weight_decay * W is added to the gradient of
    every weight array (ndim > 1: conv and affine weights, not biases or BN's gamma/beta).

    Parameters
    ----------
    lr : float
        The learning rate, a finite number > 0.
    weight_decay : float
        The L2 coefficient, a finite number >= 0.
    """

    state_names: Tuple[str, ...] = ()
    nonnegative_state: Tuple[str, ...] = ()  # state that can only be >= 0 (sums of squared gradients)

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        if not (_is_real(lr) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"{type(self).__name__}: lr must be a finite number > 0, got {lr!r}")
        if not (_is_real(weight_decay) and math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"{type(self).__name__}: weight_decay must be a finite number >= 0, got {weight_decay!r}")
        self.lr = lr
        self.weight_decay = weight_decay
        self.iter = 0
        self._state: Dict[str, Dict[str, Array]] = {name: {} for name in self.state_names}
        self._masters: Dict[str, Array] = {}  # float32 master weights of bfloat16 parameters

    def update(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        """Apply one step (in place) to each parameter that has a gradient in ``grads``:
        parameters without one (frozen layers) are left alone.

        Parameters
        ----------
        params : mapping of str to array
            The parameters, updated in place.
        grads : mapping of str to array
            The gradients, by the parameters' names.
        """
        self.iter += 1
        for key, grad in grads.items():
            param = params[key]
            grad = F.cast(grad, compute_dtype(param.dtype))
            if param.dtype == np.float16:
                # Updated as a float32 copy and rounded back, with the backend's casts: the
                # same bits as numpy's mixed float16/float32 in-place arithmetic, which ran
                # scalar half conversions (Adam on DeepConvNet: 3.5 ms a step, float32 1.5).
                wide = F.cast(param, np.float32)
                self._update_param(key, wide, grad)
                param[...] = F.cast(wide, np.float16)
            elif is_bfloat16(param.dtype):
                master = self._master(key, param)
                self._update_param(key, master, grad)
                param[...] = F.cast(master, param.dtype)
            else:
                self._update_param(key, param, grad)

    def _master(self, key: str, param: Array) -> Array:
        """The float32 master weights of bfloat16 ``param``: kept while param is their
        rounding, else (param set from elsewhere since) a fresh float32 copy of param."""
        master = self._masters.get(key)
        if master is not None:
            master = _array_module(param).asarray(master)
            if master.shape != param.shape or not bool((F.cast(master, param.dtype) == param).all()):
                master = None
        if master is None:
            master = F.cast(param, np.float32).copy()
        self._masters[key] = master
        return master

    def _update_param(self, key: str, param: Array, grad: Array) -> None:
        if self.weight_decay and param.ndim > 1:
            grad = grad + self.weight_decay * param.astype(grad.dtype, copy=False)
        self._update_one(key, param, grad)

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        raise NotImplementedError

    def _slot(self, name: str, key: str, param: Array) -> Array:
        """State array ``name`` for parameter ``key``: zeros on first use, on param's device."""
        xp = _array_module(param)
        state = self._state[name].get(key)
        if state is None:
            state = xp.zeros(param.shape, dtype=compute_dtype(param.dtype))
        elif _array_module(state) is not xp:
            # Loaded from a checkpoint as NumPy; move it to where the parameter lives.
            state = xp.asarray(state)
        self._state[name][key] = state
        return state

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to resume bit-exactly.

        Returns
        -------
        dict
            ``{"iter": int, "<state>/<param>": ndarray}``, with ``master/<param>`` for the
            master weights of bfloat16 parameters; the arrays are NumPy copies (CuPy state is
            copied to the host).
        """
        state: Dict[str, Any] = {"iter": int(self.iter)}
        for name, arrays in self._state.items():
            for key, array in arrays.items():
                state[f"{name}/{key}"] = _to_numpy(array)
        for key, array in self._masters.items():
            state[f"{MASTER}/{key}"] = _to_numpy(array)
        return state

    def load_state_dict(self, state: Mapping[str, Any], prefix: str = "") -> None:
        """Restore what ``state_dict`` returned (also accepts it after a save/load to .npz).

        Every entry is checked first (ValueError naming it as ``prefix + entry``, e.g.
        ``'optimizer/v/W1'``): ``iter`` an integer >= 0, each state array floating-point
        and finite, and the states that are sums of squares (``nonnegative_state``) >= 0.

        Parameters
        ----------
        state : mapping of str to array
            What ``state_dict`` returned.
        prefix : str
            Put before each entry's name in error messages.
        """
        where = f"{type(self).__name__} state"
        if "iter" not in state:
            raise ValueError(f"{where} has no {prefix + 'iter'!r} entry")
        loaded: Dict[str, Dict[str, Array]] = {name: {} for name in self.state_names + (MASTER,)}
        for entry, array in state.items():
            if entry == "iter":
                continue
            name, sep, key = entry.partition("/")
            if not sep or name not in loaded:
                raise ValueError(
                    f"unexpected entry {prefix + entry!r} in {where}; expected 'iter' or '<state>/<param>' "
                    f"with <state> in {self.state_names + (MASTER,)}"
                )
            array = np.array(array, copy=True)
            _check_state_array(where, prefix + entry, array, nonnegative=name in self.nonnegative_state)
            loaded[name][key] = array
        self.iter = _check_count(where, prefix + "iter", state["iter"])
        self._masters = loaded.pop(MASTER)
        self._state = loaded

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """p -= lr * g

    Parameters
    ----------
    lr : float
        The learning rate.
    weight_decay : float
        L2 regularisation (see ``Optimizer``).
    """

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        param -= self.lr * grad


class Momentum(Optimizer):
    """v = momentum*v - lr*g;  p += v

    Parameters
    ----------
    lr : float
        The learning rate.
    momentum : float
        The velocity's decay.
    weight_decay : float
        L2 regularisation (see ``Optimizer``).
    """

    state_names = ("v",)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.momentum = momentum

    def _velocity(self, key: str, param: Array, grad: Array) -> Array:
        """v = momentum*v - lr*g, in place."""
        v = self._slot("v", key, param)
        v *= self.momentum
        v -= self.lr * grad
        return v

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        param += self._velocity(key, param, grad)


class Nesterov(Momentum):
    """The book's NAG form: v = momentum*v - lr*g;  p += momentum^2*v - (1+momentum)*lr*g

    Parameters
    ----------
    lr : float
        The learning rate.
    momentum : float
        The velocity's decay.
    weight_decay : float
        L2 regularisation (see ``Optimizer``).
    """

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        param += self.momentum * self.momentum * self._velocity(key, param, grad)
        param -= (1 + self.momentum) * self.lr * grad


class AdaGrad(Optimizer):
    """h += g*g;  p -= lr*g / (sqrt(h) + 1e-7)

    Parameters
    ----------
    lr : float
        The learning rate.
    weight_decay : float
        L2 regularisation (see ``Optimizer``).
    """

    state_names = ("h",)
    nonnegative_state = ("h",)

    def __init__(self, lr: float = 0.01, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        xp = _array_module(param)
        h = self._slot("h", key, param)
        h += grad * grad
        param -= self.lr * grad / (xp.sqrt(h) + _EPS)


class RMSprop(Optimizer):
    """h = decay*h + (1-decay)*g*g;  p -= lr*g / (sqrt(h) + 1e-7)

    Parameters
    ----------
    lr : float
        The learning rate.
    decay_rate : float
        The squared gradients' average's decay.
    weight_decay : float
        L2 regularisation (see ``Optimizer``).
    """

    state_names = ("h",)
    nonnegative_state = ("h",)

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.decay_rate = decay_rate

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        xp = _array_module(param)
        h = self._slot("h", key, param)
        h *= self.decay_rate
        h += (1 - self.decay_rate) * grad * grad
        param -= self.lr * grad / (xp.sqrt(h) + _EPS)


class Adam(Optimizer):
    """Bias correction folded into the step size, as in the book:

    lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)
    m += (1-beta1)*(g - m);  v += (1-beta2)*(g^2 - v);  p -= lr_t*m / (sqrt(v) + 1e-7)

    Parameters
    ----------
    lr : float
        The learning rate.
    beta1, beta2 : float
        The decays of the gradients' and the squared gradients' averages.
    weight_decay : float
        L2 regularisation (see ``Optimizer``).
    """

    state_names = ("m", "v")
    nonnegative_state = ("v",)

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999, weight_decay: float = 0.0) -> None:
        super().__init__(lr, weight_decay)
        self.beta1 = beta1
        self.beta2 = beta2

    def _update_one(self, key: str, param: Array, grad: Array) -> None:
        # A Python float (math.sqrt, not np.sqrt) keeps float32 arithmetic in float32.
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        m = self._slot("m", key, param)
        v = self._slot("v", key, param)
        # One pass on the compiled backend, the same bits as NumPy's ten (reference.adam_update)
        F.adam_update(param, grad, m, v, lr_t, self.beta1, self.beta2, _EPS)


_OPTIMIZERS: Dict[str, Type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSprop,
    "adam": Adam,
}


def _check_count(where: str, entry: str, value: Any) -> int:
    """An update count from a state dict (an int, or the 0-d array np.savez makes of one):
    an integer >= 0."""
    count: Any = value.item() if isinstance(value, np.ndarray) and value.shape == () else value
    if not (isinstance(count, numbers.Integral) and not isinstance(count, bool) and int(count) >= 0):
        raise ValueError(f"{where}: {entry!r} must be an integer >= 0, got {_brief_value(value)}")
    return int(count)


def _check_state_array(where: str, entry: str, array: np.ndarray, nonnegative: bool) -> None:
    if array.dtype.kind != "f":
        raise ValueError(f"{where}: {entry!r} must be a floating-point array, got {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: {entry!r} holds NaN or infinite values")
    if nonnegative and array.size and array.min() < 0:
        raise ValueError(
            f"{where}: {entry!r} (a sum of squared gradients) must be >= 0, got a minimum of {float(array.min())!r}"
        )


def _brief_value(value: Any) -> str:
    array = np.asarray(value)
    return f"{array.item()!r}" if array.shape == () else f"an array of shape {array.shape} ({array.dtype})"


def get_optimizer(name: Union[str, Optimizer], **params: Any) -> Optimizer:
    """Build an optimizer by (case-insensitive) name, e.g. ``get_optimizer("Adam", lr=1e-3)``.

    Parameters
    ----------
    name : str or Optimizer
        One of sgd, momentum, nesterov, adagrad, rmsprop, adam; an Optimizer instance is
        returned as it is.
    **params
        The optimizer's settings (lr, weight_decay, ...).

    Returns
    -------
    Optimizer
        The optimizer.
    """
    if isinstance(name, Optimizer):
        return name
    cls = _OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(_OPTIMIZERS)}")
    return cls(**params)
