"""triton_kernels plugin: Triton SSD scan (forward + backward), SSD step and fused KD loss, each with
a PyTorch ``*_ref`` twin it is tested against; plus mamba-ssm adapters used when that package is
installed on a GPU machine."""
