"""deepnet train --dtype bfloat16: float32 model files, exact resumption, the missing-extra error."""

import sys

import numpy as np
import pytest

from deepnet import cli
from deepnet.cli import common
from support import MNIST_DIR

ml_dtypes = pytest.importorskip("ml_dtypes", reason="bfloat16 needs ml_dtypes (the bf16 extra)")


@pytest.fixture
def small_test_set(monkeypatch):
    """Keep the commands quick: they see only the first 200 test images."""
    real_load = common.load_mnist

    def load(root, dtype):
        train, (x_test, t_test) = real_load(root, dtype)
        return train, (x_test[:200], t_test[:200])

    monkeypatch.setattr(common, "load_mnist", load)


def train(tmp_path, name, epochs, *extra):
    args = ["train", "--data", str(MNIST_DIR), "--seed", "0", "--train-size", "200", "--batch-size", "50"]
    args += ["--dtype", "bfloat16", "--threads", "1", "--epochs", str(epochs), "--out", str(tmp_path / f"{name}.npz")]
    args += ["--checkpoint", str(tmp_path / f"{name}_ckpt.npz"), "--history", str(tmp_path / f"{name}.json")]
    assert cli.main(args + list(extra)) == 0
    return tmp_path / f"{name}.npz"


def test_bfloat16_training_saves_float32_and_resumes_exactly(tmp_path, small_test_set):
    straight = train(tmp_path, "straight", 2)
    train(tmp_path, "split", 1)
    resumed = train(tmp_path, "split", 2, "--resume")
    assert straight.read_bytes() == resumed.read_bytes()
    with np.load(straight) as saved:
        weights = {k: saved[k] for k in saved.files if not k.startswith("__")}
    assert all(w.dtype == np.float32 for w in weights.values())
    for w in weights.values():  # bfloat16 values, widened
        np.testing.assert_array_equal(w.astype(ml_dtypes.bfloat16).astype(np.float32), w)
    with np.load(tmp_path / "split_ckpt.npz") as checkpoint:
        masters = [k for k in checkpoint.files if k.startswith("optimizer/master/")]
        assert masters and all(checkpoint[k].dtype == np.float32 for k in masters)


def test_bfloat16_without_ml_dtypes_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    assert cli.main(["train", "--dtype", "bfloat16", "--out", str(tmp_path / "p.npz")]) == 2
    err = capsys.readouterr().err
    assert "bf16" in err and "ml_dtypes" in err and "Traceback" not in err
