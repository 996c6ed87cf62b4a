"""deepnet's modules import each other without cycles, and the shared helpers sit at the bottom.

The import graph is read from the source with ``ast``: every ``import`` and ``from ...
import`` of a deepnet module, at the top of a file or inside a function (a lazy import
hides a cycle, it does not remove it), plus ``importlib.import_module("deepnet.x")``-style
calls with a literal name.  Each module is also imported on its own in a fresh
interpreter, which catches what the parse cannot (an import that only works after
another module was imported first), and the modules that import actually loads are
checked against the parsed graph.
"""

import ast
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import deepnet

PACKAGE = Path(deepnet.__file__).resolve().parent
ROOT = PACKAGE.parent

# The bottom layer: these import no deepnet module but the ones listed (the reference backend
# and the code it shares with the others; importing them also runs deepnet.backends, the
# package, which imports no backend).
BOTTOM = {
    "deepnet._dtypes": set(),
    "deepnet._array": set(),
    "deepnet.backends._shared": {"deepnet._array", "deepnet._dtypes"},
    "deepnet.backends.reference": {"deepnet._dtypes", "deepnet.backends._shared"},
}
# The backends' old import paths, each re-exporting its new home alone.
OLD_PATHS = {
    "deepnet.reference": "deepnet.backends.reference",
    "deepnet._cpu": "deepnet.backends.cpu",
    "deepnet._cuda": "deepnet.backends.cuda",
}
BACKENDS = ("deepnet.backends.reference", "deepnet.backends.cpu", "deepnet.backends.cuda")


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


FILES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
MODULES = sorted(FILES)


def _node(name):
    """The graph node for module ``name``: itself, or the package that holds it."""
    while name not in FILES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in FILES else None


def _imported_names(module):
    """The deepnet modules (or, for compiled ones, their packages) ``module`` imports."""
    path = FILES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:  # "from deepnet import io": a module; "... import backend": the package
                full = f"{source}.{alias.name}"
                names.add(full if full in FILES else source)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called.endswith("module") and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)  # importlib.import_module("deepnet._cuda")
    return names


def _graph():
    graph = {}
    for module in MODULES:
        targets = {_node(name) for name in _imported_names(module) if name.split(".")[0] == "deepnet"}
        # Importing deepnet.x runs deepnet/__init__ first, but that is not x importing the
        # package: only an explicit "from deepnet import name" (a non-module) counts.
        graph[module] = {t for t in targets if t is not None and t != module}
    return graph


GRAPH = _graph()


def _reachable(graph, start):
    seen, stack = set(), [start]
    while stack:
        for target in graph[stack.pop()]:
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


# Importing deepnet.app.x also runs deepnet/app/__init__.py: at run time a module needs its
# packages too (deepnet itself is loaded before the probe starts counting).
_WITH_PACKAGES = {
    module: targets | ({_node(module.rpartition(".")[0])} - {"deepnet", None, ""}) for module, targets in GRAPH.items()
}


def _cycles(graph):
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_the_graph_sees_the_packages_modules():
    assert {
        "deepnet",
        "deepnet._array",
        "deepnet._dtypes",
        "deepnet.reference",
        "deepnet.backends",
        "deepnet.functional",
        "deepnet.layers",
        "deepnet.nets",
        "deepnet.models",
        "deepnet.trainer",
        "deepnet.training",
        "deepnet.training.trainer",
        "deepnet.training.callbacks",
        "deepnet.training.checkpoint",
    } | set(BACKENDS) <= set(GRAPH)
    # Imports inside functions count: the registry imports each backend module lazily.
    assert "deepnet.backends" in GRAPH["deepnet.functional"]
    assert set(BACKENDS) <= GRAPH["deepnet.backends"]


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_old_paths_import_only_their_new_home(old):
    assert GRAPH[old] == {OLD_PATHS[old]}


def test_backends_import_no_other_backend():
    """What they share is in deepnet.backends._shared; none imports the registry."""
    for module in BACKENDS:
        assert not (GRAPH[module] & (set(BACKENDS) | {"deepnet.backends"})), (
            f"{module} imports {sorted(GRAPH[module] & (set(BACKENDS) | {'deepnet.backends'}))}"
        )


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_bottom_modules_import_only_each_other(module):
    assert GRAPH[module] == BOTTOM[module], (
        f"{module} imports {sorted(GRAPH[module])}; it may import only {sorted(BOTTOM[module])}"
    )


