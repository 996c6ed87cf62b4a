"""What the commands share when they run: the kernels' settings, the MNIST data, the
checks made before a long run, and the figure files (matplotlib, imported only when needed).

The commands call these through the module (``common.load_mnist(...)``), so a test can
replace one of them in one place.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import TYPE_CHECKING, Any, Mapping, Optional, Tuple

from numpy.typing import DTypeLike

from .options import CommandError

if TYPE_CHECKING:
    import argparse

    from ..datasets import Split

__all__ = [
    "PLOT_INSTALL_HINT",
    "FIGURE_FORMATS",
    "configure_kernels",
    "require_gpu",
    "check_writable",
    "load_mnist",
    "count",
    "figure_class",
    "figure_format",
    "save_figure",
]

PLOT_INSTALL_HINT = (
    'this command needs matplotlib: pip install -e ".[plot]" in deepnet\'s source directory (or pip install matplotlib)'
)
FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def configure_kernels(args: argparse.Namespace) -> None:
    """--backend and --threads (with several MPI ranks on a machine, its cores shared between them)."""
    import deepnet

    if args.backend:
        try:
            deepnet.set_backend(args.backend)
        except ImportError as exc:  # the compiled kernels are not built
            raise CommandError(str(exc)) from None
    from ..distributed import SingleProcess

    communicator: Any = getattr(args, "communicator", None) or SingleProcess()
    ranks = communicator.node_size if communicator.size > 1 else 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = args.threads
    if threads is None and ranks > 1 and not os.environ.get("OMP_NUM_THREADS"):
        threads = max(1, cores // ranks)  # share the cores between the ranks on this machine
    if threads:
        deepnet.set_num_threads(threads)
    if ranks * deepnet.get_num_threads() > cores and communicator.is_root:
        layout = f"{ranks} ranks x {deepnet.get_num_threads()}" if ranks > 1 else f"{deepnet.get_num_threads()}"
        print(
            f"deepnet: warning: {layout} threads on {cores} cores oversubscribe this machine; use --threads",
            file=sys.stderr,
        )


def require_gpu() -> None:
    """CommandError unless a CUDA device can be used (--device cuda)."""
    from ..backends import cuda

    if not cuda.gpu_available():
        raise CommandError("--device cuda: no usable GPU (needs CuPy and a CUDA device)")


def check_writable(paths: Mapping[str, str]) -> None:
    """Fail now, not after a long run, if an output cannot be written."""
    for option, path in paths.items():
        directory = os.path.dirname(os.path.abspath(path))
        try:
            os.makedirs(directory, exist_ok=True)
            with tempfile.TemporaryFile(dir=directory):
                pass
        except OSError as exc:
            raise CommandError(f"{option} {path}: cannot write in {directory} ({exc.strerror or exc})") from None
        if os.path.isdir(path):
            raise CommandError(f"{option} {path}: is a directory")


def load_mnist(root: Optional[str], dtype: DTypeLike) -> Tuple[Split, Split]:
    """MNIST ((x_train, t_train), (x_test, t_test)), from --data ``root`` (None: where it is installed)."""
    from .. import datasets

    if root is not None:
        directory = datasets.mnist_dir_in(root)
        if directory is None:
            raise CommandError(
                f"--data {root}: no MNIST files there (expected "
                f"{', '.join(s + '[.gz]' for s in datasets.MNIST_FILES.values())})"
            )
        root = str(directory)
    return datasets.load_mnist(normalize=True, flatten=False, one_hot_label=False, dtype=dtype, root=root)


def count(n: int, word: str) -> str:
    """``n`` and ``word``, plural unless n is 1 ("3 epochs", "1 member")."""
    return f"{n} {word}" + ("" if n == 1 else "s")


def figure_class() -> Any:
    """matplotlib's Figure, imported only now: plotting is an optional extra."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise CommandError(PLOT_INSTALL_HINT) from None
    return Figure


def figure_format(path: str) -> str:
    """The figure format of ``path``'s extension; CommandError for another extension."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in FIGURE_FORMATS:
        raise CommandError(f"--out {path}: the figure's extension must be one of {', '.join(FIGURE_FORMATS)}")
    return FIGURE_FORMATS[extension]


def save_figure(figure: Any, path: str, figure_format: str) -> None:
    """Render with the Agg backend (no display needed) and write the file atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from ..io import atomic_write

    FigureCanvasAgg(figure)
    with atomic_write(path) as f:
        figure.savefig(f, format=figure_format, dpi=100)
