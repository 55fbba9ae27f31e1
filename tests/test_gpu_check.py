"""The GPU check on a machine without CUDA: it stops at once, with one line and exit status 2, having run nothing;
and its stage runner, which must not leave a stopped stage's workers running into the next."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"
sys.path.insert(0, str(REPO_ROOT))
from benchmarks._common import run_with_deadline  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the check runs for minutes (benchmarks/gpu_check.sh)")
def test_gpu_check_fails_clearly_without_cuda(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": __import__("sys").executable})
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "no CUDA device" in proc.stderr
    assert not out.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_stage_stopped_at_its_limit_takes_its_workers_with_it(tmp_path):
    pid_file = tmp_path / "worker.pid"
    script = f"sleep 60 & echo $! > {pid_file}; echo started; wait"
    with pytest.raises(subprocess.TimeoutExpired) as stopped:
        run_with_deadline(["bash", "-c", script], timeout=2)
    assert "started" in stopped.value.output
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker), "the stage's worker outlived the stage"
    finished = run_with_deadline([sys.executable, "-c", "print('ok')"], timeout=60)
    assert finished.returncode == 0 and finished.stdout.strip() == "ok"


def test_a_stage_stopped_at_its_limit_is_recorded_with_its_output():
    from benchmarks.gpu_check import run_stage

    result = run_stage(["bash", "-c", "echo partial; echo warned >&2; sleep 60"], limit_s=2)
    assert result["passed"] is False and result["returncode"] is None
    assert "limit of 2 s" in result["error"]
    assert "partial" in result["output_tail"] and "warned" in result["output_tail"]
