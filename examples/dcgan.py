"""A DCGAN on MNIST with deepnet's layers (chapter 8.5.2, image generation), scored by a deepnet classifier.

Generator: a 100-d noise vector -> Affine to 64x7x7 -> BN, ReLU -> ConvTranspose(64->32, 4,
stride 2, pad 1) to 14x14 -> BN, ReLU -> ConvTranspose(32->1, 4, stride 2, pad 1) to 28x28
-> tanh.  Discriminator: Convolution(1->32, 4, stride 2, pad 1), LeakyReLU(0.2) ->
Convolution(32->64, 4, stride 2, pad 1), BN, LeakyReLU(0.2) -> Flatten -> Affine to one logit.
Both trained with Adam (lr 2e-4, beta1 0.5) on the binary cross-entropy of the logits
(SigmoidWithLoss), the generator on the non-saturating loss (fakes labelled real).

The samples are judged by a deepnet classifier (``--classifier`` a model file from
``deepnet train``, else the book's DeepConvNet trained here on a validation split):
the MNIST inception score and the Fréchet distance of its penultimate features
(examples/gan_scores.py), with real MNIST (test against training images) as the baseline.

    python examples/dcgan.py --out dcgan-run            # the full run
    python examples/dcgan.py --quick --out /tmp/dcgan   # a few seconds, what CI runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import struct
import sys
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
try:
    import deepnet
except ImportError:  # run from a source checkout without PYTHONPATH
    sys.path.insert(0, str(REPO))
    import deepnet

from deepnet.layers import (  # noqa: E402
    Affine,
    BatchNormalization,
    Convolution,
    ConvTranspose,
    Flatten,
    LeakyReLU,
    SigmoidWithLoss,
    Tanh,
)
from deepnet.nn.containers import Sequential  # noqa: E402
from deepnet.training.optimizers import Adam  # noqa: E402

sys.path.insert(0, str(HERE))
import gan_scores  # noqa: E402

Z_DIM = 100
DTYPE = np.float32


def _normal(rng: np.random.Generator, shape: Sequence[int], dtype: Any, std: float = 0.02) -> np.ndarray:
    """DCGAN's initialisation: weights drawn from N(0, 0.02^2)."""
    return (rng.standard_normal(shape) * std).astype(dtype)


def _batch_norm(features: int, dtype: Any, relu: bool = False) -> BatchNormalization:
    return BatchNormalization(np.ones(features, dtype), np.zeros(features, dtype), relu=relu)


class Generator:
    """z (N, 100) -> images (N, 1, 28, 28) in [-1, 1].

    deepnet has no Reshape layer, so the generator is two Sequentials and reshapes the
    head's (N, C*7*7) output to (N, C, 7, 7) between them (and the gradient back).
    """

    def __init__(self, rng: np.random.Generator, width: int = 64, z_dim: int = Z_DIM, dtype: Any = DTYPE) -> None:
        c, half = width, width // 2
        self.width, self.z_dim, self.dtype = width, z_dim, dtype
        self.head = Sequential(
            Affine(_normal(rng, (z_dim, c * 49), dtype), np.zeros(c * 49, dtype)),
            _batch_norm(c * 49, dtype, relu=True),
        )
        self.body = Sequential(
            ConvTranspose(_normal(rng, (c, half, 4, 4), dtype), np.zeros(half, dtype), stride=2, pad=1),
            _batch_norm(half, dtype, relu=True),
            ConvTranspose(_normal(rng, (half, 1, 4, 4), dtype), np.zeros(1, dtype), stride=2, pad=1),
            Tanh(),
        )

    def forward(self, z: np.ndarray, train: bool = True) -> np.ndarray:
        h = self.head.forward(z, train)
        return self.body.forward(h.reshape(len(h), self.width, 7, 7), train)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """The gradient of z (the parameters' gradients land in ``grads``)."""
        dh = self.body.backward(dout)
        assert dh is not None  # Sequential.backward computes the input gradient by default
        dz = self.head.backward(dh.reshape(len(dh), -1))
        assert dz is not None
        return dz

    @property
    def params(self) -> Dict[str, np.ndarray]:
        return {**_prefixed("head.", self.head.params), **_prefixed("body.", self.body.params)}

    @property
    def grads(self) -> Dict[str, np.ndarray]:
        return {**_prefixed("head.", self.head.grads), **_prefixed("body.", self.body.grads)}

    @property
    def buffers(self) -> Dict[str, np.ndarray]:
        return {**_prefixed("head.", self.head.buffers), **_prefixed("body.", self.body.buffers)}

    def named_arrays(self) -> Dict[str, np.ndarray]:
        """Parameters and buffers (``buffers/<name>``), the generator's own arrays, as
        deepnet.training.callbacks.WeightAverage reads a network's."""
        return {**self.params, **_prefixed("buffers/", self.buffers)}

    def load_arrays(self, arrays: Dict[str, np.ndarray]) -> None:
        """Copy named_arrays()-style ``arrays`` into the generator's own arrays."""
        for name, value in self.named_arrays().items():
            value[...] = arrays[name]


