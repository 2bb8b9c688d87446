"""`hatelens doctor` on a CPU machine: it says plainly that there is no CUDA device, and lists the extras."""

import pytest
import torch

from hatelens.cli.doctor_commands import EXTRAS, gpu_lines


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_doctor_says_no_cuda_device_and_lists_extras():
    lines = gpu_lines()
    assert lines[0].startswith(f"torch         {torch.__version__}")
    assert any("no CUDA device" in line for line in lines)
    for extra in EXTRAS:
        line = next(line for line in lines if line.startswith(extra))
        assert "installed" in line or "missing: " in line
    assert next(line for line in lines if line.startswith("train")).endswith("installed")  # trl/peft in the venv
