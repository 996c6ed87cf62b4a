"""Semantic segmentation of digit canvases (chapter 8.4.2): a small FCN trained with the per-pixel loss.

Every pixel of a 64x64 canvas of one to three MNIST digits (examples/canvases.py) is
classified as one of the ten digits or the background.  The net is a small U-Net: a
convolutional encoder (3x3 convolutions, stride 2 to go down, BatchNormalization and ReLU),
a decoder of 2x2 stride-2 transposed convolutions, and skip connections that concatenate the
encoder's features of the same resolution (Concat of an identity branch and the deeper
branch).  It is trained with SpatialSoftmaxWithLoss and Adam.

Data: training canvases are made from MNIST's training images 0..54999, validation
canvases (every choice of the recipe: epochs, lr) from training images 55000..59999, and
the test canvases from MNIST's test images; the test set is evaluated once, at the end.

    python examples/segmentation.py                  # the full run: metrics.json, segmentation.png
    python examples/segmentation.py --quick --out /tmp/seg   # a tiny run (CI)

The output directory must not exist (or be empty) unless --force is given.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))  # canvases.py, beside this file

import deepnet  # noqa: E402
from deepnet._atomic import atomic_write  # noqa: E402
from deepnet.datasets import load_mnist  # noqa: E402
from deepnet.layers import BatchNormalization, Concat, Convolution, ConvTranspose, SpatialSoftmaxWithLoss  # noqa: E402
from deepnet.nn.containers import Sequential  # noqa: E402
from deepnet.nn.init import he_normal  # noqa: E402
from deepnet.optimizers import Adam  # noqa: E402

from canvases import NUM_CLASSES, make_canvases  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TRAIN_IMAGES = 55000  # training images 0..54999 make training canvases, the rest validation canvases
SEEDS = {"train": 1, "val": 2, "test": 3}  # the canvas families; --seed only moves the net's init and order

# The recipe, chosen on the validation canvases (docs/segmentation.md).
FULL = {"train": 38400, "val": 1000, "test": 1000, "epochs": 2, "batch": 32, "lr": 3e-3, "width": 8, "levels": 4}
QUICK = {"train": 1024, "val": 64, "test": 64, "epochs": 1, "batch": 32, "lr": 3e-3, "width": 4, "levels": 4}


# -- the model --------------------------------------------------------------------------------


def _conv(c_in: int, c_out: int, rng: np.random.Generator, stride: int = 1, k: int = 3) -> List[Any]:
    """A k x k convolution (stride 1 keeps the size, 2 halves it), BatchNormalization and ReLU."""
    W = he_normal((c_out, c_in, k, k), rng, np.float32)
    return [
        Convolution(W, np.zeros(c_out, np.float32), stride=stride, pad=k // 2),
        BatchNormalization.new(c_out, np.float32, relu=True),
    ]


def _up(c_in: int, c_out: int, rng: np.random.Generator) -> List[Any]:
    """A 2x2 stride-2 transposed convolution (doubles the size), BatchNormalization and ReLU."""
    W = he_normal((c_in, c_out, 2, 2), rng, np.float32)
    return [
        ConvTranspose(W, np.zeros(c_out, np.float32), stride=2),
        BatchNormalization.new(c_out, np.float32, relu=True),
    ]


def build_fcn(
    seed: int = 0, width: int = 8, levels: int = 3, prior: Optional[NDArray[np.floating]] = None
) -> Sequential:
    """The U-Net: ``levels`` halvings of 64x64 (to 8x8 for 3), width channels doubling at each level.

    Level k (resolution 64 / 2^k) is Concat(identity, Sequential(down, conv, deeper level,
    up)) followed by a convolution that mixes the skip with the upsampled features.  ``prior``
    (the classes' shares of the training pixels) sets the biases of the 1x1 head.
    """
    rng = np.random.default_rng(seed)
    channels = [width * 2**k for k in range(levels + 1)]

    def level(k: int) -> List[Any]:
        c, deeper = channels[k], channels[k + 1]
        inner: List[Any] = _conv(c, deeper, rng, stride=2) + _conv(deeper, deeper, rng)
        if k + 1 < levels:
            inner += level(k + 1)
        inner += _up(deeper, c, rng)
        return [Concat(Sequential(), Sequential(*inner))] + _conv(2 * c, c, rng)

    W = he_normal((NUM_CLASSES, channels[0], 1, 1), rng, np.float32)
    # The biases start at the log of the classes' shares: the background's 95 % is known
    # from the start, instead of a slow climb of one bias through the first hundreds of steps.
    b = np.zeros(NUM_CLASSES, np.float32) if prior is None else np.log(np.maximum(prior, 1e-6)).astype(np.float32)
    head = Convolution(W, b)
    return Sequential(*_conv(1, channels[0], rng), *level(0), head)


# -- metrics ----------------------------------------------------------------------------------


def confusion(true: NDArray[np.integer], pred: NDArray[np.integer], num_classes: int = NUM_CLASSES) -> NDArray[Any]:
    """counts[i, j]: pixels of true class i predicted as j."""
    true, pred = np.asarray(true).ravel(), np.asarray(pred).ravel()
    if true.shape != pred.shape:
        raise ValueError(f"confusion: true and pred must have the same size, got {true.size} and {pred.size}")
    for name, a in (("true", true), ("pred", pred)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"confusion: {name} classes must lie in 0..{num_classes - 1}, got {a.min()}..{a.max()}")
    return np.bincount(true.astype(np.int64) * num_classes + pred, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


def segmentation_metrics(counts: NDArray[Any]) -> Dict[str, Any]:
    """Pixel accuracy, IoU per class (TP / (TP + FP + FN); None for a class absent from both
    truth and prediction) and their mean over the classes that have one."""
    counts = np.asarray(counts, np.int64)
    tp = np.diag(counts)
    union = counts.sum(axis=0) + counts.sum(axis=1) - tp
    iou = [float(tp[c] / union[c]) if union[c] else None for c in range(counts.shape[0])]
    present = [v for v in iou if v is not None]
    return {
        "pixel_accuracy": float(tp.sum() / counts.sum()) if counts.sum() else float("nan"),
        "mean_iou": float(np.mean(present)) if present else float("nan"),
        "iou": iou,
    }


# -- training ---------------------------------------------------------------------------------


def predict(net: Sequential, x: NDArray[np.float32], batch: int = 100) -> NDArray[np.int64]:
    """The class of every pixel (inference mode: BatchNormalization's running statistics)."""
    out = [net.forward(x[i : i + batch], train=False).argmax(axis=1) for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.int64)


def evaluate(net: Sequential, x: NDArray[np.float32], t: NDArray[np.int64]) -> Dict[str, Any]:
    return segmentation_metrics(confusion(t, predict(net, x)))


def load_canvases(root: Optional[str], sizes: Dict[str, int]) -> Dict[str, Tuple[Any, Any]]:
    """{"train", "val", "test"}: (x, t) canvases from the MNIST parts they belong to."""
    (x_train, t_train), (x_test, t_test) = load_mnist(normalize=False, flatten=False, root=root)
    parts = {
        "train": (x_train[:TRAIN_IMAGES, 0], t_train[:TRAIN_IMAGES]),
        "val": (x_train[TRAIN_IMAGES:, 0], t_train[TRAIN_IMAGES:]),
        "test": (x_test[:, 0], t_test),
    }
    return {name: make_canvases(*parts[name], sizes[name], seed=SEEDS[name])[:2] for name in parts}


def class_shares(t: NDArray[np.integer]) -> NDArray[np.float64]:
    """Each class's share of the pixels of ``t``."""
    return np.bincount(np.asarray(t).ravel(), minlength=NUM_CLASSES) / max(np.asarray(t).size, 1)


def make_net(settings: Dict[str, Any], seed: int, data: Dict[str, Tuple[Any, Any]]) -> Sequential:
    """build_fcn of the recipe, its head's biases from the training canvases' class shares."""
    return build_fcn(seed, settings["width"], settings["levels"], class_shares(data["train"][1]))


def train(
    net: Sequential,
    data: Dict[str, Tuple[Any, Any]],
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    minutes: Optional[float] = None,
    log: Any = print,
) -> Dict[str, Any]:
    """Adam with a cosine decay of lr over the steps; the validation metrics after each epoch."""
    x, t = data["train"]
    loss_layer = SpatialSoftmaxWithLoss()
    optimizer = Adam(lr=lr)
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(x) // batch
    total = epochs * steps_per_epoch
    history: List[Dict[str, Any]] = []
    start = time.perf_counter()
    step, stopped = 0, False
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        losses = []
        for i in range(steps_per_epoch):
            if minutes is not None and time.perf_counter() - start > 60 * minutes:
                stopped = True
                break
            optimizer.lr = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            chosen = order[i * batch : (i + 1) * batch]
            scores = net.forward(x[chosen], train=True)
            losses.append(loss_layer.forward(scores, t[chosen].astype(np.int64)))
            net.backward(loss_layer.backward(), input_gradient=False)
            optimizer.update(net.params, net.grads)
            step += 1
        elapsed = time.perf_counter() - start
        val = evaluate(net, *data["val"])
        history.append(
            {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None, "seconds": elapsed, **_brief(val)}
        )
        log(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f}, val pixel accuracy {val['pixel_accuracy']:.4f}, "
            f"val mean IoU {val['mean_iou']:.4f} ({elapsed:.0f} s)"
        )
        if stopped:
            log(f"stopped after {step} of {total} steps: the --minutes limit")
            break
    return {"history": history, "train_seconds": time.perf_counter() - start, "steps": step, "total_steps": total}


def _brief(metrics: Dict[str, Any]) -> Dict[str, Any]:
    return {"val_pixel_accuracy": metrics["pixel_accuracy"], "val_mean_iou": metrics["mean_iou"]}


# -- the figure -------------------------------------------------------------------------------


def figure_png(x: NDArray[np.float32], t: NDArray[np.int64], pred: NDArray[np.int64]) -> bytes:
    """Inputs, true masks and predicted masks (one column a canvas) as PNG bytes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import ListedColormap
    except ImportError as error:
        raise RuntimeError("the figure needs matplotlib (pip install matplotlib), or pass --no-figure") from error
    colors = list(plt.get_cmap("tab10").colors) + [(0.0, 0.0, 0.0)]  # digits 0..9, background black
    cmap = ListedColormap(colors)
    n = len(x)
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for j in range(n):
        rows = [(x[j, 0], "gray", None), (t[j], cmap, NUM_CLASSES - 1), (pred[j], cmap, NUM_CLASSES - 1)]
        for i, (image, c, vmax) in enumerate(rows):
            ax = axes[i, j]
            ax.imshow(image, cmap=c, vmin=0, vmax=vmax if vmax is not None else 1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for i, name in enumerate(["input", "true", "predicted"]):
        axes[i, 0].set_ylabel(name)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in range(NUM_CLASSES)]
    fig.legend(handles, [str(c) for c in range(10)] + ["background"], loc="lower center", ncol=NUM_CLASSES)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


# -- the command ------------------------------------------------------------------------------


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise SystemExit(f"segmentation: --out {out} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise SystemExit(f"segmentation: {out} exists and is not empty; pass --force to overwrite its files")
    out.mkdir(parents=True, exist_ok=True)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds), for CI")
    p.add_argument("--out", type=Path, default=Path("segmentation-run"), help="output directory")
    p.add_argument("--force", action="store_true", help="write into an existing, non-empty --out")
    p.add_argument("--data", default=str(REPO / "data" / "mnist"), help="the MNIST directory")
    p.add_argument("--seed", type=int, default=0, help="the net's initialisation and the batches' order")
    p.add_argument("--threads", type=int, default=None, help="deepnet's threads (default: deepnet's)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--width", type=int, default=None, help="channels of the first level")
    p.add_argument("--levels", type=int, default=None, help="halvings of the resolution (3: down to 8x8)")
    p.add_argument("--train-canvases", type=int, default=None)
    p.add_argument("--val-canvases", type=int, default=None)
    p.add_argument("--test-canvases", type=int, default=None)
    p.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    p.add_argument("--no-test", action="store_true", help="tuning: train and validate only")
    p.add_argument("--no-figure", action="store_true", help="write no figure (no matplotlib needed)")
    return p.parse_args(argv)


def recipe(args: argparse.Namespace) -> Dict[str, Any]:
    """The settings of the run: --quick's or the full run's, with the options given on top."""
    settings = dict(QUICK if args.quick else FULL)
    for key, option in [
        ("train", "train_canvases"),
        ("val", "val_canvases"),
        ("test", "test_canvases"),
        ("epochs", "epochs"),
        ("batch", "batch"),
        ("lr", "lr"),
        ("width", "width"),
        ("levels", "levels"),
    ]:
        if getattr(args, option) is not None:
            settings[key] = getattr(args, option)
    for key in ("train", "val", "test", "epochs", "batch", "width", "levels"):
        if settings[key] < 1:
            raise SystemExit(f"segmentation: --{key} must be >= 1, got {settings[key]}")
    if settings["levels"] > 5:
        raise SystemExit(f"segmentation: --levels must lie in 1..5 (64 / 2^levels >= 2), got {settings['levels']}")
    if settings["batch"] > settings["train"]:
        raise SystemExit(f"segmentation: --batch {settings['batch']} is more than the {settings['train']} canvases")
    if not settings["lr"] > 0:
        raise SystemExit(f"segmentation: --lr must be > 0, got {settings['lr']}")
    return settings


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    settings = recipe(args)
    figure = not (args.no_figure or args.no_test)
    if figure and importlib.util.find_spec("matplotlib") is None:
        # found out before training, not after it
        if not args.quick:
            raise SystemExit("segmentation: the figure needs matplotlib (pip install matplotlib); or --no-figure")
        print("no matplotlib: no figure")
        figure = False
    _prepare_out(args.out, args.force)
    if args.threads is not None:
        deepnet.set_num_threads(args.threads)
    data = load_canvases(args.data, settings)
    net = make_net(settings, args.seed, data)
    print(f"FCN of {sum(p.size for p in net.params.values())} parameters; settings {settings}")
    result = train(net, data, settings["epochs"], settings["batch"], settings["lr"], args.seed, args.minutes)
    metrics: Dict[str, Any] = {"settings": settings, "seed": args.seed, "threads": args.threads, **result}
    if not args.no_test:
        x_test, t_test = data["test"]
        pred = predict(net, x_test)
        metrics["test"] = segmentation_metrics(confusion(t_test, pred))
        print(
            f"test ({len(x_test)} canvases): pixel accuracy {metrics['test']['pixel_accuracy']:.4f}, "
            f"mean IoU {metrics['test']['mean_iou']:.4f}; training took {result['train_seconds']:.0f} s"
        )
        if figure:
            png = figure_png(x_test[:8], t_test[:8], pred[:8])
            with atomic_write(args.out / "segmentation.png") as f:
                f.write(png)
    with atomic_write(args.out / "params.npz") as f:
        np.savez(f, **{k: np.asarray(v) for k, v in {**net.params, **net.buffers}.items()})
    with atomic_write(args.out / "metrics.json", "w") as f:
        json.dump(metrics, f, indent=1)
    print(f"wrote {args.out}")
    return metrics


if __name__ == "__main__":
    main()
