"""triton_kernels plugin (work in progress)."""
