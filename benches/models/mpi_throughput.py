"""Data-parallel throughput on this machine: 1 rank x 2 threads against 2 ranks x 1 thread.

    python benches/models/mpi_throughput.py                 # both layouts, alternating, 3 rounds
    mpiexec -n 2 python benches/models/mpi_throughput.py --worker --threads 1   # one measurement

A worker times DeepConvNet training steps (global batch 100, float32, Adam) through the
trainer's data-parallel step, and separately the gradient reduction each step does (one
flat buffer, reduce + broadcast), and prints one JSON line (rank 0).  The driver runs the
layouts in alternating subprocesses and prints medians; benches/analysis/scaling_model.py uses
these numbers.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH = 100


def worker(args):
    import deepnet
    from deepnet.distributed import MPICommunicator, SingleProcess
    from deepnet.nets import DeepConvNet

    deepnet.keep_freed_memory()  # as training does: freed activations reused, not faulted back in
    from deepnet.trainer import Trainer

    deepnet.set_num_threads(args.threads)
    comm = MPICommunicator() if args.mpi else SingleProcess()
    rng = np.random.default_rng(0)
    x = rng.random((BATCH * (args.steps + args.warmup), 1, 28, 28), dtype=np.float32)
    t = rng.integers(0, 10, len(x))
    net = DeepConvNet(seed=0)
    trainer = Trainer(net, x, t, epochs=1, mini_batch_size=BATCH, verbose=False, seed=0, communicator=comm)
    steps, reductions = [], []
    grads = None
    for i in range(args.warmup + args.steps):
        batch = slice(i * BATCH, (i + 1) * BATCH)
        comm.sum(np.zeros(1))  # line the ranks up, so each times the same step
        start = time.perf_counter()
        trainer.train_step(x[batch], t[batch])
        elapsed = time.perf_counter() - start
        grads = grads or {name: g.copy() for name, g in net.grads.items()}
        comm.sum(np.zeros(1))
        start = time.perf_counter()
        comm.sum_gradients(0.0, grads)
        reduction = time.perf_counter() - start
        if i >= args.warmup:
            steps.append(elapsed)
            reductions.append(reduction)
    if comm.is_root:
        print(
            json.dumps(
                {
                    "ranks": comm.size,
                    "threads": args.threads,
                    "step_s": statistics.median(steps),
                    "reduction_s": statistics.median(reductions),
                    "gradient_bytes": int(sum(g.nbytes for g in grads.values())),
                    "img_per_s": BATCH / statistics.median(steps),
                }
            )
        )


LAYOUTS = [(1, 2), (2, 1)]  # (ranks, threads per rank)


def driver(args):
    here = os.path.abspath(__file__)
    results = {layout: [] for layout in LAYOUTS}
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for _ in range(args.rounds):
        for ranks, threads in LAYOUTS:
            command = [sys.executable, here, "--worker", "--threads", str(threads), "--steps", str(args.steps)]
            if ranks > 1:
                command = [mpiexec, "-n", str(ranks)] + command + ["--mpi"]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            results[(ranks, threads)].append(json.loads(output.strip().splitlines()[-1]))
    print(
        f"DeepConvNet float32, global batch {BATCH}, {args.rounds} alternating rounds of {args.steps} steps (medians)\n"
    )
    print("| ranks x threads | img/s | step ms | gradient reduction ms/step |")
    print("|---|---:|---:|---:|")
    summary = {}
    for (ranks, threads), runs in results.items():
        step = statistics.median(r["step_s"] for r in runs)
        reduction = statistics.median(r["reduction_s"] for r in runs)
        summary[f"{ranks}x{threads}"] = {
            "step_s": step,
            "reduction_s": reduction,
            "gradient_bytes": runs[0]["gradient_bytes"],
        }
        print(f"| {ranks} x {threads} | {BATCH / step:.0f} | {step * 1e3:.1f} | {reduction * 1e3:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mpi", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="also write the medians here (for scaling_model.py)")
    args = parser.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
