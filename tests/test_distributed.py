"""Data-parallel training over MPI: K ranks compute what one process computes.

These tests launch ``mpiexec -n 2`` (the mpich wheel's, installed with the test extra).
"""

import json
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

import deepnet
from support import MNIST_DIR

HERE = Path(__file__).resolve().parent
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
# The test extra installs mpi4py with the mpich wheel's mpiexec: on CI one without the other
# is a broken install. (CI's kernel-only jobs have neither; these tests skip there.)
if MPIEXEC is None and importlib.util.find_spec("mpi4py") is not None and os.environ.get("CI"):
    raise RuntimeError("CI: mpi4py is installed but mpiexec is not; the test extra installs both (the mpich wheel)")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install '.[mpi]')")


def environment(**extra):
    # The ranks import the deepnet these tests imported (installed, or an in-place build).
    home = str(Path(deepnet.__file__).resolve().parents[1])
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [home, os.environ.get("PYTHONPATH")])),
        OMP_NUM_THREADS="1",
        **extra,
    )


def run(argv, ranks=None, cwd=None, timeout=300):
    command = ([MPIEXEC, "-n", str(ranks)] if ranks else []) + [sys.executable] + argv
    result = subprocess.run(command, capture_output=True, text=True, env=environment(), cwd=cwd, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def scale_relative_error(a, b):
    """max |a - b| over every parameter, relative to the largest parameter entry."""
    scale = max(float(np.abs(a[name]).max()) for name in a.files)
    return max(float(np.abs(a[name] - b[name]).max()) for name in a.files) / scale


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 1e-5)])
def test_two_ranks_compute_what_one_process_computes(tmp_path, dtype, tolerance):
    """5 steps of a DeepConvNet with BN and dropout: 2 ranks x 6 images = 1 process x 12."""
    one = json.loads(run([str(HERE / "mpi" / "steps.py"), "--dtype", dtype, str(tmp_path / "one.npz")]))
    two = json.loads(
        run([str(HERE / "mpi" / "steps.py"), "--distributed", "--dtype", dtype, str(tmp_path / "two.npz")], ranks=2)
    )
    assert two["ranks"] == 2 and two["identical_after_each_step"] == [True] * 5
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "two.npz") as b:
        assert a.files == b.files and any(name.startswith("buffers/") for name in a.files)
        error = scale_relative_error(a, b)
        print(f"{dtype}: 2 ranks against 1 process, 5 steps: scale-relative error {error:.1e}")  # -s shows it
        assert error <= tolerance
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=tolerance)


def train_argv(*extra):
    return [
        "-m",
        "deepnet",
        "train",
        "--distributed",
        "--data",
        str(MNIST_DIR),
        "--seed",
        "3",
        "--checkpoint",
        "c.npz",
        "--history",
        "h.json",
    ] + list(extra)


def test_an_interrupted_then_resumed_distributed_run_equals_an_uninterrupted_one(tmp_path):
    run(train_argv("--train-size", "600", "--epochs", "2", "--out", "whole.npz"), ranks=2, cwd=tmp_path)
    (tmp_path / "c.npz").unlink()
    run(train_argv("--train-size", "600", "--epochs", "1", "--out", "first.npz", "--overwrite"), ranks=2, cwd=tmp_path)
    out = run(
        train_argv("--train-size", "600", "--epochs", "2", "--resume", "--out", "resumed.npz"), ranks=2, cwd=tmp_path
    )
    assert "resumed from c.npz after epoch 1" in out and out.count("resumed from") == 1  # rank 0 prints
    with np.load(tmp_path / "whole.npz") as whole, np.load(tmp_path / "resumed.npz") as resumed:
        for name in whole.files:
            np.testing.assert_array_equal(whole[name], resumed[name], err_msg=name)


