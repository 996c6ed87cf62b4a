"""Predicted data-parallel step time for K = 1..1024 ranks (chapter 8.3.3's road past one machine).

    python benches/analysis/scaling_model.py [--measured mpi.json]

step(K) = compute(B / K images) + ring allreduce of the gradients, where the ring costs
2 (K - 1) / K x bytes / bandwidth + 2 (K - 1) x latency.  Compute per image comes from
the 1-rank measurement of benches/models/mpi_throughput.py (--json), or a default taken on this
project's machine; the gradient size is DeepConvNet's float32 gradient.

Two regimes are printed: strong scaling (the global batch B = 100 split over K ranks, the
same training as one process) and weak scaling (100 images per rank, a global batch of
100 K, which needs learning-rate scaling and warmup beyond a few thousand, Goyal et al.
2017).  With --measured, the model is also checked against the 2-rank measurement, using
the reduction time measured on this machine (shared memory) in place of the network term:
one machine checks the compute term and the cost of one reduction per step, not the
network's bandwidth and latency, which stay assumptions.
"""

import argparse
import json

BATCH = 100
DEFAULT_COMPUTE_PER_IMAGE_S = 1 / 2000  # training, DeepConvNet float32, one 2-core machine
DEFAULT_GRADIENT_BYTES = 123_552 * 4
RANKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
STRONG_RANKS = tuple(k for k in RANKS if k <= BATCH)  # at least one image per rank
NETWORKS = [(10e9, 5e-6), (10e9, 50e-6), (100e9, 5e-6), (100e9, 50e-6)]  # bits/s, seconds


def ring_allreduce_s(ranks, nbytes, bandwidth_bits, latency_s):
    if ranks == 1:
        return 0.0
    return 2 * (ranks - 1) / ranks * nbytes * 8 / bandwidth_bits + 2 * (ranks - 1) * latency_s


def table(compute_per_image, nbytes, images_per_step, ranks=RANKS):
    header = "| K | " + " | ".join(f"{bw / 1e9:.0f} Gb/s, {lat * 1e6:.0f} us" for bw, lat in NETWORKS) + " |"
    lines = [header, "|---:|" + "---:|" * len(NETWORKS)]
    for k in ranks:
        cells = []
        for bandwidth, latency in NETWORKS:
            step = compute_per_image * images_per_step(k) + ring_allreduce_s(k, nbytes, bandwidth, latency)
            cells.append(f"{images_per_step(k) * k / step:,.0f} img/s ({step * 1e3:.2f} ms)")
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--measured", help="the JSON written by benches/models/mpi_throughput.py --json")
    args = parser.parse_args()
    compute, nbytes = DEFAULT_COMPUTE_PER_IMAGE_S, DEFAULT_GRADIENT_BYTES
    measured = None
    if args.measured:
        with open(args.measured) as f:
            measured = json.load(f)
        one = measured["1x2"]
        compute = one["step_s"] / BATCH  # 2 threads on this machine's 2 cores
        nbytes = one["gradient_bytes"]
    print(f"compute {compute * 1e3:.3f} ms per image (one 2-core machine), gradients {nbytes:,} bytes\n")
    print(f"Strong scaling: global batch {BATCH} split over K ranks (one 2-core machine each); images/s (step time)\n")
    print(table(compute, nbytes, lambda k: BATCH / k, STRONG_RANKS))
    print(f"\nWeak scaling: {BATCH} images per rank, global batch {BATCH} K; images/s (step time)\n")
    print(table(compute, nbytes, lambda k: BATCH))
    if measured:
        two = measured["2x1"]
        # Each of the 2 ranks has one of the 2 cores: its compute per image is 2 x the
        # 2-thread one, on half the batch, so the prediction is compute(B) + reduction.
        predicted = compute * BATCH + two["reduction_s"]
        print(
            f"\nCheck on this machine: 1 x 2 measured {one['step_s'] * 1e3:.1f} ms/step; 2 x 1 predicted "
            f"{predicted * 1e3:.1f} ms (compute {compute * BATCH * 1e3:.1f} + measured reduction "
            f"{two['reduction_s'] * 1e3:.2f}), measured {two['step_s'] * 1e3:.1f} ms"
        )


if __name__ == "__main__":
    main()
