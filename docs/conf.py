"""Sphinx configuration of deepnet's documentation site (build: see docs/README.md).

The site is built offline with warnings as errors (.ci/run's docs job): no intersphinx, no
remote assets. The notebooks in notebooks/ execute at build time in their quick mode.
"""

from __future__ import annotations

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The notebooks run in quick mode during the build; their kernel inherits the environment.
os.environ.setdefault("DEEPNET_QUICK", "1")
try:
    import deepnet  # the installed package (.ci/run builds from outside the source tree)
except ImportError:  # not installed: the source tree's
    sys.path.insert(0, str(ROOT))
    import deepnet
if pathlib.Path(deepnet.__file__).resolve().parents[1] == ROOT:
    # The notebooks' kernel (run in docs/notebooks/) imports the same deepnet as the API reference.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))

project = "deepnet"
author = "deepnet contributors"
copyright = "deepnet contributors"
release = deepnet.__version__
version = release

extensions = [
    "myst_nb",  # MyST Markdown pages and notebooks (it loads myst_parser)
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",
    "sphinx.ext.viewcode",
]

exclude_patterns = ["_build", "**/.ipynb_checkpoints"]
templates_path = ["_templates"]
html_static_path = ["_static"]

# Pages link each other and the README as on GitHub: `page.md#a-heading`. Headings get
# GitHub's anchors; links to ../README.md go to the landing page, which includes it.
myst_heading_anchors = 4
myst_enable_extensions = ["colon_fence"]

# Notebooks: MyST Markdown (jupytext) files, run on every build, and any error fails it.
nb_execution_mode = "force"
nb_execution_raise_on_error = True
nb_execution_timeout = 120
nb_execution_show_tb = True
nb_merge_streams = True

# API reference: autodoc with numpydoc; member lists follow each module's __all__.
autodoc_default_options = {"member-order": "bysource", "show-inheritance": True}
autodoc_typehints = "signature"
# NumPy's aliases by name, not spelled out as their long unions.
autodoc_type_aliases = {"DTypeLike": "numpy.typing.DTypeLike", "ArrayLike": "numpy.typing.ArrayLike"}
autosummary_generate = False
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "pydata_sphinx_theme"
html_title = f"deepnet {release}"
html_theme_options = {
    "navbar_center": [],
    "show_nav_level": 1,
    "navigation_depth": 3,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
html_sidebars = {"**": ["sidebar-global.html"]}
html_css_files = ["deepnet.css"]
html_show_sourcelink = False


def _readme_links_to_index(app, doctree) -> None:
    """Point the guides' links to ../README.md (and its headings) at the landing page."""
    from sphinx import addnodes

    readme = str(ROOT / "README")
    for node in doctree.findall(addnodes.pending_xref):
        if node.get("reftype") == "myst" and node.get("refdomain") == "doc" and node["reftarget"] == readme:
            node["reftarget"] = "index"


def setup(app):
    app.connect("doctree-read", _readme_links_to_index)
