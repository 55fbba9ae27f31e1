"""Agreement of influence rankings across independently trained encoders, and an ensemble estimator (issue 17).

The Influence-SSL paper (Figure 2) reports rank correlations near 0.97 between influence scores of
independently initialised and trained SSL runs. Here every run is fully independent: encoder seed s sets the
initial weights, the pretraining batch order and augmentations (``models.pretrain(seed=s)``), and the
scorer's perturbation and projection seeds. A cell trains `pool` encoders (seeds 0 .. pool-1) of one setting
and reports the Spearman of log-influence between every pair of its first four encoders (6 pairs, which
share encoders: mean, sd, min, max), between the disjoint pairs (0, 1), (2, 3), ... of the pool (pool // 2
independent pairs; the results list every figure resting on fewer than 3 independent pairs) and the share
of one encoder's top 5% that is in the other's top 5%, the SSL loss of the last epoch and a linear-probe
accuracy (below) to show how far training went. Cells with ``noise_ref`` also score encoders 0-2 (the first
`noise_encoders`) a second time with other perturbation and projection seeds: the agreement the score's own
noise allows (3 pairs).

Ensemble estimator: a run of M encoders scores the data with each and combines them, by the mean over
encoders of the rank ("mean_rank") or of log_influence ("mean_log"). Two runs are independent when their
encoder seeds are disjoint: from a pool of P encoders, pair j compares seeds [2jM, 2jM+M) with
[2jM+M, 2jM+2M), floor(P / 2M) disjoint pairs. Cost of one run: M pretrainings + M scorings of `draws`
draws per image.

Datasets (labels are used only by the linear probe):
  digits   scikit-learn's 1,797 8 x 8 digits (label: the digit);
  patches  1,029 non-overlapping 32 x 32 patches of the 20 photos of benchmarks/natural_images.py (scikit-image
           and scikit-learn), average-pooled to 16 x 16 RGB to keep scoring affordable on the CPU, normalised per
           channel (label: the source photo, a proxy class);
  patches32  the same 1,029 patches at their full 32 x 32 RGB (the CIFAR input size), normalised per channel.
A cell's `subset` (> 0) keeps a stratified `subset` of the dataset (split seed 0, the same images for every
encoder): every encoder is pretrained on it and scores it.
Architecture (the cell's `arch`): "small_cnn" (the package's SmallCNN, `widths` its channels) or
"cifar_resnet18" (solo-learn's CIFAR ResNet-18 backbone, 11.2M weights, 512-d output; `widths` unused), both
pretrained by the package's own trainer (``models.pretrain``) with the cell's `batch` size.
Linear probe: logistic regression on the standardised encoder outputs, fitted on a stratified half
(split seed 0) and evaluated on the other half.

Split (stated): the estimator (combination rule and M) is chosen on the development cell digits / SimCLR /
20 epochs only; digits / BYOL and patches / BYOL are held out from that choice (and from any other). The
4x-wide ensemble, the one that reached 0.9 on the digits (a development cell), is checked on the patches
(patches_simclr_e20_w4x, held out).

Usage: python benchmarks/encoder_agreement.py [--cells a,b,...] [--cache DIR] [--out encoder_agreement.json] [--merge]
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS_DIR, write_json  # noqa: E402
from influencegate.data import ImageDataset, load_images  # noqa: E402
from influencegate.influence import InfluenceConfig, InfluenceScorer, spearman  # noqa: E402
from influencegate.models import build_encoder, pretrain  # noqa: E402

DEFAULT_WIDTHS = (8, 16, 32)
RULES = ("mean_rank", "mean_log")
ENSEMBLE_SIZES = (1, 2, 4, 8)
AGREEMENT_ENCODERS = 4
NOISE_REF_ENCODERS = 3
PATCH_SIDES = {"patches": 16, "patches32": 32}  # dataset name -> side in px of its photo patches
TOP_SHARE = 0.05
MIN_INDEPENDENT_PAIRS = 3


@dataclass(frozen=True)
class Cell:
    """One setting: dataset, SSL method, epochs, architecture (SmallCNN widths), pretraining batch and the
    scorer's sigma / draws / curvature. pool: encoders trained (>= 4; the default 6 gives 3 disjoint pairs); role: "dev" (choices were made here) or
    "held_out"."""

    name: str
    dataset: str = "digits"
    method: str = "simclr"
    epochs: int = 20
    widths: tuple[int, int, int] = DEFAULT_WIDTHS
    arch: str = "small_cnn"
    batch: int = 256
    subset: int = 0
    noise_encoders: int = NOISE_REF_ENCODERS
    sigma: float = 0.2
    draws: int = 16
    curvature: str = "raw"
    pool: int = 6
    noise_ref: bool = False
    ensemble: bool = False
    role: str = "dev"


CELLS = [  # in the order they run (most informative first)
    Cell("digits_simclr_e20", pool=16, noise_ref=True, ensemble=True),
    Cell("digits_byol_e20", method="byol", pool=12, noise_ref=True, ensemble=True, role="held_out"),
    Cell("patches_simclr_e20", dataset="patches", pool=8, noise_ref=True, ensemble=True, role="held_out"),
    Cell("patches_byol_e20", dataset="patches", method="byol", pool=8, noise_ref=True, ensemble=True,
         role="held_out"),
    Cell("digits_simclr_e5", epochs=5),
    Cell("digits_simclr_e80", epochs=80),
    Cell("digits_simclr_e20_k64", draws=64),
    Cell("digits_simclr_e20_sigma0.1", sigma=0.1),
    Cell("digits_simclr_e20_sigma0.4", sigma=0.4),
    Cell("digits_barlow_e20", method="barlow_twins", role="held_out"),
    Cell("digits_simclr_e20_w2x", widths=(16, 32, 64)),
    Cell("digits_simclr_e20_w4x", widths=(32, 64, 128), pool=24, ensemble=True),  # 3 disjoint pairs at M = 4
    Cell("digits_simclr_e20_identity", curvature="identity"),
    Cell("patches_simclr_e80", dataset="patches", epochs=80, role="held_out"),
    Cell("patches_simclr_e20_w4x", dataset="patches", widths=(32, 64, 128), pool=24, ensemble=True,
         role="held_out"),  # the dev cell's best ensemble (w4x, M = 4) on data it was not chosen on
    # model capacity: CIFAR ResNet-18 (11.2M weights) at 32 px; a stratified 192 of the 1,029 patches, as
    # scoring costs about 2.2 s per image on one CPU thread (K = 16, fit + score)
    Cell("patches32_n192_simclr_e16_resnet18", dataset="patches32", subset=192, epochs=16, batch=64,
         arch="cifar_resnet18", noise_ref=True, noise_encoders=1, ensemble=True, role="held_out"),
    # the same data, schedule and scorer with the SmallCNN (1x, 4x wide): the like-for-like capacity contrast
    Cell("patches32_n192_simclr_e16", dataset="patches32", subset=192, epochs=16, batch=64, noise_ref=True,
         noise_encoders=1, ensemble=True, role="held_out"),
    Cell("patches32_n192_simclr_e16_w4x", dataset="patches32", subset=192, epochs=16, batch=64,
         widths=(32, 64, 128), noise_ref=True, noise_encoders=1, ensemble=True, role="held_out"),
]


# -- data, training, probe, scoring ----------------------------------------------------------------------
def labelled_dataset(name: str, subset: int = 0) -> tuple[ImageDataset, np.ndarray]:
    """(dataset, labels N int) for "digits", "patches" or "patches32" (module docstring), or a stratified
    `subset` of it (> 0; split seed 0); labels for evaluation only."""
    if subset:
        data, labels = labelled_dataset(name)
        keep = half_split(labels, train_size=subset)[0]
        return data.subset([data.sample_ids[i] for i in keep]), labels[keep]
    if name == "digits":
        data = load_images("digits")
        return data, data.records["label"].to_numpy(dtype=np.int64)
    if name not in PATCH_SIDES:
        raise ValueError(f"unknown dataset {name!r}")
    from benchmarks.natural_images import PHOTOS, photo_set

    photos = photo_set(PHOTOS + ("china", "flower"), 32, seed=0, families=())
    images = F.avg_pool2d(torch.from_numpy(photos.images), 32 // PATCH_SIDES[name])
    mean, std = images.mean(dim=(0, 2, 3)), images.std(dim=(0, 2, 3))
    images = ((images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)).contiguous()
    _, labels = np.unique(photos.source, return_inverse=True)
    data = ImageDataset.from_tensors(images, [f"patch{i:05d}" for i in range(len(images))], name=name,
                                     mean=mean.tolist(), std=std.tolist())
    return data, labels.astype(np.int64)


def arch_kwargs(arch: str, data: ImageDataset, widths: Sequence[int]) -> dict[str, Any]:
    """Constructor arguments of `arch` ("small_cnn": input channels and widths; "cifar_resnet18": none)."""
    if arch == "small_cnn":
        return {"in_channels": data.image_shape[0], "widths": tuple(widths)}
    if arch == "cifar_resnet18":
        return {}
    raise ValueError(f"unknown arch {arch!r}; use small_cnn or cifar_resnet18")


def train_encoder(data: ImageDataset, method: str, epochs: int, seed: int,
                  widths: Sequence[int] = DEFAULT_WIDTHS, batch_size: int = 256,
                  arch: str = "small_cnn") -> tuple[torch.nn.Module, list[float]]:
    """(`arch` encoder pretrained with `method`, loss per epoch): initial weights, batch order and augmentations
    from `seed`."""
    initial = build_encoder(arch, seed=seed, **arch_kwargs(arch, data, widths))
    result = pretrain(initial, data, method=method, epochs=epochs, seed=seed, batch_size=batch_size, progress=False)
    return result.encoder.eval(), [float(x) for x in result.losses]


def embed(encoder: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
    """Encoder outputs N x D (float64) of normalised images N x C x H x W."""
    with torch.no_grad():
        return encoder.eval()(images).double().numpy()


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Accuracy on (test_x, test_y) of a logistic regression fitted on standardised train_x (scaler from train)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float((model.predict(scaler.transform(test_x)) == test_y).mean())


def half_split(labels: np.ndarray, seed: int = 0, train_size: float | int = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) sorted index arrays: a stratified split of range(len(labels)), 50/50 unless train_size
    (a share or a count) says otherwise."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, test = train_test_split(idx, train_size=train_size, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def linear_probe(encoder: torch.nn.Module, data: ImageDataset, labels: np.ndarray) -> float:
    """Linear-probe accuracy of the encoder: fitted on a stratified half of data, evaluated on the other."""
    train, test = half_split(labels)
    x = embed(encoder, data.images)
    return probe_accuracy(x[train], labels[train], x[test], labels[test])


def log_influence(encoder: torch.nn.Module, data: ImageDataset, sigma: float, draws: int, curvature: str,
                  seed: int) -> np.ndarray:
    """log_influence N of every sample with `draws` draws (fixed, no pilot), perturbation and projection seed."""
    config = InfluenceConfig(sigma=sigma, draws=draws, curvature=curvature, target_stability=None, seed=seed,
                             projection_seed=seed, progress=False)
    table = InfluenceScorer(encoder, config).fit(data).score(data)
    return table["log_influence"].to_numpy(dtype=np.float64)


# -- statistics ------------------------------------------------------------------------------------------
def spread(values: Sequence[float]) -> dict[str, float | int]:
    """n, mean, sd (ddof 1; 0 for one value), min, max of values."""
    v = np.asarray(values, dtype=np.float64)
    return {"n": int(v.size), "mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max())}


def top_overlap(a: np.ndarray, b: np.ndarray, share: float = TOP_SHARE) -> float:
    """Share of the top `share` of samples by a that are also in the top `share` by b."""
    k = max(1, int(round(share * len(a))))
    return len(set(np.argsort(-a)[:k].tolist()) & set(np.argsort(-b)[:k].tolist())) / k


def combine(scores: Sequence[np.ndarray], rule: str) -> np.ndarray:
    """Ensemble score of M score vectors (each N): mean rank ("mean_rank") or mean log-influence ("mean_log")."""
    if rule == "mean_rank":
        return np.mean([rankdata(s) for s in scores], axis=0)
    if rule == "mean_log":
        return np.mean(scores, axis=0)
    raise ValueError(f"unknown rule {rule!r}; use one of {RULES}")


def spearman_brown(rho: float, m: int) -> float:
    """Predicted agreement of two means of m independent replicates whose single-replicate agreement is rho."""
    return m * rho / (1 + (m - 1) * rho)


def encoders_needed(rho: float, target: float) -> int:
    """The smallest M whose Spearman-Brown prediction from single-encoder agreement rho reaches target."""
    return max(1, math.ceil(target * (1 - rho) / (rho * (1 - target)) - 1e-9))


def ensemble_agreement(scores: Sequence[np.ndarray], sizes: Sequence[int] = ENSEMBLE_SIZES) -> list[dict[str, Any]]:
    """For each M with 2M <= len(scores) and each rule: the Spearman between disjoint runs of M encoders,
    beside the Spearman-Brown prediction from the mean agreement of single encoders (M = 1)."""
    rows = []
    for m in sizes:
        pairs = len(scores) // (2 * m)
        if pairs == 0:
            continue
        for rule in RULES:
            rhos = [spearman(combine(scores[2 * j * m:2 * j * m + m], rule),
                             combine(scores[2 * j * m + m:2 * j * m + 2 * m], rule)) for j in range(pairs)]
            rows.append({"M": m, "rule": rule, "spearman": spread(rhos), "pairs": pairs,
                         "cost_per_run": {"pretrainings": m, "scorings": m}})
    single = next(r["spearman"]["mean"] for r in rows if r["M"] == 1)
    for row in rows:
        row["spearman_brown_prediction"] = spearman_brown(single, row["M"])
    return rows


# -- the cells -------------------------------------------------------------------------------------------
class Runner:
    """Trains, probes and scores encoders of the cells, caching each encoder's results in `cache` (the encoder
    .pt with its loss curve, probe accuracy and pretraining seconds; one .npy per scoring; the scorings'
    seconds in seconds.json)."""

    def __init__(self, cache: Path, cached_only: bool = False) -> None:
        self.cache = cache
        self.cached_only = cached_only
        self.cache.mkdir(parents=True, exist_ok=True)
        self.data: dict[str, tuple[ImageDataset, np.ndarray]] = {}
        self.seconds = {"pretrain": [], "score": []}

    def _dataset(self, name: str, subset: int = 0) -> tuple[ImageDataset, np.ndarray]:
        key = f"{name}_n{subset}"
        if key not in self.data:
            self.data[key] = labelled_dataset(name, subset)
        return self.data[key]

    def _paths(self, cell: Cell, seed: int) -> tuple[Path, dict[int, Path]]:
        """(cached encoder file, {noise seed: cached score file}) of encoder `seed` of the cell."""
        model = f"w{'-'.join(map(str, cell.widths))}" if cell.arch == "small_cnn" else cell.arch
        batch = "" if cell.batch == 256 else f"_b{cell.batch}"
        subset = f"_n{cell.subset}" if cell.subset else ""
        train_key = f"{cell.dataset}{subset}_{cell.method}_e{cell.epochs}_{model}{batch}_s{seed}"
        score_key = f"sigma{cell.sigma}_k{cell.draws}_{cell.curvature}"
        noise = [seed] + ([100 + seed] if cell.noise_ref and seed < cell.noise_encoders else [])
        return self.cache / f"{train_key}.pt", {n: self.cache / f"{train_key}_{score_key}_n{n}.npy" for n in noise}

    def cached_pool(self, cell: Cell) -> int:
        """How many encoders (seeds 0, 1, ...) of the cell have every file cached."""
        count = 0
        while count < cell.pool:
            path, scores = self._paths(cell, count)
            if not (path.is_file() and all(p.is_file() for p in scores.values())):
                break
            count += 1
        return count

    def _score_seconds(self, update: dict[str, float] | None = None) -> dict[str, float]:
        """{score file name: seconds} of the scorings timed so far (cache/seconds.json), after adding `update`."""
        path = self.cache / "seconds.json"
        timed = json.loads(path.read_text()) if path.is_file() else {}
        if update:
            timed.update(update)
            path.write_text(json.dumps(timed, indent=1, sort_keys=True))
        return timed

    def encoder_run(self, cell: Cell, seed: int) -> dict[str, Any]:
        """{"losses", "probe", "scores": {noise seed: log_influence N}, "seconds": {"pretrain", "score"} (None
        where not timed)} of encoder `seed` of the cell (trained and scored unless cached)."""
        data, labels = self._dataset(cell.dataset, cell.subset)
        path, score_paths = self._paths(cell, seed)
        if path.is_file():
            saved = torch.load(path, weights_only=False)
            encoder = build_encoder(cell.arch, **arch_kwargs(cell.arch, data, cell.widths))
            encoder.load_state_dict(saved["state"])
            encoder.eval()
        else:
            start = time.perf_counter()
            encoder, losses = train_encoder(data, cell.method, cell.epochs, seed, cell.widths, cell.batch, cell.arch)
            seconds = time.perf_counter() - start
            self.seconds["pretrain"].append(seconds)
            saved = {"state": encoder.state_dict(), "losses": losses, "probe": linear_probe(encoder, data, labels),
                     "pretrain_seconds": seconds}
            torch.save(saved, path)
            print(f"{path.stem}: pretrained in {seconds:.0f} s, SSL loss by epoch "
                  f"{[round(x, 3) for x in losses]}, probe {saved['probe']:.3f}", flush=True)
        scores = {}
        for noise_seed, score_path in score_paths.items():
            if not score_path.is_file():
                start = time.perf_counter()
                np.save(score_path, log_influence(encoder, data, cell.sigma, cell.draws, cell.curvature, noise_seed))
                seconds = time.perf_counter() - start
                self.seconds["score"].append(seconds)
                self._score_seconds({score_path.name: seconds})
                print(f"{score_path.stem}: scored in {seconds:.0f} s", flush=True)
            scores[noise_seed] = np.load(score_path)
        first_score = self._score_seconds().get(score_paths[seed].name)
        return {"losses": saved["losses"], "probe": saved["probe"], "scores": scores,
                "seconds": {"pretrain": saved.get("pretrain_seconds"), "score": first_score}}

    def run_cell(self, cell: Cell) -> dict[str, Any] | None:
        """The cell's row: pairwise agreement, noise reference, convergence and (if asked) the ensemble.
        With cached_only, only the cached encoders are used (pool = their number): None below 4."""
        pool = self.cached_pool(cell) if self.cached_only else cell.pool
        if pool < AGREEMENT_ENCODERS:
            return None
        runs = [self.encoder_run(cell, seed) for seed in range(pool)]
        first = [r["scores"][s] for s, r in enumerate(runs)]
        pairs = list(itertools.combinations(range(AGREEMENT_ENCODERS), 2))
        rhos = {f"{a}-{b}": spearman(first[a], first[b]) for a, b in pairs}
        row: dict[str, Any] = {**asdict(cell), "pool": pool, "n": int(len(first[0])),
                               "between_encoders": spread(list(rhos.values())), "between_encoders_by_pair": rhos,
                               "top5pct_overlap": spread([top_overlap(first[a], first[b]) for a, b in pairs]),
                               "between_encoders_disjoint": spread([spearman(first[2 * j], first[2 * j + 1])
                                                                    for j in range(pool // 2)])}
        if cell.noise_ref:
            row["same_encoder_noise_seeds"] = spread([spearman(runs[s]["scores"][s], runs[s]["scores"][100 + s])
                                                      for s in range(cell.noise_encoders)])
        losses = [r["losses"] for r in runs[:AGREEMENT_ENCODERS]]
        row["final_ssl_loss"] = spread([curve[-1] for curve in losses])
        row["ssl_loss_by_epoch"] = np.mean(losses, axis=0).tolist()  # mean of the first four encoders
        for stage in ("pretrain", "score"):  # seconds per encoder, where every one of the first four was timed
            timed = [r["seconds"][stage] for r in runs[:AGREEMENT_ENCODERS]]
            if all(t is not None for t in timed):
                row.setdefault("seconds_per_encoder", {})[stage] = spread(timed)
        row["linear_probe_accuracy"] = spread([r["probe"] for r in runs[:AGREEMENT_ENCODERS]])
        if cell.ensemble:
            row["ensemble_agreement"] = ensemble_agreement(first)
        return row


def thin_cells(rows: Sequence[dict[str, Any]], minimum: int = MIN_INDEPENDENT_PAIRS) -> list[str]:
    """"cell" or "cell/M=m" for every reported agreement resting on fewer than `minimum` independent (disjoint)
    pairs of runs: the single-encoder agreement (pool // 2 pairs) and each ensemble size."""
    thin = [r["name"] for r in rows if r["between_encoders_disjoint"]["n"] < minimum]
    return thin + sorted({f"{r['name']}/M={e['M']}" for r in rows for e in r.get("ensemble_agreement", [])
                          if e["pairs"] < minimum})


def choose_estimator(dev: dict[str, Any], target: float = 0.9) -> dict[str, Any]:
    """On the dev cell's ensemble rows: the rule with the higher mean Spearman at the largest M that has >= 2
    disjoint pairs, and the smallest M whose mean reaches `target` under that rule (None if none does)."""
    rows = dev["ensemble_agreement"]
    m_ref = max(r["M"] for r in rows if r["pairs"] >= 2)
    rule = max((r for r in rows if r["M"] == m_ref), key=lambda r: r["spearman"]["mean"])["rule"]
    reaching = [r["M"] for r in rows if r["rule"] == rule and r["spearman"]["mean"] >= target]
    single = next(r["spearman"]["mean"] for r in rows if r["M"] == 1)
    return {"cell": dev["name"], "rule": rule, "compared_at_M": m_ref, "target": target,
            "smallest_M_reaching_target": min(reaching) if reaching else None,
            "M_predicted_for_target": encoders_needed(single, target)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--cells", default=",".join(c.name for c in CELLS))
    p.add_argument("--cache", default="/tmp/influencegate_encoder_agreement")
    p.add_argument("--out", default="encoder_agreement.json")
    p.add_argument("--train-seeds", default=None,
                   help="comma list: only train and score these encoder seeds of the cells into the cache (to split "
                        "a pool over processes), report nothing")
    p.add_argument("--cached-only", action="store_true",
                   help="train and score nothing: report each cell from the encoders already in the cache")
    p.add_argument("--merge", action="store_true",
                   help="keep the cells already in --out: the cells reported now replace those of the same name "
                        "or are appended (the summary lists are recomputed over all of them)")
    args = p.parse_args()
    torch.set_num_threads(1)
    wanted = args.cells.split(",")
    runner = Runner(Path(args.cache), cached_only=args.cached_only)
    out = RESULTS_DIR / args.out
    kept = json.loads(out.read_text()) if args.merge and out.is_file() else {"cells": []}
    rows = []
    for cell in (c for c in CELLS if c.name in wanted):
        if args.train_seeds:
            for seed in (int(x) for x in args.train_seeds.split(",")):
                runner.encoder_run(cell, seed)
            continue
        start = time.perf_counter()
        row = runner.run_cell(cell)
        if row is None:
            print(f"{cell.name}: fewer than {AGREEMENT_ENCODERS} encoders cached, not reported", flush=True)
            continue
        rows.append(row)
        summary = {k: rows[-1][k] for k in ("name", "between_encoders", "linear_probe_accuracy")}
        print(json.dumps(summary), f"{time.perf_counter() - start:.0f} s", flush=True)
        new = {r["name"]: r for r in rows}
        cells = [new.pop(r["name"], r) for r in kept["cells"]] + list(new.values())
        dev = next((r for r in cells if r["name"] == "digits_simclr_e20" and "ensemble_agreement" in r), None)
        seconds = {k: float(np.median(v)) if v else None for k, v in runner.seconds.items()}
        payload = {"description": __doc__.split("Usage:")[0].strip(), "cells": cells,
                   "chosen_estimator": choose_estimator(dev) if dev else None,
                   f"fewer_than_{MIN_INDEPENDENT_PAIRS}_independent_pairs": thin_cells(cells),
                   "seconds_median": kept.get("seconds_median", seconds) if args.merge else seconds,
                   "torch_threads": torch.get_num_threads()}
        write_json(out, payload)


if __name__ == "__main__":
    main()
