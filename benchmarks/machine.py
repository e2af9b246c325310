"""The line naming the machine above every benchmark table: CPU model, PyTorch's CPU capability, AMX yes/no and
threads (issue 22: a speed is a speed on one kind of CPU), plus the GPU for CUDA runs.

    from machine import machine_line   # benchmarks/ is the script's own folder
    print(machine_line(args.device))
"""

from __future__ import annotations

import torch

from reference_models.inference.hardware import describe_cpu

__all__ = ["machine_line"]


def machine_line(device: str = "cpu") -> str:
    """``# CPU: AMD EPYC; capability AVX512; AMX no; 2 threads; torch 2.x`` (and the GPU's name on CUDA)."""
    line = f"# {describe_cpu()}; torch {torch.__version__}"
    if str(device).startswith("cuda") and torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name(torch.device(device))}"
    return line
