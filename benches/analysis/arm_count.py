"""Instructions executed per multiply-add of the 64->64 convolution on aarch64, counted under qemu.

    python benches/analysis/arm_count.py [--env DIR] [--tree DIR] [--batch 16] [--size 8]

Speed cannot be timed under emulation, so this counts instead.  It runs the 3x3, pad 1,
64->64 float32 convolution of DeepConvNet (its sixth layer: 8x8 images) in an arm64 Python
under qemu-aarch64 with a counting plugin (benches/analysis/qemu_insn_count.c), once the
direct kernel (the gather GEMM, DEEPNET_WINOGRAD=never) and once Winograd (always), each
with 1 and 3 calls: the difference is two calls, free of start-up and imports.  It prints
per multiply-add of the direct convolution (N*OH*OW*FN*C*9): the instructions executed in
the kernels' shared objects, the whole process's, and the fmla's; the loads and stores
to the stack per fmla; and the hottest loop of the kernels with each instruction's count,
to show whether the accumulators stay in registers (no [sp] loads and stores between the
fmla's).

--env is what .ci/aarch64 prepares (default $DEEPNET_AARCH64_DIR or
~/.cache/deepnet-aarch64: sysroot/ with Debian's arm64 python3.11, site/ with numpy), --tree
a source tree with aarch64 kernels built in place (default ENV/build).  The host needs only
Python, a C compiler (for the plugin) and qemu-aarch64 with plugin support.
"""

import argparse
import bisect
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLUGIN_SOURCE = HERE / "qemu_insn_count.c"
PATHS = {"direct": "never", "winograd": "always"}  # DEEPNET_WINOGRAD for each path
REPS = (1, 3)


def guest(mode, reps, batch, size, channels, maps_out):
    """Run in the arm64 Python: `reps` convolutions, then save the process's memory map."""
    import numpy as np

    import deepnet
    from deepnet import functional as F

    deepnet.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, channels, size, size), dtype=np.float32)
    W = rng.standard_normal((channels, channels, 3, 3), dtype=np.float32) * 0.1
    b = np.zeros(channels, np.float32)
    with deepnet.winograd(mode):
        for _ in range(reps):
            F.conv2d(x, W, b, 1, 1)
    Path(maps_out).write_text(Path("/proc/self/maps").read_text())


def default_env():
    return Path(os.environ.get("DEEPNET_AARCH64_DIR", Path.home() / ".cache" / "deepnet-aarch64"))


def build_plugin(env):
    out = env / "qemu_insn_count.so"
    if not out.exists() or out.stat().st_mtime < PLUGIN_SOURCE.stat().st_mtime:
        cc = os.environ.get("CC_HOST", "cc")
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(PLUGIN_SOURCE)], check=True)
    return out


def read_maps(path):
    """[(start, end, file)] of the executable mappings, and {file: its lowest mapped address}."""
    regions, bases = [], {}
    for line in Path(path).read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6:
            start, end = (int(v, 16) for v in parts[0].split("-"))
            bases[parts[5]] = min(bases.get(parts[5], start), start)
            if "x" in parts[1]:
                regions.append((start, end, parts[5]))
    return regions, bases


def read_counts(counts_path, maps_path):
    """{(file, offset from the file's base): (count, disassembly)} from the plugin's file:
    keyed by file and offset, so that runs compare wherever the files were mapped."""
    regions, bases = read_maps(maps_path)
    regions.sort()
    starts = [r[0] for r in regions]
    counts = {}
    with open(counts_path) as f:
        for line in f:
            addr, count, disas = line.rstrip("\n").split(" ", 2)
            a = int(addr, 16)
            i = bisect.bisect_right(starts, a) - 1
            name = regions[i][2] if i >= 0 and a < regions[i][1] else "?"
            key = (name, a - bases.get(name, 0))
            n, _ = counts.get(key, (0, ""))
            counts[key] = (n + int(count), disas)
    return counts


