"""Reviewer's tests (branch review): command-line failures found in review; each fails on
main at dd15e03."""
import os

import pytest

from deepnet import cli
from support import BOOK_PARAMS
from test_cli import assert_one_line_error, mnist, small_test_set  # noqa: F401  (fixtures)


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def test_evaluate_with_more_threads_than_cores_warns_instead_of_crashing(capsys, mnist, small_test_set):
    argv = ["evaluate", "--params", str(BOOK_PARAMS), "--data", str(mnist), "--threads", str(cores() + 1)]
    assert cli.main(argv) == 0  # on main: AttributeError ('NoneType' has no attribute 'is_root')
    assert "0." in capsys.readouterr().out


def test_an_augment_option_without_the_augment_module_is_a_one_line_error_or_works(
        tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    for argv in (["--recipe", "beyond", "--epochs", "1", "--val-size", "100"], ["--augment", "rotate=10"]):
        code = cli.main(["train", "--train-size", "300", "--epochs", "1", "--data", str(mnist)] + argv)
        if code:  # on main: ModuleNotFoundError: No module named 'deepnet.augment' (a traceback)
            assert_one_line_error(capsys)


def test_resume_with_another_seed_cannot_change_the_validation_split(tmp_path, monkeypatch, capsys, mnist,
                                                                     small_test_set):
    monkeypatch.chdir(tmp_path)
    common = ["--train-size", "300", "--val-size", "100", "--data", str(mnist), "--checkpoint", "c.npz"]
    assert cli.main(["train", "--epochs", "1", "--seed", "0"] + common) == 0
    capsys.readouterr()
    # Another seed draws another split: images validated on so far would now be trained on.
    assert cli.main(["train", "--epochs", "2", "--seed", "1", "--resume"] + common) == 1
    assert_one_line_error(capsys, "c.npz")


def test_evaluate_refuses_nan_batch_norm_statistics(tmp_path, capsys, mnist, small_test_set):
    import numpy as np
    from deepnet.nets import DeepConvNet
    net = DeepConvNet(batch_norm=True, seed=0)
    net.batch_norm_layers()[0].running_var[...] = np.nan  # on main: evaluated, accuracy 0.098
    path = net.save(tmp_path / "nan_buffers.npz")
    assert cli.main(["evaluate", "--params", str(path), "--data", str(mnist)]) == 1
    assert_one_line_error(capsys, "nan_buffers.npz", "running_var")
