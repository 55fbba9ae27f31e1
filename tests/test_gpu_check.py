"""The GPU check on a machine without CUDA: it stops at once, with one line and exit status 2, having run nothing."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check runs for minutes (benchmarks/gpu_check.sh)")
def test_gpu_check_fails_clearly_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": __import__("sys").executable})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr
    assert not out.exists()
