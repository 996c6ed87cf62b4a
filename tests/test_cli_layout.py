"""The layout of the command line (issue 26): one module per command in deepnet/cli, the
argument types in deepnet/cli/options.py, and deepnet.app using only their public names.

Read from the source with ``ast``, so an import inside a function counts too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "deepnet"
MAX_LINES = 500


def imported_names(path, root=PACKAGE):
    """[(module, name)] of every import in ``path`` (a module under ``root``, the deepnet
    folder), at any depth; relative imports resolved against the module's package (``name``
    None for ``import module``)."""
    package = ["deepnet", *path.parent.relative_to(root).parts]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                # "from deepnet import cli" names a module; "from deepnet.cli import _x" a name in one.
                found.append((module, alias.name))
    return found


def modules(folder):
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_the_command_line_is_a_package_of_small_modules():
    names = {path.name for path in modules("cli")}
    assert {"__init__.py", "options.py", "train.py", "evaluate.py", "plot.py"} <= names
    assert not (PACKAGE / "cli.py").exists()
    too_long = {
        path.name: n for path in modules("cli") if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


@pytest.mark.parametrize("path", modules("app"), ids=lambda path: path.name)
def test_the_app_does_not_import_the_command_line(path):
    """deepnet.cli (argparse) runs deepnet.app (inference and HTTP), never the other way: the
    two packages have no import cycle."""
    cli = [
        module if name is None else f"{module}.{name}"
        for module, name in imported_names(path)
        if module == "deepnet.cli" or module.startswith("deepnet.cli.") or (module == "deepnet" and name == "cli")
    ]
    assert not cli, f"{path.name} imports {cli}"


def test_the_argument_types_do_not_depend_on_the_app():
    names = imported_names(PACKAGE / "cli" / "options.py")
    app = [
        module if name is None else f"{module}.{name}"
        for module, name in names
        if module == "deepnet.app" or module.startswith("deepnet.app.") or (module == "deepnet" and name == "app")
    ]
    assert not app, f"deepnet/cli/options.py imports {app}"


def test_the_layout_check_sees_imports_inside_functions(tmp_path):
    probe = tmp_path / "deepnet" / "app" / "probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(
        "import json\n\ndef f():\n    from ..cli import _hidden\n    if True:\n        from ..cli.options import fail\n"
    )
    assert sorted(imported_names(probe, tmp_path / "deepnet"), key=str) == [
        ("deepnet.cli", "_hidden"),
        ("deepnet.cli.options", "fail"),
        ("json", None),
    ]
