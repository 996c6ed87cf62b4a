"""A trained network, shared by ``deepnet predict`` and the threads of ``deepnet serve``."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..layers import softmax

__all__ = ["load_for_inference", "DigitReader"]


def load_for_inference(path):
    """The model saved in ``path`` (any model file, a parameter .npz or the book's .pkl),
    computing in float32."""
    from .. import cli

    return cli._load_network(path, "float32")


class DigitReader:
    """Probabilities, feature maps and first-layer filters of one network, for any thread.

    The layers keep the arrays of their last forward pass, so every pass through the
    network runs on one worker thread, one at a time; callers wait for their result.
    (One long-lived thread also keeps one OpenMP thread team: a new calling thread for
    each request would start a new team each time, 2 ms a request.)
    """

    def __init__(self, network):
        self.network = network
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deepnet-network")

    def probabilities(self, inputs):
        """Softmax of the scores for float32 inputs (N, 28, 28): float64 (N, 10)."""
        batch = np.asarray(inputs, dtype=np.float32)[:, None]
        scores = self._worker.submit(self.network.predict, batch).result()
        return softmax(np.asarray(scores, dtype=np.float64))

    def feature_maps(self, image):
        """[(name, output (C, H, W))] of each layer whose output is a stack of maps (the
        convolutions, fused with their ReLU, and the poolings) for one (28, 28) input."""
        x = np.asarray(image, dtype=np.float32)[None, None]
        return self._worker.submit(self._feature_maps, x).result()

    def _feature_maps(self, x):
        maps, counts = [], {}
        for layer in self.network.layers:
            x = layer.forward(x)
            if x.ndim != 4:  # past the last map: the classifier's vectors
                break
            kind = type(layer).__name__
            counts[kind] = counts.get(kind, 0) + 1
            maps.append((f"{kind} {counts[kind]}", x[0].copy()))
        return maps

    def first_filters(self):
        """The first convolution's filters (FN, C, FH, FW), or None for a net without one."""
        for layer in self.network.layers:
            weights = getattr(layer, "W", None)
            if weights is not None and weights.ndim == 4:
                return np.array(weights)
        return None
