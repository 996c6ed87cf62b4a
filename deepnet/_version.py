"""deepnet's version (read by setuptools from this file, and by deepnet.__version__)."""

__version__ = "0.1.0"
