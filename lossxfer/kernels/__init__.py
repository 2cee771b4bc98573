"""CuPy kernels, imported only when a GPU backend is chosen (CuPy is an optional dependency)."""
