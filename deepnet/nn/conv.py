"""Spatial layers over images (N, C, H, W): Convolution (optionally with a fused ReLU) and max Pooling."""

from __future__ import annotations
from typing import Any, Dict, Optional, Sequence, Tuple
from numpy.typing import DTypeLike
import numpy as np
from deepnet.functional import Array, IntPair
import math

from deepnet import functional as F
from deepnet._dtypes import output_size

from .base import _WeightAndBias, Layer, _pair
from .config import _check_keys, _flag, _int, _int_pair
from .init import he_normal, zeros


class _ConvolutionGeometry:
    """Shape, cost and input hint of a layer sliding filters W (FN, C, kh, kw) with
    ``stride`` and ``pad``: shared by Convolution and BinaryConvolution."""

    W: Array
    stride: IntPair
    pad: IntPair

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        N, _, H, W = input_shape
        (sh, sw), (ph, pw) = _pair(self.stride), _pair(self.pad)
        kh, kw = self.W.shape[2:]
        return (N, self.W.shape[0], output_size(H, kh, sh, ph), output_size(W, kw, sw, pw))

    def cost(self, input_shape: Sequence[int]) -> Tuple[Tuple[int, ...], int, Optional[Tuple[int, int]]]:
        FN, C, kh, kw = self.W.shape
        out = self.output_shape(input_shape)
        return out, math.prod(out) * C * kh * kw, (kh, _pair(self.stride)[0])

    def check_cost(self, shape: Sequence[int], check: Any) -> Sequence[int]:
        FN, C, kh, kw = (int(n) for n in self.W.shape)
        check.spatial(shape, C)
        (ph, pw) = _pair(self.pad)
        check.values((1, C, shape[2] + 2 * ph, shape[3] + 2 * pw), "padded input")
        out = tuple(self.output_shape(shape))
        check.values(out)
        check.values((1, C * kh * kw, out[2], out[3]), "column matrix")
        check.add_work(math.prod(out[1:]) * C * kh * kw)
        return out

    def input_hint(self, first: bool) -> Optional[Tuple[str, int]]:
        return ("channels", int(self.W.shape[1]))


