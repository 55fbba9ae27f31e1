"""Influence-SSL speed and memory: our engine vs the autograd limit, kronfluence (EK-FAC) and dattri (LoGra).

Everything is measured in ONE run, on the same model, data, batch size, device and objective:
d(x) = 1 - cos(phi(x), phi(x_hat_k)), x_hat_k = x + sigma * noise_k, K draws (InfluenceConfig() defaults).

Methods (each in a fresh subprocess, so that its peak memory is its own):
  limit        plain autograd, weights requiring grad, no hooks: fwd(x) + K x (fwd(x_hat) + bwd) of the
               batch-mean objective, per batch (x-branch graph kept across the K draws). x_hat uses
               torch.randn on the device (no per-sample seeding), so the limit is pure compute.
  ours         InfluenceScorer(encoder, InfluenceConfig(defaults, batch_size=B)).fit(ds), then .score(ds).
  kronfluence  Analyzer + Task: compute_train_loss = sum over the batch of d with the perturbation applied
               inside (the same PerturbFn as ours: make_perturbation(cfg...), i.e. scorer.perturb); the dataset
               is expanded to N x K (sample, draw) rows; EK-FAC factors (covariance, eigendecomposition,
               lambda), then compute_self_scores; scores averaged over the K draws.
  dattri       LoGraAttributor (dattri 0.3.0) with the same N x K expansion and loss; cache() (projected
               gradients, eFIM, IFVP), then compute_self_attribution(). dattri 0.3.0 hooks nn.Linear only.

Throughput = samples / seconds over a fixed prefix of the data (all of it when it fits in --max-seconds),
after a warm-up on the first batch(es); every method gets the same prefix.

Usage:
  PYTHONPATH=. python benchmarks/influence_speed.py [--device cpu|cuda] [--setups small_cnn,resnet18,resnet50]
      [--n N] [--batch-size B] [--max-seconds S] [--precision fp32|bf16] [--out PATH]
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._common import (  # noqa: E402
    run_with_deadline,
    REPO_ROOT,
    RESULTS_DIR,
    SETUPS,
    SampleDataset,
    build_setup,
    environment,
    memory_report,
    reset_device_peak,
    resolve_device,
    rss_now_bytes,
    timed,
    write_json,
)

METHODS = ("limit", "ours", "kronfluence", "dattri")
# Prefix calibration: the slowest method (kronfluence: 3 passes over N x K rows with phi(x) recomputed per
# draw, per-sample gradients and their EK-FAC rotations, plus eigendecompositions of up to 4608 x 4608 for
# ResNet-18) costs about this many times the limit per sample (measured on the 2-core CPU: 23x small_cnn,
# ~40x resnet18 excluding the eigendecompositions). The timed prefix is floor(max_seconds / (factor x limit
# seconds per batch)) batches, at least one.
SLOWEST_OVER_LIMIT = {"small_cnn": 25.0, "resnet18": 40.0, "resnet50": 40.0}
# Default batch sizes per (setup, device type); InfluenceConfig().batch_size (256) where none is named. ResNets
# on CPU: one kronfluence batch must fit the time budget; ResNet-50 at 224 px: the x-branch graph of 256
# images plus one draw's would need tens of GiB.
BATCH_SIZES = {("resnet18", "cpu"): 4, ("resnet50", "cpu"): 2, ("resnet50", "cuda"): 64}


# ========================================================================================================
# Workers (one method, one process)
# ========================================================================================================
def default_config(args: argparse.Namespace, device: torch.device):
    from influencegate import InfluenceConfig

    return InfluenceConfig(device=str(device), batch_size=args.batch_size, precision=args.precision,
                           progress=False)


def autocast(device: torch.device, precision: str):
    from influencegate.influence.capture import autocast_context

    return autocast_context(device, precision)


def amp_dtype(device: torch.device, precision: str):
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


TEMP_DIRS: list[str] = []


def scratch_dir(prefix: str) -> str:
    """A fresh temporary directory, removed when the worker ends."""
    TEMP_DIRS.append(tempfile.mkdtemp(prefix=prefix))
    return TEMP_DIRS[-1]


class DrawRows(torch.utils.data.Dataset):
    """The N x K (sample, draw) rows of a dataset, ordered batch-block-major: for each block of B samples,
    the K draws one after the other. With batch size B every batch is (one block of ids, one draw k),
    exactly the batches our engine sees, so the shared PerturbFn's per-batch noise cache behaves the same."""

    def __init__(self, dataset: SampleDataset, draws: int, batch_size: int) -> None:
        self.dataset = dataset
        self.rows: list[tuple[int, int]] = []
        n = len(dataset)
        for start in range(0, n, batch_size):
            for k in range(draws):
                self.rows.extend((i, k) for i in range(start, min(start + batch_size, n)))

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, j: int):
        i, k = self.rows[j]
        return self.dataset.images[i], i, k