def test_helpers_never_import_the_cuda_backend():
    """They come from deepnet._array and deepnet._dtypes (the registry in deepnet.backends
    still picks the cuda backend for CuPy arrays, on first use)."""
    cuda = {"deepnet.backends.cuda", "deepnet._cuda"}
    for module in (
        "deepnet.reference",
        "deepnet.backends.reference",
        "deepnet.backends._shared",
        "deepnet.layers",
        "deepnet.io",
        "deepnet.optimizers",
        "deepnet.nets",
        "deepnet.trainer",
        "deepnet.distributed",
        "deepnet.functional",
        *MODEL_MODULES,
        "deepnet.training",
        "deepnet.training.trainer",
        "deepnet.training.callbacks",
        "deepnet.training.checkpoint",
        "deepnet.training.optimizers",
        "deepnet.training.schedules",
        "deepnet.training.augment",
    ):
        assert not cuda & GRAPH[module], f"{module} imports the cuda backend"
    assert not cuda & _reachable(GRAPH, "deepnet.reference")
    assert not cuda & _reachable(GRAPH, "deepnet.backends.reference")


def test_no_import_cycles():
    """cli and app included: app imports only cli.options, and cli imports app's commands
    inside the function that assembles the parser."""
    cycles = _cycles(GRAPH)
    assert not cycles, f"import cycles among deepnet modules: {cycles}"


# ------------------------------------------------------------ each module, freshly imported

_PROBE = """
import json, sys
import deepnet
before = set(sys.modules)
import {module}
print(json.dumps({{"loaded": sorted(m for m in set(sys.modules) - before if m.startswith("deepnet")),
                  "cupy": "cupy" in sys.modules}}))
"""