class Convolution(_ConvolutionGeometry, _WeightAndBias):
    """Convolution; with relu=True it is Convolution followed by Relu, fused in one pass
    (forward and backward), which saves a trip through memory per layer.

    Parameters
    ----------
    W : array of shape (FN, C, kh, kw)
        The filters (their dtype is the layer's).
    b : array of shape (FN,)
        The biases.
    stride : int or (int, int)
        Vertical and horizontal stride.
    pad : int or (int, int)
        Zero padding of each side, vertically and horizontally.
    relu : bool
        Apply max(y, 0) in the same pass.
    """

    skips_input_gradient = True

    def __init__(self, W: Array, b: Array, stride: IntPair = 1, pad: IntPair = 0, relu: bool = False) -> None:
        super().__init__(W, b)
        self.stride, self.pad = stride, pad
        self.relu = relu
        self.x: Any = None
        self.out: Any = None
        self.pool_argmax: Any = None  # set when out is a following Pooling's output (forward_pooled)

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        self.x = F.as_float_array(x, "x", "Convolution.forward", dtype=self.W.dtype)
        self.out = F.conv2d(self.x, self.W, self.b, self.stride, self.pad, relu=self.relu, caller="Convolution.forward")
        self.pool_argmax = None
        return self.out

    def fuse_with(self, following: Layer) -> Optional[_ConvolutionPooling]:
        """A 2x2, stride-2, unpadded Pooling after this layer runs fused with it."""
        if isinstance(following, Pooling) and following.fuses_after_convolution():
            return _ConvolutionPooling(self, following)
        return None

    def forward_pooled(self, x: Array, pooling: Optional[Pooling] = None, train: bool = False) -> Array:
        """This layer and the 2x2, stride-2 Pooling after it, fused (F.conv2d_max_pool2d):
        the pooled output.  Training keeps what backward_pooled needs, the input, the
        pooled output as self.out (the ReLU's mask at the winners: not the full-size
        output) and the winners (in pooling, which training needs); inference keeps
        nothing."""
        if pooling is None and train:
            raise ValueError("Convolution.forward_pooled: training needs the Pooling layer, to keep its winners")
        if pooling is not None and not pooling.fuses_after_convolution():
            raise ValueError(
                "Convolution.forward_pooled: fuses only a 2x2, stride-2, unpadded Pooling, "
                f"got {pooling.pool_h}x{pooling.pool_w}, stride {pooling.stride}, pad {pooling.pad}"
            )
        x = F.as_float_array(x, "x", "Convolution.forward_pooled", dtype=self.W.dtype)
        arguments = (x, self.W, self.b, self.stride, self.pad)
        if not train:
            self.x = self.out = self.pool_argmax = None
            if pooling is not None:
                pooling.keep(None, None)
            return F.conv2d_max_pool2d(
                *arguments,
                relu=self.relu,  # type: ignore[return-value]  # argmax=False: one array
                caller="Convolution.forward_pooled",
            )
        assert pooling is not None  # checked above: training needs it
        pooled, argmax = F.conv2d_max_pool2d(
            *arguments, relu=self.relu, argmax=True, caller="Convolution.forward_pooled"
        )
        pooling.keep(self.output_shape(x.shape), argmax)
        self.x, self.out, self.pool_argmax = x, pooled, argmax
        return pooled

    def backward(self, dout: Array, input_gradient: bool = True) -> Optional[Array]:  # type: ignore[override]
        """dx (None with input_gradient=False, which skips computing it); sets dW and db.
        After a fused training forward_pooled (the book's layer-by-layer backward pass, with
        the Pooling's backward before it), the ReLU's mask is the pooled output put back at
        its winners: the only pixels where dout is not zero."""
        relu_out = self.out
        if self.relu and self.pool_argmax is not None and relu_out is not None:
            relu_out = F.max_pool2d_backward(
                relu_out, self.pool_argmax, self.output_shape(self.x.shape), 2, 2, 2, 0, caller="Convolution.backward"
            )
        return self._backward(dout, input_gradient, None, relu_out, "Convolution.backward")

    def backward_pooled(self, dout: Array, pooling: Pooling, input_gradient: bool = True) -> Optional[Array]:
        """The backward passes of the 2x2, stride-2 Pooling that followed this layer (dout is
        its output's gradient) and of this layer, fused: the pooling's gradient is scattered
        as this layer reads it, never written out.  The same values as pooling.backward then
        backward."""
        if pooling.argmax is None or not pooling.fuses_after_convolution():
            raise RuntimeError(
                "Convolution.backward_pooled: needs a 2x2, stride-2 Pooling after a training forward pass"
            )
        return self._backward(dout, input_gradient, pooling.argmax, self.out, "Convolution.backward_pooled")

    def _backward(
        self, dout: Array, input_gradient: bool, pool_argmax: Optional[Array], relu_out: Optional[Array], caller: str
    ) -> Optional[Array]:
        if self.x is None:
            raise RuntimeError(
                f"{caller}: no forward pass to differentiate "
                "(call forward(x) first; an inference forward_pooled keeps nothing for it)"
            )
        dx, dW, db = F.conv2d_backward(
            dout,
            self.x,
            self.W,
            self.stride,
            self.pad,
            relu_out=relu_out if self.relu else None,
            input_gradient=input_gradient,
            pool_argmax=pool_argmax,
            caller=caller,
        )
        self._set_grads(W=dW, b=db)
        return dx

    def config(self) -> Dict[str, Any]:
        FN, C, kh, kw = (int(s) for s in self.W.shape)
        return {
            "in_channels": C,
            "filters": FN,
            "kernel": [kh, kw],
            "stride": list(_pair(self.stride)),
            "pad": list(_pair(self.pad)),
            "relu": bool(self.relu),
        }

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "in_channels", "filters", "kernel", "stride", "pad", "relu"}, where)
        C, FN = _int(spec, "in_channels", where, 0), _int(spec, "filters", where, 0)
        kh, kw = _int_pair(spec, "kernel", where, 1)
        return cls(
            he_normal((FN, C, kh, kw), rng, dtype),
            zeros(FN, dtype),
            _int_pair(spec, "stride", where, 1),
            _int_pair(spec, "pad", where, 0),
            relu=_flag(spec, "relu", where),
        )


