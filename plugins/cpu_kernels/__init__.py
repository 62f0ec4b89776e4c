"""CPU kernels in C for the kernel registry, compiled on first use by the machine's C compiler.

``ssd_scan_c`` (op ``ssd_scan``, priority 15: above the chunked PyTorch scan, below the GPU
kernels) runs the SSD recurrence step by step with the state in cache: on the VP student at
L = 1024 about twice as fast as the chunked PyTorch scan, which stays the path for training and
for every input the C kernel does not take (see :mod:`.ssd_scan`). Where no compiler is found or
the build fails (:mod:`.build`), the plugin registers nothing usable and the PyTorch kernels run.
"""
