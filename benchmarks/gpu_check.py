"""The GPU check: everything that needs CUDA, in one run of a few minutes, summarised in one JSON.

Stages (each a subprocess with its own time limit, so that one that hangs or fails is recorded and the
others still run; the JSON is rewritten after every stage, so a run stopped from outside keeps what finished):
  tests       pytest -m cuda tests/test_cuda.py: CPU vs CUDA scores on the same encoder and digits, Spearman
              >= 0.999 in fp32 and >= 0.99 in bf16, same ids in the same order.
  speed_fp32  benchmarks/influence_speed.py --device cuda --precision fp32 on small_cnn, resnet18 and
              resnet50 (224 px): the autograd limit, ours and kronfluence side by side.
  speed_bf16  the limit and ours with bf16 autocast (no N vs 4N memory check).
  torchrun    `influencegate score digits` once in one process and once under torchrun --nproc_per_node=1 on
              the GPU, with the same saved encoder; the two tables must hold the same ids with Spearman >= 0.999.

Usage (benchmarks/gpu_check.sh installs carried wheels first, then calls this):
  python benchmarks/gpu_check.py --out gpu_check.json [--max-seconds S] [--budget-scale F]
Exit status: 0 when every stage passed, 1 when one failed, 2 when there is no CUDA device.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # the checkout's package unless an installed one comes first on PYTHONPATH
from benchmarks._common import run_with_deadline  # noqa: E402
SPEED_SETUPS = "small_cnn,resnet18,resnet50"
# Seconds each stage may run (times --budget-scale): 8 minutes at most together. From the H200 runs: tests 18 s;
# torchrun's three commands about 18 s each on a fresh machine; the fp32 small CNN 60 s and ResNet-18 about 40 s
# before kronfluence, which needed more than 77 s there.
STAGE_LIMITS_S = {"tests": 30, "speed_fp32": 270, "speed_bf16": 120, "torchrun": 60}
# kronfluence is timed in fp32 (the reference's own precision); bf16 times our engine against the limit.
# dattri stays in the CPU benchmark (it can attribute the small CNN's Linear head only).
STAGE_METHODS = {"speed_fp32": "ours,kronfluence", "speed_bf16": "ours"}
TAIL_CHARS = 2500


def run_stage(cmd: list[str], limit_s: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one command from the repository root; its exit status, seconds and output tail."""
    start = time.perf_counter()
    print(f"[gpu_check] $ {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = run_with_deadline(cmd, limit_s, cwd=REPO_ROOT, env={**os.environ, "TQDM_DISABLE": "1", **(env or {})})
        result = {"returncode": proc.returncode, "output_tail": (proc.stdout + proc.stderr)[-TAIL_CHARS:]}
    except subprocess.TimeoutExpired as exc:
        text = "".join(part.decode(errors="replace") if isinstance(part, bytes) else part
                       for part in (exc.stdout, exc.stderr) if part)
        result = {"returncode": None, "error": f"stopped after its limit of {limit_s:.0f} s",
                  "output_tail": text[-TAIL_CHARS:]}
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["passed"] = result["returncode"] == 0
    print(f"[gpu_check]   -> {'passed' if result['passed'] else 'FAILED'} in {result['seconds']} s",
          file=sys.stderr, flush=True)
    return result


def stage_tests(limit_s: float) -> dict[str, Any]:
    result = run_stage([sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-s", "-p", "no:cacheprovider",
                        "tests/test_cuda.py"], limit_s)
    result["spearman_cuda_vs_cpu"] = {
        precision: float(rho) for precision, rho in re.findall(r"CUDA (\w+) vs CPU fp32 Spearman over \d+ samples: "
                                                               r"([0-9.]+)", result["output_tail"])}
    summary = re.findall(r"(\d+) (passed|failed|skipped|error)", result["output_tail"])
    result["counts"] = {kind: int(n) for n, kind in summary}
    result["passed"] = result["passed"] and result["counts"].get("passed", 0) > 0 and "skipped" not in result["counts"]
    return result


def compact_speed(report: dict[str, Any]) -> dict[str, Any]:
    """Per setup: throughput of each method (samples/s), our ratios and peak GPU memory (MiB)."""
    out: dict[str, Any] = {}
    for setup, entry in report.get("setups", {}).items():
        methods = entry.get("methods", {})
        out[setup] = {
            "samples_timed": entry.get("setup", {}).get("samples_timed"),
            "batch_size": entry.get("setup", {}).get("batch_size"),
            "samples_per_s": {m: r.get("samples_per_s") for m, r in methods.items() if "samples_per_s" in r},
            "peak_gpu_mib": {m: r.get("memory", {}).get("cuda_max_allocated_mib") for m, r in methods.items()
                             if "memory" in r},
            "skipped": {m: r["skipped"] for m, r in methods.items() if "skipped" in r},
            "failed": {m: r["error"] for m, r in methods.items() if "error" in r},
            **entry.get("summary", {}),
        }
        if entry.get("error"):
            out[setup]["error"] = entry["error"]
        if entry.get("memory_flatness"):
            out[setup]["memory_peak_ratio_4N_over_N"] = entry["memory_flatness"].get("peak_ratio_4N_over_N")
    return out


def stage_speed(precision: str, limit_s: float, results_dir: Path, max_seconds: float, setups: str,
                methods: str | None = None) -> dict[str, Any]:
    """influence_speed.py on the GPU; its full report is kept beside the check's JSON. `methods` replaces the
    stage's STAGE_METHODS (comma list), e.g. to leave out kronfluence where it cannot finish in the limit."""
    json_path = results_dir / f"influence_speed_cuda_{precision}.json"
    cmd = [sys.executable, "benchmarks/influence_speed.py", "--device", "cuda", "--precision", precision,
           "--setups", setups, "--methods", methods or STAGE_METHODS[f"speed_{precision}"], "--max-seconds", str(max_seconds),
           "--out", str(json_path), "--worker-timeout", str(round(limit_s / 3))]
    if precision != "fp32":
        cmd += ["--flatness", ""]
    result = run_stage(cmd, limit_s)
    if json_path.is_file():
        report = json.loads(json_path.read_text())
        result["environment"] = report.get("environment")
        result["setups"] = compact_speed(report)
        result["passed"] = result["passed"] and all("error" not in s and not s["failed"]
                                                    for s in result["setups"].values())
    return result


def stage_torchrun(limit_s: float, scratch: Path) -> dict[str, Any]:
    """One process vs torchrun --nproc_per_node=1 on the GPU, same encoder; tables must agree."""
    import pandas as pd
    from scipy.stats import spearmanr

    deadline = time.perf_counter() + limit_s
    ckpt, single, ranked = scratch / "encoder.pt", scratch / "single.parquet", scratch / "torchrun.parquet"
    common = ["score", "digits", "--device", "cuda", "--draws", "16"]
    steps = {
        "pretrain_and_score": [sys.executable, "-m", "influencegate.cli", *common, "--pretrain", "simclr",
                               "--epochs", "1", "--save-encoder", str(ckpt), "--out", str(scratch / "pretrain.parquet")],
        "single_process": [sys.executable, "-m", "influencegate.cli", *common, "--encoder", str(ckpt),
                           "--out", str(single)],
        "torchrun": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m",
                     "influencegate.cli", *common, "--encoder", str(ckpt), "--out", str(ranked)],
    }
    result: dict[str, Any] = {"steps": {}, "seconds": 0.0}
    for name, cmd in steps.items():
        step = run_stage(cmd, max(10.0, deadline - time.perf_counter()))
        result["steps"][name] = step
        result["seconds"] = round(result["seconds"] + step["seconds"], 1)
        if not step["passed"]:
            result["passed"] = False
            return result
    a, b = pd.read_parquet(single), pd.read_parquet(ranked)
    same_ids = a["sample_id"].tolist() == b["sample_id"].tolist()
    rho = float(spearmanr(a["influence"], b["influence"]).statistic) if same_ids else float("nan")
    result.update(rows=len(a), same_ids_same_order=same_ids, spearman_single_vs_torchrun=rho,
                  passed=bool(same_ids and rho >= 0.999))
    return result


