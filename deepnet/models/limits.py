"""The bounds untrusted architectures are held to (specs, model files), and how their values
are quoted in error messages.

Specs and model files are data from anywhere: ``build`` and ``load_model`` refuse one that
asks for more than these before anything is allocated or drawn.  A value from such a file (a
name, a setting) may be megabytes long, so messages quote it with ``_short``.
"""

from __future__ import annotations
from ..nn.config import _short  # noqa: F401

MAX_PARAMETERS = 1 << 28  # a spec asking for more (1 GiB of float32) is refused
MAX_NESTING = 32  # containers inside containers: deeper specs are refused
MAX_LAYERS = 10_000  # layers and containers of a spec, named models' layers included
MAX_SPEC_BYTES = 1 << 20  # a JSON spec (a spec file, a model file's entry) larger than this is refused
MAX_DIMENSION = 1 << 16  # any size in a named model's config (channels, widths, input height...)
MAX_ACTIVATION = 1 << 23  # values of one layer's output for one image (64 MiB in float64)
MAX_WORK = 10**10  # multiply-adds (and pooling compares) for one image