def perturbed_batch(perturb, dataset: SampleDataset, images, idx, ks, device):
    """x on the device and x_hat = perturb(x, ids, k), grouped by draw (one group per batch here)."""
    x = images.to(device)
    x_hat = torch.empty_like(x)
    idx, ks = idx.tolist(), ks.tolist()
    for k in sorted(set(ks)):
        rows = [j for j, kk in enumerate(ks) if kk == k]
        sel = torch.tensor(rows, device=device)
        x_hat[sel] = perturb(x[sel], [dataset.sample_ids[idx[j]] for j in rows], k)
    return x, x_hat


def per_sample_mean(values: torch.Tensor, rows: list[tuple[int, int]], n: int) -> list[float]:
    out = torch.zeros(n, dtype=torch.float64)
    for v, (i, _) in zip(values.double().tolist(), rows):
        out[i] += v
    return (out / max(1, max(k for _, k in rows) + 1)).tolist()


def worker_limit(args, model, ds, device) -> dict[str, Any]:
    """Plain autograd: fwd(x) + K x (fwd(x_hat) + bwd) of the batch-mean objective, per batch."""
    from influencegate.influence.capture import ssl_distance
    from influencegate.influence.perturb import make_perturbation

    cfg = default_config(args, device)
    model = copy.deepcopy(model).to(device).eval()
    for p in model.parameters():
        p.requires_grad_(True)
    gen = torch.Generator(device=device).manual_seed(0)
    draws, sigma, B = cfg.draws, cfg.sigma, args.batch_size

    def step(x: torch.Tensor) -> None:
        with autocast(device, args.precision):
            z = model(x)
        for k in range(draws):
            x_hat = x + sigma * torch.randn(x.shape, generator=gen, device=device, dtype=x.dtype)
            with autocast(device, args.precision):
                z_hat = model(x_hat)
            ssl_distance(z, z_hat, cfg.objective).mean().backward(retain_graph=k < draws - 1)

    batches = [ds.images[s:s + B] for s in range(0, len(ds), B)]
    out: dict[str, Any] = {}
    first = batches[0].to(device)
    step(first)  # warm-up
    if args.n_timed is None:  # calibration: time one batch, then choose the prefix every method will time
        with timed(device, out, "calibration_batch_s"):
            step(first)
        per_batch = out["calibration_batch_s"]
        factor = SLOWEST_OVER_LIMIT.get(args.setup, 40.0)
        n_batches = max(1, min(len(batches), int(args.max_seconds / (factor * per_batch))))
        out["calibration"] = (f"timed batches = max(1, floor(max_seconds {args.max_seconds:g} / ({factor:g} x "
                              f"{per_batch:.3f} s))) = {n_batches}")
        n_timed = min(len(ds), n_batches * B)
    else:
        n_timed = args.n_timed
    rss0 = rss_now_bytes()
    reset_device_peak(device)
    with timed(device, out, "seconds"):
        for s in range(0, n_timed, B):
            step(ds.images[s:min(s + B, n_timed)].to(device))
    out.update(samples_timed=n_timed, samples_per_s=n_timed / out["seconds"],
               seconds_per_sample=out["seconds"] / n_timed, memory=memory_report(device, rss0))
    # The cost of the seeded per-sample perturbation all other methods share (not part of the limit).
    perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)
    t = {}
    with timed(device, t, "perturb"):
        for s in range(0, n_timed, B):
            x = ds.images[s:min(s + B, n_timed)].to(device)
            for k in range(draws):
                perturb(x, ds.sample_ids[s:min(s + B, n_timed)], k)
    out["perturb_fn_seconds"] = t["perturb"]
    out["perturb_fn_seconds_per_sample"] = t["perturb"] / n_timed
    return out


