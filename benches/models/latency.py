"""Batch-1 latency of deepnet's inference against PyTorch and its peers, in alternating processes.

    python benches/models/latency.py [--threads 2] [--rounds 8] [--calls 400] [--markdown]
    python benches/models/latency.py --frameworks deepnet,deepnet-compiled,torch,ort-float32,ort-int8
    python benches/models/latency.py --model resnet --frameworks deepnet,torch,ort-float32
    python benches/models/latency.py --model googlenet --dtype float16 --frameworks deepnet,deepnet-compiled

Each round runs one process per framework (in the order given in odd rounds, reversed in
even ones); a process times --calls predictions of one random image after 50 untimed
ones and reports their median.  Printed: each round's medians, the median of the rounds
per framework, and in how many rounds deepnet (and deepnet-compiled) was faster than each
peer.

--model picks the network: DeepConvNet (the default), DeepConvNet-BN, the small ResNet or
GoogLeNet, or the binarized DeepConvNet (deepnet only); --dtype the one deepnet and
deepnet-compiled store it in (float32 by default; int8: deepnet.quantize of the BN-folded net,
calibrated on 64 random images; the peers stay float32).
deepnet infers as a deployed model would: BN folded (fold_batch_norm), and deepnet-compiled
runs that folded net through deepnet.compile (plan(x); checked against net.predict first,
unavailable where deepnet has no deepnet.compile).  PyTorch runs the mirror of the same net
(torch_deepconvnet.from_deepnet: deepnet's seed-0 weights and BN statistics) in eval mode under
no_grad; ONNX Runtime float32 runs that mirror exported to ONNX (--threads intra-op threads),
checked against deepnet's scores.  For DeepConvNet the peers are instead compare.py's rows of
the same names (benches/models/peers.py: the book's trained weights, checked against deepnet's
float32 classes): PyTorch bfloat16 autocast and int8, ONNX Runtime float32 and int8, deepnet int8
where deepnet has deepnet.quantize; the bfloat16 and int8 peers run DeepConvNet only.  By default
every framework installed here runs (PyTorch, onnx and onnxruntime: pip install ".[bench]").
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
FRAMEWORKS = ("deepnet", "deepnet-compiled", "torch") + PEERS
MODELS = {
    "deepconvnet": "DeepConvNet",
    "deepconvnet-bn": "DeepConvNet-BN",
    "resnet": "ResNet",
    "googlenet": "GoogLeNet",
    "deepconvnet-binary": "binarized DeepConvNet",
}
DTYPES = ("float32", "float16", "bfloat16", "int8")
# The frameworks that run each model; the other peers are DeepConvNet with the book's weights only.
ANY_MODEL = ("deepnet", "deepnet-compiled", "torch", "ort-float32")


def deepnet_net(model, dtype="float32"):
    """deepnet's ``model`` in ``dtype`` (seed 0) as it is deployed: BN folded (fold_batch_norm)."""
    import numpy as np

    import deepnet
    from deepnet._dtypes import require_bfloat16
    from deepnet.nets import fold_batch_norm
    from deepnet.recipes import MODEL_NAMES

    if dtype == "int8":
        net = fold_batch_norm(MODEL_NAMES[model]("float32", 0))
        return deepnet.quantize(net, np.random.default_rng(1).random((64, 1, 28, 28), dtype=np.float32))
    return fold_batch_norm(MODEL_NAMES[model](require_bfloat16() if dtype == "bfloat16" else dtype, 0))


def torch_mirror(model):
    """The float32 PyTorch mirror of deepnet's ``model`` (seed 0) with deepnet's weights, in eval mode."""
    import torch_deepconvnet
    from deepnet.recipes import MODEL_NAMES

    return torch_deepconvnet.from_deepnet(MODEL_NAMES[model]("float32", 0), model)


