"""The chapter's notebooks (docs/notebooks/*.md, MyST text notebooks) run top to bottom in
quick mode (DEEPNET_QUICK=1), from docs/notebooks as the working directory, on this
checkout's deepnet, and write no files there."""

import os
import pathlib
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "docs" / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.md"))
EXPECTED = {
    "ch08-1-1-deeper.md",
    "ch08-1-2-beyond.md",
    "ch08-1-3-depth.md",
    "ch08-2-architectures.md",
    "ch08-3-fast.md",
    "ch08-4-applications.md",
}
QUICK_LINE = 'QUICK = os.environ.get("DEEPNET_QUICK") == "1"'


def test_every_section_has_its_notebook():
    assert EXPECTED <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_is_a_myst_notebook_whose_first_cell_reads_quick(path):
    text = path.read_text()
    assert text.startswith("---\njupytext:\n"), f"{path.name}: no jupytext front matter"
    assert "format_name: myst" in text.split("\n---\n", 1)[0]
    first_cell = text.split("```{code-cell} ipython3\n", 1)[1].split("```", 1)[0]
    assert QUICK_LINE in first_cell, f"{path.name}: the first code cell does not read DEEPNET_QUICK"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_notebook_runs_in_quick_mode(path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="running the notebooks needs jupytext")
    nbclient = pytest.importorskip("nbclient", reason="running the notebooks needs nbclient")
    pytest.importorskip("ipykernel", reason="running the notebooks needs ipykernel")
    pytest.importorskip("matplotlib", reason="the notebooks draw with matplotlib")
    from jupyter_client.kernelspec import NoSuchKernel

    monkeypatch.setenv("DEEPNET_QUICK", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    before = sorted(NOTEBOOK_DIR.iterdir())
    notebook = jupytext.read(path)
    client = nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    start = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, naming the cell, if any cell raises
    except NoSuchKernel:
        pytest.skip("no python3 Jupyter kernel is installed (pip install ipykernel)")
    seconds = time.perf_counter() - start
    assert sorted(NOTEBOOK_DIR.iterdir()) == before, f"{path.name} wrote files into {NOTEBOOK_DIR}"
    print(f"{path.name}: {seconds:.1f} s in quick mode")
