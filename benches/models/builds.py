"""Builds of deepnet side by side: one compare.py row per build, in alternating processes.

    python benches/models/builds.py native=/path/to/tree dispatch=/path/to/venv/bin/python \\
        baseline=/path/to/venv/bin/python:DEEPNET_CPU_VARIANT=baseline --rounds 3 --threads 2

Each build is ``LABEL=WHERE[:VAR=value,...]``: WHERE is a source tree with an in-place build
(run with PYTHONPATH set to it) or a Python executable that has deepnet installed (a wheel in a
virtualenv); the variables are set for that build's processes.  Every round runs each build's
``compare.py --row ROW`` once, in turn, so that a slow minute of a shared machine falls on all
of them; the table gives each build's median over the rounds and its ratio to the first build.
The header names the CPU and each build's instruction-set variant (deepnet.show_config).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

COMPARE = Path(__file__).resolve().parent / "compare.py"
METRICS = (("train_ips", "training img/s"), ("infer_ips", "inference img/s"), ("latency_ms", "latency b=1 ms"))


def parse_build(text: str) -> tuple[str, list[str], dict[str, str]]:
    """LABEL=WHERE[:VAR=value,...] -> (label, command prefix, environment additions)."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"expected LABEL=WHERE[:VAR=value,...], got {text!r}")
    where, _, variables = rest.partition(":")
    env = {}
    for item in filter(None, variables.split(",")):
        name, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected VAR=value in {text!r}, got {item!r}")
        env[name] = value
    path = Path(where).expanduser().absolute()  # not resolved: a virtualenv's python is a symlink
    if path.is_dir():
        env["PYTHONPATH"] = str(path)
        return label, [sys.executable], env
    if path.is_file() and os.access(path, os.X_OK):
        env["PYTHONPATH"] = ""
        return label, [str(path)], env
    raise argparse.ArgumentTypeError(f"{where!r} is neither a source tree nor a Python executable")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run(command: list[str], env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [*command, *args], env={**os.environ, **env}, capture_output=True, text=True, cwd="/", timeout=1800
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command + list(args))} failed:\n{result.stderr[-2000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=parse_build, metavar="LABEL=WHERE[:VAR=value,...]")
    parser.add_argument("--row", default="deepnet-float32", help="compare.py's row (default deepnet-float32)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    # (builds older than the instruction-set variants have no cpu_variant: "n/a")
    variant_probe = (
        "from deepnet import _config; v = getattr(_config, 'cpu_variant', lambda: ('n/a', ''))(); "
        "print(*(v or ('none', '')), sep=': ')"
    )
    variants = {label: run(command, env, "-c", variant_probe).strip() for label, command, env in args.builds}
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in args.builds}
    for _ in range(args.rounds):
        for label, command, env in args.builds:
            out = run(
                command,
                env,
                str(COMPARE),
                "--row",
                args.row,
                "--threads",
                str(args.threads),
                "--steps",
                str(args.steps),
                "--warmup",
                "3",
            )
            results[label].append(json.loads(out.strip().splitlines()[-1]))
    print(
        f"`python benches/models/builds.py ... --row {args.row} --rounds {args.rounds} --threads {args.threads}` "
        f"on {cpu_name()} ({os.cpu_count()} CPUs); medians of {args.rounds} "
        "alternating rounds\n"
    )
    print("| build | variant | " + " | ".join(name for _, name in METRICS) + " | train / infer vs first |")
    print("|---|---|" + "---:|" * (len(METRICS) + 1))
    first: list[float | None] | None = None
    for label, _, _ in args.builds:
        # an inference-only row (int8, a compiled plan) has no training numbers: "n/a"
        medians = [_median([r[key] for r in results[label]]) for key, _ in METRICS]
        first = first or medians
        ratio = f"{_ratio(medians[0], first[0])} / {_ratio(medians[1], first[1])}"
        cells = [_cell(medians[0], "{:.0f}"), _cell(medians[1], "{:.0f}"), _cell(medians[2], "{:.3f}")]
        print(f"| {label} | {variants[label].split(':')[0]} | " + " | ".join(cells) + f" | {ratio} |")


def _median(values: list[float | None]) -> float | None:
    """The median of the rounds' values, or None where the row gives none (n/a)."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _ratio(value: float | None, reference: float | None) -> str:
    return "n/a" if value is None or not reference else f"{value / reference:.2f}x"


def _cell(value: float | None, form: str) -> str:
    return "n/a" if value is None else form.format(value)


if __name__ == "__main__":
    main()
