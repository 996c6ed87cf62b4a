"""Fuzzing read_params: mutated and truncated copies of the book's pickle and of .npz files.

Every case must either load (an .npz exactly as saved: its CRC-32s cover every byte; a
pickle, which has no checksum, with the expected names and shapes and numeric dtypes) or
raise ParameterFileError naming the file, in bounded memory. The cases run in a child
process (this file run as a script), so a crash would show as its exit status instead of
killing pytest.
"""

import json
import pickle
import pickletools
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from support import BOOK_PARAMS

needs_book_pickle = pytest.mark.skipif(not BOOK_PARAMS.exists(), reason=f"{BOOK_PARAMS} not present")


@needs_book_pickle
@pytest.mark.parametrize("kind, cases", [("pkl", 250), ("npz", 200), ("npz-deflated", 120)])
def test_mutated_parameter_files_load_exactly_or_fail_cleanly(tmp_path, kind, cases):
    child = subprocess.run(
        [sys.executable, __file__, kind, "20261123", str(cases), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert child.returncode == 0, f"exit status {child.returncode}\n{child.stdout}\n{child.stderr}"
    summary = json.loads(child.stdout.splitlines()[-1])
    assert summary["cases"] == cases
    # Both outcomes were exercised, and many different checks refused a case.
    assert summary["refused"] >= cases // 2, summary
    assert summary["exact"] + summary["changed"] >= cases // 50, summary
    assert len(summary["messages"]) >= 4, summary


# --- the child process -------------------------------------------------------------------


def book_params():
    with open(BOOK_PARAMS, "rb") as f:
        return pickle.load(f)  # the trusted file, loaded the ordinary way as the reference


def original_file(kind, directory):
    """(bytes of the file to mutate, offsets of its structure: headers, opcodes, directory)."""
    if kind == "pkl":
        data = BOOK_PARAMS.read_bytes()
        return data, [position for _, _, position in pickletools.genops(data)]
    path = Path(directory) / "original.npz"
    (np.savez if kind == "npz" else np.savez_compressed)(path, **book_params())
    data = path.read_bytes()
    structure = []
    for marker in (b"PK\x03\x04", b"PK\x01\x02", b"PK\x05\x06", b"PK\x06\x06", b"\x93NUMPY"):
        start = data.find(marker)
        while start >= 0:
            structure.append(start)
            start = data.find(marker, start + 1)
    return data, structure


def mutate(data, structure, rng):
    """A damaged copy of ``data``: bytes changed (at random or in its structure), cut, or shifted."""
    how = rng.integers(6)
    if how == 0:
        return data[: rng.integers(len(data))]
    damaged = bytearray(data)
    if how == 1:
        del damaged[rng.integers(len(data))]
        return bytes(damaged)
    if how == 2:
        damaged.insert(rng.integers(len(data)), rng.integers(256))
        return bytes(damaged)
    for _ in range(rng.integers(1, 5)):
        if how == 3:
            position = rng.integers(len(data))
        else:  # near a header, an opcode or a directory entry: where parsers decide things
            near = structure[rng.integers(len(structure))] + rng.integers(160 if how == 4 else 12)
            position = min(len(data) - 1, near)
        damaged[position] = (damaged[position] + rng.integers(1, 256)) % 256
    return bytes(damaged)


def check_loaded(kind, loaded, reference):
    assert list(loaded) == list(reference), list(loaded)
    for name, array in loaded.items():
        assert type(array) is np.ndarray and array.dtype.kind in "iuf", (name, type(array), array.dtype)
        assert array.shape == reference[name].shape and array.flags.writeable, name
        if kind != "pkl":
            assert array.dtype == reference[name].dtype, name
            assert array.tobytes() == reference[name].tobytes(), name
    return all(
        array.dtype == reference[name].dtype and array.tobytes() == reference[name].tobytes()
        for name, array in loaded.items()
    )


def fuzz(kind, seed, cases, directory):
    from deepnet.io import ParameterFileError, read_params

    reference = book_params()
    expected = {name: value.shape for name, value in reference.items()}
    data, structure = original_file(kind, directory)
    path = Path(directory) / f"mutated.{kind[:3]}"
    rng = np.random.default_rng(seed)
    memory_limit = 4 * len(data) + (1 << 20)
    summary = {"cases": 0, "exact": 0, "changed": 0, "refused": 0, "max_peak": 0, "messages": set()}
    tracemalloc.start()
    for case in range(cases):
        path.write_bytes(mutate(data, structure, rng))
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        try:
            loaded = read_params(path, expected)
        except ParameterFileError as err:
            message = str(err)
            assert str(path) in message and "allow_pickle" not in message, message
            summary["refused"] += 1
            summary["messages"].add(message.split(": ", 2)[1][:40])
        else:
            summary["exact" if check_loaded(kind, loaded, reference) else "changed"] += 1
            del loaded
        peak = tracemalloc.get_traced_memory()[1] - before
        assert peak < memory_limit, f"case {case}: {peak} bytes traced, limit {memory_limit}"
        summary["max_peak"] = max(summary["max_peak"], peak)
        summary["cases"] += 1
    summary["messages"] = sorted(summary["messages"])
    return summary


if __name__ == "__main__":
    kind, seed, cases, directory = sys.argv[1:]
    print(json.dumps(fuzz(kind, int(seed), int(cases), directory)))