class Pooling(Layer):
    """Max-pooling over pool_h x pool_w windows.  The stride defaults to 2 (the book's
    default is 1): every network here pools 2x2 windows with stride 2.

    Parameters
    ----------
    pool_h, pool_w : int
        The window's height and width.
    stride : int or (int, int)
        The stride (default 2).
    pad : int or (int, int)
        Padding of each side, which never wins a window.
    """

    preserves_rank = True

    def __init__(self, pool_h: int, pool_w: int, stride: IntPair = 2, pad: IntPair = 0) -> None:
        super().__init__()
        self.pool_h, self.pool_w = pool_h, pool_w
        self.stride, self.pad = stride, pad
        self.x_shape: Any = None
        self.argmax: Any = None

    def forward(self, x: Array, train: Optional[bool] = None, *, train_flg: Optional[bool] = None) -> Array:
        out, argmax = F.max_pool2d(x, self.pool_h, self.pool_w, self.stride, self.pad, caller="Pooling.forward")
        self.keep(x.shape, argmax)
        return out

    def keep(self, x_shape: Any, argmax: Any) -> None:
        """Keep what backward needs: the input's shape and the winners (None, None: nothing,
        after an inference pass fused with the convolution before)."""
        self.x_shape, self.argmax = x_shape, argmax

    def fuses_after_convolution(self) -> bool:
        """True for the 2x2, stride-2, unpadded pooling that Convolution.forward_pooled fuses."""
        return (self.pool_h, self.pool_w) == (2, 2) and _pair(self.stride) == (2, 2) and _pair(self.pad) == (0, 0)

    def backward(self, dout: Array) -> Array:
        if self.argmax is None:
            raise RuntimeError(
                "Pooling.backward: no forward pass to differentiate "
                "(call forward(x) first; a fused inference pass keeps nothing for it)"
            )
        return F.max_pool2d_backward(
            dout, self.argmax, self.x_shape, self.pool_h, self.pool_w, self.stride, self.pad, caller="Pooling.backward"
        )

    def output_shape(self, input_shape: Sequence[int]) -> Tuple[int, ...]:
        N, C, H, W = input_shape
        (sh, sw), (ph, pw) = _pair(self.stride), _pair(self.pad)
        return (N, C, output_size(H, self.pool_h, sh, ph), output_size(W, self.pool_w, sw, pw))

    def config(self) -> Dict[str, Any]:
        return {
            "pool_h": self.pool_h,
            "pool_w": self.pool_w,
            "stride": list(_pair(self.stride)),
            "pad": list(_pair(self.pad)),
        }

    @classmethod
    def from_config(cls, spec: Dict[str, Any], dtype: DTypeLike, rng: np.random.Generator, where: str) -> Layer:
        _check_keys(spec, {"type", "pool_h", "pool_w", "stride", "pad"}, where)
        return cls(
            _int(spec, "pool_h", where),
            _int(spec, "pool_w", where),
            _int_pair(spec, "stride", where, 1),
            _int_pair(spec, "pad", where, 0),
        )

    def cost(self, input_shape: Sequence[int]) -> Tuple[Tuple[int, ...], int, Optional[Tuple[int, int]]]:
        return self.output_shape(input_shape), 0, (self.pool_h, _pair(self.stride)[0])

    def check_cost(self, shape: Sequence[int], check: Any) -> Sequence[int]:
        check.spatial(shape)
        if self.pool_h > shape[2] or self.pool_w > shape[3]:
            check.fail(f"its {self.pool_h}x{self.pool_w} window is larger than its {shape[2]}x{shape[3]} input")
        ph, pw = _pair(self.pad)
        check.values((1, shape[1], shape[2] + 2 * ph, shape[3] + 2 * pw), "padded input")
        out = tuple(self.output_shape(shape))
        check.values(out)
        check.add_work(math.prod(out[1:]) * self.pool_h * self.pool_w)
        return out


class _ConvolutionPooling:
    """The step (deepnet.nn.fusion) of a Convolution and the 2x2, stride-2 Pooling after it:
    forward runs Convolution.forward_pooled, which the compiled CPU backend fuses so that
    the full-size output never reaches memory (see F.conv2d_max_pool2d for where it makes
    the two calls), keeping in training what the fused backward pass needs; backward runs
    Convolution.backward_pooled after such a pass, else the two layers' backward passes."""

    skips_input_gradient = True

    def __init__(self, convolution: Convolution, pooling: Pooling) -> None:
        self.convolution, self.pooling = convolution, pooling

    def forward(self, x: Array, train: bool = False) -> Array:
        return self.convolution.forward_pooled(x, self.pooling, train)

    def backward(self, dout: Array, input_gradient: bool = True) -> Optional[Array]:
        if self.pooling.argmax is not None:
            return self.convolution.backward_pooled(dout, self.pooling, input_gradient=input_gradient)
        # No training pass to differentiate: Pooling.backward says so.
        return self.convolution.backward(self.pooling.backward(dout), input_gradient=input_gradient)