#: The parts of our fit + score timed separately (method wrappers installed in the "ours" worker process only):
#: {part: (module path, class name, method)}. The curvature pass includes its D x D sums; "pilot" is scoring the
#: stashed fit draws plus the pilot's own pass (none under the default fit rule). The sums and eigendecompositions
#: do not grow with N (the fit keeps 32 rows per dimension: by default all K draws of 512 spread samples), nor does
#: the pilot (512 samples): they are the fixed costs at small N.
PARTS = {"curvature_pass_s": ("influencegate.influence.scorer", "InfluenceScorer", "_update_curvature"),
         "curvature_sums_s": ("influencegate.influence.curvature", "RawCurvature", "update"),
         "eigendecompositions_s": ("influencegate.influence.curvature", "RawCurvature", "finalize"),
         "pilot_s": ("influencegate.influence.scorer", "InfluenceScorer", "_choose_score_draws")}


PARTS_NOTE = ("wall seconds inside fit + score: curvature_pass_s includes curvature_sums_s (RawCurvature.update); "
              "pilot_s = _choose_score_draws (the stash's scores and the pilot's pass over the other draws); the "
              "rest of fit_seconds is projections and dispatch; score_seconds is the non-pilot samples")


def time_parts(parts: dict[str, float]) -> None:
    """Wrap the PARTS methods so that each adds its wall seconds to parts[name] (this process only)."""
    import functools
    import importlib

    for name, (module, cls_name, method) in PARTS.items():
        cls = getattr(importlib.import_module(module), cls_name)
        original = getattr(cls, method)

        def wrapper(*a, _original=original, _name=name, **k):
            start = time.perf_counter()
            try:
                return _original(*a, **k)
            finally:
                parts[_name] = parts.get(_name, 0.0) + time.perf_counter() - start

        setattr(cls, method, functools.wraps(original)(wrapper))


def worker_ours(args, model, ds, device) -> dict[str, Any]:
    from influencegate import InfluenceScorer

    cfg = default_config(args, device)
    parts: dict[str, float] = {}
    time_parts(parts)
    warm = ds.head(args.warmup_n)
    InfluenceScorer(model, cfg).fit(warm).score(warm)  # warm-up
    parts.clear()
    sub = ds.head(args.n_timed)
    rss0 = rss_now_bytes()
    reset_device_peak(device)
    out: dict[str, Any] = {}
    scorer = InfluenceScorer(model, cfg)
    with timed(device, out, "fit_seconds"):
        scorer.fit(sub)
    with timed(device, out, "score_seconds"):
        table = scorer.score(sub)
    n = len(sub)
    out.update(samples_timed=n, seconds=out["fit_seconds"] + out["score_seconds"],
               memory=memory_report(device, rss0))
    out.update(samples_per_s=n / out["seconds"], fit_samples_per_s=n / out["fit_seconds"],
               score_samples_per_s=n / out["score_seconds"], fit_draws=scorer.fit_draws, score_draws=scorer.score_draws,
               fit_share=scorer.fit_share)
    out["parts"] = {**parts, "curvature_pass_excluding_sums_s": parts.get("curvature_pass_s", 0.0)
                    - parts.get("curvature_sums_s", 0.0), "note": PARTS_NOTE}
    col = "influence" if "influence" in table.columns else table.select_dtypes("number").columns[0]
    order = {s: i for i, s in enumerate(table["sample_id"].astype(str))}
    out["scores"] = [float(table[col].iloc[order[s]]) for s in sub.sample_ids]
    out["config"] = cfg.to_params()
    return out