def run_counted(env, tree, plugin, mode, reps, args, work):
    sysroot = env / "sysroot"
    counts, maps = work / f"{mode}-{reps}.txt", work / f"{mode}-{reps}.maps"
    cmd = [
        "qemu-aarch64",
        "-L",
        str(sysroot),
        "-plugin",
        f"{plugin},out={counts}",
        str(sysroot / "usr" / "bin" / "python3.11"),
        str(Path(__file__).resolve()),
        "--guest",
        mode,
        str(reps),
        str(args.batch),
        str(args.size),
        str(args.channels),
        str(maps),
    ]
    environ = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tree), str(env / "site")]),
        OMP_NUM_THREADS="1",  # the plugin's counters are not atomic
        OPENBLAS_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    subprocess.run(cmd, check=True, env=environ)
    return read_counts(counts, maps)


def is_kernel(name):
    return "/deepnet/_kernels/" in name


FMA = ("fmla", "fmls")
SIMD_REGISTER = re.compile(r"[qdshbv]\d+")


def classify(disas):
    """(mnemonic, "vector" or "general" for a load or store on the stack, else "")."""
    op, _, operands = disas.partition(" ")
    if "[sp" not in operands or not op.startswith(("ld", "st")):
        return op, ""
    return op, "vector" if SIMD_REGISTER.match(operands.strip().lstrip("{")) else "general"


def delta(run1, run3):
    """Per-instruction counts of the two extra calls: run 3 minus run 1."""
    out = {}
    for key, (n3, disas) in run3.items():
        n = n3 - run1.get(key, (0, ""))[0]
        if n > 0:
            out[key] = (n, disas)
    return out


def hottest_loop(counts):
    """The contiguous run of kernel instructions around the most executed one whose counts
    are at least half of its count: the innermost loop's body."""
    kernel = {k: v for k, v in counts.items() if is_kernel(k[0])}
    if not kernel:
        return "", []
    name, top = max(kernel, key=lambda k: kernel[k][0])
    limit = kernel[name, top][0] / 2
    lo = hi = top
    while kernel.get((name, lo - 4), (0,))[0] >= limit:
        lo -= 4
    while kernel.get((name, hi + 4), (0,))[0] >= limit:
        hi += 4
    return name, [(a, *kernel[name, a]) for a in range(lo, hi + 4, 4) if (name, a) in kernel]


def symbol_of(name, offset):
    """The function holding an offset of a shared object (aarch64-linux-gnu-nm), or ''."""
    nm = shutil.which("aarch64-linux-gnu-nm")
    if not nm:
        return ""
    best, value = "", -1
    for line in subprocess.run([nm, name], capture_output=True, text=True).stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tT" and value < int(parts[0], 16) <= offset:
            best, value = parts[2], int(parts[0], 16)
    return f"{best}+{offset - value:#x}" if best else ""


def report(path, counts, macs):
    """One row of the table: per multiply-add, and where the instructions ran."""
    by_file, fmla, stack = {}, 0, {"vector": 0, "general": 0}
    for (name, _), (n, disas) in counts.items():
        key = "kernels" if is_kernel(name) else Path(name).name
        by_file[key] = by_file.get(key, 0) + n
        if key == "kernels":
            op, on_stack = classify(disas)
            fmla += n if op in FMA else 0
            if on_stack:
                stack[on_stack] += n
    total = sum(by_file.values())
    top = sorted(by_file.items(), key=lambda kv: -kv[1])[:3]
    print(
        f"{path:9s} {by_file.get('kernels', 0) / macs:8.3f} {total / macs:8.3f} {fmla / macs:8.3f} "
        f"{stack['vector'] / max(fmla, 1):10.3f} {stack['general'] / max(fmla, 1):10.3f}   "
        + ", ".join(f"{k} {v / total:.1%}" for k, v in top)
    )


