"""The README's commands are the ones CI runs."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def readme_commands():
    return re.findall(r"```\n(.+?)\n```", (ROOT / "README.md").read_text())


def test_readme_states_exactly_two_setup_commands_and_ci_runs_the_test_command():
    setup = (ROOT / "README.md").read_text().split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```\n(.+?)\n```", setup)
    assert len(commands) == 2
    install_and_run, test_command = commands
    assert "pip install -e ." in install_and_run and "deepnet train" in install_and_run
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci_run.splitlines()
    assert install_and_run in ci_run  # the install job runs it in a copy of the tree


def test_the_readme_residual_block_example_runs(tmp_path, monkeypatch):
    section = (ROOT / "README.md").read_text().split("## Models from parts", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    from deepnet.nets import load_model
    loaded = load_model(tmp_path / "tiny_resnet.npz")
    x = namespace["x"]
    assert (loaded.predict(x) == namespace["net"].predict(x)).all()
    assert "2.body.1.gamma" in namespace["grads"]