def worker_kronfluence(args, model, ds, device) -> dict[str, Any]:
    import logging

    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    from influencegate.influence.capture import ssl_distance
    from influencegate.influence.perturb import make_perturbation

    cfg = default_config(args, device)
    perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)  # = scorer.perturb
    state = {"dataset": ds}

    class SelfInfluenceTask(Task):
        def compute_train_loss(self, batch, model, sample=False):  # noqa: ARG002 (empirical Fisher)
            images, idx, ks = batch
            x, x_hat = perturbed_batch(perturb, state["dataset"], images, idx, ks, device)
            return ssl_distance(model(x), model(x_hat), cfg.objective).sum()

        def compute_measurement(self, batch, model):
            return self.compute_train_loss(batch, model)

    amp = amp_dtype(device, args.precision)
    factor_args = FactorArguments(strategy="ekfac", use_empirical_fisher=True, has_shared_parameters=True,
                                  amp_dtype=amp, covariance_max_examples=None, lambda_max_examples=None)
    score_args = ScoreArguments(damping_factor=None, amp_dtype=amp)  # None: 0.1 x mean eigenvalue, as ours
    logging.getLogger("kronfluence").setLevel(logging.WARNING)
    tmp = scratch_dir("kron_bench_")

    def run(dataset: SampleDataset, name: str, times: dict[str, float], batch: int,
            warmup: bool = False) -> list[float] | None:
        state["dataset"] = dataset
        rows = DrawRows(dataset, cfg.draws, args.batch_size)
        wrapped = prepare_model(copy.deepcopy(model).to(device), SelfInfluenceTask())
        analyzer = Analyzer(analysis_name=name, model=wrapped, task=SelfInfluenceTask(), cpu=device.type == "cpu",
                            disable_tqdm=True, output_dir=tmp)
        kw = dict(dataset=rows, per_device_batch_size=batch, factor_args=factor_args, overwrite_output_dir=True)
        with timed(device, times, "covariance_seconds"):
            analyzer.fit_covariance_matrices(factors_name=name, **kw)
        if warmup:  # the eigendecompositions cost the same at any N: not repeated in the warm-up
            return None
        with timed(device, times, "eigendecomposition_seconds"):
            analyzer.perform_eigendecomposition(factors_name=name, factor_args=factor_args, overwrite_output_dir=True)
        with timed(device, times, "lambda_seconds"):
            analyzer.fit_lambda_matrices(factors_name=name, **kw)
        with timed(device, times, "self_scores_seconds"):
            analyzer.compute_self_scores(scores_name=name, factors_name=name, train_dataset=rows,
                                         per_device_train_batch_size=batch, score_args=score_args,
                                         overwrite_output_dir=True)
        scores = analyzer.load_self_scores(name)["all_modules"]
        return per_sample_mean(scores, rows.rows, len(dataset))

    batch = args.batch_size
    while True:  # per-sample gradients of every tracked layer: on a GPU, halve the batch if it does not fit
        try:
            run(ds.head(args.warmup_n), "warmup", {}, batch, warmup=True)
            sub = ds.head(args.n_timed)
            rss0 = rss_now_bytes()
            reset_device_peak(device)
            out: dict[str, Any] = {}
            scores = run(sub, "timed", out, batch)
            break
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
            batch //= 2
            torch.cuda.empty_cache()
    n = len(sub)
    out["factors_seconds"] = out["covariance_seconds"] + out["eigendecomposition_seconds"] + out["lambda_seconds"]
    out.update(samples_timed=n, seconds=out["factors_seconds"] + out["self_scores_seconds"],
               memory=memory_report(device, rss0), scores=scores, per_device_batch_size_used=batch)
    out["samples_per_s"] = n / out["seconds"]
    out["samples_per_s_excluding_eigendecomposition"] = n / (out["seconds"] - out["eigendecomposition_seconds"])
    out["config"] = {"strategy": "ekfac", "use_empirical_fisher": True, "has_shared_parameters": True,
                     "damping_factor": "None (0.1 x mean eigenvalue)", "tracked": "all Linear + Conv2d (default)",
                     "per_device_batch_size": batch, "amp_dtype": str(amp),
                     "warmup": "fit_covariance_matrices on the warm-up samples (no eigendecomposition)",
                     "rows": f"N x K = {n} x {cfg.draws} (sample, draw) rows, scores averaged over K"}
    return out