@pytest.fixture(scope="module")
def fresh_imports():
    """module -> what importing it alone loads (after deepnet itself), all run at once."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    runs = {
        module: subprocess.Popen(
            [sys.executable, "-c", _PROBE.format(module=module)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in MODULES
        if module != "deepnet.__main__"
    }  # __main__ runs the CLI
    results = {}
    for module, run in runs.items():
        out, err = run.communicate(timeout=120)
        results[module] = (run.returncode, out, err)
    return results


@pytest.mark.parametrize("module", [m for m in MODULES if m != "deepnet.__main__"])
def test_each_module_imports_alone(fresh_imports, module):
    returncode, out, err = fresh_imports[module]
    assert returncode == 0, f"import {module} in a fresh interpreter failed:\n{err}"
    result = json.loads(out.strip().splitlines()[-1])
    assert not result["cupy"], f"importing {module} imported CuPy"
    # What the import really loaded is what the parsed graph says it may load.
    loaded = {_node(name) for name in result["loaded"]} - {None, module}
    missed = loaded - _reachable(_WITH_PACKAGES, module)
    assert not missed, f"{module} loaded {sorted(missed)}, which the parsed graph misses"
    if module in BOTTOM:
        # Its own imports and theirs (all at the bottom), and the packages that hold it.
        packages = {_node(module.rpartition(".")[0])} - {"deepnet", None}
        assert loaded - packages <= _reachable(BOTTOM, module), f"{module} loaded {sorted(loaded)}"


# ------------------------------------------------------------ deepnet.models: one module per job

MODELS_PACKAGE = PACKAGE / "models"
MODEL_MODULES = sorted(m for m in MODULES if m == "deepnet.models" or m.startswith("deepnet.models."))
MAX_LINES = 500


def test_the_models_are_a_package_of_small_modules():
    assert {
        "deepnet.models",
        "deepnet.models.init",
        "deepnet.models.sequential",
        "deepnet.models.book",
        "deepnet.models.spec",
        "deepnet.models.cost",
        "deepnet.models.files",
        "deepnet.models.folding",
    } <= set(MODEL_MODULES)
    too_long = {
        module: n
        for module in MODEL_MODULES
        if (n := len(FILES[module].read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


@pytest.mark.parametrize("module", MODEL_MODULES)
def test_each_models_module_says_its_one_job_first(module):
    docstring = ast.get_docstring(ast.parse(FILES[module].read_text(encoding="utf-8")))
    assert docstring and docstring.splitlines()[0].strip(), f"{module} has no docstring naming its job"


@pytest.mark.parametrize("module", MODEL_MODULES)
def test_the_models_do_not_import_the_trainer_the_command_line_or_the_app(module):
    above = {
        m
        for m in _reachable(_WITH_PACKAGES, module)
        if m == "deepnet.trainer" or m.split(".")[:2] in (["deepnet", "cli"], ["deepnet", "app"])
    }
    assert not above, f"{module} imports (directly or not) {sorted(above)}"


def test_deepnet_nets_is_only_for_users():
    """deepnet.nets re-exports deepnet.models for the book's imports; deepnet's own modules
    import deepnet.models, and deepnet.nets holds nothing of its own."""
    importers = sorted(module for module, targets in GRAPH.items() if "deepnet.nets" in targets)
    assert not importers, f"{importers} import deepnet.nets instead of deepnet.models"
    assert GRAPH["deepnet.nets"] == {"deepnet.models"}
    tree = ast.parse(FILES["deepnet.nets"].read_text(encoding="utf-8"))
    assert all(isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)) for node in tree.body)


def test_a_sequential_describes_itself_with_only_its_module_imported():
    """Sequential.spec and astype use deepnet.models.spec, which registers itself with
    deepnet.models.sequential (it cannot be imported there: it builds Sequentials)."""
    code = (
        "import numpy as np; from deepnet.models.sequential import Sequential; from deepnet.layers import Affine\n"
        "net = Sequential(Affine(np.ones((2, 3), np.float32), np.zeros(3, np.float32)))\n"
        "print(net.spec()['type'], net.astype(np.float64).dtype)"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["Sequential", "float64"]


# ------------------------------------------------------------ deepnet.nn: the layers, one module per kind

NN_MODULES = sorted(m for m in MODULES if m == "deepnet.nn" or m.startswith("deepnet.nn."))


def test_the_layers_are_a_package_of_small_modules():
    assert {
        "deepnet.nn",
        "deepnet.nn.base",
        "deepnet.nn.config",
        "deepnet.nn.init",
        "deepnet.nn.activations",
        "deepnet.nn.conv",
        "deepnet.nn.linear",
        "deepnet.nn.normalization",
        "deepnet.nn.regularization",
        "deepnet.nn.pooling",
        "deepnet.nn.containers",
        "deepnet.nn.losses",
    } <= set(NN_MODULES)
    too_long = {
        module: n
        for module in NN_MODULES
        if (n := len(FILES[module].read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


@pytest.mark.parametrize("module", NN_MODULES)
def test_each_nn_module_says_its_one_job_first(module):
    docstring = ast.get_docstring(ast.parse(FILES[module].read_text(encoding="utf-8")))
    assert docstring and docstring.splitlines()[0].strip(), f"{module} has no docstring naming its job"


@pytest.mark.parametrize("module", NN_MODULES)
def test_the_layers_do_not_import_the_models_the_trainer_the_command_line_or_the_app(module):
    above = {
        m
        for m in _reachable(_WITH_PACKAGES, module)
        if m in ("deepnet.trainer", "deepnet.layers", "deepnet.nets")
        or m.split(".")[:2] in (["deepnet", "models"], ["deepnet", "cli"], ["deepnet", "app"])
    }
    assert not above, f"{module} imports (directly or not) {sorted(above)}"


def test_deepnet_layers_only_re_exports_deepnet_nn():
    assert GRAPH["deepnet.layers"] == {"deepnet.nn"}
    tree = ast.parse(FILES["deepnet.layers"].read_text(encoding="utf-8"))
    assert all(isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)) for node in tree.body)


# ------------------------------------------------------------ every module: one job, named first, in at most 500 lines


@pytest.mark.parametrize("module", MODULES)
def test_every_module_is_at_most_500_lines(module):
    """Issue 26: no Python module in deepnet/ over 500 lines (as ruff format leaves it)."""
    lines = len(FILES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{module} ({FILES[module].relative_to(ROOT)}) has {lines} lines, more than {MAX_LINES}"


@pytest.mark.parametrize("module", MODULES)
def test_every_module_starts_with_a_docstring_whose_first_line_names_its_job(module):
    """Issue 26: each module has one job, which its docstring's first line names (so the
    docstring is the module's first statement, and its first line is not empty)."""
    tree = ast.parse(FILES[module].read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree, clean=False)  # unclean: a blank first line would be removed
    assert docstring is not None, f"{module} does not start with a docstring"
    assert docstring.split("\n")[0].strip(), f"{module}'s docstring starts with an empty line, not its job"


