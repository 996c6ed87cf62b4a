"""Why deeper (chapter 8.1.3): the book's net against shallower nets with the same receptive
field, on MNIST.

    python benches/models/depth.py [--epochs 3] [--plot depth.png]
    python benches/models/depth.py --accuracies 0.9908,0.9883,0.9879,0.9854 --plot depth.png   # redraw only

Two 3x3 convolutions see what one 5x5 sees (a 5x5 receptive field) with 2 x 9 = 18 weights
per pair of equally wide channels instead of 25, and an extra ReLU between them.  The nets,
each ending with the book's affine - relu - dropout - affine - dropout head:
  book                DeepConvNet: (3x3, 3x3, pool) x 3, widths 16, 32, 64 (conv4 padded by 2)
  5x5 x 3             one 5x5 convolution in place of each pair: (5x5, pool) x 3, the same widths
  3x3 pairs, width 32 (3x3, 3x3, pool) x 3, every convolution 32 wide
  5x5 x 3, width 32   (5x5, pool) x 3, every convolution 32 wide
The last two compare depth at equal width, where the 18-against-25 count holds; at the
book's widths a pair C -> F -> F has 9F(C + F) weights against 25CF for one 5x5, more when
C = F/2.  All train with the book's recipe (Adam 0.001, batch 100) for the same epochs.
Per net: parameters, multiply-adds per image, receptive field, seconds per epoch, and the
accuracy on all 10,000 test images after the last epoch (each net evaluated once).
"""

import argparse
import time

import numpy as np

from deepnet import layers as L
from deepnet.datasets import load_mnist
from deepnet.nets import DeepConvNet, Sequential, affine_layer, conv_layer, describe
from deepnet.trainer import Trainer


def head(features, rng, dtype, hidden=50, output=10):
    return [
        L.Flatten(),
        affine_layer(features, hidden, rng, dtype),
        L.Relu(),
        L.Dropout(0.5, rng=rng),
        affine_layer(hidden, output, rng, dtype),
        L.Dropout(0.5, rng=rng),
    ]


def net_5x5(seed, dtype=np.float32):
    """(5x5 conv, pool) x 3: one 5x5 convolution for each of the book's pairs of 3x3."""
    rng = np.random.default_rng(seed)
    layers, channels = [], 1
    for width, pad in ((16, 2), (32, 3), (64, 2)):  # pad 3 = the book's conv4 pad 2 + 1: same sizes
        layers += [conv_layer(channels, width, 5, rng, dtype, pad=pad, relu=True), L.Pooling(2, 2, stride=2)]
        channels = width
    return Sequential(*layers, *head(64 * 4 * 4, rng, dtype), rng=rng)


def equal_width(kernel, per_stage, width=32):
    """(kernel x kernel conv) x per_stage, pool, three times, every convolution ``width`` wide."""

    def make(seed, dtype=np.float32):
        rng = np.random.default_rng(seed)
        layers, channels = [], 1
        for _ in range(3):
            for _ in range(per_stage):
                layers.append(conv_layer(channels, width, kernel, rng, dtype, relu=True))
                channels = width
            layers.append(L.Pooling(2, 2, stride=2))
        return Sequential(*layers, *head(width * 3 * 3, rng, dtype), rng=rng)

    return make


NETS = {
    "book": lambda seed: DeepConvNet(seed=seed),
    "5x5 x 3": net_5x5,
    "3x3 pairs, width 32": equal_width(3, 2),
    "5x5 x 3, width 32": equal_width(5, 1),
}


def block_table():
    print("\nOne block at equal width C -> C: two 3x3 convolutions against one 5x5 (both see 5x5 pixels)\n")
    print("| width | 3x3 + 3x3 weights | 5x5 weights | ratio |")
    print("|---:|---:|---:|---:|")
    for width in (16, 32, 64):
        print(f"| {width} | {2 * 9 * width * width:,} | {25 * width * width:,} | {18 / 25:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--plot", help="draw accuracy against multiply-adds (needs matplotlib)")
    parser.add_argument(
        "--accuracies",
        metavar="ACC,...",
        help="no training: redraw --plot from the test accuracies of an earlier run, one per "
        "net in the table's order (e.g. README's); parameters and multiply-adds are computed",
    )
    args = parser.parse_args()
    if args.accuracies:
        accuracies = args.accuracies.split(",")
        if len(accuracies) != len(NETS) or not args.plot:
            parser.error(f"--accuracies needs {len(NETS)} values ({'; '.join(NETS)}), and --plot")
        rows = [
            (name, describe(make(args.seed)), None, float(accuracy))
            for (name, make), accuracy in zip(NETS.items(), accuracies)
        ]
        draw(rows, args.epochs, args.plot)
        return
    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, root=args.data)
    x_train, t_train = x_train[: args.train_size], t_train[: args.train_size]
    rows = []
    for name, make in NETS.items():
        net = make(args.seed)
        info = describe(net)
        # Per epoch the trainer checks 1,000 training images, as the book's recipe does.
        trainer = Trainer(
            net,
            x_train,
            t_train,
            epochs=args.epochs,
            mini_batch_size=100,
            verbose=False,
            seed=args.seed,
            evaluate_sample_num_per_epoch=1000,
        )
        start = time.perf_counter()
        trainer.train()
        seconds = (time.perf_counter() - start) / args.epochs
        rows.append((name, info, seconds, net.accuracy(x_test, t_test)))
    print(
        f"MNIST, {len(x_train)} training images, {args.epochs} epochs, the book's recipe; accuracy on all "
        f"{len(x_test)} test images (each net evaluated once)\n"
    )
    print("| net | parameters | multiply-adds / image | receptive field | s / epoch | test accuracy |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, info, seconds, accuracy in rows:
        print(
            f"| {name} | {info['parameters']:,} | {info['multiply_adds'] / 1e6:.2f} M | "
            f"{info['receptive_field']} px | {seconds:.1f} | {accuracy:.4f} |"
        )
    block_table()
    if args.plot:
        draw(rows, args.epochs, args.plot)


def figure_of(rows, epochs):
    """Test accuracy against multiply-adds, a point per net (its area: the parameters), each
    labelled beside its point, inside the axes: never over the title or past the edges."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    x = [info["multiply_adds"] / 1e6 for _, info, _, _ in rows]
    middle = (min(x) + max(x)) / 2
    for (name, info, _, accuracy), mads in zip(rows, x):
        axes.scatter(mads, accuracy * 100, s=info["parameters"] / 1000)
        left = mads > middle  # labels of the right-hand points go to their left
        axes.annotate(
            f"{name}\n{info['parameters'] / 1000:.0f}k params",
            (mads, accuracy * 100),
            xytext=(-10 if left else 10, 0),
            textcoords="offset points",
            ha="right" if left else "left",
            va="center",
            fontsize=9,
        )
    axes.margins(x=0.15, y=0.2)  # room for the labels of the points at the edges
    axes.set(
        xlabel="multiply-adds per image (millions)",
        ylabel="test accuracy (%)",
        title=f"depth on MNIST, {epochs} epochs (point area: parameters)",
    )
    return figure


def draw(rows, epochs, path):
    figure_of(rows, epochs).savefig(path, dpi=100)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
