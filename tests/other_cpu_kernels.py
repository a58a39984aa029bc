"""Print the ATEN_CPU_CAPABILITY under which `make test` reruns the kernel-sensitive tests.

PyTorch picks its most capable CPU kernels (AVX-512 where the CPU has it, else AVX2); other kernels round
differently, so a test that only passes on one machine's kernels is a test that fails on a user's. The
second pass uses the kernels this machine would not pick by default: AVX2 on an AVX-512 machine, AVX-512 on
an AVX2 machine whose CPU has it (PyTorch does not always choose it), else the portable scalar kernels.
"""
import torch

default = torch.backends.cpu.get_cpu_capability()  # "AVX512", "AVX2" or "DEFAULT" (also VSX/ZVECTOR...)
if default == "AVX512":
    print("avx2")
elif default == "AVX2" and "avx512f" in open("/proc/cpuinfo").read():
    print("avx512")
else:
    print("default")
