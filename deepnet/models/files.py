"""Model files: loading a self-describing model file (or a plain parameter file), and spec files.

A model file (``model.save(path)``) is an ``.npz`` holding the parameters, the buffers
(BatchNormalization's running statistics, as ``buffers/<name>``) and the architecture as a
JSON spec under SPEC_KEY, stored as UTF-8 bytes: data, never pickle.  ``load_model(path)``
rebuilds the model from it without code; it also reads a plain parameter file
(``save_params``, the book's ``.pkl``) as the book's DeepConvNet.  Loading never draws random
weights: the file's arrays are checked against a skeleton of the model from their headers,
then copied into a model of zeros.
"""

from __future__ import annotations
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union, cast

from numpy.typing import DTypeLike
import json
import os

import numpy as np

from .. import io
from .._dtypes import FLOAT_DTYPES
from ..nn import BatchNormalization
from ..quant.files import INT8_KEY, load_int8_model
from ..quant.model import Int8Model
from .cost import check_cost, input_shape
from .init import _initialised, _parameter_limit
from .limits import MAX_PARAMETERS, MAX_SPEC_BYTES, _short
from .sequential import BUFFER_PREFIX, SPEC_KEY, Sequential
from .spec import _build, _build_dtype, _built

# A file system path.
PathLike = Union[str, "os.PathLike[str]"]


def load_model(path: PathLike, dtype: Optional[DTypeLike] = None) -> Union[Sequential, Int8Model]:
    """The model a file holds, ready to use.

    A model file (``model.save``) is rebuilt from its spec; a plain parameter file
    (``save_params``, ``deepnet train --out``) or the book's ``.pkl`` is taken as the
    book's DeepConvNet.  ``dtype`` defaults to the dtype of the stored parameters (float32
    for a model without parameters).  An int8 model file (``deepnet quantize``) gives a
    deepnet.quant.Int8Model, loaded and checked by deepnet.quant.load_int8_model (its float
    steps compute in float32 whatever ``dtype`` says).

    The file is untrusted: its spec (at most MAX_SPEC_BYTES, no duplicate keys) is checked
    as ``build`` checks one, including the model's work for one image (``check_cost``);
    the file's arrays are checked against the spec from their headers before any is read,
    and nothing is drawn at random, so memory stays a small multiple of the file's arrays.
    Parameters and buffers must be finite and running variances >= 0.

    Parameters
    ----------
    path : str or os.PathLike
        A model file, a parameter file or the book's ``.pkl``.
    dtype : dtype, optional
        The dtype of the model's parameters (default: the stored parameters').

    Returns
    -------
    Sequential or Int8Model
        The model (a DeepConvNet for a plain parameter file), with the file's parameters.

    Raises
    ------
    ValueError
        The file, its spec or its arrays are malformed or out of bounds.
    OSError
        The file cannot be read.
    """
    path = os.fspath(path)
    specs = io.read_params(
        path,
        {SPEC_KEY: None, INT8_KEY: None},
        strict=False,
        entry_limits=dict.fromkeys((SPEC_KEY, INT8_KEY), MAX_SPEC_BYTES),
    )  # the spec alone
    if INT8_KEY in specs:  # an int8 model file (deepnet quantize): deepnet.quant checks and loads it
        return load_int8_model(path)
    spec_bytes = specs.get(SPEC_KEY)
    if spec_bytes is None and _is_checkpoint(path):
        raise ValueError(
            f"{path}: a training checkpoint, not a model file: continue it with "
            f"'deepnet train --resume --checkpoint {path}', or use the model file the "
            "run saves (--out)"
        )
    spec = {"type": "DeepConvNet", "config": {}} if spec_bytes is None else _decode_spec(spec_bytes, path)
    try:
        skeleton = _built(spec, np.dtype(np.float32), np.random.default_rng(0), "shapes")  # no memory
        if not isinstance(skeleton, Sequential):
            raise ValueError(f"the spec describes a single {type(skeleton).__name__}, not a model")
        out, _ = check_cost(skeleton)
        if len(out) != 2:
            raise ValueError(
                f"the model's output for one input of shape {input_shape(skeleton)} has shape "
                f"{out}; a classifier's is (1, classes): end it with an Affine or Flatten"
            )
        target = None if dtype is None else _build_dtype(dtype)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    expected = {name: value.shape for name, value in skeleton.named_arrays().items()}
    optional = {SPEC_KEY} | {name for name in expected if name.startswith(BUFFER_PREFIX)}
    try:  # names and shapes are checked from the headers before any array is read
        arrays = io.read_params(path, {**expected, SPEC_KEY: None}, strict=True, optional=optional)
    except io.ParameterFileError as exc:
        if spec_bytes is None:
            raise io.ParameterFileError(
                f"{exc} (a file without an architecture spec is read as the book's DeepConvNet)"
            ) from None
        raise
    arrays.pop(SPEC_KEY, None)
    _check_loaded_values(skeleton, arrays, path)
    if target is None:  # the stored parameters' dtype
        stored = [np.dtype(arrays[name].dtype) for name in skeleton.params if name in arrays]
        target = stored[0] if stored and stored[0] in FLOAT_DTYPES else np.dtype(np.float32)
    with _parameter_limit(MAX_PARAMETERS), _initialised("zeros"):  # nothing drawn: the file sets it all
        model = cast(Sequential, _build(spec, target, np.random.default_rng(), "spec"))  # as the skeleton
    model.set_params(arrays, source=path)
    return model


