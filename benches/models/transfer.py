"""Transfer learning (chapter 8.2.4): pre-train DeepConvNet on the digits 0-4, then learn the
digits 5-9 from only 1,000 labelled images, next to the same net trained from scratch on them.

    python benches/models/transfer.py [--pretrain-epochs 3] [--finetune-epochs 20] [--labelled 1000]

Three ways to learn 5-9 from the same 1,000 images, each with the same epochs, batch and
optimizer; the test images of 5-9 (4,861) are evaluated once per model, at the end:
  scratch      the whole net from a random start;
  fine-tune    the pre-trained convolutions and hidden layer loaded, the head (W8, b8) new,
               every layer trained;
  frozen       the same, but the six convolutions frozen (trainable = False): only the two
               affine layers learn.
"""

import argparse
import time

import numpy as np

from deepnet.datasets import load_mnist
from deepnet.nets import DeepConvNet
from deepnet.trainer import Trainer


def digits(x, t, classes):
    keep = np.isin(t, classes)
    return x[keep], np.searchsorted(classes, t[keep])  # labels 0..len(classes)-1


def train(net, x, t, epochs, seed, lr):
    start = time.perf_counter()
    Trainer(
        net,
        x,
        t,
        epochs=epochs,
        mini_batch_size=50,
        optimizer_param={"lr": lr},
        verbose=False,
        seed=seed,
        evaluate_sample_num_per_epoch=1000,
    ).train()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--finetune-epochs", type=int, default=20)
    parser.add_argument("--labelled", type=int, default=1000)
    parser.add_argument("--pretrain-size", type=int, default=None, help="pre-train on the first N images of 0-4")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default=None, help="the MNIST directory")
    args = parser.parse_args()

    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, root=args.data)
    first, second = np.arange(5), np.arange(5, 10)
    x_a, t_a = digits(x_train, t_train, first)
    x_a, t_a = x_a[: args.pretrain_size], t_a[: args.pretrain_size]
    x_b, t_b = digits(x_train, t_train, second)
    pick = np.random.default_rng(args.seed).choice(len(x_b), args.labelled, replace=False)
    x_b, t_b = x_b[pick], t_b[pick]
    x_b_test, t_b_test = digits(x_test, t_test, second)

    pretrained = DeepConvNet(output_size=5, seed=args.seed)
    seconds = train(pretrained, x_a, t_a, args.pretrain_epochs, args.seed, 0.001)
    x_a_test, t_a_test = digits(x_test, t_test, first)
    print(
        f"pre-trained on {len(x_a)} images of 0-4 for {args.pretrain_epochs} epochs ({seconds:.0f} s): "
        f"{pretrained.accuracy(x_a_test, t_a_test):.4f} on the {len(x_a_test)} test images of 0-4"
    )
    body = [f"{kind}{i}" for i in range(1, 8) for kind in "Wb"]  # everything but the head W8, b8

    rows = []
    for method in ("scratch", "fine-tune", "frozen"):
        net = DeepConvNet(output_size=5, seed=args.seed + 1)
        if method != "scratch":
            net.set_params(pretrained.params, only=body)
        if method == "frozen":
            for layer in net.layers:
                if type(layer).__name__ == "Convolution":
                    layer.trainable = False
        trainable = sum(net.params[name].size for name in net.gradient(x_b[:2], t_b[:2]))
        seconds = train(net, x_b, t_b, args.finetune_epochs, args.seed, 0.001)
        rows.append((method, trainable, net.accuracy(x_b_test, t_b_test), seconds))

    print(
        f"\nlearning 5-9 from {args.labelled} labelled images, {args.finetune_epochs} epochs; accuracy on the "
        f"{len(x_b_test)} test images of 5-9 (each model evaluated once)\n"
    )
    print("| start | trained parameters | test accuracy 5-9 | seconds |")
    print("|---|---:|---:|---:|")
    for method, trainable, accuracy, seconds in rows:
        print(f"| {method} | {trainable:,} | {accuracy:.4f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()
