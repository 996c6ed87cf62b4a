"""Run ``deepnet train ARGS...`` (under mpiexec) and print, from rank 0, one JSON line: per
rank, digests of its validation images and of its parameters after training.

    mpiexec -n 2 python tests/mpi/rank_state.py --distributed --val-size 100 ...
"""

import hashlib
import json
import os
import sys

import numpy as np

from deepnet import cli
from deepnet.training import trainer as T


def digest(arrays):
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()[:16]


real_train = T.Trainer.train


def train(self):
    result = real_train(self)
    mine = {
        "params": digest(v for _, v in sorted(self.network.params.items())),
        "validation": digest([self.x_val]) if self.x_val is not None else None,
    }
    every = self.communicator.gather(mine)
    if self.communicator.is_root:
        print(json.dumps({"ranks": every}), flush=True)
    return result


T.Trainer.train = train

# DEEPNET_TEST_HIDE_FROM_RANK1=PATH: rank 1 does not see PATH (a second host without the shared
# file system that holds rank 0's checkpoint).
hidden = os.environ.get("DEEPNET_TEST_HIDE_FROM_RANK1")
if hidden and os.environ.get("PMI_RANK") == "1":
    real_exists = os.path.exists
    T.os.path.exists = lambda path: False if os.path.abspath(path) == os.path.abspath(hidden) else real_exists(path)
sys.exit(cli.main(["train"] + sys.argv[1:]))
