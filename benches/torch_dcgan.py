"""The DCGAN of examples/dcgan.py in PyTorch, the anchor: the same nets, recipe and scores.

Generator: Linear(100, 64*7*7) - BatchNorm1d - ReLU - (64, 7, 7) - ConvTranspose2d(64, 32,
4, 2, 1) - BatchNorm2d - ReLU - ConvTranspose2d(32, 1, 4, 2, 1) - Tanh; discriminator:
Conv2d(1, 32, 4, 2, 1) - LeakyReLU(0.2) - Conv2d(32, 64, 4, 2, 1) - BatchNorm2d -
LeakyReLU(0.2) - Flatten - Linear(64*7*7, 1).  Weights from N(0, 0.02^2), zero biases, BN
eps 1e-7 and momentum 0.1 (deepnet's 1e-7 and 0.9); Adam (lr 2e-4, betas (0.5, 0.999),
eps 1e-7) on BCEWithLogitsLoss; D on a real and a fake batch, then G on the same fakes.

The samples are scored by the same deepnet classifier (``--classifier``, e.g. the
classifier.npz an examples/dcgan.py run saved) with the same code (examples/gan_scores.py).
Needs torch (the bench extra).

    python benches/torch_dcgan.py --classifier dcgan-run/classifier.npz --out torch-dcgan-run
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))
import dcgan  # noqa: E402  (deepnet, the sample grid, the JSON writer)
import gan_scores  # noqa: E402

import deepnet  # noqa: E402


def _import_torch():
    try:
        import torch
    except ImportError as error:  # torch is the bench extra's, not deepnet's
        raise SystemExit(
            "torch_dcgan: needs PyTorch (pip install -e '.[bench]' in deepnet's source directory, or pip install torch)"
        ) from error
    return torch


def build(torch, width: int = 64, z_dim: int = dcgan.Z_DIM):
    """(generator, discriminator), DCGAN-initialised from torch's generator."""
    nn = torch.nn
    half = width // 2
    G = nn.Sequential(
        nn.Linear(z_dim, width * 49),
        nn.BatchNorm1d(width * 49, eps=1e-7, momentum=0.1),
        nn.ReLU(),
        nn.Unflatten(1, (width, 7, 7)),
        nn.ConvTranspose2d(width, half, 4, 2, 1),
        nn.BatchNorm2d(half, eps=1e-7, momentum=0.1),
        nn.ReLU(),
        nn.ConvTranspose2d(half, 1, 4, 2, 1),
        nn.Tanh(),
    )
    D = nn.Sequential(
        nn.Conv2d(1, half, 4, 2, 1),
        nn.LeakyReLU(0.2),
        nn.Conv2d(half, width, 4, 2, 1),
        nn.BatchNorm2d(width, eps=1e-7, momentum=0.1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(width * 49, 1),
    )
    for module in list(G) + list(D):
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(module.weight, 0.0, 0.02)
            nn.init.zeros_(module.bias)
    return G, D


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classifier", required=True, help="the deepnet model file that scores the samples")
    p.add_argument("--out", default="torch-dcgan-out")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    p.add_argument("--data", default=str(EXAMPLES.parent / "data" / "mnist"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch's and deepnet's threads (default 1)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--minutes", type=float, default=17.0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--samples", type=int, default=10000)
    p.add_argument("--real-label", type=float, default=1.0, help="D's target for real images")
    p.add_argument("--ema", type=float, default=0.999, help="decay of the generator's weight average (0: none)")
    p.add_argument("--quick", action="store_true", help="a tiny run (seconds)")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.samples = 1, 200
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    torch = _import_torch()
    out = Path(args.out)
    if out.exists():
        if not args.force:
            print(f"torch_dcgan: {out} exists; give --force to replace it, or another --out", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(args.threads)
    deepnet.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    from deepnet.datasets import load_mnist
    from deepnet.models import load_model

    (x_train, _), (x_test, t_test) = load_mnist(flatten=False, root=args.data)
    train_size, test_size = (2000, 500) if args.quick else (None, None)
    x_gan = torch.from_numpy(x_train[:train_size] * 2 - 1)
    x_test, t_test = x_test[:test_size], t_test[:test_size]
    classifier = load_model(args.classifier)
    accuracy = classifier.accuracy(x_test, t_test)
    test_features, _ = gan_scores.classifier_outputs(classifier, x_test)
    print(f"classifier test accuracy: {accuracy:.4f}", flush=True)

    G, D = build(torch, args.width)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-7)
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999), eps=1e-7)
    bce = torch.nn.BCEWithLogitsLoss()

    # deepnet's WeightAverage: avg = d avg + (1 - d) w after every step, d = min(decay, (1 + t) / (10 + t)),
    # the BN running statistics too
    average: dict = {}
    averaged_steps = 0

    def update_average() -> None:
        nonlocal averaged_steps
        state = {k: v for k, v in G.state_dict().items() if v.is_floating_point()}
        if not average:
            average.update({k: v.detach().clone() for k, v in state.items()})
            return
        averaged_steps += 1
        d = min(args.ema, (1 + averaged_steps) / (10 + averaged_steps))
        with torch.no_grad():
            for k, v in state.items():
                average[k].mul_(d).add_(v, alpha=1 - d)

    def sample(n: int, seed: int, averaged: bool = True) -> np.ndarray:
        noise = torch.Generator().manual_seed(seed)
        saved = {k: v.clone() for k, v in G.state_dict().items()}
        if averaged and average:
            G.load_state_dict(average, strict=False)
        G.eval()
        with torch.no_grad():
            images = [G(torch.randn(min(100, n - i), dcgan.Z_DIM, generator=noise)) for i in range(0, n, 100)]
        G.train()
        G.load_state_dict(saved)
        return ((torch.cat(images).numpy() + 1) / 2).astype(np.float32)

    order_rng = np.random.default_rng(args.seed + 1)
    B = args.batch_size
    steps_per_epoch = len(x_gan) // B
    ones, zeros = torch.ones(B, 1), torch.zeros(B, 1)
    real_targets = torch.full((B, 1), args.real_label)
    budget, start, images, epoch, stopped = args.minutes * 60, time.perf_counter(), 0, 0, False
    while epoch < args.epochs and not stopped:
        order = torch.from_numpy(order_rng.permutation(len(x_gan)))
        for i in range(steps_per_epoch):
            real = x_gan[order[i * B : (i + 1) * B]]
            fake = G(torch.randn(B, dcgan.Z_DIM))
            opt_D.zero_grad(set_to_none=True)
            loss_D = bce(D(real), real_targets) + bce(D(fake.detach()), zeros)
            loss_D.backward()
            opt_D.step()
            opt_G.zero_grad(set_to_none=True)
            loss_G = bce(D(fake), ones)
            loss_G.backward()
            opt_G.step()
            if args.ema:
                update_average()
            images += B
            if time.perf_counter() - start > budget:
                stopped = True
                break
        epoch += 1
        elapsed = time.perf_counter() - start
        glimpse = [
            gan_scores.inception_score(gan_scores.classifier_outputs(classifier, sample(1000, epoch, a))[1])
            for a in ((False, True) if args.ema else (False,))
        ]
        start += time.perf_counter() - start - elapsed
        print(
            f"epoch {epoch}: D loss {loss_D.item():.3f}, G loss {loss_G.item():.3f}, {elapsed:.0f} s, "
            f"{images / elapsed:.0f} img/s, inception score of 1,000 samples "
            + " (averaged: ".join(f"{g:.3f}" for g in glimpse)
            + (")" if args.ema else ""),
            flush=True,
        )
    train_seconds = time.perf_counter() - start

    samples = sample(args.samples, args.seed + 2)
    generated = gan_scores.score_images(classifier, samples, test_features)
    print(
        f"PyTorch DCGAN ({images} images in {train_seconds:.0f} s): inception score "
        f"{generated['inception_score']:.3f}, Frechet distance {generated['frechet_distance']:.3f}"
        + (" (the averaged generator)" if args.ema else ""),
        flush=True,
    )
    live = None
    if args.ema:
        live = gan_scores.score_images(classifier, sample(args.samples, args.seed + 2, False), test_features)
        print(
            f"the last weights: inception score {live['inception_score']:.3f}, "
            f"Frechet distance {live['frechet_distance']:.3f}",
            flush=True,
        )
    dcgan.write_png(out / "samples.png", dcgan.image_grid(samples[:100], rows=10))
    dcgan.write_json(
        out / "scores.json",
        {
            "framework": f"torch {torch.__version__}",
            "settings": {k: v for k, v in vars(args).items() if k != "force"},
            "classifier_test_accuracy": accuracy,
            "generated": generated,
            "generated_last_weights": live,
            "epochs": images / len(x_gan),
            "training_images": images,
            "training_seconds": train_seconds,
        },
    )
    print(f"wrote {out / 'samples.png'}, {out / 'scores.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