def test_the_module_checks_see_every_module():
    assert {"deepnet", "deepnet.io", "deepnet.datasets", "deepnet.cli.train", "deepnet.app.preprocess"} <= set(MODULES)
    assert len(MODULES) == len(list(PACKAGE.rglob("*.py")))


# The public names of the four modules split for issue 26, as they were before the split:
# each is still importable from its old path (the module re-exports it from its new home).
NAMES_BEFORE_THE_SPLIT = {
    "deepnet.io": [
        "atomic_write",
        "user_cache_dir",
        "DEFAULT_MAX_BYTES",
        "ParameterFileError",
        "UnsafePickleError",
        "read_params",
        "save_params",
    ],
    "deepnet.datasets": [
        "MNIST_SHA256",
        "MNIST_FILES",
        "MIRRORS",
        "DOWNLOAD_TIMEOUT_S",
        "IMAGE_SIZE",
        "NUM_CLASSES",
        "IDX_IMAGES_MAGIC",
        "IDX_LABELS_MAGIC",
        "IDX_UBYTE",
        "GZIP_MAGIC",
        "CACHE_VERSION",
        "PathLike",
        "Split",
        "MNISTFormatError",
        "MNISTNotFoundError",
        "read_idx",
        "default_download_dir",
        "shipped_data_dir",
        "mnist_search_dirs",
        "find_mnist_dir",
        "download_mnist",
        "load_mnist",
        "stratified_split",
        "mnist_dir_in",
    ],
    "deepnet.app.preprocess": [
        "PILLOW_INSTALL_HINT",
        "FORMATS",
        "MAX_PIXELS",
        "MAX_ASPECT",
        "WORK_SIDE",
        "VISIBLE_ALPHA",
        "ONE_COLOUR",
        "FIELD",
        "BOX",
        "CENTRE",
        "INK_THRESHOLD",
        "MIN_CONTRAST",
        "PAPER_BLOCKS",
        "FLAT",
        "MIN_PAPER",
        "LINE_SPAN",
        "LINE_INK",
        "LINE_STRIP",
        "LINE_TILT",
        "LINE_EDGE",
        "LINE_SEARCH",
        "DIGIT_CELLS",
        "DIGIT_NEAR",
        "NOISY",
        "DENOISE",
        "ImageError",
        "ImageTooLarge",
        "BlankImage",
        "require_pillow",
        "mnist_input",
        "check_size",
        "read_grayscale",
        "ink_map",
        "digit_to_mnist",
        "centre_of_mass",
    ],
    "deepnet.cli.train": [
        "BOOK_EVALUATION_SAMPLES",
        "VALIDATION_SHARE",
        "add_train",
        "add_ensemble",
        "run_train",
        "run_ensemble",
    ],
}


@pytest.mark.parametrize("module", sorted(NAMES_BEFORE_THE_SPLIT))
def test_the_split_modules_keep_their_public_names(module):
    imported = importlib.import_module(module)
    missing = [name for name in NAMES_BEFORE_THE_SPLIT[module] if not hasattr(imported, name)]
    assert not missing, f"{module} no longer has {missing}"
    for name in getattr(imported, "__all__", ()):
        assert hasattr(imported, name), f"{module}.__all__ names {name}, which it does not have"


def test_deepnet_io_only_re_exports_its_homes():
    """deepnet.io is a public path only (its name is the standard library's): the code is in
    one module per job, and deepnet.io re-exports the same objects."""
    tree = ast.parse(FILES["deepnet.io"].read_text(encoding="utf-8"))
    assert all(isinstance(node, (ast.Expr, ast.ImportFrom, ast.Assign)) for node in tree.body)
    io = importlib.import_module("deepnet.io")
    homes = {name: getattr(io, name).__module__ for name in io.__all__ if callable(getattr(io, name))}
    assert all(home != "deepnet.io" for home in homes.values()), homes