# dattri keeps the gradients of every (sample, draw) row; "cpu" offload (its default) stores them in host memory.
# Its MetadataManager writes batch_metadata.json to cache_dir, "." when None, and reloads a stale one from an
# earlier run (a size-mismatch crash in compute_self_attribution): every run gets a fresh temporary cache_dir.
OFFLOAD = "cpu"


class PairEncoder(torch.nn.Module):
    """Runs the trunk on x and x_hat (B x 2 x C x H x W -> 2B images) and the Linear head once on the
    stacked B x 2 x F features, so that dattri's Linear hook sees the head's two uses of one sample as one
    3-D input (its per-sample gradient sums over that axis). Also accepts B x C x H x W or one C x H x W image
    (dattri's compressor setup forwards a single image)."""

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.features, self.head = encoder.features, encoder.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        if x.dim() == 4:
            x = x.unsqueeze(1)
        b, p = x.shape[:2]
        return self.head(self.features(x.flatten(0, 1)).reshape(b, p, -1))


def worker_dattri(args, model, ds, device) -> dict[str, Any]:
    import logging

    from dattri.algorithm.logra import LoGraAttributor
    from dattri.task import AttributionTask

    from influencegate.influence.capture import ssl_distance
    from influencegate.influence.perturb import make_perturbation

    if not (hasattr(model, "features") and isinstance(getattr(model, "head", None), torch.nn.Linear)):
        raise NotImplementedError(
            "dattri 0.3.0 LoGra (BlockProjectedIFAttributor/HookManager) hooks nn.Linear layers only "
            "('Only support Linear layers'; setup_model_compressors rejects other types); this encoder has no "
            "nn.Linear layer to attribute (cifar_resnet18: fc = Identity, all 20 tracked layers are Conv2d)")
    cfg = default_config(args, device)
    perturb = make_perturbation(cfg.perturbation, cfg.sigma, cfg.draws, cfg.seed, cfg.noise)
    state = {"dataset": ds}

    def loss_func(model, batch, device_name):
        images, idx, ks = batch
        x, x_hat = perturbed_batch(perturb, state["dataset"], images, idx, ks, torch.device(device_name))
        with autocast(device, args.precision):
            z = model(torch.stack([x, x_hat], dim=1))
        return ssl_distance(z[:, 0], z[:, 1], cfg.objective).sum()

    logging.getLogger("dattri").setLevel(logging.WARNING)
    head_dim = min(model.head.in_features, model.head.out_features, cfg.rank)

    def run(dataset: SampleDataset, times: dict[str, float]) -> list[float]:
        state["dataset"] = dataset
        rows = DrawRows(dataset, cfg.draws, args.batch_size)
        loader = torch.utils.data.DataLoader(rows, batch_size=args.batch_size, shuffle=False)
        wrapped = PairEncoder(copy.deepcopy(model)).to(device).eval()
        task = AttributionTask(loss_func=loss_func, model=wrapped, checkpoints=wrapped.state_dict())
        attributor = LoGraAttributor(task=task, layer_names=["head"], hessian="eFIM", damping=0.1,
                                     device=str(device), proj_dim=head_dim ** 2, offload=OFFLOAD,
                                     cache_dir=scratch_dir("dattri_bench_"))
        with timed(device, times, "cache_seconds"):
            attributor.cache(loader)
        with timed(device, times, "self_attribution_seconds"):
            scores = attributor.compute_self_attribution()
        return per_sample_mean(scores, rows.rows, len(dataset))

    run(ds.head(args.warmup_n), {})
    sub = ds.head(args.n_timed)
    rss0 = rss_now_bytes()
    reset_device_peak(device)
    out: dict[str, Any] = {}
    scores = run(sub, out)
    n = len(sub)
    out.update(samples_timed=n, seconds=out["cache_seconds"] + out["self_attribution_seconds"],
               memory=memory_report(device, rss0), scores=scores)
    out["samples_per_s"] = n / out["seconds"]
    out["config"] = {"class": "dattri.algorithm.logra.LoGraAttributor", "layer_names": ["head"],
                     "hessian": "eFIM", "damping": "0.1 (relative: 0.1 x trace/dim = 0.1 x mean eigenvalue)",
                     "proj_dim": head_dim ** 2, "offload": OFFLOAD,
                     "note": ("tracks the Linear head only (1 of the 4 layers ours and kronfluence track; "
                              "dattri 0.3.0 LoGra supports nn.Linear only); conv weights keep requires_grad "
                              "so autograd also forms their (unused) weight gradients, as a dattri user would "
                              "run it; trunk run once on [x, x_hat] stacked (PairEncoder)"),
                     "rows": f"N x K = {n} x {cfg.draws} (sample, draw) rows, scores averaged over K"}
    return out


