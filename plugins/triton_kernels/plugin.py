"""Entry point of the triton_kernels plugin: registers nothing yet."""
