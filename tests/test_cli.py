"""The ``deepnet`` command line: commands end to end, and user errors as one-line messages."""

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepnet
from deepnet import cli
from deepnet.cli import common, training
from deepnet.datasets import MNISTNotFoundError
from deepnet.nets import DeepConvNet
from support import BOOK_PARAMS, MNIST_DIR


@pytest.fixture
def mnist():
    return MNIST_DIR


@pytest.fixture
def small_test_set(monkeypatch):
    """Keep the commands quick: they see only the first 200 test images."""
    real_load = common.load_mnist

    def load(root, dtype):
        train, (x_test, t_test) = real_load(root, dtype)
        return train, (x_test[:200], t_test[:200])

    monkeypatch.setattr(common, "load_mnist", load)


def assert_one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("deepnet: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err
    return err


# -- errors --------------------------------------------------------------------------------


def test_evaluate_with_a_missing_params_file_fails_with_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    assert cli.main(["evaluate", "--params", str(missing)]) != 0
    assert_one_line_error(capsys, "missing.npz", "not found")


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["train", "--no-such-option"],
        ["train", "--epochs", "0"],
        ["train", "--dtype", "int8"],
        ["train", "--checkpoint", ""],
        ["evaluate"],
        ["frobnicate"],
    ],
)
def test_bad_usage_fails_with_one_line_and_exit_code_2(argv, capsys):
    assert cli.main(argv) == 2
    assert_one_line_error(capsys)


def test_unsupported_dtype_is_named(tmp_path, capsys):
    params = tmp_path / "p.npz"
    params.write_bytes(b"")
    assert cli.main(["evaluate", "--params", str(params), "--dtype", "int8"]) == 2
    assert_one_line_error(capsys, "int8")


