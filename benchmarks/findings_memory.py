"""Memory of the findings at scale: `find_all` with the default config on the audit-scale photo patches, the
process's resident memory around each stage (issue 15: peak memory flat from 30k to 100k).

Data: the first N patches of `audit_scale.py` (32 x 32 RGB, WebDataset shards, 0.5% exact copies), loaded with
`load_images` (the uint8 pixel store users get); embeddings: N x 32 standard normal (the k-NN outlier part's
input; its cost does not depend on the values), influence log-normal. Each N runs in a fresh process, one torch
thread. Per stage (the k-NN of the outlier finding, the duplicate index's streaming pass, its candidates, its
check, the content hashes) this records seconds and, from /proc/self/status after the stage, VmHWM (peak RSS
so far), RssAnon and RssFile (MB). The default findings run by the registry, as `influencegate audit` runs them.

Run: python benchmarks/findings_memory.py [--n 10000,30000,100000] [--work /tmp/audit_scale]
Output: benchmarks/results/findings_memory.json (rows replaced per N).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "findings_memory.json"


def status_mb() -> dict[str, int]:
    """VmHWM, RssAnon and RssFile of this process, MB."""
    keys = ("VmHWM", "RssAnon", "RssFile")
    return {line.split(":")[0]: int(line.split()[1]) // 1024 for line in open("/proc/self/status")
            if line.startswith(keys)}


def measure(n: int, work: Path) -> dict:
    """One N in this process: the stages' seconds and memory after each (module docstring)."""
    import numpy as np
    import torch

    from audit_scale import write_shards
    from influencegate.data import load_images
    from influencegate.findings import duplicate_index, duplicates, outliers
    from influencegate.findings.run import find_all
    from influencegate.influence.table import scores_table

    torch.set_num_threads(1)
    data = load_images(write_shards(work / f"data_{n}", n, seed=0), image_size=32, channels=3)
    stages: list[dict] = []

    def timed(owner, name: str, label: str) -> None:
        original = getattr(owner, name)

        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            out = original(*args, **kwargs)
            stages.append({"stage": label, "seconds": time.perf_counter() - start, **status_mb()})
            return out
        setattr(owner, name, wrapper)

    timed(outliers, "knn_cosine", "outliers_knn")
    timed(duplicate_index.ViewIndex, "add", "index_stream")
    timed(duplicate_index.ViewIndex, "candidates", "index_candidates")
    timed(duplicate_index.ViewIndex, "similarity", "index_check")
    timed(duplicates, "content_hashes", "content_hashes")
    rng = np.random.default_rng(0)
    table = scores_table(data.sample_ids, rng.lognormal(size=len(data)))
    embeddings = rng.standard_normal((len(data), 32)).astype(np.float32)
    before = status_mb()
    start = time.perf_counter()
    find_all(table, embeddings, data.pixels, None, sample_ids=data.sample_ids, mean=data.mean, std=data.std)
    seconds = time.perf_counter() - start
    streamed = [s for s in stages if s["stage"] == "index_stream"]
    merged = [s for s in stages if s["stage"] != "index_stream"]
    if streamed:  # one row for the whole streaming pass: its seconds summed, memory after its last batch
        merged.insert(1, {**streamed[-1], "seconds": sum(s["seconds"] for s in streamed), "batches": len(streamed)})
    after = status_mb()
    return {"n": n, "find_all_seconds": seconds, "before_mb": before, "peak_rss_mb": after["VmHWM"],
            "peak_over_start_mb": after["VmHWM"] - before["VmHWM"], "stages": merged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10000,30000,100000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit_scale"))
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # the child process's N
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one, args.work)))
        return
    rows = json.loads(RESULTS.read_text())["runs"] if RESULTS.exists() else []
    for n in (int(v) for v in args.n.split(",")):
        out = subprocess.run([sys.executable, __file__, "--one", str(n), "--work", str(args.work)],
                             capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows = sorted([r for r in rows if r["n"] != n] + [row], key=lambda r: r["n"])
        print(json.dumps({k: v for k, v in row.items() if k != "stages"}), flush=True)
        RESULTS.write_text(json.dumps({"benchmark": "findings_memory", "command": " ".join(sys.argv),
                                       "machine": {"cpus": 2, "torch_threads": 1,
                                                   "note": "shared 2-core CPU; memory figures do not depend on load"},
                                       "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
