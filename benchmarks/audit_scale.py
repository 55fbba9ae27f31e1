"""The whole audit at scale: `influencegate audit` (ZenML pipeline, MLflow, gate) on N = 10k, 30k, 100k images.

Data: 32 x 32 RGB natural-image patches (random windows of 32-96 px cut from scikit-image's and
scikit-learn's bundled photos, `natural_images.load_photo`, random mirror, resized to 32 px with PIL
bilinear), 0.5% of them planted exact copies, written as WebDataset tar shards of SHARD_SIZE PNG members:
the loader users use reads them (`load_images` on the shards' folder, `workers` decoding processes). The
N-image set is the first N of one stream, so the smaller sets are prefixes of the larger.
Encoder: the small CNN pretrained once (SimCLR, ENCODER_EPOCHS epochs on ENCODER_IMAGES patches of another
seed) and given as a checkpoint, so pretraining is not timed.

Each N runs `influencegate audit <config>` in a fresh process with its own ZenML store and MLflow store
(sqlite, artifacts beside it). This process samples the RSS of that process and the RSS of it and its
decoding workers (unshared pages) (psutil, every SAMPLE_S) and reads the steps' start and end times back from the ZenML store: per step wall seconds,
share of the pipeline's total, and peak RSS (process, and with its workers) while the step ran. Growth exponent per step: slope of
log(seconds) on log(N) between consecutive N and over all N. MLflow: bytes of the run's artifacts per file.

Scorer: `--draws` noise draws per sample with target_stability off (the recorded runs: 4, to fit the runs into
the time this shared CPU gave; scoring cost is linear in draws, so the default's pilot choice of 16 draws on
32 px photo patches scales the score step by about 4). CPU seconds per step are the robust cost measure
here: with 20-30 other runnable processes on 2 cores, a step's wall time mostly measures its share of the CPU.

Output: benchmarks/results/audit_scale.json (rewritten after every N). Run:
  python benchmarks/audit_scale.py [--n 10000,30000,100000] [--work /tmp/audit_scale] [--draws 8]
Wall times on a shared CPU are noisy; compare shares and exponents rather than seconds.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
RESULTS = Path(__file__).resolve().parent / "results" / "audit_scale.json"
SHARD_SIZE = 5000
SIDE = 32
COPY_SHARE = 0.005
PHOTOS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "brick", "grass", "gravel", "clock",
          "page", "text", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "horse", "china", "flower")
ENCODER_IMAGES, ENCODER_EPOCHS = 2000, 3
SAMPLE_S = 0.25
ENV = {"ZENML_ANALYTICS_OPT_IN": "false", "GX_ANALYTICS_ENABLED": "false", "MLFLOW_DISABLE_TELEMETRY": "true",
       "DO_NOT_TRACK": "true", "ZENML_LOGGING_VERBOSITY": "WARN"}


def patches(n: int, seed: int) -> np.ndarray:
    """n x 32 x 32 x 3 uint8 patches (module docstring); row i depends on (seed, i) only, copies excepted."""
    from PIL import Image

    from natural_images import load_photo

    photos = [np.clip(np.round(load_photo(name) * 255), 0, 255).astype(np.uint8) for name in PHOTOS]
    out = np.empty((n, SIDE, SIDE, 3), np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(SIDE, 3 * SIDE + 1))
        y, x = (int(rng.integers(0, d - side + 1)) for d in photo.shape[:2])
        window = photo[y:y + side, x:x + side]
        window = window[:, ::-1] if rng.random() < 0.5 else window
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(window)).resize((SIDE, SIDE), Image.BILINEAR))
    rng = np.random.default_rng([seed, n])
    copies = rng.choice(n, int(COPY_SHARE * n), replace=False)
    out[copies] = out[rng.integers(0, n, len(copies))]
    return out


def synthetic(start: int, count: int, seed: int) -> np.ndarray:
    """count x 32 x 32 x 3 uint8 images, rows start .. start + count of findings_scale's synthetic set (smooth
    random colour fields, each from its own (seed, row)); findings_scale.PLANTED of them are planted near-copies
    of other rows of the same block (a shift, JPEG or brightness), so no cluster grows with N."""
    from findings_scale import image_batch, planting

    copies, originals = planting(count, seed + start)
    images = image_batch(start, start + count, copies + start, originals + start, seed)
    return np.round(images.transpose(0, 2, 3, 1) * 255).astype(np.uint8)


def write_shards(folder: Path, n: int, seed: int, kind: str = "photos") -> Path:
    """WebDataset tar shards of PNG members ``<shard>/<index>.png`` under folder (skipped when present): photo
    patches (`patches`) or synthetic images (`synthetic`), a shard at a time."""
    from PIL import Image

    done = folder / "COMPLETE"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, n, SHARD_SIZE)):
        size = min(SHARD_SIZE, n - start)
        block = patches(size, seed + 1000 * shard) if kind == "photos" else synthetic(start, size, seed)
        with tarfile.open(folder / f"{shard:06d}.tar", "w") as tar:
            for k, image in enumerate(block):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="PNG")
                info = tarfile.TarInfo(f"{start + k:07d}.png")
                info.size = buffer.tell()
                buffer.seek(0)
                tar.addfile(info, buffer)
    done.write_text(str(n))
    return folder


def train_encoder(work: Path, kind: str = "photos") -> Path:
    """The small CNN pretrained on ENCODER_IMAGES images of `kind` of another seed, saved once as a checkpoint."""
    from influencegate.workflows.image_audit import load_or_pretrain
    from influencegate.data import load_images

    path = work / "encoder.pt"
    if not path.exists():
        data = load_images(write_shards(work / "encoder_data", ENCODER_IMAGES, seed=99, kind=kind), image_size=SIDE)
        load_or_pretrain(data, method="simclr", epochs=ENCODER_EPOCHS, save_to=path, progress=False)
    return path


class RssSampler(threading.Thread):
    """(unix time, RSS bytes of a process, RSS of it plus the unshared RSS of its children, CPU seconds of it
    and its children, finished ones included) every SAMPLE_S until stopped. Forked decoding workers share pages with their parent: their ``shared`` RSS is left out
    rather than counted once per process (statm only: reading smaps for PSS costs a third of a core here)."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.samples, self.stop = pid, [], threading.Event()

    def run(self) -> None:
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            try:
                rss, children = root.memory_info().rss, root.children(recursive=True)
                tree = rss + sum(m.rss - m.shared for m in (c.memory_info() for c in children))
                times = root.cpu_times()
                cpu = sum(times[:4]) + sum(sum(c.cpu_times()[:2]) for c in children)
                self.samples.append((time.time(), rss, tree, cpu))
            except psutil.Error:
                pass
            self.stop.wait(SAMPLE_S)