def environment() -> dict[str, Any]:
    import platform

    import torch

    import influencegate

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda, "influencegate": str(Path(influencegate.__file__).parent)}
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    for name in ("numpy", "pandas", "pyarrow", "scipy", "kronfluence", "dattri"):
        try:
            from importlib.metadata import version

            env[name] = version(name)
        except Exception:  # noqa: BLE001 - a missing package is reported as such
            env[name] = None
    return env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "gpu_check.json"))
    p.add_argument("--stages", default=",".join(STAGE_LIMITS_S), help=f"comma list of {list(STAGE_LIMITS_S)}")
    p.add_argument("--setups", default=SPEED_SETUPS, help="influence_speed.py setups of the speed stages")
    p.add_argument("--methods", default=None, help="influence_speed.py methods of the speed stages (default: "
                   f"{STAGE_METHODS})")
    p.add_argument("--max-seconds", type=float, default=6.0, help="influence_speed.py's time budget per method")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiplies every stage's time limit")
    args = p.parse_args(argv)
    unknown = sorted(set(args.stages.split(",")) - set(STAGE_LIMITS_S))
    if unknown:
        p.error(f"unknown stage(s) {unknown}; known: {list(STAGE_LIMITS_S)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False); nothing was run.",
              file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"benchmark": "gpu_check", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "environment": environment(), "stages": {}}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        scratch = Path(tmp)
        for name in args.stages.split(","):
            limit = STAGE_LIMITS_S[name] * args.budget_scale
            if name == "tests":
                report["stages"][name] = stage_tests(limit)
            elif name.startswith("speed_"):
                report["stages"][name] = stage_speed(name.split("_")[1], limit, out.parent, args.max_seconds,
                                                     args.setups, args.methods)
            else:
                report["stages"][name] = stage_torchrun(limit, scratch)
            report["total_seconds"] = round(time.perf_counter() - start, 1)
            report["passed"] = all(s.get("passed") for s in report["stages"].values())
            out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "stages"} | {
        "stages": {n: {"passed": s.get("passed"), "seconds": s.get("seconds")} for n, s in report["stages"].items()}},
        indent=2))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