def rank_pids(tag):
    """The pids of the processes started with DEEPNET_TEST_TAG=tag, by their PMI_RANK."""
    pids = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            variables = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"DEEPNET_TEST_TAG={tag}".encode() in variables:
            for variable in variables:
                if variable.startswith(b"PMI_RANK="):
                    pids[int(variable[9:])] = int(entry.name)
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find the ranks")
def test_killing_one_rank_ends_all_ranks_quickly_and_keeps_the_checkpoint(tmp_path):
    tag = uuid.uuid4().hex
    command = [MPIEXEC, "-n", "2", sys.executable] + train_argv("--train-size", "2000", "--epochs", "100")
    job = subprocess.Popen(
        command,
        cwd=tmp_path,
        env=environment(DEEPNET_TEST_TAG=tag),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "c.npz").exists():
            assert job.poll() is None and time.monotonic() < deadline, job.stderr.read() if job.poll() else "slow"
            time.sleep(0.2)
        pids = rank_pids(tag)
        assert set(pids) == {0, 1}
        os.kill(pids[1], signal.SIGKILL)
        killed = time.monotonic()
        code = job.wait(timeout=30)
        elapsed = time.monotonic() - killed
    finally:
        if job.poll() is None:
            job.kill()
    print(f"after killing rank 1: mpiexec exited with {code} in {elapsed:.2f} s")
    assert code != 0 and elapsed < 10
    assert not rank_pids(tag)  # rank 0 is gone too
    # The checkpoint was written atomically: it loads, and a single process resumes from it.
    single = [arg for arg in train_argv("--train-size", "2000", "--epochs", "1", "--resume") if arg != "--distributed"]
    out = run(single, cwd=tmp_path)
    assert "resumed from c.npz after epoch" in out


def test_importing_deepnet_never_needs_mpi4py():
    code = "import sys, deepnet, deepnet.trainer, deepnet.cli, deepnet.distributed; assert 'mpi4py' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=environment())


def test_ensemble_members_train_in_parallel_one_per_rank(tmp_path):
    out = run(
        [
            "-m",
            "deepnet",
            "ensemble",
            "--members",
            "2",
            "--epochs",
            "1",
            "--train-size",
            "300",
            "--data",
            str(MNIST_DIR),
            "--out-dir",
            "ens",
        ],
        ranks=2,
        cwd=tmp_path,
    )
    report = json.loads((tmp_path / "ens" / "report.json").read_text())
    assert len(report["members"]) == 2 and "ensemble of 2" in out and "on rank 1" in out
    assert {p.name for p in (tmp_path / "ens").glob("member?.npz")} == {"member0.npz", "member1.npz"}


# -- edge cases ---------------------------------------------------------------------------


def one_epoch_argv(*extra):
    return [
        "-m",
        "deepnet",
        "train",
        "--data",
        str(MNIST_DIR),
        "--epochs",
        "1",
        "--history",
        "h.json",
        "--checkpoint",
        "c.npz",
    ] + list(extra)


def test_a_last_batch_smaller_than_the_ranks_gives_an_empty_shard_and_the_same_training(tmp_path):
    # 201 images in batches of 100: the last batch has 1 image, so rank 0 of 2 gets none
    # (once a SIGFPE in the convolution's forward pass on an empty batch).
    run(one_epoch_argv("--train-size", "201", "--seed", "0", "--out", "one.npz"), cwd=tmp_path)
    (tmp_path / "c.npz").unlink()
    run(
        one_epoch_argv("--distributed", "--train-size", "201", "--seed", "0", "--out", "two.npz", "--overwrite"),
        ranks=2,
        cwd=tmp_path,
    )
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        for name in one.files:
            if one[name].dtype.kind == "f":
                np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)


def rank_state(tmp_path, *argv):
    out = run(
        [
            str(HERE / "mpi" / "rank_state.py"),
            "--distributed",
            "--data",
            str(MNIST_DIR),
            "--epochs",
            "1",
            "--train-size",
            "300",
            "--out",
            "m.npz",
            "--checkpoint",
            "c.npz",
            "--history",
            "h.json",
            *argv,
        ],
        ranks=2,
        cwd=tmp_path,
    )
    return next(json.loads(line) for line in out.splitlines() if line.startswith('{"ranks"'))["ranks"]


def test_without_a_seed_every_rank_holds_the_same_validation_split(tmp_path):
    ranks = rank_state(tmp_path, "--val-size", "100")
    assert ranks[0]["validation"] == ranks[1]["validation"]
    assert ranks[0]["params"] == ranks[1]["params"]


def test_resume_without_a_checkpoint_yet_and_without_a_seed_starts_every_rank_from_rank_0s_state(tmp_path):
    ranks = rank_state(tmp_path, "--resume")
    assert ranks[0]["params"] == ranks[1]["params"]


