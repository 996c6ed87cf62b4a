"""A few training steps of a small DeepConvNet with BN and dropout, in one process or under
``mpiexec -n K`` (--distributed): the parameters after the run go to OUT (rank 0), and with
several ranks every rank checks after every step that all ranks hold the same bits.

    python tests/mpi/steps.py --dtype float64 OUT.npz
    mpiexec -n 2 python tests/mpi/steps.py --distributed --dtype float64 OUT.npz
"""

import argparse
import hashlib
import json
import sys

import numpy as np

from deepnet.distributed import MPICommunicator, SingleProcess
from deepnet.nets import DeepConvNet
from deepnet.trainer import Trainer

STEPS, BATCH = 5, 12
OPTIMIZER = "Momentum"  # Adam would blow up the rounding noise of gradients that are exactly 0 (biases before BN)


def conv(filters, pad=1):
    return {"filter_num": filters, "filter_size": 3, "pad": pad, "stride": 1}


def run(dtype, communicator):
    data = np.random.default_rng(0)
    x = data.random((STEPS * BATCH, 1, 12, 12)).astype(dtype)
    t = data.integers(0, 4, STEPS * BATCH)
    net = DeepConvNet(
        input_dim=(1, 12, 12),
        conv_param_1=conv(3),
        conv_param_2=conv(3),
        conv_param_3=conv(4),
        conv_param_4=conv(4, pad=2),
        conv_param_5=conv(5),
        conv_param_6=conv(5),
        hidden_size=8,
        output_size=4,
        batch_norm=True,
        dtype=dtype,
        seed=1,
    )
    trainer = Trainer(
        net,
        x,
        t,
        epochs=1,
        mini_batch_size=BATCH,
        optimizer=OPTIMIZER,
        optimizer_param={"lr": 0.01},
        verbose=False,
        seed=2,
        communicator=communicator,
    )
    identical = []
    real_step = trainer.train_step

    def step(x_batch, t_batch):
        loss = real_step(x_batch, t_batch)
        digest = hashlib.sha256(
            b"".join(np.ascontiguousarray(v).tobytes() for _, v in sorted({**net.params, **net.buffers}.items()))
        ).hexdigest()
        digests = communicator.gather(digest)
        if communicator.is_root:
            identical.append(len(set(digests)) == 1)
        return loss

    trainer.train_step = step
    trainer.train()
    return net, trainer, identical


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--dtype", default="float64")
    parser.add_argument("--distributed", action="store_true")
    args = parser.parse_args()
    communicator = MPICommunicator() if args.distributed else SingleProcess()
    net, trainer, identical = run(np.dtype(args.dtype), communicator)
    if communicator.is_root:
        np.savez(args.out, **net.params, **{"buffers/" + k: v for k, v in net.buffers.items()})
        json.dump(
            {"identical_after_each_step": identical, "ranks": communicator.size, "losses": trainer.train_loss_list},
            sys.stdout,
        )


if __name__ == "__main__":
    main()
