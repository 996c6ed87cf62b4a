"""Reviewer's tests (branch review): data-parallel edge cases; each fails on main at dd15e03."""
import json
import signal
import subprocess
import sys

import numpy as np

from support import MNIST_DIR
from test_distributed import HERE, MPIEXEC, environment, pytestmark, run  # noqa: F401  (skipped without mpiexec)


def train_argv(*extra):
    return ["-m", "deepnet", "train", "--data", str(MNIST_DIR), "--epochs", "1", "--history", "h.json",
            "--checkpoint", "c.npz"] + list(extra)


def test_a_last_batch_smaller_than_the_ranks_gives_an_empty_shard_and_the_same_training(tmp_path):
    # 201 images in batches of 100: the last batch has 1 image, so rank 0 of 2 gets none
    # (on main: SIGFPE in the convolution's forward pass on an empty batch).
    run(train_argv("--train-size", "201", "--seed", "0", "--out", "one.npz"), cwd=tmp_path)
    (tmp_path / "c.npz").unlink()
    run(train_argv("--distributed", "--train-size", "201", "--seed", "0", "--out", "two.npz"), ranks=2, cwd=tmp_path)
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "two.npz") as two:
        for name in one.files:
            if one[name].dtype.kind == "f":
                np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-6, err_msg=name)


def rank_state(tmp_path, *argv):
    out = run([str(HERE / "mpi" / "review_rank_state.py"), "--distributed", "--data", str(MNIST_DIR),
               "--epochs", "1", "--train-size", "300", "--out", "m.npz", "--checkpoint", "c.npz",
               "--history", "h.json", *argv], ranks=2, cwd=tmp_path)
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
    common = [str(HERE / "mpi" / "review_rank_state.py"), "--distributed", "--data", str(MNIST_DIR),
              "--train-size", "200", "--seed", "0", "--out", "m.npz", "--checkpoint", "c.npz", "--history", "h.json"]
    run(common + ["--epochs", "1"], ranks=2, cwd=tmp_path)
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable] + common + ["--epochs", "2", "--resume"], cwd=tmp_path,
                           env=environment(REVIEW_HIDE_FROM_RANK1=str(tmp_path / "c.npz")),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, _ = job.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        job.send_signal(signal.SIGTERM)  # mpiexec passes it on to the ranks
        job.communicate(timeout=30)
        raise AssertionError("mpiexec -n 2 deepnet train --distributed --resume hung") from None
    assert job.returncode == 0
    ranks = next(json.loads(line) for line in out.splitlines() if line.startswith('{"ranks"'))["ranks"]
    assert ranks[0]["params"] == ranks[1]["params"]
