"""Normalisation layers: BatchNormalization (optionally with a fused ReLU)."""

from __future__ import annotations
from typing import Any, Dict, Optional, Sequence, Tuple
from numpy.typing import DTypeLike
from deepnet.functional import Array
import math

import numpy as np

from deepnet import functional as F
from deepnet._array import get_array_module
from deepnet._dtypes import compute_dtype

from .base import Layer
from .config import _check_keys, _flag, _fraction, _int
from .init import _charge, _init_mode, _placeholder


class BatchNormalization(Layer):
    """Batch normalisation; per feature for 2-D input (N, F), per channel for 4-D (N, C, H, W).
    With relu=True it is BatchNormalization followed by Relu, fused in one pass.

    Training normalises by the batch's mean and (biased) variance and updates the running
    statistics, ``running = momentum * running + (1 - momentum) * batch``; inference uses
    the running statistics.  ``sum_across`` (set by data-parallel training) sums the
    per-channel statistics over all ranks, so the batch is the global batch.

    The output is computed as (x - mean) * (gamma / sqrt(var + eps)) + beta, the difference
    first, so that a channel constant over the batch (and the pixels) gives exactly beta
    (max(beta, 0) with the ReLU) and gradients of exactly 0 for gamma.  Training on one
    value per channel (a batch of one (N, F) row, or of one 1x1 image) raises ValueError,
    as PyTorch does: its statistics are meaningless.

    Parameters
    ----------
    gamma, beta : array of shape (features,)
        The scale and the offset.
    momentum : float
        The running statistics' momentum.
    running_mean, running_var : array of shape (features,), optional
        Starting running statistics (default zeros and ones).
    relu : bool
        Apply max(y, 0) in the same pass.
    """

    EPS = 1e-7  # the book's

    gamma = property(lambda self: self.params["gamma"], lambda self, v: self.params.__setitem__("gamma", v))
    beta = property(lambda self: self.params["beta"], lambda self, v: self.params.__setitem__("beta", v))
    dgamma = property(lambda self: self.grads.get("gamma"))
    dbeta = property(lambda self: self.grads.get("beta"))
    running_mean = property(
        lambda self: self.buffers["running_mean"], lambda self, v: self.buffers.__setitem__("running_mean", v)
    )
    running_var = property(
        lambda self: self.buffers["running_var"], lambda self, v: self.buffers.__setitem__("running_var", v)
    )

    def __init__(
        self,
        gamma: Array,
        beta: Array,
        momentum: float = 0.9,
        running_mean: Optional[Array] = None,
        running_var: Optional[Array] = None,
        relu: bool = False,
    ) -> None:
        super().__init__()
        xp = get_array_module(gamma)
        self.params = {"gamma": gamma, "beta": beta}
        self.momentum = momentum
        self.relu = relu
        # In the compute dtype: a float16 variance would overflow above 65504.
        stats_dtype = compute_dtype(gamma.dtype)
        self.buffers = {
            "running_mean": running_mean if running_mean is not None else xp.zeros(gamma.shape, stats_dtype),
            "running_var": running_var if running_var is not None else xp.ones(gamma.shape, stats_dtype),
        }
        self.sum_across: Any = None
        self._saved: Any = None  # what backward needs: (x as (N, C, M), mean, inv_std, count)
        self.out: Any = None  # the output, when a ReLU is fused

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        x = F.as_float_array(x, "x", "BatchNormalization.forward", dtype=self.gamma.dtype)
        if x.ndim not in (2, 4) or x.shape[1] != self.gamma.size:
            raise ValueError(
                f"BatchNormalization.forward: expected (N, {self.gamma.size}) or "
                f"(N, {self.gamma.size}, H, W) input, got shape {tuple(x.shape)}"
                + F._channels_last_hint(tuple(x.shape), self.gamma.size)
            )
        x3 = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        if self._mode(train, train_flg):
            # The shift: each channel's first value (a value of the channel, so a channel
            # constant over the batch gets exactly its value as the mean and a variance of
            # 0); in a data-parallel run one shift for all ranks, the running mean.
            shift = self.running_mean if self.sum_across is not None or x3.size == 0 else x3[0, :, 0]
            mean, var, count = F.batch_norm_statistics(
                x3, shift=shift, sum_across=self.sum_across, caller="BatchNormalization.forward"
            )
            if count == 1:
                raise ValueError(
                    "BatchNormalization.forward: Expected more than 1 value per channel when "
                    f"training, got input shape {tuple(x.shape)} (the statistics of one value "
                    "are meaningless: every output would be beta); use train=False (the "
                    "running statistics) or a larger batch"
                )
            inv_std = 1 / (get_array_module(x).sqrt(var + self.EPS))
            self._saved = (x3, mean, inv_std, count)
            m = self.momentum
            self.running_mean[...] = m * self.running_mean + (1 - m) * mean
            self.running_var[...] = m * self.running_var + (1 - m) * var
            scale = self.gamma * inv_std
        else:
            mean, scale, _ = self.inference_affine()
        # (x - mean) * scale + beta, the difference first: exactly beta where x is the mean
        out = F.channel_affine(x3, scale, self.beta, shift=mean, relu=self.relu, caller="BatchNormalization.forward")
        self.out = out if self.relu else None
        return out.reshape(x.shape)

    def inference_affine(self) -> Tuple[Array, Array, Array]:
        """(shift, scale, offset) of the inference pass, y = (x - shift) * scale + offset per
        channel: the running mean, gamma / sqrt(running variance + EPS) and beta (what
        deepnet.compile's plans apply too)."""
        acc = compute_dtype(self.gamma.dtype)
        inv_std = 1 / (get_array_module(self.running_var).sqrt(self.running_var.astype(acc) + self.EPS))
        return self.running_mean, self.gamma * inv_std, self.beta

    def backward(self, dout: Array) -> Array:
        x3, mean, inv_std, count = self._saved
        dout3 = F.as_float_array(dout, "dout", "BatchNormalization.backward", dtype=self.gamma.dtype).reshape(x3.shape)
        dx, dgamma, dbeta = F.batch_norm_backward(
            dout3,
            x3,
            mean,
            inv_std,
            self.gamma,
            count,
            sum_across=self.sum_across,
            relu_out=self.out,
            caller="BatchNormalization.backward",
        )
        self._set_grads(gamma=dgamma, beta=dbeta)
        return dx.reshape(dout.shape)

    def config(self) -> Dict[str, Any]:
        return {"features": int(self.gamma.size), "momentum": self.momentum, "relu": bool(self.relu)}

    @classmethod
    def new(cls, features: int, dtype: DTypeLike, momentum: float = 0.9, relu: bool = False) -> BatchNormalization:
        """A fresh layer (gamma 1, beta 0) of ``features``, charged to the build's budget."""
        _charge((4, features))  # gamma, beta and the two running statistics
        if _init_mode.get() == "shapes":
            stats = compute_dtype(dtype)
            return cls(
                _placeholder((features,), dtype),
                _placeholder((features,), dtype),
                momentum,
                _placeholder((features,), stats),
                _placeholder((features,), stats),
                relu=relu,
            )
        return cls(np.ones(features, dtype), np.zeros(features, dtype), momentum, relu=relu)

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "features", "momentum", "relu"}, where)
        features = _int(spec, "features", where, 0)
        momentum = _fraction(spec, "momentum", where, 0.9, upper_open=False)
        return cls.new(features, dtype, momentum, relu=_flag(spec, "relu", where))

    def check_cost(self, shape: Sequence[int], check: Any) -> Sequence[int]:
        if len(shape) not in (2, 4) or shape[1] != self.gamma.shape[0]:
            check.fail(
                f"expects (N, {self.gamma.shape[0]}) or (N, {self.gamma.shape[0]}, H, W) input, gets shape {shape}"
            )
        return shape

    def input_hint(self, first: bool) -> Optional[Tuple[str, int]]:
        return ("channels", int(self.gamma.shape[0]))
