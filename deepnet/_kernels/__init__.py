"""The compiled Cython/OpenMP kernels (built from kernels/ by setup.py), one extension module per kind."""