def print_loop(path, counts):
    """List the hottest loop; return how many vector loads and stores to the stack it holds."""
    name, loop = hottest_loop(counts)
    if not loop:
        print(f"{path}: no kernel instructions counted")
        return 0
    kinds = [classify(d) for _, _, d in loop]
    n_fmla = sum(1 for op, _ in kinds if op in FMA)
    spills = sum(1 for _, on_stack in kinds if on_stack == "vector")
    others = sum(1 for _, on_stack in kinds if on_stack == "general")
    print(
        f"\n{path}: the hottest loop, {len(loop)} instructions: {n_fmla} fmla, {spills} vector and {others} general "
        f"register loads/stores on the stack; {Path(name).name} {symbol_of(name, loop[0][0])}\n"
        "  offset   executions (two calls)  instruction"
    )
    for offset, n, disas in loop:
        print(f"  {offset:#8x} {n:>12,}  {disas}")
    return spills


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--guest":
        mode, reps, batch, size, channels, maps_out = sys.argv[2:8]
        guest(mode, int(reps), int(batch), int(size), int(channels), maps_out)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", type=Path, default=default_env(), help="what .ci/aarch64 prepared")
    parser.add_argument("--tree", type=Path, help="source tree with aarch64 kernels built in place (ENV/build)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=8, help="image height and width (DeepConvNet's: 8)")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--paths", default="direct,winograd", help="direct, winograd or both")
    parser.add_argument("--loop", action="store_true", help="also list the hottest loop of each path")
    parser.add_argument(
        "--require-no-spills",
        action="store_true",
        help="exit 1 when a hottest loop loads or stores vector registers on the stack (implies --loop)",
    )
    args = parser.parse_args()
    tree = (args.tree or args.env / "build").resolve()
    env = args.env.resolve()
    for need in ("qemu-aarch64", os.environ.get("CC_HOST", "cc")):
        if not shutil.which(need):
            sys.exit(f"arm_count.py: {need} not found (.ci/aarch64 installs what is needed)")
    if not (env / "sysroot" / "usr" / "bin" / "python3.11").exists():
        sys.exit(f"arm_count.py: no arm64 Python under {env}/sysroot: run .ci/aarch64 first")
    if not list((tree / "deepnet" / "_kernels").glob("conv*aarch64*.so")):
        sys.exit(f"arm_count.py: no aarch64 kernels in {tree}/deepnet/_kernels: run .ci/aarch64 first")
    plugin = build_plugin(env)
    macs = args.batch * args.size * args.size * args.channels * args.channels * 9
    print(
        f"{args.channels}->{args.channels} 3x3 pad 1 float32, batch {args.batch}, {args.size}x{args.size}, 1 thread: "
        f"{macs:,} multiply-adds a call (direct count); tree {tree}"
    )
    head = git_head(tree)
    if head:
        print(f"source: {head}")
    print("per multiply-add:")
    print(f"{'':9s} {'instructions':>17s} {'':8s} {'stack loads/stores':>21s}")
    print(
        f"{'path':9s} {'kernels':>8s} {'process':>8s} {'fmla':>8s} {'vector/fmla':>10s} {'general/fmla':>10s}   "
        "where the instructions ran"
    )
    loops = []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.paths.split(","):
            counts = delta(*(run_counted(env, tree, plugin, PATHS[path], r, args, Path(tmp)) for r in REPS))
            report(path, counts, macs * (REPS[1] - REPS[0]))
            loops.append((path, counts))
    if args.loop or args.require_no_spills:
        spills = sum(print_loop(path, counts) for path, counts in loops)
        if args.require_no_spills and spills:
            sys.exit(f"arm_count.py: the hottest loops load or store vector registers on the stack ({spills} of them)")


def git_head(tree):
    """The commit the tree was copied from, if .ci/aarch64 recorded it."""
    stamp = tree / "SOURCE"
    return stamp.read_text().strip() if stamp.exists() else ""


if __name__ == "__main__":
    main()
