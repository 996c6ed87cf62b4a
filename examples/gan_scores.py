"""Scores of generated MNIST digits, judged by a deepnet classifier: the inception score and the Fréchet distance.

"MNIST inception score": exp(E_x[KL(p(y|x) || p(y))]) with p(y|x) the classifier's softmax
and p(y) its mean over the samples; 10 for confident predictions spread evenly over the ten
classes, 1 for predictions that do not depend on the image.  The Fréchet distance compares
the classifier's penultimate features (the input of its last Affine layer) on two sets of
images as Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)).  The matrix square root
is a symmetric eigendecomposition in NumPy (no SciPy dependency).

Used by examples/dcgan.py and benches/torch_dcgan.py, so both sides are scored by the same
code and the same classifier.
"""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "inception_score",
    "sqrtm_psd",
    "frechet_distance",
    "frechet_distance_from_statistics",
    "classifier_outputs",
    "score_images",
]


def inception_score(probabilities: ArrayLike) -> float:
    """exp(mean over rows of KL(p(y|x) || p(y))) for rows of class probabilities (N, classes)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] == 0 or p.shape[1] == 0:
        raise ValueError(f"inception_score: expected probabilities of shape (N, classes), got shape {p.shape}")
    if not np.isfinite(p).all() or p.min() < 0 or not np.allclose(p.sum(axis=1), 1, atol=1e-4):
        raise ValueError("inception_score: each row must hold finite probabilities >= 0 that sum to 1")
    marginal = p.mean(axis=0)
    # 0 log 0 = 0; where p > 0 the marginal is > 0 too
    positive = p > 0
    terms = np.zeros_like(p)
    terms[positive] = p[positive] * (np.log(p[positive]) - np.log(np.broadcast_to(marginal, p.shape)[positive]))
    return float(np.exp(terms.sum(axis=1).mean()))


def sqrtm_psd(matrix: ArrayLike) -> NDArray[np.float64]:
    """The symmetric positive semi-definite square root of a symmetric PSD matrix (eigenvalues
    below 0, rounding errors, are taken as 0)."""
    a = np.asarray(matrix, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"sqrtm_psd: expected a square matrix, got shape {a.shape}")
    if not np.allclose(a, a.T, rtol=1e-8, atol=1e-10 * max(1.0, float(np.abs(a).max(initial=0.0)))):
        raise ValueError("sqrtm_psd: the matrix is not symmetric")
    values, vectors = np.linalg.eigh((a + a.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance_from_statistics(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), the Fréchet (2-Wasserstein) distance of two Gaussians.

    tr((S1 S2)^(1/2)) = tr((S1^(1/2) S2 S1^(1/2))^(1/2)): the matrix inside is symmetric PSD,
    so the trace is the sum of the square roots of its eigenvalues.
    """
    m1, m2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = m1.shape[0]
    if m1.shape != (d,) or m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(
            "frechet_distance_from_statistics: expected two means of shape (d,) and covariances (d, d), got "
            f"{m1.shape}, {s1.shape}, {m2.shape}, {s2.shape}"
        )
    root1 = sqrtm_psd(s1)
    inner = root1 @ s2 @ root1
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    distance = float(((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_root)
    return max(distance, 0.0)


def frechet_distance(features1: ArrayLike, features2: ArrayLike) -> float:
    """The Fréchet distance of the Gaussians fitted to two sets of feature rows (N, d)."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1] or min(len(f1), len(f2)) < 2:
        raise ValueError(
            f"frechet_distance: expected two sets of at least 2 feature rows of the same width, got {f1.shape} "
            f"and {f2.shape}"
        )
    return frechet_distance_from_statistics(
        f1.mean(axis=0), np.cov(f1, rowvar=False), f2.mean(axis=0), np.cov(f2, rowvar=False)
    )


def classifier_outputs(model: Any, images: ArrayLike, batch_size: int = 500) -> Tuple[NDArray[Any], NDArray[Any]]:
    """(penultimate features, softmax probabilities) of a deepnet classifier on ``images``
    ((N, 1, 28, 28) in [0, 1]), in inference mode.  The features are the input of the
    model's last top-level Affine layer."""
    from deepnet.layers import Affine, softmax
    from deepnet.nn.containers import Sequential

    layers = list(model.layers)
    last = max((i for i, layer in enumerate(layers) if isinstance(layer, Affine)), default=None)
    if last is None:
        raise ValueError(
            f"classifier_outputs: the classifier needs an Affine layer at its top level, got layers "
            f"{[type(layer).__name__ for layer in layers]}"
        )
    body, head = Sequential(*layers[:last]), Sequential(*layers[last:])
    x = np.asarray(images, dtype=model.dtype)
    features, probabilities = [], []
    for start in range(0, len(x), batch_size):
        f = body.forward(x[start : start + batch_size], False)
        features.append(np.asarray(f, np.float64).reshape(len(f), -1))
        probabilities.append(softmax(np.asarray(head.forward(f, False), np.float64)))
    return np.concatenate(features), np.concatenate(probabilities)


def score_images(model: Any, images: ArrayLike, reference_features: ArrayLike) -> dict:
    """{"inception_score", "frechet_distance"} of ``images`` against the features of the
    reference images (classifier_outputs(model, reference)[0])."""
    features, probabilities = classifier_outputs(model, images)
    return {
        "inception_score": inception_score(probabilities),
        "frechet_distance": frechet_distance(features, reference_features),
    }