def test_resume_where_only_rank_0_sees_the_checkpoint_does_not_hang(tmp_path):
    """Each rank decides alone whether the checkpoint exists (Trainer._resume_if_possible):
    on hosts without a shared file system rank 0 resumes (a broadcast) while the others
    start afresh (a reduction), and the job hangs.  Rank 0 should decide and tell the others."""
    common = [
        str(HERE / "mpi" / "rank_state.py"),
        "--distributed",
        "--data",
        str(MNIST_DIR),
        "--train-size",
        "200",
        "--seed",
        "0",
        "--out",
        "m.npz",
        "--checkpoint",
        "c.npz",
        "--history",
        "h.json",
    ]
    run(common + ["--epochs", "1"], ranks=2, cwd=tmp_path)
    job = subprocess.Popen(
        [MPIEXEC, "-n", "2", sys.executable] + common + ["--epochs", "2", "--resume"],
        cwd=tmp_path,
        env=environment(DEEPNET_TEST_HIDE_FROM_RANK1=str(tmp_path / "c.npz")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, _ = job.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGTERM)  # mpiexec passes it on to the ranks
        job.communicate(timeout=30)
        raise AssertionError("mpiexec -n 2 deepnet train --distributed --resume hung") from None
    assert job.returncode == 0
    ranks = next(json.loads(line) for line in out.splitlines() if line.startswith('{"ranks"'))["ranks"]
    assert ranks[0]["params"] == ranks[1]["params"]


@pytest.mark.parametrize(
    "first, second, named",
    [
        (["--epochs", "1"], ["--epochs", "2"], "--epochs 1 on rank 0 vs 2 on rank 1"),
        ([], ["--resume"], "--resume False on rank 0 vs True on rank 1"),
        (["--dtype", "float32"], ["--dtype", "float64"], "--dtype 'float32' on rank 0 vs 'float64' on rank 1"),
        (["--seed", "0"], [], "--seed 0 on rank 0 vs not given on rank 1"),
    ],
)
def test_ranks_started_with_different_options_end_with_one_clear_error(tmp_path, first, second, named):
    """Row 7 of hardening round 3: with mpiexec's MPMD form the ranks can get different
    options; another --epochs or --resume deadlocked (spinning) or died with "message
    truncated" and a traceback."""
    common = [
        sys.executable,
        "-m",
        "deepnet",
        "train",
        "--distributed",
        "--data",
        str(MNIST_DIR),
        "--train-size",
        "200",
        "--checkpoint",
        "c.npz",
        "--history",
        "h.json",
        "--out",
        "m.npz",
    ]
    command = [MPIEXEC, "-n", "1"] + common + first + [":", "-n", "1"] + common + second
    job = subprocess.Popen(
        command, cwd=tmp_path, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _, err = job.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGTERM)
        job.communicate(timeout=30)
        raise AssertionError(f"ranks started with {first} and {second} hung") from None
    assert job.returncode != 0
    assert "the MPI ranks were started with different options" in err and named in err, err
    assert "Traceback" not in err and "truncated" not in err, err
    assert not (tmp_path / "c.npz").exists()  # refused before any training


def test_a_trainer_refuses_ranks_with_different_epochs_before_any_collective_step():
    """The library's side of row 7: Trainer compares what changes its collective calls."""
    from deepnet.distributed import SingleProcess, describe_differences
    from deepnet.nets import SimpleConvNet
    from deepnet.trainer import Trainer

    class SecondRankWantsThreeEpochs(SingleProcess):
        size = 2

        def differences(self, values):
            return describe_differences([values, {**values, "epochs": 3}])

    x = np.zeros((4, 1, 28, 28), np.float32)
    with pytest.raises(
        ValueError,
        match="Trainer: the ranks were given different settings "
        r"\(epochs 2 on rank 0 vs 3 on rank 1\)",
    ):
        Trainer(
            SimpleConvNet(seed=0),
            x,
            np.zeros(4, int),
            epochs=2,
            verbose=False,
            communicator=SecondRankWantsThreeEpochs(),
        )


def test_train_under_mpiexec_without_distributed_is_refused(tmp_path):
    """Two ranks without --distributed trained two separate runs into the same files (and in
    the MPMD form, a rank without it left the others waiting)."""
    common = [
        sys.executable,
        "-m",
        "deepnet",
        "train",
        "--data",
        str(MNIST_DIR),
        "--train-size",
        "100",
        "--epochs",
        "1",
    ]
    result = subprocess.run(
        [MPIEXEC, "-n", "2"] + common, capture_output=True, text=True, env=environment(), cwd=tmp_path, timeout=120
    )
    assert result.returncode != 0 and "without --distributed" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and not list(tmp_path.iterdir())
