"""Batch-1 latency of DeepConvNet inference: deepnet against PyTorch and its peers, in alternating processes.

    python benches/models/latency.py [--threads 2] [--rounds 8] [--calls 400] [--markdown]
    python benches/models/latency.py --frameworks deepnet,torch,ort-float32,ort-int8

Each round runs one process per framework (in the order given in odd rounds, reversed in
even ones); a process times --calls predictions of one random image after 50 untimed
ones and reports their median.  Printed: each round's medians, the median of the rounds
per framework, and in how many rounds deepnet was faster than each other one.  deepnet
infers as a deployed model would (BN folded, fold_batch_norm; DeepConvNet has none),
PyTorch in eval mode under no_grad.  The peers are compare.py's rows of the same names
(benches/models/peers.py: the book's trained weights, checked against deepnet's float32
classes): PyTorch bfloat16 autocast and int8, ONNX Runtime float32 and int8, deepnet int8
where deepnet has deepnet.quantize.  By default every framework installed here runs
(PyTorch, onnx and onnxruntime: pip install ".[bench]").
"""

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BENCHES = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCHES))  # compare.py and torch_deepconvnet.py
WARMUP = 50
PEERS = ("torch-bfloat16", "torch-int8", "ort-float32", "ort-int8", "deepnet-int8")  # rows of compare.py
FRAMEWORKS = ("deepnet", "torch") + PEERS


def predictor(framework, threads):
    """A function that predicts one random MNIST-shaped image."""
    import numpy as np

    if framework in PEERS:
        from compare import ROWS_BY_KEY, make_model

        model = make_model(ROWS_BY_KEY[framework], threads)
        model.eval_mode()
        x, _ = model.batch(1)
        return lambda: model.predict(x)
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


def missing(framework):
    """Why ``framework`` cannot run here, or None where it can."""
    if framework == "deepnet":
        return None
    from compare import ROWS_BY_KEY
    from compare import missing as row_missing

    return row_missing(ROWS_BY_KEY["torch-float32" if framework == "torch" else framework])


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
    parser.add_argument(
        "--frameworks",
        default=None,
        help="comma-separated frameworks to race (default: each one installed here): " + ", ".join(FRAMEWORKS),
    )
    parser.add_argument("--framework", choices=FRAMEWORKS, help=argparse.SUPPRESS)  # a child
    args = parser.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.calls < 1:
        parser.error("--threads, --rounds and --calls must be positive")
    if args.framework:
        print(json.dumps(measure(args.framework, args.threads, args.calls)))
        return
    if args.frameworks is None:
        frameworks = [name for name in FRAMEWORKS if not missing(name)]
    else:
        frameworks = list(dict.fromkeys(args.frameworks.split(",")))
        unknown = [name for name in frameworks if name not in FRAMEWORKS]
        if unknown or not frameworks:
            parser.error(
                f"--frameworks: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(FRAMEWORKS)}"
            )
        unavailable = [f"{name} ({missing(name)})" for name in frameworks if missing(name)]
        if unavailable:
            parser.error(f"--frameworks: cannot run {', '.join(unavailable)}")
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
            )
            if child.returncode != 0:  # e.g. a peer that disagrees with deepnet's classes
                last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
                sys.exit(f"latency.py: {name} failed: {last}")
            medians[name].append(1e3 * json.loads(child.stdout.strip().splitlines()[-1]))
        print(
            f"round {round_ + 1}: " + ", ".join(f"{name} {medians[name][-1]:.3f} ms" for name in frameworks),
            file=sys.stderr,
        )
    if args.markdown:
        from compare import command_line

        print(f"Produced by `{command_line(__file__, sys.argv[1:])}`:\n")
    print(
        f"DeepConvNet (float32 unless the column names another type), batch 1, {args.threads} thread(s), "
        f"median of {args.calls} calls per "
        f"process, {args.rounds} alternating rounds (ms)\n"
    )
    print(rounds_table(medians))
    if "deepnet" in medians:
        print()
        for name in medians:
            if name != "deepnet":
                faster = sum(d < t for d, t in zip(medians["deepnet"], medians[name]))
                print(f"deepnet faster than {name} in {faster} of {args.rounds} rounds")


if __name__ == "__main__":
    main()
