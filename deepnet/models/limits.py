"""The bounds untrusted architectures are held to (specs, model files), and how their values
are quoted in error messages.

Specs and model files are data from anywhere: ``build`` and ``load_model`` refuse one that
asks for more than these before anything is allocated or drawn.  A value from such a file (a
name, a setting) may be megabytes long, so messages quote it with ``_short``.
"""
import reprlib

MAX_PARAMETERS = 1 << 28     # a spec asking for more (1 GiB of float32) is refused
MAX_NESTING = 32             # containers inside containers: deeper specs are refused
MAX_LAYERS = 10_000          # layers and containers of a spec, named models' layers included
MAX_SPEC_BYTES = 1 << 20     # a JSON spec (a spec file, a model file's entry) larger than this is refused
MAX_DIMENSION = 1 << 16      # any size in a named model's config (channels, widths, input height...)
MAX_ACTIVATION = 1 << 23     # values of one layer's output for one image (64 MiB in float64)
MAX_WORK = 10 ** 10          # multiply-adds (and pooling compares) for one image

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 60


def _short(value):
    """repr() cut short: a value from a file (a name, a setting) may be megabytes long."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int too long to print, a deeply nested list
        text = f"an int of {value.bit_length()} bits" if isinstance(value, int) else f"a {type(value).__name__}"
    return text if len(text) <= 120 else text[:117] + "..."
