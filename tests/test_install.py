"""What the README's set-up promises: the package finds its kernels and MNIST from any
directory, offline, and says how to point it at the data when it cannot."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

import deepnet
from deepnet import datasets

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _offline_env(tmp_path):
    """No $DEEPNET_DATA and an empty cache: only what is installed can be found. The
    subprocess imports the deepnet this test imported (installed, or a source tree on
    PYTHONPATH), whatever its working directory."""
    env = {k: v for k, v in os.environ.items() if k != "DEEPNET_DATA"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "empty-cache")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(pathlib.Path(deepnet.__file__).parents[1]), env.get("PYTHONPATH")])
    )
    return env


def test_mnist_and_the_kernels_are_found_from_any_directory(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = (
        "import deepnet, deepnet.datasets as d; "
        "print(deepnet.kernels_compiled()); print(d.find_mnist_dir()); print(deepnet.__file__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=elsewhere,
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    compiled, found, module = out
    assert found != "None", "MNIST is not found outside the source tree"
    assert pathlib.Path(found) == datasets.shipped_data_dir() / "mnist"
    assert compiled == str(deepnet.kernels_compiled())
    assert not pathlib.Path(module).is_relative_to(elsewhere)


def test_the_shipped_mnist_is_the_real_one(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPNET_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    (x_train, t_train), (x_test, t_test) = datasets.load_mnist(flatten=False)
    assert x_train.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert list(t_test[:10]) == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # a known fact about MNIST
    assert abs(float(x_train.mean()) - 0.1307) < 1e-3


def test_the_book_weights_are_installed_too():
    assert (datasets.shipped_data_dir() / "book" / "deep_convnet_params.pkl").is_file()


def test_the_not_found_message_names_the_command_line_option():
    message = datasets._not_found_message(None, "offline")
    assert "--data DIR" in message and "$DEEPNET_DATA" in message


def test_the_cli_runs_from_another_directory_without_data_options(tmp_path):
    """`deepnet evaluate` outside the source tree, offline, with no --data: it finds the
    installed MNIST and scores the book's weights (97.97%, the figure the README quotes)."""
    weights = datasets.shipped_data_dir() / "book" / "deep_convnet_params.pkl"
    result = subprocess.run(
        [sys.executable, "-m", "deepnet", "evaluate", "--params", str(weights)],
        cwd=tmp_path,
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"float32\s+0\.9797\b", result.stdout), result.stdout
    assert "Download" not in result.stderr


def test_the_readme_states_the_book_weights_accuracy():
    readme = (ROOT / "README.md").read_text()
    first_use = readme.index("deep_convnet_params.pkl")
    assert "97.97%" in readme[first_use - 400 : first_use + 400]


def test_the_distribution_name_is_not_the_unrelated_deepnet_on_the_public_index():
    pyproject = (ROOT / "pyproject.toml").read_text()
    name = re.search(r'^name = "([^"]+)"', pyproject, re.M).group(1)
    assert name != "deepnet"
    hints = subprocess.run(
        ["git", "grep", "-n", "-I", "pip install .deepnet\\["], cwd=ROOT, capture_output=True, text=True
    )
    if hints.returncode > 1:
        pytest.skip("not a git checkout")
    assert hints.stdout == "", "install hints that would fetch the unrelated 'deepnet':\n" + hints.stdout


def test_every_package_of_the_source_tree_is_installed():
    """pyproject.toml lists the packages: one left out would be missing from every
    installation (not from a source tree), and its imports would fail there."""
    text = (ROOT / "pyproject.toml").read_text()
    listed = set(re.findall(r'"(deepnet[\w.]*)"', re.search(r"^packages = \[(.*?)\]", text, re.M | re.S).group(1)))
    in_tree = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "deepnet").rglob("__init__.py")}
    assert in_tree <= listed, f"packages missing from pyproject.toml: {sorted(in_tree - listed)}"
