"""Batch-by-batch classification for anything with a ``predict`` of class scores: classify, probabilities and accuracy.

deepnet.models.Sequential, the int8 model and the compiled plan all share these methods, so
a model answers them the same way whichever of the three runs it.
"""

from __future__ import annotations
from typing import Any, Iterator

import numpy as np
from numpy.typing import ArrayLike, NDArray

from .. import _array
from .activations import softmax


class Classifier:
    """classify, probabilities and accuracy over ``self.predict(x)``, the class scores (N, classes).

    Inputs are predicted ``batch_size`` samples at a time, the final partial batch too.
    """

    def predict(self, x: Any) -> Any:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def _batches(self, x: ArrayLike, batch_size: int) -> Iterator[NDArray[Any]]:
        """The class scores of each batch of ``x``, as NumPy arrays."""
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        for start in range(0, len(x), batch_size):  # type: ignore[arg-type]
            yield _array.to_cpu(self.predict(x[start : start + batch_size]))  # type: ignore[index]

    def classify(self, x: ArrayLike, batch_size: int = 100) -> NDArray[np.intp]:
        """Predicted class of every sample of ``x`` (a NumPy int array), batch by batch."""
        labels = [np.argmax(scores, axis=1) for scores in self._batches(x, batch_size)]
        return np.concatenate(labels) if labels else np.zeros(0, dtype=np.intp)

    def probabilities(self, x: ArrayLike, batch_size: int = 100) -> NDArray[np.float64]:
        """Softmax probabilities of every sample (NumPy, float64), batch by batch."""
        rows = [softmax(scores.astype(np.float64)) for scores in self._batches(x, batch_size)]
        return np.concatenate(rows) if rows else np.zeros((0, 0))

    def accuracy(self, x: ArrayLike, t: ArrayLike, batch_size: int = 100) -> float:
        """Fraction of ``x`` classified as ``t`` (labels or one-hot), counting every sample.

        Unlike the book's version, the final partial batch is evaluated too.
        """
        if not hasattr(x, "shape"):
            x = np.asarray(x)
        labels = _array.to_cpu(t)
        if len(x) == 0:  # type: ignore[arg-type]
            raise ValueError("accuracy: no samples to evaluate (x is empty)")
        if labels.ndim != 1:
            labels = np.argmax(labels, axis=1)
        if len(labels) != len(x):  # type: ignore[arg-type]
            raise ValueError(f"accuracy: {len(x)} samples but {len(labels)} labels")  # type: ignore[arg-type]
        return float(np.sum(self.classify(x, batch_size) == labels) / len(labels))
