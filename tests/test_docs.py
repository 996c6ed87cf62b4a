"""The README's commands are the ones CI runs; its Python quick start and the docs' code
examples run; every relative link in README.md and docs/*.md leads somewhere."""

import pathlib
import re

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))


def readme_commands():
    return re.findall(r"```\n(.+?)\n```", README.read_text())


def python_block(path, heading):
    """The first ```python block after ``heading`` in the file at ``path``."""
    text = path.read_text()
    assert heading in text, f"{path.name} has no {heading!r}"
    section = text.split(heading, 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def run_block(code, path, namespace=None):
    namespace = {} if namespace is None else namespace
    exec(compile(code, str(path.relative_to(ROOT)), "exec"), namespace)
    return namespace


def test_readme_states_exactly_two_setup_commands_and_ci_runs_the_test_command():
    setup = README.read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.+?)\n```", setup)
    assert len(commands) == 2
    install_and_run, test_command = commands
    assert "pip install -e ." in install_and_run and "deepnet train" in install_and_run
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci_run.splitlines()
    assert install_and_run in ci_run  # the install job runs it in a copy of the tree


def test_the_readme_is_short():
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move details into docs/"


def test_the_readme_links_every_docs_page():
    readme = README.read_text()
    assert DOC_PAGES
    for page in DOC_PAGES:
        assert f"](docs/{page.name})" in readme, f"README.md does not link docs/{page.name}"


def github_anchor(heading):
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # no headings in code
    return {github_anchor(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def relative_links(path):
    """(target, anchor) of every markdown link or image in ``path`` that is not a URL."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    for target in re.findall(r"!?\[[^\]]*\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        yield file, anchor


@pytest.mark.parametrize("page", [README, *DOC_PAGES], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file_and_heading(page):
    links = list(relative_links(page))
    for file, anchor in links:
        target = (page.parent / file).resolve() if file else page
        assert target.is_file(), f"{page.name} links {file!r}, which does not exist"
        if anchor and target.suffix == ".md":
            assert anchor in anchors(target), f"{page.name} links {file}#{anchor}: no such heading"


def test_the_images_are_shown_where_they_are():
    shown = {file for page in [README, *DOC_PAGES] for file, _ in relative_links(page) if file.endswith(".png")}
    assert {"serve.png", "depth.png"} <= {pathlib.Path(f).name for f in shown}


def test_the_readme_python_quick_start_runs(tmp_path, monkeypatch, capsys):
    """Trains a DeepConvNet for one epoch on 5,000 images, evaluates, saves, loads and
    predicts, in an empty directory (the MNIST installed with deepnet is found)."""
    code = python_block(README, "## Python quick start")
    monkeypatch.chdir(tmp_path)
    namespace = run_block(code, README)
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"test accuracy: ([0-9.]+)", printed).group(1))
    assert 0.5 < accuracy <= 1.0, printed  # chance is 0.1; the README quotes 0.7177
    assert "predicted: [" in printed and "probabilities of the first: [[" in printed
    assert re.search(r"^total\s+123,552\s+8,772,340$", printed, re.M), printed  # net.summary()
    assert len(namespace["history"]["val_accuracy"]) == 1
    assert (tmp_path / "quickstart.npz").is_file()

    from deepnet.nets import load_model

    net, x_test, t_test = namespace["net"], namespace["x_test"], namespace["t_test"]
    loaded = load_model(tmp_path / "quickstart.npz")
    assert type(loaded).__name__ == "DeepConvNet"
    x = x_test[:200]
    assert (loaded.classify(x) == net.classify(x)).all()
    np.testing.assert_array_equal(loaded.probabilities(x), net.probabilities(x))
    assert loaded.accuracy(x_test, t_test) == pytest.approx(accuracy, abs=5e-5)
    probabilities = namespace["model"].probabilities(x_test[:1])
    assert probabilities.shape == (1, 10) and probabilities.sum() == pytest.approx(1.0)


def test_the_models_page_residual_block_example_runs(tmp_path, monkeypatch):
    page = ROOT / "docs" / "models.md"
    code = python_block(page, "# Models from parts")
    monkeypatch.chdir(tmp_path)
    namespace = run_block(code, page)
    from deepnet.nets import load_model

    loaded = load_model(tmp_path / "tiny_resnet.npz")
    x = namespace["x"]
    assert (loaded.predict(x) == namespace["net"].predict(x)).all()
    assert "2.body.1.gamma" in namespace["grads"]


def test_the_layer_api_example_runs(tmp_path, monkeypatch, capsys):
    """docs/layer-api.md's example, in a directory holding the parameter file it loads."""
    page = ROOT / "docs" / "layer-api.md"
    code = python_block(page, "## Layers and kernels")
    from deepnet.nets import DeepConvNet

    saved = DeepConvNet(seed=1)
    monkeypatch.chdir(tmp_path)
    saved.save_params("deep_convnet_params.npz")
    namespace = run_block(code, page)
    assert capsys.readouterr().out.strip() == "(16, 1, 3, 3) (16,)"
    assert namespace["y"].shape == (8, 16, 14, 14) and namespace["dx"].shape == (8, 1, 28, 28)
    for name, value in saved.params.items():
        np.testing.assert_array_equal(namespace["net"].params[name], value)


def test_the_site_lists_every_docs_page_and_the_notebooks():
    """docs/index.md's toctrees (the documentation site, docs/README.md) name every page of
    docs/ and take every notebook of docs/notebooks/ by a glob."""
    index = (ROOT / "docs" / "index.md").read_text()
    entries = set()
    for block in re.findall(r"```\{toctree\}\n(.*?)```", index, flags=re.S):
        entries |= {line.strip() for line in block.splitlines() if line.strip() and not line.startswith(":")}
    pages = {page.stem for page in DOC_PAGES if page.name != "index.md"}
    assert pages - entries == set(), f"docs/index.md's toctrees leave out {sorted(pages - entries)}"
    assert {entry for entry in entries if "*" not in entry} - pages == {"api/index"}
    assert "notebooks/*" in entries