def predictor(framework, threads, model="deepconvnet", dtype="float32"):
    """A function that predicts one random MNIST-shaped image with ``model`` on ``framework``."""
    import numpy as np

    x = np.random.default_rng(0).random((1, 1, 28, 28), dtype=np.float32)
    if framework in PEERS and model == "deepconvnet":
        from compare import ROWS_BY_KEY, make_model

        peer = make_model(ROWS_BY_KEY[framework], threads)
        peer.eval_mode()
        x, _ = peer.batch(1)
        return lambda: peer.predict(x)
    if framework == "ort-float32":  # another model: its PyTorch mirror exported, checked against deepnet
        import tempfile

        import torch

        import peers

        torch.set_num_threads(threads)
        with tempfile.TemporaryDirectory(prefix="deepnet-latency-") as work:
            path = peers.export_onnx(torch_mirror(model), Path(work) / f"{model}.onnx")
            predict = peers.ort_predict(peers.ort_session(path, threads))  # the session holds the model read
        x_check = np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32)
        expected = deepnet_net(model).predict(x_check, train=False)
        if not np.allclose(predict(x_check), expected, rtol=1e-3, atol=1e-4):
            raise RuntimeError(f"the ONNX export of {model} gives other scores than deepnet's model")
        return lambda: predict(x)
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        mirror = torch_mirror(model)
        xt = torch.from_numpy(x)

        def predict():
            with torch.no_grad():
                return mirror(xt)

        return predict
    import deepnet

    deepnet.set_num_threads(threads)
    deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in
    net = deepnet_net(model, dtype)
    if framework == "deepnet-compiled":
        from compare import compiled_plan

        plan = compiled_plan(net, np.random.default_rng(1).random((8, 1, 28, 28), dtype=np.float32))
        return lambda: plan(x)
    return lambda: net.predict(x, train=False)


def measure(framework, threads, calls, model="deepconvnet", dtype="float32"):
    """Median seconds of one prediction (in this process)."""
    from compare import median_seconds

    return median_seconds(predictor(framework, threads, model, dtype), WARMUP, calls)


def missing(framework, model="deepconvnet"):
    """Why ``framework`` cannot run ``model`` here, or None where it can."""
    if model == "deepconvnet-binary" and framework not in ("deepnet", "deepnet-compiled"):
        return f"{framework} has no binarized DeepConvNet; with --model {model}: deepnet, deepnet-compiled"
    if model != "deepconvnet" and framework not in ANY_MODEL:
        return f"{framework} runs DeepConvNet only (the book's trained weights); with --model {model}: " + ", ".join(
            ANY_MODEL
        )
    if framework == "deepnet":
        return None
    if framework == "deepnet-compiled":
        import deepnet

        return None if hasattr(deepnet, "compile") else "this deepnet has no deepnet.compile"
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
    parser.add_argument("--model", choices=MODELS, default="deepconvnet", help="the network (default %(default)s)")
    parser.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="deepnet's and deepnet-compiled's (default %(default)s)"
    )
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
        print(json.dumps(measure(args.framework, args.threads, args.calls, args.model, args.dtype)))
        return
    if args.frameworks is None:
        frameworks = [name for name in FRAMEWORKS if not missing(name, args.model)]
    else:
        frameworks = list(dict.fromkeys(args.frameworks.split(",")))
        unknown = [name for name in frameworks if name not in FRAMEWORKS]
        if unknown or not frameworks:
            parser.error(
                f"--frameworks: unknown {', '.join(unknown) or 'empty list'}; choose from {', '.join(FRAMEWORKS)}"
            )
        unavailable = [f"{name} ({missing(name, args.model)})" for name in frameworks if missing(name, args.model)]
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
                    "--model",
                    args.model,
                    "--dtype",
                    args.dtype,
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
        f"{MODELS[args.model]} (deepnet in {args.dtype}, the others float32 unless the column names another type), "
        f"batch 1, {args.threads} thread(s), "
        f"median of {args.calls} calls per "
        f"process, {args.rounds} alternating rounds (ms)\n"
    )
    print(rounds_table(medians))
    print()
    for ours in ("deepnet", "deepnet-compiled"):
        for name in medians if ours in medians else ():
            if name != ours and not (ours == "deepnet-compiled" and name == "deepnet"):
                faster = sum(d < t for d, t in zip(medians[ours], medians[name]))
                print(f"{ours} faster than {name} in {faster} of {args.rounds} rounds")


if __name__ == "__main__":
    main()