class _RemovesAFile:
    """Unpickling this would delete ``path``: what a malicious parameter file could do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.remove, (self.path,)


def test_unsafe_pickle_is_refused_without_running_it(tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("still here")
    params = tmp_path / "evil.pkl"
    params.write_bytes(pickle.dumps({"W1": _RemovesAFile(str(victim))}))
    assert cli.main(["evaluate", "--params", str(params)]) == 1
    assert_one_line_error(capsys, "refusing")
    assert victim.read_text() == "still here"


def test_params_of_another_shape_name_the_parameter(tmp_path, capsys):
    params = dict(DeepConvNet(seed=0).params)
    params["W7"] = np.zeros((64 * 3 * 3, 50), np.float32)
    path = tmp_path / "other.npz"
    np.savez(path, **params)
    assert cli.main(["evaluate", "--params", str(path)]) == 1
    assert_one_line_error(capsys, "'W7'")


def test_missing_data_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    def not_found(**kwargs):
        raise MNISTNotFoundError("MNIST data not found.\nSearched:\n  somewhere")

    monkeypatch.setattr("deepnet.datasets.load_mnist", not_found)
    params = DeepConvNet(seed=0).save_params(tmp_path / "p.npz")
    assert cli.main(["evaluate", "--params", params]) == 1
    assert_one_line_error(capsys, "MNIST data not found. Searched: somewhere")


def test_python_dash_m_deepnet_reports_errors_without_traceback(tmp_path):
    # The subprocess must import the same deepnet as these tests (installed or in-place build).
    package_parent = str(Path(deepnet.__file__).resolve().parents[1])
    python_path = os.pathsep.join([package_parent, os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=python_path)
    result = subprocess.run(
        [sys.executable, "-m", "deepnet", "evaluate", "--params", str(tmp_path / "none.npz")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode != 0
    assert result.stderr.startswith("deepnet: error: ") and len(result.stderr.splitlines()) == 1


# -- commands ------------------------------------------------------------------------------


def test_train_then_resume_then_evaluate(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    common = [
        "--train-size",
        "300",
        "--data",
        str(mnist),
        "--seed",
        "0",
        "--checkpoint",
        "run.npz",
        "--history",
        "history.json",
    ]
    assert cli.main(["train", "--epochs", "1"] + common) == 0
    out = capsys.readouterr().out
    assert "epoch 1/1: train acc" in out and "wall time" in out
    assert (tmp_path / "deep_convnet_params.npz").is_file()
    assert json.loads((tmp_path / "history.json").read_text())["epochs_done"] == 1

    assert cli.main(["train", "--epochs", "2", "--resume"] + common) == 0
    out = capsys.readouterr().out
    assert "resumed from run.npz after epoch 1" in out and "epoch 2/2: train acc" in out
    trained_accuracy = float(re.search(r"test acc: ([0-9.]+)", out).group(1))

    assert cli.main(["evaluate", "--params", "deep_convnet_params.npz", "--data", str(mnist)]) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"float32\s+([0-9.]+)", out).group(1)) == trained_accuracy


def test_evaluate_half_check_compares_three_dtypes(capsys, mnist, small_test_set):
    argv = ["evaluate", "--params", str(BOOK_PARAMS), "--half-check", "--data", str(mnist)]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    accuracies = {
        dtype: float(re.search(dtype + r"\s+([0-9.]+)", out).group(1)) for dtype in ("float64", "float32", "float16")
    }
    assert all(accuracy > 0.95 for accuracy in accuracies.values()), accuracies


# -- figures -------------------------------------------------------------------------------


def test_plot_without_matplotlib_says_how_to_install_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    history = tmp_path / "h.json"
    history.write_text("{}")
    assert cli.main(["plot", "--history", str(history), "--out", str(tmp_path / "p.png")]) == 2
    assert_one_line_error(capsys, 'pip install -e ".[plot]"')


def test_plot_draws_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra: deepnet[plot]")
    history = tmp_path / "h.json"
    history.write_text(
        json.dumps(
            {
                "train_acc_list": [0.5, 0.8, 0.9],
                "test_acc_list": [0.5, 0.7, 0.85],
                "train_loss_list": list(np.linspace(2.3, 0.3, 30)),
            }
        )
    )
    out = tmp_path / "curves.png"
    assert cli.main(["plot", "--history", str(history), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"\x89PNG")


def test_misclassified_draws_a_png(tmp_path, capsys, mnist, small_test_set):
    pytest.importorskip("matplotlib", reason="matplotlib is an optional extra: deepnet[plot]")
    params = DeepConvNet(seed=0).save_params(tmp_path / "untrained.npz")  # gets most wrong
    out = tmp_path / "wrong.png"
    argv = ["misclassified", "--params", params, "--out", str(out), "--max", "7", "--data", str(mnist)]
    assert cli.main(argv) == 0
    assert "showing 7" in capsys.readouterr().out
    assert out.read_bytes().startswith(b"\x89PNG")


# -- options are checked before any work, and failures say what to do -----------------------


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0", "abc"])
def test_train_refuses_a_learning_rate_that_is_not_a_finite_positive_number(value, capsys):
    assert cli.main(["train", "--lr", value]) == 2
    assert_one_line_error(capsys, "--lr", "finite number > 0")


@pytest.mark.parametrize("which", ["empty", "missing"])
def test_data_naming_a_directory_without_mnist_is_an_error(tmp_path, capsys, which):
    data = tmp_path if which == "empty" else tmp_path / "no-such-dir"
    assert cli.main(["train", "--data", str(data), "--epochs", "1"]) == 2
    assert_one_line_error(capsys, f"--data {data}: no MNIST files there")


def test_an_output_that_cannot_be_written_fails_before_training(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    started = []
    monkeypatch.setattr(common, "load_mnist", lambda *a: started.append(1))
    assert cli.main(["train", "--out", str(blocker / "params.npz")]) == 2
    assert_one_line_error(capsys, "--out", "cannot write")
    assert not started


def test_memory_error_is_one_line(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)

    def exhausted(*args):
        raise MemoryError()

    monkeypatch.setattr(common, "load_mnist", exhausted)
    assert cli.main(["train"]) == 1
    assert_one_line_error(capsys, "out of memory", "--batch-size")


def test_interrupt_before_any_epoch_says_that_no_checkpoint_was_written(monkeypatch, capsys, tmp_path, mnist):
    monkeypatch.chdir(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("deepnet.trainer.Trainer.train", interrupted)
    assert cli.main(["train", "--data", str(mnist), "--train-size", "100"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "no checkpoint" in err and "deep_convnet_checkpoint.npz" in err
    assert "--resume" not in err  # there is nothing to resume from


def test_resume_with_another_learning_rate_or_dtype_is_refused(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    common = ["--train-size", "100", "--data", str(mnist), "--checkpoint", "c.npz"]
    assert cli.main(["train", "--epochs", "1"] + common) == 0
    capsys.readouterr()
    assert cli.main(["train", "--epochs", "2", "--resume", "--lr", "0.01"] + common) == 1
    assert_one_line_error(capsys, "c.npz was made with", "(--lr", "0.01")
    assert cli.main(["train", "--epochs", "2", "--resume", "--dtype", "float64"] + common) == 1
    assert_one_line_error(capsys, "dtype")


@pytest.mark.parametrize("poison", ["nan", "inf", "int"])
def test_evaluate_refuses_parameters_that_cannot_be_a_trained_network(tmp_path, capsys, monkeypatch, poison):
    params = {name: value.copy() for name, value in DeepConvNet(seed=0).params.items()}
    if poison == "int":
        params["W3"] = params["W3"].astype(np.int64)
    else:
        params["W3"][0, 0, 0, 0] = float(poison)
    path = tmp_path / "bad.npz"
    np.savez(path, **params)
    loaded = []
    monkeypatch.setattr(common, "load_mnist", lambda *a: loaded.append(1))
    assert cli.main(["evaluate", "--params", str(path)]) == 1
    assert_one_line_error(capsys, "bad.npz", "'W3'")
    assert not loaded  # the file is checked before the data is read


def test_resume_from_a_damaged_checkpoint_names_it(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    common = ["--train-size", "100", "--data", str(mnist), "--checkpoint", "c.npz"]
    assert cli.main(["train", "--epochs", "1"] + common) == 0
    capsys.readouterr()
    data = (tmp_path / "c.npz").read_bytes()
    (tmp_path / "c.npz").write_bytes(data[: len(data) // 2])  # truncated, as by a full disk
    assert cli.main(["train", "--epochs", "2", "--resume"] + common) == 1
    assert_one_line_error(capsys, "c.npz")


def test_a_figure_with_an_unsupported_extension_is_refused(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert cli.main(["misclassified", "--params", str(BOOK_PARAMS), "--out", str(tmp_path / "fig.jpg")]) == 2
    assert_one_line_error(capsys, "fig.jpg", ".png")


def test_a_damaged_history_names_the_file(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    history = tmp_path / "h.json"
    history.write_text("{truncated")
    assert cli.main(["plot", "--history", str(history), "--out", str(tmp_path / "p.png")]) == 2
    assert_one_line_error(capsys, "h.json", "not a training history")


def test_book_mode_says_what_each_epoch_measured_and_draws_no_bars_into_a_log(
    tmp_path, monkeypatch, capsys, mnist, small_test_set
):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--epochs", "1", "--train-size", "1200", "--data", str(mnist)]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1: train acc" in captured.out and "(first 1000 training images)" in captured.out
    assert "(all 200 test images)" in captured.out  # the fixture's 200-image test set
    assert "test acc:" in captured.out and "on all 200 test images (evaluated once" in captured.out
    assert "1 epoch," in captured.out and "1 epochs" not in captured.out
    assert captured.err == ""  # stderr is not a terminal: no progress bars


# -- models, validation, ensembles ---------------------------------------------------------


def test_validation_mode_measures_the_whole_validation_set_and_the_test_set_once(
    tmp_path, monkeypatch, capsys, mnist, small_test_set
):
    monkeypatch.chdir(tmp_path)
    argv = [
        "train",
        "--epochs",
        "2",
        "--train-size",
        "600",
        "--val-size",
        "100",
        "--select",
        "best-val",
        "--lr-schedule",
        "cosine",
        "--ema",
        "0.9",
        "--data",
        str(mnist),
        "--model",
        "deepconvnet-bn",
    ]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("(all 100 validation images)") == 2 and "test acc (" not in out
    assert "on all 200 test images (evaluated once, after training; weights: epoch" in out
    history = json.loads((tmp_path / "deep_convnet_history.json").read_text())
    assert len(history["val_acc_list"]) == 2 and history["test_acc_list"] == []
    assert history["final_test"]["images"] == 200
    from deepnet.nets import load_model

    assert load_model(tmp_path / "deep_convnet_params.npz").batch_norm_layers()


def test_train_a_model_from_a_json_spec(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    spec = {
        "type": "Sequential",
        "layers": [
            {"type": "Convolution", "in_channels": 1, "filters": 4, "kernel": 3, "stride": 1, "pad": 1, "relu": True},
            {"type": "Pooling", "pool_h": 2, "pool_w": 2, "stride": 2, "pad": 0},
            {"type": "Flatten"},
            {"type": "Affine", "in_features": 4 * 14 * 14, "out_features": 10},
        ],
    }
    (tmp_path / "tiny.json").write_text(json.dumps(spec))
    assert (
        cli.main(
            [
                "train",
                "--model",
                "tiny.json",
                "--epochs",
                "1",
                "--train-size",
                "200",
                "--data",
                str(mnist),
                "--out",
                "tiny.npz",
            ]
        )
        == 0
    )
    assert cli.main(["evaluate", "--params", "tiny.npz", "--data", str(mnist)]) == 0
    assert "float32" in capsys.readouterr().out


def test_ensemble_trains_members_and_evaluate_averages_them(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    assert (
        cli.main(
            [
                "ensemble",
                "--members",
                "2",
                "--epochs",
                "1",
                "--train-size",
                "300",
                "--data",
                str(mnist),
                "--out-dir",
                "ens",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "ens" / "report.json").read_text())
    assert len(report["members"]) == 2 and report["test_images"] == 200
    capsys.readouterr()
    assert cli.main(["evaluate", "--params", "ens/member0.npz", "ens/member1.npz", "--data", str(mnist)]) == 0
    out = capsys.readouterr().out
    assert f"{report['ensemble_accuracy']:.4f}  ensemble of 2" in out
    # The ensemble's probabilities are the members' averaged, computed independently here.
    from deepnet.nets import load_model

    (_, _), (x_test, t_test) = common.load_mnist(str(mnist), np.dtype("float32"))
    probabilities = sum(load_model(f"ens/member{i}.npz").probabilities(x_test) for i in range(2))
    assert report["ensemble_accuracy"] == pytest.approx(np.mean(probabilities.argmax(axis=1) == t_test))


# -- edge cases ---------------------------------------------------------------------------


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def test_evaluate_with_more_threads_than_cores_warns_instead_of_crashing(capsys, mnist, small_test_set):
    argv = ["evaluate", "--params", str(BOOK_PARAMS), "--data", str(mnist), "--threads", str(cores() + 1)]
    assert cli.main(argv) == 0  # once an AttributeError
    assert "0." in capsys.readouterr().out


def test_an_augment_option_without_the_augment_module_is_a_one_line_error_or_works(
    tmp_path, monkeypatch, capsys, mnist, small_test_set
):
    monkeypatch.chdir(tmp_path)
    for argv in (["--recipe", "beyond", "--epochs", "1", "--val-size", "100"], ["--augment", "rotate=10"]):
        code = cli.main(["train", "--train-size", "300", "--epochs", "1", "--data", str(mnist)] + argv)
        if code:
            assert_one_line_error(capsys)


def test_resume_with_another_seed_cannot_change_the_validation_split(
    tmp_path, monkeypatch, capsys, mnist, small_test_set
):
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
    net.batch_norm_layers()[0].running_var[...] = np.nan  # once evaluated: accuracy 0.098
    path = net.save(tmp_path / "nan_buffers.npz")
    assert cli.main(["evaluate", "--params", str(path), "--data", str(mnist)]) == 1
    assert_one_line_error(capsys, "nan_buffers.npz", "running_var")


# -- hardening round 3 ---------------------------------------------------------------------


def quick_train(mnist, *extra):
    return ["train", "--train-size", "100", "--epochs", "1", "--data", str(mnist)] + list(extra)


def test_a_second_train_into_the_same_paths_is_refused_before_training(
    tmp_path, monkeypatch, capsys, mnist, small_test_set
):
    """Row 16: a second run silently replaced the first run's model and checkpoint."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(quick_train(mnist)) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"deep_convnet_params.npz", "deep_convnet_checkpoint.npz", "deep_convnet_history.json"}
    real_load, loaded = common.load_mnist, []
    monkeypatch.setattr(common, "load_mnist", lambda *a: loaded.append(1) or real_load(*a))
    assert cli.main(quick_train(mnist, "--seed", "5")) == 2
    assert_one_line_error(capsys, "deep_convnet_params.npz", "deep_convnet_checkpoint.npz", "--resume", "--overwrite")
    assert not loaded and {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert cli.main(quick_train(mnist, "--seed", "5", "--overwrite")) == 0
    assert (tmp_path / "deep_convnet_params.npz").read_bytes() != before["deep_convnet_params.npz"]


def test_a_second_ensemble_into_the_same_directory_is_refused(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    argv = ["ensemble", "--members", "1", "--train-size", "100", "--epochs", "1", "--data", str(mnist)]
    assert cli.main(argv) == 0
    capsys.readouterr()
    before = (tmp_path / "ensemble" / "member0.npz").read_bytes()
    assert cli.main(argv + ["--seed", "4"]) == 2
    assert_one_line_error(capsys, "member0.npz", "--resume", "--overwrite")
    assert (tmp_path / "ensemble" / "member0.npz").read_bytes() == before
    assert cli.main(argv + ["--seed", "4", "--overwrite"]) == 0


def interrupt_at_step(monkeypatch, step):
    """Trainer.train_step raises KeyboardInterrupt at its call number ``step`` (from 1)."""
    from deepnet.trainer import Trainer

    real_step, calls = Trainer.train_step, []

    def train_step(self, x, t):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return real_step(self, x, t)

    monkeypatch.setattr(Trainer, "train_step", train_step)


def test_an_interrupt_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path, monkeypatch, capsys, mnist):
    """Row 17: the hint named a checkpoint that did not exist."""
    monkeypatch.chdir(tmp_path)
    interrupt_at_step(monkeypatch, 1)
    assert cli.main(quick_train(mnist)) == 130
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err
    assert "no checkpoint" in err and "--resume" not in err, err
    assert not (tmp_path / "deep_convnet_checkpoint.npz").exists()


def test_an_interrupt_after_an_epoch_names_that_checkpoint(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    interrupt_at_step(monkeypatch, 2)  # 100 images in one batch: step 2 is epoch 2's first
    assert cli.main(quick_train(mnist, "--epochs", "3", "--checkpoint", "c.npz")) == 130
    err = capsys.readouterr().err
    assert "c.npz" in err and "after epoch 1" in err and "--resume" in err, err


def test_a_refused_resume_names_exactly_the_settings_that_differ_with_both_values(
    tmp_path, monkeypatch, capsys, mnist, small_test_set
):
    """Row 17: another --train-size was blamed on '--lr, --lr-schedule, --warmup, --ema, --augment'."""
    monkeypatch.chdir(tmp_path)
    common = ["--data", str(mnist), "--checkpoint", "c.npz", "--epochs", "2"]
    assert cli.main(["train", "--train-size", "200", "--epochs", "1"] + common[:-2]) == 0
    capsys.readouterr()
    assert cli.main(["train", "--train-size", "100", "--resume"] + common) == 1
    err = assert_one_line_error(capsys, "c.npz", "--train-size", "200", "100")
    assert "--lr" not in err and "--ema" not in err and "--augment" not in err, err
    assert cli.main(["train", "--train-size", "200", "--resume", "--lr", "0.01", "--batch-size", "50"] + common) == 1
    err = assert_one_line_error(capsys, "--lr", "0.001", "0.01", "--batch-size", "100", "50")
    assert "--train-size" not in err and "--ema" not in err, err


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["--augment", "shift=1e308"], ["--augment", "shift"]),
        (["--augment", "elastic=1e30:4"], ["--augment", "elastic_alpha"]),
        (["--augment", "fill=1e30"], ["--augment", "fill"]),
        (["--lr", "1e308"], ["--lr", "1e308"]),
        (["--weight-decay", "1e308"], ["--weight-decay"]),
        (["--warmup", "1e308"], ["--warmup"]),
        (["--lr-schedule", "step:gamma=1e308"], ["--lr-schedule", "gamma"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--lr-schedule", "cosine:min_lr=0.5"], ["--lr-schedule", "min_lr", "<= lr (0.001)"]),
        (["--threads", "100000000"], ["--threads"]),
        (["--epochs", "10000000000"], ["--epochs"]),
    ],
)
def test_option_values_are_bounded_where_they_are_parsed(argv, fragments, capsys, monkeypatch):
    """Row 13: --augment shift=1e308 was accepted, then the first batch died with OverflowError."""
    monkeypatch.setattr(common, "load_mnist", lambda *a: pytest.fail("the data was loaded"))
    assert cli.main(["train"] + argv) == 2
    assert_one_line_error(capsys, *fragments)


def test_recipe_defaults_adapt_to_a_small_training_set_and_say_so(tmp_path, monkeypatch, capsys, mnist):
    """Row 20: --recipe beyond --train-size 5000 failed with '--val-size 5000 leaves no training images'."""
    monkeypatch.chdir(tmp_path)
    settings = {}
    real_train_one = training.train_one

    def train_one(args, chosen, data, *rest, **kwargs):
        settings.update(chosen, train=len(data[0]))
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_one", train_one)
    assert cli.main(["train", "--recipe", "beyond", "--train-size", "5000", "--data", str(mnist)]) == 130
    assert settings["val_size"] == 500 and settings["train"] == 5000
    out = capsys.readouterr().out
    assert "--val-size 500" in out and "recipe" in out and "10%" in out, out
    # Given explicitly, the value is the user's, and a bad one says so.
    assert (
        cli.main(["train", "--recipe", "beyond", "--train-size", "5000", "--val-size", "5000", "--data", str(mnist)])
        == 2
    )
    assert_one_line_error(capsys, "--val-size 5000", "5000 training images")
    assert real_train_one


def walk_options(parser):
    for action in parser._actions:
        if isinstance(action, __import__("argparse")._SubParsersAction):
            for name, sub in action.choices.items():
                yield from ((f"{name} {option}", help_) for option, help_ in walk_options(sub))
        elif action.option_strings:
            yield "/".join(action.option_strings), action.help


def test_every_option_has_help_text():
    """Row 22: --members, --max and --history had none."""
    missing = [option for option, help_ in walk_options(cli.build_parser()) if not help_]
    assert not missing


def test_the_wall_time_line_labels_total_and_per_epoch_times(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    """Row 22: '92.3 s for 1 epoch, 43.8 s per epoch' read as a contradiction."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(quick_train(mnist)) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("wall time"))
    assert re.fullmatch(
        r"wall time: [0-9.]+ s in all \(setup, training and evaluation\); "
        r"[0-9.]+ s per epoch \(training and the per-epoch evaluation\), 1 epoch",
        line,
    ), line


def test_the_plot_says_the_training_loss_includes_dropout(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    history = tmp_path / "h.json"
    history.write_text(json.dumps({"train_acc_list": [0.5, 0.8], "train_loss_list": [2.3, 1.0]}))
    titles = []
    from matplotlib.axes import Axes

    real_set = Axes.set

    def record(self, **kwargs):
        titles.append(kwargs.get("title"))
        titles.append(kwargs.get("ylabel"))
        return real_set(self, **kwargs)

    import unittest.mock

    with unittest.mock.patch.object(Axes, "set", record):
        assert cli.main(["plot", "--history", str(history), "--out", str(tmp_path / "p.png")]) == 0
    assert any(text and "dropout" in text for text in titles), titles


def test_an_interrupted_ensemble_says_which_members_finished(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    monkeypatch.chdir(tmp_path)
    interrupt_at_step(monkeypatch, 2)  # member 0: 1 epoch of one batch; member 1's first step
    argv = ["ensemble", "--members", "2", "--train-size", "100", "--epochs", "1", "--data", str(mnist)]
    assert cli.main(argv) == 130
    err = capsys.readouterr().err
    assert "1 member finished in ensemble (member0)" in err and "--resume" in err, err
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    interrupt_at_step(monkeypatch, 1)
    assert (
        cli.main(
            [
                "ensemble",
                "--members",
                "1",
                "--train-size",
                "100",
                "--epochs",
                "1",
                "--data",
                str(mnist),
                "--out-dir",
                "fresh",
            ]
        )
        == 130
    )
    err = capsys.readouterr().err
    assert "0 members finished" in err and "no checkpoint was written" in err and "--resume" not in err, err


def test_a_lower_layers_errors_name_the_flags_on_the_command_line(tmp_path, monkeypatch, capsys, mnist, small_test_set):
    """The trainer and the recipes name settings (batch_size, model); the command line shows
    its flags (--batch-size, --model) in the same messages."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(quick_train(mnist, "--batch-size", "50", "--checkpoint", "c.npz")) == 0
    capsys.readouterr()
    assert cli.main(quick_train(mnist, "--batch-size", "25", "--checkpoint", "c.npz", "--resume")) == 1
    err = assert_one_line_error(capsys, "c.npz", "--batch-size: saved 50, now 25", "start a new run (--overwrite)")
    assert "batch_size" not in err
    assert cli.main(quick_train(mnist, "--model", "nothing-of-the-kind", "--overwrite")) == 1
    assert_one_line_error(capsys, "--model: expected one of", "'nothing-of-the-kind'")


def test_the_library_names_settings_without_flags(tmp_path):
    from deepnet.recipes import make_model
    from deepnet._errors import SettingError

    with pytest.raises(SettingError) as error:
        make_model("nothing-of-the-kind", np.float32, 0)
    assert str(error.value).startswith("model: expected one of") and "--" not in str(error.value)