WORKERS = {"limit": worker_limit, "ours": worker_ours, "kronfluence": worker_kronfluence, "dattri": worker_dattri}


def run_worker(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, ds, _ = build_setup(args.setup, args.n)
    result: dict[str, Any] = {"method": args.worker, "torch_threads": torch.get_num_threads()}
    try:
        result.update(WORKERS[args.worker](args, model, ds, device))
    except NotImplementedError as exc:
        result["skipped"] = str(exc)
    finally:
        import shutil

        for path in TEMP_DIRS:  # the kronfluence / dattri output dirs this worker made
            shutil.rmtree(path, ignore_errors=True)
    Path(args.result_file).write_text(json.dumps(result))


# ========================================================================================================
# Driver
# ========================================================================================================
def spawn(args: argparse.Namespace, method: str, setup: str, n: int, n_timed: int | None, warmup_n: int,
          timeout: float) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its result, or {'error': ...}."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        result_file = fh.name
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--setup", setup,
           "--device", args.device, "--n", str(n), "--batch-size", str(args.batch_size_for[setup]),
           "--precision", args.precision, "--max-seconds", str(args.max_seconds), "--warmup-n", str(warmup_n),
           "--result-file", result_file, "--threads", str(args.threads)]
    if n_timed is not None:
        cmd += ["--n-timed", str(n_timed)]
    env = dict(os.environ, TQDM_DISABLE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    print(f"[{setup}] {method} (n={n}, timed={n_timed}) ...", file=sys.stderr, flush=True)
    try:
        proc = run_with_deadline(cmd, timeout, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"method": method, "error": f"timed out after {timeout:.0f} s"}
    wall = time.perf_counter() - start
    try:
        result = json.loads(Path(result_file).read_text())
    except (OSError, json.JSONDecodeError):
        tail = (proc.stderr or proc.stdout or "")[-3000:]
        print(f"[{setup}] {method}: worker exited with {proc.returncode}\n{tail}", file=sys.stderr, flush=True)
        return {"method": method, "error": f"worker exited with {proc.returncode}", "stderr_tail": tail}
    finally:
        Path(result_file).unlink(missing_ok=True)
    result["process_wall_s"] = wall
    print(f"[{setup}] {method}: {result.get('samples_per_s', result.get('skipped', result.get('error')))}"
          f" samples/s, {wall:.0f} s", file=sys.stderr, flush=True)
    return result


def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def run_setup(args: argparse.Namespace, setup: str) -> dict[str, Any]:
    from influencegate import InfluenceConfig

    _, _, info = build_setup(setup, args.n)
    n = info["n"]
    B = args.batch_size_for[setup]
    timeout = args.worker_timeout or 6 * args.max_seconds + 600
    limit = spawn(args, "limit", setup, n, args.n_timed, 0, timeout)
    if "error" in limit:
        return {"setup": info, "error": "limit failed", "limit": limit}
    n_timed = limit["samples_timed"]
    warmup_n = min(n_timed, B + n_timed % B)  # covers both batch shapes (full and last)
    results: dict[str, Any] = {"limit": limit}
    for method in METHODS[1:]:
        if method not in args.methods:
            results[method] = {"method": method, "skipped": "not asked for (--methods)"}
            continue
        if method == "dattri" and setup != "small_cnn" and not args.dattri_all:
            results[method] = {"method": method, "skipped": (
                "dattri 0.3.0 LoGra hooks nn.Linear layers only ('Only support Linear layers' in "
                "block_projected_if/core/hook.py; setup_model_compressors raises for other types); "
                "the ResNets have no nn.Linear (fc = Identity), so there is nothing it can attribute")}
            continue
        results[method] = spawn(args, method, setup, n, n_timed, warmup_n, timeout)

    ours, kron, dattri = results["ours"], results["kronfluence"], results["dattri"]
    summary: dict[str, Any] = {}
    if "samples_per_s" in ours:
        lim = limit["samples_per_s"]
        summary.update(
            ours_fit_over_limit=ours["fit_samples_per_s"] / lim,
            ours_score_over_limit=ours["score_samples_per_s"] / lim,
            ours_fit_plus_score_over_limit=ours["samples_per_s"] / lim,
            target_fit_and_score_each_ge_0_5_of_limit=bool(min(ours["fit_samples_per_s"],
                                                               ours["score_samples_per_s"]) >= 0.5 * lim),
        )
        for name, other in (("kronfluence", kron), ("dattri", dattri)):
            if "samples_per_s" in other:
                summary[f"ours_over_{name}"] = ours["samples_per_s"] / other["samples_per_s"]
                if "scores" in other and len(other["scores"]) == len(ours["scores"]) >= 20:
                    summary[f"spearman_ours_vs_{name}"] = spearman(ours["scores"], other["scores"])
        if "ours_over_kronfluence" in summary:
            summary["target_ours_over_kronfluence_ge_5"] = bool(summary["ours_over_kronfluence"] >= 5)
    for r in results.values():
        r.pop("scores", None)

    flat = None
    if setup in args.flatness:
        n_small = max(1, min(n, args.flat_n or (n // 4)))
        small = spawn(args, "ours", setup, 4 * n_small, n_small, min(n_small, B), timeout)
        large = spawn(args, "ours", setup, 4 * n_small, 4 * n_small, min(n_small, B), timeout)
        flat = {"note": ("our fit+score at N and 4N, each in a fresh process holding the same 4N-sample "
                         "dataset; same warm-up; peak = ru_maxrss (CPU) / cuda max_memory_allocated")}
        for tag, r in (("N", small), ("4N", large)):
            r.pop("scores", None)
            flat[tag] = {"samples": r.get("samples_timed"), "memory": r.get("memory"),
                         "samples_per_s": r.get("samples_per_s"), **({"error": r["error"]} if "error" in r else {})}
        if "memory" in small and "memory" in large:
            ms, ml = small["memory"], large["memory"]
            flat["peak_ratio_4N_over_N"] = ml["peak_mib"] / ms["peak_mib"]
            flat["rss_over_baseline_ratio_4N_over_N"] = (ml["rss_peak_over_baseline_mib"]
                                                        / max(ms["rss_peak_over_baseline_mib"], 1e-9))
            flat["target_peak_ratio_le_1_10"] = bool(flat["peak_ratio_4N_over_N"] <= 1.10)
    cfg = InfluenceConfig()
    return {
        "setup": {**info, "batch_size": B, "draws_K": cfg.draws, "sigma": cfg.sigma, "rank": cfg.rank,
                  "curvature": cfg.curvature, "samples_timed": n_timed, "warmup_samples": warmup_n,
                  "timing": (f"each method in a fresh process: warm-up on the first {warmup_n} samples (limit: "
                             "one batch step; ours: fit + score; kronfluence: the covariance pass; dattri: cache + "
                             "self-attribution), then the full method (fit + score) on the first "
                             f"{n_timed} of {n} samples, timed with perf_counter (CUDA synchronised)")},
        "methods": results,
        "summary": summary,
        "memory_flatness": flat,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--setups", default="small_cnn,resnet18", help=f"comma list of {sorted(SETUPS)}")
    p.add_argument("--n", type=int, default=None, help="dataset size (default: 1797 small_cnn, 2048 resnet18, 512 resnet50)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="batch size of every method (default: InfluenceConfig().batch_size = 256; "
                        "see BATCH_SIZES for the ResNets)")
    p.add_argument("--max-seconds", type=float, default=90.0,
                   help="time budget per method: the timed prefix is chosen so the slowest method fits")
    p.add_argument("--n-timed", type=int, default=None, help="force the number of timed samples (no calibration)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="bf16: autocast on CUDA")
    p.add_argument("--flatness", default="small_cnn", help="setups with the N vs 4N memory check ('' for none)")
    p.add_argument("--flat-n", type=int, default=None, help="N of the flatness check (default: n // 4)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma list of the methods to time besides the limit (always timed): ours, kronfluence, dattri")
    p.add_argument("--dattri-all", action="store_true", help="try dattri on every setup (it needs a Linear head)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads per worker (default: 1 on CPU, torch's default on CUDA; 0 = "
                        "torch's default). On a shared, loaded 2-core box 2 threads ran 2-9x slower (OpenMP "
                        "contention), so the CPU default is 1")
    p.add_argument("--worker-timeout", type=float, default=None,
                   help="seconds before one method's process is stopped and recorded as an error "
                        "(default 6 x max-seconds + 600)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/influence_speed_<device>.json)")
    # worker mode (internal)
    p.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    p.add_argument("--setup", help=argparse.SUPPRESS)
    p.add_argument("--warmup-n", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--result-file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.methods = {m.strip() for m in args.methods.split(",") if m.strip()} | {"limit"}
    if not args.methods <= set(METHODS):
        p.error(f"unknown method(s) {sorted(args.methods - set(METHODS))}; known: {list(METHODS)}")
    if args.precision != "fp32" and not args.device.startswith("cuda"):
        p.error("--precision bf16 is autocast on CUDA only; use --device cuda")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        run_worker(args)
        return
    device = resolve_device(args.device)
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = sorted(set(setups) - set(SETUPS))
    if unknown:
        raise SystemExit(f"unknown setup(s) {unknown}; known: {sorted(SETUPS)}")
    if args.threads is None:
        args.threads = 1 if device.type == "cpu" else 0
    args.flatness = {s.strip() for s in args.flatness.split(",") if s.strip()}
    args.batch_size_for = {s: args.batch_size or BATCH_SIZES.get((s, device.type), 256) for s in setups}
    start = time.perf_counter()
    report: dict[str, Any] = {
        "benchmark": "influence_speed",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "environment": environment(device),
        "precision": args.precision,
        "torch_threads_per_worker": args.threads or "torch default",
        "max_seconds_per_method": args.max_seconds,
        "objective": "d(x) = 1 - cos(phi(x), phi(x + sigma * noise_k)), K draws, influence = mean_k g_k^T (H+lambda)^-1 g_k",
        "throughput_unit": "samples/s (a sample = one image with all its K draws)",
        "setups": {},
    }
    out = Path(args.out) if args.out else RESULTS_DIR / f"influence_speed_{device.type}.json"
    for setup in setups:  # the report is rewritten after every setup, so a run stopped early keeps what finished
        report["setups"][setup] = run_setup(args, setup)
        report["total_wall_s"] = time.perf_counter() - start
        write_json(out, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
