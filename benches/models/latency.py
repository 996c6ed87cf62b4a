"""Batch-1 latency of DeepConvNet inference: deepnet against PyTorch, in alternating processes.

    python benches/models/latency.py [--threads 2] [--rounds 8] [--calls 400] [--markdown]

Each round runs one process per framework (deepnet first in odd rounds, PyTorch first in
even ones); a process times --calls predictions of one random image after 50 untimed
ones and reports their median.  Printed: each round's medians, the median of the rounds
per framework, and in how many rounds deepnet was faster.  deepnet infers as a deployed
model would (BN folded, fold_batch_norm; DeepConvNet has none), PyTorch in eval mode
under no_grad.  Without PyTorch (pip install ".[bench]") only deepnet's rows are printed.
"""

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHES))  # compare.py and torch_deepconvnet.py
WARMUP = 50


def predictor(framework, threads):
    """A function that predicts one random MNIST-shaped image."""
    import numpy as np

    if framework == "torch":
        import torch

        import torch_deepconvnet

        torch.set_num_threads(threads)
        model = torch_deepconvnet.MODELS["deepconvnet"](dtype=torch.float32, seed=0)
        model.eval()
        x = torch.rand((1, 1, 28, 28), generator=torch.Generator().manual_seed(0))

        def predict():
            with torch.no_grad():
                return model(x)

        return predict
    import deepnet
    from deepnet.nets import DeepConvNet, fold_batch_norm

    deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in

    deepnet.set_num_threads(threads)
    net = fold_batch_norm(DeepConvNet(dtype="float32", seed=0))
    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    return lambda: net.predict(x, train=False)


def measure(framework, threads, calls):
    """Median seconds of one prediction (in this process)."""
    from compare import median_seconds

    return median_seconds(predictor(framework, threads), WARMUP, calls)


def rounds_table(medians):
    """The markdown table of the rounds: medians is {framework: [ms per round]}; one row per round, then
    the median of the rounds."""
    frameworks = list(medians)
    rounds = len(medians[frameworks[0]]) if frameworks else 0
    lines = ["| round | " + " | ".join(frameworks) + " |", "|---:|" + "---:|" * len(frameworks)]
    lines += [
        f"| {i + 1} | " + " | ".join(f"{medians[name][i]:.3f}" for name in frameworks) + " |" for i in range(rounds)
    ]
    lines.append("| median | " + " | ".join(f"{statistics.median(medians[name]):.3f}" for name in frameworks) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument(
        "--markdown",
        action="store_true",
        help="print a block to paste into the docs: the command that produced it, then the "
        "same table (GitHub markdown)",
    )
    parser.add_argument("--framework", choices=("deepnet", "torch"), help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.calls < 1:
        parser.error("--threads, --rounds and --calls must be positive")
    if args.framework:
        print(json.dumps(measure(args.framework, args.threads, args.calls)))
        return
    frameworks = ["deepnet"] + (["torch"] if importlib.util.find_spec("torch") else [])
    medians = {name: [] for name in frameworks}
    for round_ in range(args.rounds):
        order = frameworks if round_ % 2 == 0 else frameworks[::-1]
        for name in order:
            child = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--framework",
                    name,
                    "--threads",
                    str(args.threads),
                    "--calls",
                    str(args.calls),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            medians[name].append(1e3 * json.loads(child.stdout.strip().splitlines()[-1]))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{name} {medians[name][-1]:.3f} ms" for name in frameworks),
            file=sys.stderr,
        )
    if args.markdown:
        from compare import command_line

        print(f"Produced by `{command_line(__file__, sys.argv[1:])}`:\n")
    print(
        f"DeepConvNet float32, batch 1, {args.threads} thread(s), median of {args.calls} calls per "
        f"process, {args.rounds} alternating rounds (ms)\n"
    )
    print(rounds_table(medians))
    if "torch" in medians:
        faster = sum(d < t for d, t in zip(medians["deepnet"], medians["torch"]))
        print(f"\ndeepnet faster in {faster} of {args.rounds} rounds")


if __name__ == "__main__":
    main()
