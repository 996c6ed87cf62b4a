"""CUDA sources of the GPU backend (.cu/.cuh), installed as package data for CuPy to compile."""