def _prefixed(prefix: str, arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {prefix + name: value for name, value in arrays.items()}


def discriminator(rng: np.random.Generator, width: int = 64, dtype: Any = DTYPE) -> Sequential:
    """images (N, 1, 28, 28) in [-1, 1] -> one logit each, (N, 1)."""
    half = width // 2
    return Sequential(
        Convolution(_normal(rng, (half, 1, 4, 4), dtype), np.zeros(half, dtype), stride=2, pad=1),
        LeakyReLU(0.2),
        Convolution(_normal(rng, (width, half, 4, 4), dtype), np.zeros(width, dtype), stride=2, pad=1),
        _batch_norm(width, dtype),
        LeakyReLU(0.2),
        Flatten(),
        Affine(_normal(rng, (width * 49, 1), dtype), np.zeros(1, dtype)),
    )


class DCGAN:
    """The two nets, their optimizers and one training step."""

    def __init__(
        self,
        seed: int,
        width: int = 64,
        lr: float = 2e-4,
        beta1: float = 0.5,
        ema: float = 0.0,
        real_label: float = 1.0,
        dtype: Any = DTYPE,
    ) -> None:
        from deepnet.training.callbacks import WeightAverage

        rng = np.random.default_rng(seed)
        self.G = Generator(rng, width, dtype=dtype)
        self.D = discriminator(rng, width, dtype)
        self.rng = rng
        self.opt_G, self.opt_D = Adam(lr, beta1, 0.999), Adam(lr, beta1, 0.999)
        self.loss = SigmoidWithLoss()
        self.real_label = real_label  # below 1: one-sided label smoothing of D's real targets
        # The generator's weights averaged over the steps (deepnet's WeightAverage, which
        # reads trainer.network): the samples come from the average.
        self.average = WeightAverage(ema) if ema else None
        self._view = SimpleNamespace(network=self.G)

    def noise(self, n: int, rng: Optional[np.random.Generator] = None) -> np.ndarray:
        return (rng or self.rng).standard_normal((n, self.G.z_dim)).astype(self.G.dtype)

    def _discriminate(self, x: np.ndarray, target: float, input_gradient: bool) -> Any:
        """D's loss on ``x`` against ``target`` and its backward pass: (loss, input gradient or None)."""
        logits = self.D.forward(x, True)
        loss = self.loss.forward(logits, np.full(logits.shape, target, logits.dtype))
        return loss, self.D.backward(self.loss.backward(), input_gradient=input_gradient)

    def step(self, real: np.ndarray) -> Dict[str, float]:
        """One update of D (real and fake batches, their BN statistics apart, as PyTorch's
        DCGAN does) and one of G on the same fakes; returns the losses."""
        fake = self.G.forward(self.noise(len(real)), True)
        loss_real, _ = self._discriminate(real, self.real_label, input_gradient=False)
        grads = {name: g.copy() for name, g in self.D.grads.items()}
        loss_fake, _ = self._discriminate(fake, 0.0, input_gradient=False)
        for name, g in self.D.grads.items():
            grads[name] += g
        self.opt_D.update(self.D.params, grads)
        loss_G, dfake = self._discriminate(fake, 1.0, input_gradient=True)
        self.G.backward(dfake)
        self.opt_G.update(self.G.params, self.G.grads)
        if self.average is not None:
            self.average.on_step_end(self._view)  # type: ignore[arg-type]
        return {"D": loss_real + loss_fake, "G": loss_G}

    @contextlib.contextmanager
    def averaged(self, use: bool = True) -> Iterator[None]:
        """The generator with the averaged weights (if any, and ``use``) swapped in."""
        if self.average is None or self.average.average is None or not use:
            yield
            return
        saved = {name: value.copy() for name, value in self.G.named_arrays().items()}
        self.G.load_arrays(self.average.average)
        try:
            yield
        finally:
            self.G.load_arrays(saved)

    def sample(self, n: int, rng: np.random.Generator, batch_size: int = 100, averaged: bool = True) -> np.ndarray:
        """n images in [0, 1], (n, 1, 28, 28), from the averaged generator (if any and
        ``averaged``), its BN in inference mode."""
        with self.averaged(averaged):
            out = [self.G.forward(self.noise(min(batch_size, n - i), rng), False) for i in range(0, n, batch_size)]
        return (np.concatenate(out) + 1) / 2


# -- the sample grid ---------------------------------------------------------------------


def image_grid(images: np.ndarray, rows: int, pad: int = 2) -> np.ndarray:
    """uint8 grid (rows x columns of images, white gaps of ``pad``) from images (N, 1, H, W) in [0, 1]."""
    n, _, h, w = images.shape
    columns = -(-n // rows)
    grid = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad), 255, np.uint8)
    pixels = np.clip(np.rint(255 * (1 - images[:, 0])), 0, 255).astype(np.uint8)  # dark digits on white
    for i in range(n):
        r, c = divmod(i, columns)
        grid[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = pixels[i]
    return grid


def png_bytes(gray: np.ndarray) -> bytes:
    """An 8-bit grayscale PNG of a (H, W) uint8 array (zlib only: no imaging library needed)."""
    height, width = gray.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + gray[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def write_png(path: Path, gray: np.ndarray) -> None:
    with deepnet.io.atomic_write(path) as f:
        f.write(png_bytes(gray))


def write_json(path: Path, data: Any) -> None:
    with deepnet.io.atomic_write(path, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


# -- the classifier ----------------------------------------------------------------------


def train_classifier(
    out: Path, x_train: np.ndarray, t_train: np.ndarray, epochs: int, seed: int, train_size: Optional[int]
) -> Any:
    """The book's DeepConvNet less its last Dropout, trained on the training images less a
    5,000-image validation split (Adam, lr 0.001), saved as out/classifier.npz.

    The book's last Dropout halves the class scores at inference, which softens every
    softmax and so lowers the inception score of every set of images, real ones too."""
    from deepnet.datasets import stratified_split
    from deepnet.layers import Dropout
    from deepnet.models import DeepConvNet, Sequential as Model
    from deepnet.training.trainer import Trainer

    if train_size is not None:
        x_train, t_train = x_train[:train_size], t_train[:train_size]
    train, val = stratified_split(t_train, max(len(t_train) // 12, 1), seed=seed)
    book = DeepConvNet(dtype=DTYPE, seed=seed)
    assert isinstance(book.layers[-1], Dropout)
    model = Model(*book.layers[:-1], rng=book.rng)
    trainer = Trainer(
        model,
        x_train[train],
        t_train[train],
        epochs=epochs,
        mini_batch_size=100,
        optimizer="Adam",
        optimizer_param={"lr": 0.001},
        verbose=False,
        seed=seed,
        x_val=x_train[val],
        t_val=t_train[val],
    )
    trainer.train()
    print(
        f"classifier: DeepConvNet less its last Dropout, {epochs} epochs on {len(train)} images; validation accuracy "
        f"{model.accuracy(x_train[val], t_train[val]):.4f}",
        flush=True,
    )
    model.save(out / "classifier.npz")
    return model


# -- the run -----------------------------------------------------------------------------


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="dcgan-out", help="output directory (refused if it exists, unless --force)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--data", default=str(REPO / "data" / "mnist"), help="MNIST directory (default: the repo's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="deepnet's threads (default 1)")
    p.add_argument("--epochs", type=int, default=8, help="at most this many epochs")
    p.add_argument("--minutes", type=float, default=17.0, help="stop training after this many minutes")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=64, help="the channels of the nets' widest layers")
    p.add_argument("--real-label", type=float, default=1.0, help="D's target for real images (0.9: smoothing)")
    p.add_argument("--ema", type=float, default=0.999, help="decay of the generator's weight average (0: none)")
    p.add_argument("--samples", type=int, default=10000, help="generated images scored")
    p.add_argument("--classifier", help="a model file from `deepnet train` (default: train one here)")
    p.add_argument("--classifier-epochs", type=int, default=4)
    p.add_argument("--quick", action="store_true", help="a tiny run of everything (seconds), for CI")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.samples, args.classifier_epochs = 1, 200, 1
    for name in ("epochs", "batch_size", "width", "samples", "threads", "classifier_epochs"):
        if getattr(args, name) < (2 if name in ("batch_size", "samples") else 1):
            p.error(f"--{name.replace('_', '-')} must be at least {2 if name in ('batch_size', 'samples') else 1}")
    if args.width % 2:
        p.error(f"--width must be even, got {args.width}")
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"dcgan: {out} exists; give --force to replace it, or another --out", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    deepnet.set_num_threads(args.threads)
    from deepnet.datasets import load_mnist
    from deepnet.models import load_model

    (x_train, t_train), (x_test, t_test) = load_mnist(flatten=False, root=args.data)
    train_size, test_size = (2000, 500) if args.quick else (None, None)
    x_gan = x_train[:train_size] * 2 - 1  # the GAN's images in [-1, 1], like tanh's output
    x_test, t_test = x_test[:test_size], t_test[:test_size]

    if args.classifier:
        classifier = load_model(args.classifier)
    else:
        classifier = train_classifier(out, x_train, t_train, args.classifier_epochs, args.seed, train_size)
    accuracy = classifier.accuracy(x_test, t_test)
    print(f"classifier test accuracy: {accuracy:.4f}", flush=True)

    # the real-data baseline: test images scored against as many training images
    reference = np.random.default_rng(args.seed).permutation(len(x_train))[: len(x_test)]
    test_features, test_probabilities = gan_scores.classifier_outputs(classifier, x_test)
    train_features, _ = gan_scores.classifier_outputs(classifier, x_train[reference])
    real = {
        "inception_score": gan_scores.inception_score(test_probabilities),
        "frechet_distance": gan_scores.frechet_distance(test_features, train_features),
    }
    print(
        f"real MNIST (test vs training): inception score {real['inception_score']:.3f}, "
        f"Frechet distance {real['frechet_distance']:.3f}",
        flush=True,
    )

    gan = DCGAN(args.seed, args.width, ema=args.ema, real_label=args.real_label)
    order_rng = np.random.default_rng(args.seed + 1)
    steps_per_epoch = len(x_gan) // args.batch_size
    budget, start, images, epoch = args.minutes * 60, time.perf_counter(), 0, 0
    stopped = False
    while epoch < args.epochs and not stopped:
        order = order_rng.permutation(len(x_gan))
        for i in range(steps_per_epoch):
            losses = gan.step(x_gan[order[i * args.batch_size : (i + 1) * args.batch_size]])
            images += args.batch_size
            if time.perf_counter() - start > budget:
                stopped = True
                break
        epoch += 1
        elapsed = time.perf_counter() - start
        # a glimpse of progress on 1,000 samples, its time left out of the training time
        glimpse = [
            gan_scores.inception_score(
                gan_scores.classifier_outputs(classifier, gan.sample(1000, np.random.default_rng(epoch), averaged=a))[1]
            )
            for a in ((False, True) if gan.average else (False,))
        ]
        start += time.perf_counter() - start - elapsed
        print(
            f"epoch {epoch}: D loss {losses['D']:.3f}, G loss {losses['G']:.3f}, {elapsed:.0f} s, "
            f"{images / elapsed:.0f} img/s, inception score of 1,000 samples "
            + " (averaged: ".join(f"{g:.3f}" for g in glimpse)
            + (")" if gan.average else ""),
            flush=True,
        )
    train_seconds = time.perf_counter() - start

    samples = gan.sample(args.samples, np.random.default_rng(args.seed + 2))
    generated = gan_scores.score_images(classifier, samples, test_features)
    print(
        f"DCGAN ({images} images in {train_seconds:.0f} s): inception score {generated['inception_score']:.3f}, "
        f"Frechet distance {generated['frechet_distance']:.3f}" + (" (the averaged generator)" if gan.average else ""),
        flush=True,
    )
    live: Optional[Dict[str, float]] = None
    if gan.average:
        live_samples = gan.sample(args.samples, np.random.default_rng(args.seed + 2), averaged=False)
        live = gan_scores.score_images(classifier, live_samples, test_features)
        print(
            f"the last weights: inception score {live['inception_score']:.3f}, "
            f"Frechet distance {live['frechet_distance']:.3f}",
            flush=True,
        )
    write_png(out / "samples.png", image_grid(samples[:100], rows=10))
    with gan.averaged():
        deepnet.io.save_params(out / "generator.npz", gan.G.named_arrays())
    write_json(
        out / "scores.json",
        {
            "framework": "deepnet",
            "settings": {k: v for k, v in vars(args).items() if k not in ("force",)},
            "classifier_test_accuracy": accuracy,
            "real": real,
            "generated": generated,
            "generated_last_weights": live,
            "epochs": images / len(x_gan),
            "training_images": images,
            "training_seconds": train_seconds,
        },
    )
    print(f"wrote {out / 'samples.png'}, {out / 'generator.npz'}, {out / 'scores.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
