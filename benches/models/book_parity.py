"""The book's trained DeepConvNet weights: compiled kernels against the NumPy reference.

    python benches/models/book_parity.py [--params PATH] [--dtype float64]

Loads the book's ``deep_convnet_params.pkl`` (restricted unpickler) and predicts all 10,000
MNIST test images twice, with the compiled kernels and with the pure-NumPy reference, and
prints both accuracies, how many predicted labels differ and the largest difference of
the class scores.
"""

import argparse
import pathlib
import time

import numpy as np

import deepnet
from deepnet.datasets import load_mnist
from deepnet.nets import DeepConvNet

DEFAULT_PARAMS = pathlib.Path(__file__).resolve().parents[2] / "data" / "book" / "deep_convnet_params.pkl"


def scores_and_labels(net, x, batch_size=500):
    scores = np.concatenate([net.predict(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
    return scores, scores.argmax(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default=str(DEFAULT_PARAMS))
    parser.add_argument("--dtype", default="float64", choices=("float16", "float32", "float64"))
    args = parser.parse_args()
    net = DeepConvNet(dtype=args.dtype)
    net.load_params(args.params)
    (_, _), (x_test, t_test) = load_mnist(flatten=False, dtype=net.dtype)
    results = {}
    for backend in ("cython", "numpy"):
        with deepnet.backend(backend):
            start = time.perf_counter()
            results[backend] = scores_and_labels(net, x_test)
            elapsed = time.perf_counter() - start
        accuracy = float(np.mean(results[backend][1] == t_test))
        print(f"{backend:>6}: accuracy {accuracy:.4f} on {len(t_test)} test images ({elapsed:.1f} s)")
    (scores_c, labels_c), (scores_n, labels_n) = results["cython"], results["numpy"]
    print(f"predicted labels that differ: {int(np.sum(labels_c != labels_n))} of {len(t_test)}")
    print(
        f"largest |score difference|: {float(np.abs(scores_c.astype(np.float64) - scores_n).max()):.3e} ({args.dtype})"
    )


if __name__ == "__main__":
    main()
