"""The steps of a compiled plan, one layer at a time: what deepnet.models.compiled's builder
hands kernels/plan.pyx for a convolution, a binary layer or an element-wise layer (their
filters prepared, their constants in the plan's dtype)."""

from __future__ import annotations
import math
from typing import Any, Dict, List, Tuple

import numpy as np
from numpy.typing import NDArray

from .._dtypes import is_bfloat16
from ..nn import BatchNormalization, BinaryAffine, BinaryConvolution, Convolution, Dropout, Layer
from ..nn.base import _pair

Shape = Tuple[int, ...]


def compute_dtype(storage: np.dtype) -> np.dtype:
    """The dtype a model's plan computes in: float32 for the float16 and bfloat16 models."""
    return np.dtype(np.float32) if storage == np.float16 or is_bfloat16(storage) else storage


def bf16_dot_convolution() -> bool:
    from ..backends import bf16

    return bf16.DOT_CONVOLUTION


def bf16_pairs(W: Any) -> NDArray[np.uint32]:
    """A bfloat16 convolution's filters as the dot GEMM takes them: K2 x FN pairs."""
    from ..backends import bf16

    FN = W.shape[0]
    return np.ascontiguousarray(bf16.pack_pairs(np.ascontiguousarray(W).reshape(FN, -1)).T)


def sign_bits(signs: NDArray[np.bool_]) -> NDArray[np.uint64]:
    """(..., n) booleans as (..., ceil(n / 64)) words, bit i % 64 of word i // 64 = signs[..., i]."""
    n = signs.shape[-1]
    words = -(-n // 64)
    padded = np.zeros(signs.shape[:-1] + (64 * words,), bool)
    padded[..., :n] = signs
    return np.packbits(padded, axis=-1, bitorder="little").view("<u8").astype(np.uint64)


def binary(
    layer: BinaryConvolution | BinaryAffine, shape: Shape, dtype: np.dtype, where: str
) -> Tuple[Dict[str, Any], Shape]:
    """A binary layer's step: its filters' sign bits (set where a weight is not >= 0)."""
    W = np.asarray(layer.W).astype(np.float32)
    negative = ~(W >= 0)
    bias = np.asarray(layer.b).astype(dtype)
    if isinstance(layer, BinaryAffine):
        if W.shape[0] != math.prod(shape):
            raise ValueError(f"deepnet.compile: a {where} of {W.shape[0]} features gets {shape}")
        step = {"kind": "binary_affine", "Kin": W.shape[0], "M": W.shape[1], "bias": bias}
        return {**step, "sign_filters": sign_bits(negative.T)}, (int(W.shape[1]),)
    if len(shape) != 3 or shape[0] != W.shape[1]:
        raise ValueError(f"deepnet.compile: a {where} of {W.shape[1]} channels gets {shape}")
    FN, C, kh, kw = (int(n) for n in W.shape)
    (sh, sw), (ph, pw) = _pair(layer.stride), _pair(layer.pad)
    geometry = {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "ph": ph, "pw": pw}
    step = {"kind": "binary_conv", "C": C, "H": shape[1], "W": shape[2], "FN": FN, **geometry, "bias": bias}
    bits = sign_bits(negative.transpose(0, 2, 3, 1).reshape(FN, kh * kw, C))
    return {**step, "sign_filters": bits}, tuple(int(n) for n in layer.output_shape((1,) + shape)[1:])


def activation_ops(layer: Layer, shape: Shape, storage: np.dtype, dtype: np.dtype, where: str) -> List[Tuple[Any, ...]]:
    if isinstance(layer, Dropout):  # x * (1 - ratio) in the model's dtype, as Dropout.forward
        return [("scale", float(storage.type(1.0 - layer.dropout_ratio)))]
    assert isinstance(layer, BatchNormalization)
    channels = int(layer.gamma.size)
    if len(shape) not in (1, 3) or shape[0] != channels:
        raise ValueError(f"deepnet.compile: a {where} of {channels} channels gets {shape}")
    shift, scale, offset = (np.asarray(a).astype(dtype) for a in layer.inference_affine())
    plane = math.prod(shape[1:])
    return [("channel", shift, scale, offset, plane)] + ([("relu",)] if layer.relu else [])


def convolution(
    layer: Convolution, shape: Shape, pooled: bool, dtype: np.dtype, where: str
) -> Tuple[Dict[str, Any], Shape]:
    if len(shape) != 3:
        raise ValueError(f"deepnet.compile: a {where} needs (C, H, W) images, gets {shape}")
    W = np.asarray(layer.W)
    W = W.astype(np.float32) if is_bfloat16(W.dtype) else W  # exact: the backend widens it so too
    FN, C, kh, kw = (int(n) for n in W.shape)
    if C != shape[0]:
        raise ValueError(f"deepnet.compile: a {where} of {C} channels gets {shape[0]}")
    from ..backends import cpu  # imports the compiled kernels (compile has checked they are there)

    (sh, sw), (ph, pw) = _pair(layer.stride), _pair(layer.pad)
    direct, winograd, rule, W_max = cpu.plan_filters(W, (sh, sw), (ph, pw))
    step = {
        "kind": "conv",
        "C": C,
        "H": shape[1],
        "W": shape[2],
        "FN": FN,
        "kh": kh,
        "kw": kw,
        "sh": sh,
        "sw": sw,
        "ph": ph,
        "pw": pw,
        "relu": bool(layer.relu),
        "pooled": pooled,
        "direct": direct,
        "winograd": winograd,
        "winograd_rule": bool(rule),
        "W_max": float(W_max),
        "bias": np.asarray(layer.b).astype(dtype),
    }
    out = tuple(int(n) for n in layer.output_shape((1,) + shape)[1:])
    return step, (out[0], out[1] // 2, out[2] // 2) if pooled else out
