"""The public API is annotated (mypy checks the annotations: pyproject's [tool.mypy], run by
.ci/run) and its main functions carry numpydoc sections."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

# The modules whose every public callable is fully annotated (mypy's disallow_untyped_defs
# holds them to it; this test says so without mypy installed).
ANNOTATED = [
    "deepnet.functional",
    "deepnet.datasets",
    "deepnet.nn",
    "deepnet.layers",
    "deepnet.nn.activations",
    "deepnet.nn.base",
    "deepnet.nn.containers",
    "deepnet.nn.conv",
    "deepnet.nn.init",
    "deepnet.nn.linear",
    "deepnet.nn.losses",
    "deepnet.nn.normalization",
    "deepnet.nn.pooling",
    "deepnet.nn.regularization",
    "deepnet._array",
    "deepnet._dtypes",
    "deepnet.models",
    "deepnet.nets",
    "deepnet.training",
    "deepnet.training.augment",
    "deepnet.training.callbacks",
    "deepnet.training.checkpoint",
    "deepnet.training.evaluation",
    "deepnet.training.optimizers",
    "deepnet.training.reporting",
    "deepnet.training.schedules",
    "deepnet.training.trainer",
    "deepnet.trainer",
    "deepnet.optimizers",
    "deepnet.schedules",
    "deepnet.augment",
    "deepnet.distributed",
    "deepnet.recipes",
    "deepnet._errors",
    "deepnet._memory",
    "deepnet.models.book",
    "deepnet.models.cost",
    "deepnet.models.files",
    "deepnet.models.spec",
]

# Functions and methods ("Class.method") whose docstrings have numpydoc "Parameters" and
# "Returns" sections (Returns where they return something).
NUMPYDOC = {
    "deepnet.datasets": [
        "read_idx",
        "mnist_search_dirs",
        "find_mnist_dir",
        "download_mnist",
        "load_mnist",
        "stratified_split",
        "mnist_dir_in",
        "default_download_dir",
        "shipped_data_dir",
    ],
    "deepnet.models": ["build", "model_spec", "load_model", "describe", "check_cost", "fold_batch_norm"],
    "deepnet.functional": ["im2col", "col2im", "conv2d", "conv2d_backward", "max_pool2d", "relu", "relu_backward"],
    "deepnet.training.trainer": [
        "batch_starts",
        "Trainer.train",
        "Trainer.train_step",
        "Trainer.history",
        "Trainer.resume",
    ],
    "deepnet.training.callbacks": ["check_callbacks"],
    "deepnet.training.optimizers": [
        "get_optimizer",
        "Optimizer.update",
        "Optimizer.state_dict",
        "Optimizer.load_state_dict",
    ],
    "deepnet.training.schedules": ["parse", "Schedule.__call__", "Schedule.spec"],
    "deepnet.training.augment": [
        "affine_theta",
        "gaussian_blur_matrix",
        "elastic_field",
        "Augment.from_spec",
        "Augment.spec",
        "Augment.__call__",
    ],
    "deepnet.training.checkpoint": ["save", "load", "state", "config", "apply_state"],
}

# Classes whose docstrings have a numpydoc "Parameters" section (the constructor's).
NUMPYDOC_CLASSES = {
    "deepnet.nn": ["Convolution", "Pooling", "Affine", "BatchNormalization", "Dropout"],
    "deepnet.models": ["Sequential", "DeepConvNet"],
    "deepnet.training": ["Trainer", "WeightAverage"],
    "deepnet.training.optimizers": ["Optimizer", "SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam"],
    "deepnet.training.schedules": ["Schedule"],
    "deepnet.training.augment": ["Augment"],
}


def _public(module):
    """(name, function) of the module's public functions and its public classes' methods:
    the names in ``__all__``, else those defined in the module not starting with "_"."""
    exported = getattr(module, "__all__", None)
    names = exported or [n for n in vars(module) if not n.startswith("_")]
    for name in names:
        obj = getattr(module, name)
        if exported is None and getattr(obj, "__module__", None) != module.__name__:
            continue  # imported from elsewhere
        if inspect.isfunction(obj):
            yield name, obj
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr not in ("__init__", "__call__"):
                    continue
                if isinstance(member, (classmethod, staticmethod)):
                    member = member.__func__
                elif isinstance(member, property):
                    member = member.fget
                if getattr(member, "__module__", obj.__module__) != obj.__module__:
                    continue  # made elsewhere: a Protocol's __init__ comes from typing
                if inspect.isfunction(member) and member.__name__ != "<lambda>":  # W = property(lambda ...)
                    yield f"{name}.{attr}", member


def _missing(function):
    signature = inspect.signature(function)
    missing = [
        p.name
        for p in signature.parameters.values()
        if p.annotation is inspect.Parameter.empty and p.name not in ("self", "cls")
    ]
    if signature.return_annotation is inspect.Signature.empty:
        missing.append("return")
    return missing


@pytest.mark.parametrize("module_name", ANNOTATED)
def test_public_callables_are_annotated(module_name):
    module = importlib.import_module(module_name)
    found = list(_public(module))
    assert found or module_name in ("deepnet.layers", "deepnet.nn"), module_name
    unannotated = {name: missing for name, function in found if (missing := _missing(function))}
    assert not unannotated, f"{module_name}: not annotated: {unannotated}"


def _documented(doc):
    """A test of whether the docstring's Parameters section describes a name ("x, t : array"
    describes two, "conv_1, ..., conv_6 : dict" every conv_<digits>)."""
    section = doc.partition("Parameters\n----------\n")[2]
    names, prefixes = set(), []
    for line in section.splitlines():
        if line and set(line) == {"-"}:
            break  # the next section's underline
        if line and not line[0].isspace():
            listed = [name.strip().lstrip("*") for name in line.partition(" : ")[0].split(",")]
            names.update(listed)
            if "..." in listed:
                prefixes.append(listed[0].rstrip("0123456789"))
    return lambda name: (
        name in names or any(name.startswith(prefix) and name[len(prefix) :].isdigit() for prefix in prefixes)
    )


def _check_parameters(where, doc, signature):
    parameters = [p for p in signature.parameters if p not in ("self", "cls")]
    if parameters:
        assert "Parameters\n----------" in doc, f"{where}: no Parameters section"
        documented = _documented(doc)
        undocumented = [p for p in parameters if not documented(p)]
        assert not undocumented, f"{where}: parameters not in the Parameters section: {undocumented}"


@pytest.mark.parametrize("module_name, name", [(m, n) for m, names in NUMPYDOC.items() for n in names])
def test_numpydoc_sections(module_name, name):
    obj = importlib.import_module(module_name)
    for attribute in name.split("."):
        obj = getattr(obj, attribute)
    doc = inspect.getdoc(obj) or ""
    signature = inspect.signature(obj)
    _check_parameters(f"{module_name}.{name}", doc, signature)
    if signature.return_annotation not in (None, "None"):  # a procedure has nothing to return
        assert "Returns\n-------" in doc, f"{module_name}.{name}: no Returns section"


@pytest.mark.parametrize("module_name, name", [(m, n) for m, names in NUMPYDOC_CLASSES.items() for n in names])
def test_numpydoc_class_parameters(module_name, name):
    cls = getattr(importlib.import_module(module_name), name)
    doc = inspect.getdoc(cls) or ""
    assert "Parameters\n----------" in doc, f"{module_name}.{name}: no Parameters section"
    _check_parameters(f"{module_name}.{name}", doc, inspect.signature(cls))


def test_loss_forward_numpydoc():
    from deepnet.nn import SoftmaxWithLoss

    doc = inspect.getdoc(SoftmaxWithLoss.forward) or ""
    assert "Parameters\n----------" in doc and "Returns\n-------" in doc


def test_mypy_configuration_covers_the_public_api():
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["files"] == ["deepnet"]  # the whole package
    strict = {
        module
        for override in config["overrides"]
        if override.get("disallow_untyped_defs")
        for module in override["module"]
    }
    for module_name in (
        "deepnet.functional",
        "deepnet.datasets",
        "deepnet.nn.*",
        "deepnet.training.*",
        "deepnet.cli.*",
    ):
        assert module_name in strict, module_name
