"""The PyTorch anchor of examples/segmentation.py: the same FCN, data and recipe, trained in PyTorch.

The net is examples/segmentation.py's build_fcn carried over layer for layer (Convolution ->
Conv2d, ConvTranspose -> ConvTranspose2d, BatchNormalization -> BatchNorm2d with deepnet's
eps and momentum, Concat -> torch.cat of the branches) with its initial weights, and the
forward passes of both are compared before training.  The canvases, the batches' order, Adam
(lr, betas, eps 1e-7) with the cosine decay, the validation after each epoch and the
metrics are the example's.

    python benches/torch_segmentation.py                 # the full run (the example's recipe)
    python benches/torch_segmentation.py --quick         # a tiny run
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

import segmentation as example  # noqa: E402  (examples/segmentation.py: data, recipe, metrics)
from deepnet._atomic import atomic_write  # noqa: E402
from deepnet.layers import BatchNormalization, Concat, Convolution, ConvTranspose  # noqa: E402
from deepnet.nn.containers import Sequential  # noqa: E402


class Branches(nn.Module):
    """deepnet's Concat: every branch on the same input, the outputs concatenated on the channels."""

    def __init__(self, branches: List[nn.Module]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], dim=1)


def _tensor(a: Any) -> torch.Tensor:
    return torch.from_numpy(np.array(a, np.float32))


def from_deepnet(layer: Any) -> nn.Module:
    """The PyTorch module of a deepnet layer of build_fcn, with its parameters and statistics."""
    if isinstance(layer, Sequential):
        return nn.Sequential(*[from_deepnet(child) for child in layer.layers])
    if isinstance(layer, Concat):
        return Branches([from_deepnet(branch) for branch in layer.branches])
    if isinstance(layer, Convolution):
        c_out, c_in, kh, kw = layer.W.shape
        conv = nn.Conv2d(c_in, c_out, (kh, kw), stride=layer.stride, padding=layer.pad)
        conv.weight.data, conv.bias.data = _tensor(layer.W), _tensor(layer.b)
        return nn.Sequential(conv, nn.ReLU()) if layer.relu else conv
    if isinstance(layer, ConvTranspose):
        c_in, c_out, kh, kw = layer.W.shape
        up = nn.ConvTranspose2d(
            c_in, c_out, (kh, kw), stride=layer.stride, padding=layer.pad, output_padding=layer.output_padding
        )
        up.weight.data, up.bias.data = _tensor(layer.W), _tensor(layer.b)
        return up
    if isinstance(layer, BatchNormalization):
        bn = nn.BatchNorm2d(layer.gamma.size, eps=BatchNormalization.EPS, momentum=1 - layer.momentum)
        bn.weight.data, bn.bias.data = _tensor(layer.gamma), _tensor(layer.beta)
        bn.running_mean.data, bn.running_var.data = _tensor(layer.running_mean), _tensor(layer.running_var)
        return nn.Sequential(bn, nn.ReLU()) if layer.relu else bn
    raise TypeError(f"from_deepnet: no PyTorch mirror for {type(layer).__name__}")


def predict(model: nn.Module, x: np.ndarray, batch: int = 100) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        out = [model(torch.from_numpy(x[i : i + batch])).argmax(dim=1).numpy() for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.int64)


def evaluate(model: nn.Module, x: np.ndarray, t: np.ndarray) -> Dict[str, Any]:
    return example.segmentation_metrics(example.confusion(t, predict(model, x)))


def train(model: nn.Module, data: Dict[str, Any], settings: Dict[str, Any], seed: int, minutes: Optional[float]):
    """examples/segmentation.py's train, in PyTorch: the same batches, Adam and cosine decay."""
    x, t = data["train"]
    lr, batch, epochs = settings["lr"], settings["batch"], settings["epochs"]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(x) // batch
    total = epochs * steps_per_epoch
    history: List[Dict[str, Any]] = []
    start = time.perf_counter()
    step, stopped = 0, False
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(x))
        losses = []
        model.train()
        for i in range(steps_per_epoch):
            if minutes is not None and time.perf_counter() - start > 60 * minutes:
                stopped = True
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            chosen = order[i * batch : (i + 1) * batch]
            loss = loss_fn(model(torch.from_numpy(x[chosen])), torch.from_numpy(t[chosen].astype(np.int64)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
        elapsed = time.perf_counter() - start
        val = evaluate(model, *data["val"])
        history.append(
            {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else None,
                "seconds": elapsed,
                "val_pixel_accuracy": val["pixel_accuracy"],
                "val_mean_iou": val["mean_iou"],
            }
        )
        print(
            f"epoch {epoch}: loss {history[-1]['loss']:.4f}, val pixel accuracy {val['pixel_accuracy']:.4f}, "
            f"val mean IoU {val['mean_iou']:.4f} ({elapsed:.0f} s)"
        )
        if stopped:
            print(f"stopped after {step} of {total} steps: the --minutes limit")
            break
    return {"history": history, "train_seconds": time.perf_counter() - start, "steps": step, "total_steps": total}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the example's --quick recipe")
    p.add_argument("--data", default=str(example.REPO / "data" / "mnist"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--minutes", type=float, default=None, help="stop training after this long")
    p.add_argument("--json", type=Path, default=None, help="write the metrics here")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settings = dict(example.QUICK if args.quick else example.FULL)
    data = example.load_canvases(args.data, settings)
    net = example.make_net(settings, args.seed, data)
    model = from_deepnet(net)
    probe = data["val"][0][:4]
    model.eval()
    with torch.no_grad():
        gap = float(np.abs(model(torch.from_numpy(probe)).numpy() - net.forward(probe, train=False)).max())
    if gap > 1e-3:
        raise SystemExit(f"torch_segmentation: the PyTorch mirror differs from deepnet's FCN by {gap}")
    print(f"FCN of {sum(p.numel() for p in model.parameters())} parameters (forward equals deepnet's within {gap:.1e})")
    result = train(model, data, settings, args.seed, args.minutes)
    x_test, t_test = data["test"]
    test = evaluate(model, x_test, t_test)
    print(
        f"test ({len(x_test)} canvases): pixel accuracy {test['pixel_accuracy']:.4f}, mean IoU {test['mean_iou']:.4f};"
        f" training took {result['train_seconds']:.0f} s"
    )
    metrics = {"settings": settings, "seed": args.seed, "threads": torch.get_num_threads(), **result, "test": test}
    if args.json is not None:
        with atomic_write(args.json, "w") as f:
            json.dump(metrics, f, indent=1)
    return metrics


if __name__ == "__main__":
    main()