def step_times(env: dict[str, str]) -> dict[str, tuple[float, float]]:
    """{step name: (start, end) unix seconds} of the newest pipeline run in the ZenML store of ``env``."""
    code = ("import json; from datetime import timezone; from zenml.client import Client\n"
            "run = Client().list_pipeline_runs(sort_by='desc:created', size=1).items[0]\n"
            "ts = lambda d: (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()\n"
            "print(json.dumps({n: (ts(s.start_time), ts(s.end_time)) for n, s in run.steps.items()}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def artifact_sizes(root: Path) -> dict[str, int]:
    """{path relative to the MLflow artifact root's run folder: bytes} of every logged artifact."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def run_audit(n: int, work: Path, encoder: Path, draws: int, workers: int, label: str = "full",
              influence: dict[str, str] | None = None, scorer: dict | None = None, kind: str = "photos") -> dict:
    """One audit of the first n images of `kind` (write_shards) in a fresh process; per-step seconds, shares and
    peak RSS.
    influence: the config's `influence` section (resume_dir / since of an incremental audit), if any;
    scorer: scorer settings besides draws and target_stability (e.g. fit_draws)."""
    import yaml

    source = write_shards(work / f"data_{n}", n, seed=0, kind=kind)
    home = work / f"run_{n}" if label == "full" else work / f"run_{n}_{label}"
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ENV, "ZENML_CONFIG_PATH": str(home / "zenml"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}", "INFLUENCEGATE_STORE_DIR": str(home / "store")}
    config = {"run_name": f"audit_scale_{n}_{int(time.time())}", "parameters": {
        "dataset": {"source": str(source), "image_size": SIDE, "channels": 3, "workers": workers,
                    "name": f"patches{n}"},
        "encoder": {"checkpoint": str(encoder)},
        "scorer": {"draws": draws, "target_stability": None, **(scorer or {})},
        **({"influence": influence} if influence else {}),
        "tracking": {"uri": env["MLFLOW_TRACKING_URI"], "experiment": "audit-scale"}}}
    (home / "audit.yaml").write_text(yaml.safe_dump(config))
    command = [str(Path(sys.executable).with_name("influencegate")), "audit", str(home / "audit.yaml")]
    start = time.time()
    with open(home / "audit.log", "w") as log:
        proc = subprocess.Popen(command, env=env, cwd=home, stdout=log, stderr=subprocess.STDOUT)
        sampler = RssSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.time() - start
    steps = step_times(env)
    total = sum(end - begin for begin, end in steps.values())
    rows = {}
    for name, (begin, end) in sorted(steps.items(), key=lambda item: item[1][0]):
        inside = [(rss, tree) for t, rss, tree, _ in sampler.samples if begin <= t <= end]
        cpu = [c for t, _, _, c in sampler.samples if t <= end]
        before = [c for t, _, _, c in sampler.samples if t < begin]
        rows[name] = {"seconds": end - begin, "share": (end - begin) / total,
                      "cpu_s": (cpu[-1] if cpu else 0.0) - (before[-1] if before else 0.0),
                      "peak_rss_mb": max(r for r, _ in inside) / 2**20 if inside else None,
                      "peak_tree_mb": max(p for _, p in inside) / 2**20 if inside else None}
    sizes = artifact_sizes(home / "mlruns") if (home / "mlruns").exists() else {}
    return {"n": n, "audit": label, "exit_code": code, "process_wall_s": wall, "steps_total_s": total,
            "peak_rss_mb": max(rss for _, rss, _, _ in sampler.samples) / 2**20,
            "peak_tree_mb": max(tree for _, _, tree, _ in sampler.samples) / 2**20,
            "steps_cpu_s": sum(r["cpu_s"] for r in rows.values()), "steps": rows,
            "mlflow_artifacts_mb": sum(sizes.values()) / 2**20,
            "mlflow_largest": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:6]),
            "data_mb": sum(p.stat().st_size for p in source.glob("*.tar")) / 2**20}


def exponents(runs: list[dict]) -> dict:
    """Slope of log(cost) on log(n) per step and for the total, of wall seconds ("wall") and of CPU seconds
    ("cpu", less sensitive to the other jobs sharing the CPU): between consecutive runs and a fit over all."""
    def slopes(costs: list[float], ns: list[int]) -> dict[str, float]:
        pairs = {f"{ns[k]}->{ns[k + 1]}": math.log(costs[k + 1] / costs[k]) / math.log(ns[k + 1] / ns[k])
                 for k in range(len(ns) - 1)}
        return {**pairs, "fit": float(np.polyfit(np.log(ns), np.log(costs), 1)[0])}

    ns = [r["n"] for r in runs]
    names = [s for s in runs[0]["steps"] if all(s in r["steps"] for r in runs)]
    out = {name: {"wall": slopes([r["steps"][name]["seconds"] for r in runs], ns),
                  "cpu": slopes([max(r["steps"][name].get("cpu_s", math.nan), 1e-3) for r in runs], ns)}
           for name in names}
    out["total"] = {"wall": slopes([r["steps_total_s"] for r in runs], ns),
                    "cpu": slopes([r.get("steps_cpu_s", math.nan) for r in runs], ns)}
    return out


def scores_table(home: Path) -> pd.DataFrame:
    """The scores table an audit logged to MLflow under home (artifacts/scores/scores.parquet)."""
    (path,) = home.glob("mlruns/*/*/artifacts/scores/scores.parquet")
    return pd.read_parquet(path).set_index("sample_id")


def incremental_comparison(old: int, new: int, args: argparse.Namespace, encoder: Path) -> dict:
    """Issue 15 item 4 at scale: the full audit of the first `old` patches kept as a resume directory, the
    incremental audit of the first `new` (`influence.since` = that directory), and the full audit of `new`;
    time ratio (pipeline steps' wall and CPU seconds) and the Spearman of the two tables' influence."""
    from scipy.stats import spearmanr

    base = args.work / f"resume_{old}"
    runs = {"base": run_audit(old, args.work, encoder, args.draws, args.workers, "base", {"resume_dir": str(base)},
                               kind=args.data)}
    runs["incremental"] = run_audit(new, args.work, encoder, args.draws, args.workers, "incremental",
                                    {"since": str(base)}, kind=args.data)
    runs["full"] = run_audit(new, args.work, encoder, args.draws, args.workers, kind=args.data)
    full, incremental = scores_table(args.work / f"run_{new}"), scores_table(args.work / f"run_{new}_incremental")
    shared = full.index.intersection(incremental.index)
    is_new = ~shared.isin(scores_table(args.work / f"run_{old}_base").index)

    def rho(ids: pd.Index) -> float:
        return float(spearmanr(full.loc[ids, "influence"], incremental.loc[ids, "influence"]).statistic)

    from incremental_audit import findings_agreement

    findings = findings_agreement(full.reset_index(), incremental.reset_index(), shared[is_new])
    same_fit = {}
    if args.same_fit_draws:  # a full audit with the base's fit draws: the same estimator as the incremental one
        runs["full_same_fit"] = run_audit(new, args.work, encoder, args.draws, args.workers, "same_fit",
                                          scorer={"fit_draws": args.same_fit_draws}, kind=args.data)
        same = scores_table(args.work / f"run_{new}_same_fit").loc[shared]
        same_fit = {"fit_draws": args.same_fit_draws, "spearman_all": float(spearmanr(
            same["influence"], incremental.loc[shared, "influence"]).statistic),
            "findings": findings_agreement(same.reset_index(), incremental.reset_index(), shared[is_new])}
    return {"old": old, "new": new, "runs": runs, "rows_compared": len(shared), "same_ids": len(shared) == len(full),
            "findings": findings, "same_fit": same_fit,
            "time_ratio_wall": runs["incremental"]["steps_total_s"] / runs["full"]["steps_total_s"],
            "time_ratio_cpu": runs["incremental"]["steps_cpu_s"] / runs["full"]["steps_cpu_s"],
            "spearman_all": rho(shared), "spearman_new": rho(shared[is_new]), "spearman_old": rho(shared[~is_new])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="10000,30000,100000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/audit_scale"))
    parser.add_argument("--draws", type=int, default=8, help="noise draws per sample (target_stability off)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes of the loader")
    parser.add_argument("--data", choices=("photos", "synthetic"), default="photos",
                        help="photo patches (dense clusters of overlapping windows at 100k) or synthetic images "
                             "(findings_scale's, no cluster grows with N); use one --work folder per kind")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--incremental", default=None, metavar="OLD:NEW",
                        help="instead of --n: full audit of OLD kept for resuming, incremental and full audits of NEW; "
                             "written to the output's 'incremental' entry")
    parser.add_argument("--same-fit-draws", type=int, default=None,
                        help="with --incremental: also a full audit of NEW with fit_draws fixed to the base's (where "
                             "N x fit_draws >= 32 D gives OLD and NEW different fit draws, e.g. 2 at 30,000 and 1 at "
                             "33,000 for rank 32), compared with the incremental table under 'same_fit'")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    encoder = train_encoder(args.work, args.data)
    payload = {"benchmark": "audit_scale", "command": " ".join(sys.argv), "machine": {
        "cpus": os.cpu_count(), "note": "shared 2-core CPU, other jobs running: seconds are noisy"},
        "data": {"kind": args.data, "side": SIDE, "channels": 3, "shard_size": SHARD_SIZE, "copy_share": COPY_SHARE,
                 "format": "WebDataset tar of PNG"}, "scorer": {"draws": args.draws, "target_stability": None},
        "encoder": {"architecture": "small_cnn", "pretrain": f"simclr {ENCODER_EPOCHS} epochs on "
                    f"{ENCODER_IMAGES} patches (not timed)"}, "runs": []}
    if args.incremental:
        old, new = (int(v) for v in args.incremental.split(":"))
        payload = json.loads(args.out.read_text()) if args.out.exists() else payload
        payload["incremental"] = incremental_comparison(old, new, args, encoder)
        base = payload["incremental"]["runs"]["base"]  # a full audit of `old` (keeping a resume directory too)
        payload["runs"] = sorted([*(r for r in payload["runs"] if r["n"] != old), base], key=lambda r: r["n"])
        if len(payload["runs"]) > 1:
            payload["growth_exponent"] = exponents(payload["runs"])
        args.out.write_text(json.dumps(payload, indent=1))
        return
    if args.out.exists():
        payload["runs"] = [r for r in json.loads(args.out.read_text()).get("runs", [])
                           if r["n"] not in {int(v) for v in args.n.split(",")}]
    for n in (int(v) for v in args.n.split(",")):
        payload["runs"] = sorted([*payload["runs"], run_audit(n, args.work, encoder, args.draws, args.workers,
                                                          kind=args.data)],
                                 key=lambda r: r["n"])
        if len(payload["runs"]) > 1:
            payload["growth_exponent"] = exponents(payload["runs"])
        args.out.write_text(json.dumps(payload, indent=1))
        print(json.dumps({k: v for k, v in payload["runs"][-1].items() if k != "steps"}), flush=True)


if __name__ == "__main__":
    main()