def _check_loaded_values(skeleton: Sequential, arrays: Dict[str, Any], path: str) -> None:
    """Refuse parameters or buffers that are not finite, and negative running variances."""
    for name, value in arrays.items():
        if value.dtype.kind == "f" and not all(np.isfinite(part).all() for part in _chunks(value)):
            raise ValueError(f"{path}: {_short(name)} holds NaN or infinite values (a diverged run?)")
    for prefix, layer in skeleton.named_layers():
        if isinstance(layer, BatchNormalization):
            hierarchical = prefix + "running_var"
            name = BUFFER_PREFIX + skeleton.aliases.get(hierarchical, hierarchical)
            value = arrays.get(name)
            if value is not None and value.dtype.kind == "f" and (value < 0).any():
                raise ValueError(
                    f"{path}: {_short(name)} holds a negative variance "
                    f"({float(value.min()):.3g}); a running variance is >= 0"
                )


def _chunks(array: np.ndarray, size: int = 1 << 20) -> Iterator[np.ndarray]:
    """``array``'s values, ``size`` at a time, without copying it (Fortran order too)."""
    flat = array.reshape(-1, order="A")
    return (flat[start : start + size] for start in range(0, flat.size, size))


def _is_checkpoint(path: str) -> bool:
    """Whether a file is a Trainer checkpoint (it has the JSON entry "config")."""
    try:
        return "config" in io.read_params(path, {}, strict=False, text=("config",))
    except ValueError:
        return False


def _refuse_duplicates(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    """json's object_pairs_hook: an object that names a key twice is refused (json would
    silently keep the last value)."""
    keys = set()
    for key, _ in pairs:
        if key in keys:
            raise ValueError(f"the key {_short(key)} appears twice in one object")
        keys.add(key)
    return dict(pairs)


def _parse_spec(data: bytes) -> Any:
    """Spec bytes as data: UTF-8 JSON without duplicate keys (ValueError otherwise)."""
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise ValueError(str(exc)[:200]) from None


def _decode_spec(spec_bytes: np.ndarray, path: str) -> Any:
    if spec_bytes.dtype != np.uint8 or spec_bytes.ndim != 1:
        raise ValueError(
            f"{path}: {SPEC_KEY} must be UTF-8 bytes (uint8), got {spec_bytes.dtype} of shape {spec_bytes.shape}"
        )
    try:
        return _parse_spec(spec_bytes.tobytes())
    except ValueError as exc:
        raise ValueError(f"{path}: the model spec is not valid JSON ({exc})") from None


def load_spec_file(path: PathLike) -> Dict[str, Any]:
    """A JSON architecture file (``deepnet train --model spec.json``) as spec data."""
    with open(path, "rb") as f:
        text = f.read(MAX_SPEC_BYTES + 1)
    if len(text) > MAX_SPEC_BYTES:
        raise ValueError(f"{path}: a model spec larger than 1 MiB is refused")
    try:
        return _parse_spec(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not a JSON model spec ({exc})") from None
