"""The kernel-by-kernel table of docs/performance.md, from a pytest-benchmark JSON file.

    pytest benches/micro/test_bench_kernels.py --benchmark-only --benchmark-json=kernels.json
    python benches/micro/table.py kernels.json            # markdown: compiled vs NumPy reference

Each benchmark group of test_bench_kernels.py (``kernel[layer dtype]``) holds the compiled
kernel (``extra_info["backend"] == "cython"``) and the NumPy reference (``"numpy"``); a row
gives both medians and their ratio.  The header names the machine, the commit and the
threads from the file itself, so the table says where it was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def rows(report: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(group, compiled median s, reference median s) of every group that has both."""
    medians: dict[str, dict[str, float]] = {}
    for bench in report.get("benchmarks", []):
        backend = bench.get("extra_info", {}).get("backend")
        if bench.get("group") and backend in ("cython", "numpy"):
            medians.setdefault(bench["group"], {})[backend] = float(bench["stats"]["median"])
    return [
        (group, pair["cython"], pair["numpy"])
        for group, pair in sorted(medians.items())
        if "cython" in pair and "numpy" in pair
    ]


def header(report: dict[str, Any]) -> str:
    machine = report.get("machine_info", {})
    commit = report.get("commit_info", {})
    threads = {b.get("extra_info", {}).get("threads") for b in report.get("benchmarks", [])} - {None}
    cpu = machine.get("cpu", {}).get("brand_raw") or machine.get("processor") or "unknown CPU"
    return (
        f"{cpu}, {machine.get('cpu', {}).get('count', '?')} CPUs, threads {sorted(threads) or '?'}, "
        f"commit {str(commit.get('id', 'unknown'))[:7]}{' (dirty)' if commit.get('dirty') else ''}, "
        f"{report.get('datetime', '')[:10]}"
    )


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Measured on: {header(report)}",
        "",
        "| kernel [layer dtype] | compiled median | NumPy reference median | speed-up |",
        "|---|---:|---:|---:|",
    ]
    for group, compiled, reference in rows(report):
        lines.append(f"| {group} | {compiled * 1e3:.3f} ms | {reference * 1e3:.3f} ms | {reference / compiled:.1f}x |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="the file of pytest --benchmark-json")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        parser.error(f"cannot read {args.json}: {error}")
    if not rows(report):
        print(f"{args.json}: no group with both a compiled and a NumPy-reference benchmark", file=sys.stderr)
        return 1
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
