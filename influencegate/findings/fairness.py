"""Fairness audit: is each group's share among the top-k influential samples its share in the dataset?

For each group column: per group, the share in the dataset p_g = n_g / N and among the k most influential
samples q_g = o_g / k, their ratio q_g / p_g; an omnibus chi-square goodness-of-fit test of the top-k
counts against k p_g (scipy.stats.chisquare); per-group two-sided binomial tests of o_g against
Binomial(k, p_g) (scipy.stats.binomtest) with a Holm (default) or Benjamini-Hochberg correction across the
groups of the column; per-group quantiles of log_influence.

Finite-population correction (default on): the top k are drawn without replacement from the N samples, so
under "no skew" the counts are hypergeometric and Pearson's statistic has mean (G - 1)(N - k)/(N - 1), not
G - 1; the statistic is multiplied by (N - 1)/(N - k) before the chi-square p-value so that the false-alarm
rate stays at alpha also when k is a large part of N. (The binomial tests are slightly conservative for the
same reason.) A column is flagged when the omnibus p-value is below alpha.
Rows with an error, a missing influence_rank or a missing group value are left out of that column's audit
(counted in `excluded`).

Measured sensitivity (benchmarks/findings_quality.py, fairness.planted_skew; defaults: top 10%, alpha 0.05,
Holm): a random 10-15% of the 1,797 digits made atypical by Gaussian pixel noise of standard deviation sigma
(pixel range [0, 1]), SmallCNN SimCLR-pretrained on the mixed set, five seeds. Flagged at p < 0.01 (chi-square
and the group's Holm-adjusted binomial test) on 5/5 seeds at sigma 0.4 and 0.5 (top-share ratio 1.7-5.2),
3/5 at 0.3, 1/5 at 0.2 and 0/5 at 0.1: the audit sees a group only once its images are atypical enough to
reach the top of the influence ranking, not every visible corruption. False alarms on random balanced
assignments: 0.06-0.08 at alpha 0.05 (100 repeats).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from influencegate.findings.base import Finding, check_table, scorable_mask
from influencegate.findings.registry import (Artifact, FindingInputs, FindingPlugin, Metric, Outcome, between,
                                             register)
from influencegate.plotting.galleries import group_histogram_panel

#: Share of the (scorable) samples taken as "the most influential" when top_k is not given.
TOP_FRACTION = 0.1
ALPHA = 0.05
CORRECTIONS = ("holm", "bh")
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
QUANTILE_COLUMNS = tuple(f"log_influence_q{int(round(q * 100)):02d}" for q in QUANTILES)
#: Columns of the per-group result table, in order (the same whether or not any column was audited).
RESULT_COLUMNS = ("column", "group", "n", "share", "top_count", "top_share", "ratio", "chi2", "chi2_p", "binom_p",
                  "binom_p_adj", "significant", "column_flagged", *QUANTILE_COLUMNS, "log_influence_mean")


def adjust_pvalues(p: np.ndarray, method: str = "holm") -> np.ndarray:
    """Holm step-down (family-wise error) or Benjamini-Hochberg step-up (false discovery rate) adjusted
    p-values, same order as p."""
    p = np.asarray(p, dtype=float)
    m = len(p)
    if m == 0:
        return p.copy()
    order = np.argsort(p)
    ranked = p[order]
    if method == "holm":
        adj = np.maximum.accumulate((m - np.arange(m)) * ranked)
    elif method == "bh":
        adj = np.minimum.accumulate((m / np.arange(m, 0, -1) * ranked[::-1]))[::-1]
    else:
        raise ValueError(f"correction must be one of {CORRECTIONS}, got {method!r}")
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


def share_test(codes: np.ndarray, top: np.ndarray, n_groups: int | None = None,
               finite_population: bool = True) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Pure numpy/scipy core. codes: group index 0..G-1 per sample; top: bool mask of the top-k samples.
    Returns (chi-square statistic, its p-value, dataset counts n_g, top-k counts o_g)."""
    codes = np.asarray(codes, dtype=np.int64)
    top = np.asarray(top, dtype=bool)
    g = int(n_groups if n_groups is not None else codes.max() + 1)
    n_all = np.bincount(codes, minlength=g)
    o = np.bincount(codes[top], minlength=g)
    n, k = len(codes), int(top.sum())
    present = n_all > 0
    if present.sum() < 2 or k == 0:
        return 0.0, 1.0, n_all, o
    expected = k * n_all[present] / n
    stat = float(stats.chisquare(o[present], expected).statistic)
    if finite_population and n > k:
        stat *= (n - 1) / (n - k)
    elif finite_population:  # k == n: shares are equal by construction
        stat = 0.0
    p = float(stats.chi2.sf(stat, int(present.sum()) - 1))
    return stat, p, n_all, o


class Fairness(Finding):
    """Group shares among the top-k influential samples vs the dataset, per group column.

    group_columns: the table's columns holding group attributes (e.g. ["race", "gender"]).
    top_k: how many most influential samples (lowest influence_rank); default round(top_fraction x N).
    `find` returns the per-group result table (one row per column x group; not per-sample columns):
      column, group, n, share, top_count, top_share, ratio (top_share / share), chi2, chi2_p (the column's
      omnibus test, repeated on its rows), binom_p, binom_p_adj, significant (binom_p_adj < alpha),
      column_flagged (chi2_p < alpha), log_influence_q05 ... _q95, log_influence_mean.
    `summary()` gives per-column metrics (max_ratio, min_ratio, chi2_p, min_binom_p_adj, flagged) and
    `text()` a plain-language summary.
    """

    name = "fairness"
    columns = ()

    def __init__(self, group_columns: Sequence[str], top_k: int | None = None, top_fraction: float = TOP_FRACTION,
                 alpha: float = ALPHA, correction: str = "holm", finite_population: bool = True) -> None:
        if isinstance(group_columns, str):
            group_columns = [group_columns]
        if not group_columns:
            raise ValueError("fairness: name at least one group column")
        if correction not in CORRECTIONS:
            raise ValueError(f"correction must be one of {CORRECTIONS}, got {correction!r}")
        if top_k is None and not 0 < top_fraction <= 1:
            raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
        if top_k is not None and int(top_k) < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.group_columns = list(group_columns)
        self.top_k, self.top_fraction, self.alpha = top_k, float(top_fraction), float(alpha)
        self.correction, self.finite_population = correction, finite_population
        self._result: pd.DataFrame | None = None
        self._meta: dict[str, dict[str, Any]] = {}

    def find(self, table: pd.DataFrame, embeddings: np.ndarray | None = None, **_: Any) -> pd.DataFrame:
        check_table(table, ["sample_id", "influence_rank", "log_influence", *self.group_columns], "fairness")
        rows, self._meta = [], {}
        for column in self.group_columns:
            rows.extend(self._audit_column(table, column))
        self._result = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
        return self._result

    def _audit_column(self, table: pd.DataFrame, column: str) -> list[dict[str, Any]]:
        rank = pd.to_numeric(table["influence_rank"], errors="coerce").to_numpy(dtype=float)
        ok = scorable_mask(table) & ~np.isnan(rank) & table[column].notna().to_numpy()
        sub = table.loc[ok]
        n = len(sub)
        if n < 2:
            raise ValueError(f"fairness: column {column!r} has {n} scored rows with a group value; need >= 2")
        k = int(self.top_k) if self.top_k is not None else max(1, int(round(self.top_fraction * n)))
        k = min(k, n)
        codes, labels = pd.factorize(sub[column], sort=True)
        top = np.zeros(n, dtype=bool)
        top[np.argsort(rank[ok], kind="stable")[:k]] = True
        chi2, chi2_p, n_g, o_g = share_test(codes, top, len(labels), self.finite_population)
        share = n_g / n
        binom_p = np.array([stats.binomtest(int(o), k, float(s)).pvalue if 0 < s < 1 else 1.0
                            for o, s in zip(o_g, share)])
        binom_adj = adjust_pvalues(binom_p, self.correction)
        log_inf = pd.to_numeric(sub["log_influence"], errors="coerce").to_numpy(dtype=float)
        self._meta[column] = {"n": n, "top_k": k, "excluded": int((~ok).sum()), "chi2": chi2, "chi2_p": chi2_p,
                              "groups": len(labels)}
        out = []
        for g, label in enumerate(labels):
            values = log_inf[codes == g]
            values = values[np.isfinite(values)]
            row = {"column": column, "group": label, "n": int(n_g[g]), "share": float(share[g]),
                   "top_count": int(o_g[g]), "top_share": float(o_g[g] / k),
                   "ratio": float(o_g[g] / k / share[g]) if share[g] > 0 else np.nan,
                   "chi2": chi2, "chi2_p": chi2_p, "binom_p": float(binom_p[g]), "binom_p_adj": float(binom_adj[g]),
                   "significant": bool(binom_adj[g] < self.alpha), "column_flagged": bool(chi2_p < self.alpha)}
            for q, name in zip(QUANTILES, QUANTILE_COLUMNS):
                row[name] = float(np.quantile(values, q)) if len(values) else np.nan
            row["log_influence_mean"] = float(values.mean()) if len(values) else np.nan
            out.append(row)
        return out

    def summary(self) -> dict[str, Any]:
        """Flat metrics: for each column c, c.max_ratio, c.min_ratio, c.chi2_p, c.min_binom_p_adj, c.flagged,
        c.top_k, plus any_flagged and min_chi2_p over the columns."""
        result = self._require_found("_result")
        out: dict[str, Any] = {"alpha": self.alpha, "correction": self.correction}
        for column, meta in self._meta.items():
            part = result[result["column"] == column]
            out[f"{column}.top_k"] = meta["top_k"]
            out[f"{column}.max_ratio"] = float(part["ratio"].max())
            out[f"{column}.min_ratio"] = float(part["ratio"].min())
            out[f"{column}.chi2_p"] = meta["chi2_p"]
            out[f"{column}.min_binom_p_adj"] = float(part["binom_p_adj"].min())
            out[f"{column}.flagged"] = bool(meta["chi2_p"] < self.alpha)
        out["any_flagged"] = any(out[f"{c}.flagged"] for c in self._meta)
        out["min_chi2_p"] = min(m["chi2_p"] for m in self._meta.values())
        return out

    def text(self) -> str:
        """Plain-language summary, one paragraph per group column."""
        result = self._require_found("_result")
        name = {"holm": "Holm", "bh": "Benjamini-Hochberg"}[self.correction]
        lines = []
        for column, meta in self._meta.items():
            part = result[result["column"] == column]
            head = (f"{column}: among the {meta['top_k']} most influential of {meta['n']} samples, ")
            if meta["chi2_p"] < self.alpha:
                head += (f"group shares differ from the dataset's (chi-square p = {meta['chi2_p']:.2g} < "
                         f"{self.alpha:g}).")
            else:
                head += (f"group shares are consistent with the dataset's (chi-square p = {meta['chi2_p']:.2g}, "
                         f"not below {self.alpha:g}).")
            details = []
            for _, r in part.sort_values("ratio", ascending=False).iterrows():
                mark = f" (significant after {name}, p = {r['binom_p_adj']:.2g})" if r["significant"] else ""
                details.append(f"'{r['group']}' is {r['share']:.1%} of the data and {r['top_share']:.1%} of the "
                               f"top (x{r['ratio']:.2f}){mark}")
            lines.append(head + " " + "; ".join(details) + ".")
        return "\n".join(lines)


@dataclass
class FairnessOptions:
    """The options of the fairness finding: `Fairness`'s keyword arguments other than the group columns
    (which come from FindingsConfig.groups)."""

    top_k: int | None = None
    top_fraction: float = TOP_FRACTION
    alpha: float = ALPHA
    correction: str = "holm"
    finite_population: bool = True


def _metric_name(value: Any) -> str:
    """A value usable inside an MLflow metric name (letters, digits, _ - . / and spaces)."""
    return "".join(c if c.isalnum() or c in "_-/ " else "_" for c in str(value))


@register
class FairnessFinding(FindingPlugin):
    """The registered fairness audit: runs on FindingsConfig.groups; without groups it does not run, and its
    metrics stay NaN ("not audited"), never a passing 1.0."""

    name = "fairness"
    Config = FairnessOptions
    needs_groups = True
    metrics = (Metric("fairness_columns_audited", "count of group columns", "group columns audited"),
               Metric("fairness_min_p_value", "p-value", "smallest chi-square p over the group columns (absent when "
                      "none is audited)"),
               Metric("fairness_max_group_ratio", "ratio", "largest top-share / share of a group"),
               Metric("fairness_flagged", "0 or 1", "1 if any column's chi-square p < alpha"),
               Metric("fairness.<column>.<group>.ratio", "ratio", "a group's share among the top / its share"))
    figures = (Artifact("group_histograms", "figures/log_influence_by_group.png"),)
    tables = (Artifact("fairness", "findings/fairness.json"),)
    expectations = {"summary": [between(
        "fairness_min_p_value", "Smallest chi-square p-value, over the audited group columns, of the test that "
        "each group's share among the top 10% most influential samples equals its share in the data (checked only "
        "when group columns are configured). A skew that strong arises by chance in 1 audit out of 1,000 per column; the "
        "ratio alone is not gated because small groups reach large ratios by chance. Per-group ratios and "
        "Holm-corrected binomial p-values are in the findings report.", 0.001, None)]}

    def run(self, inputs: FindingInputs, config: FairnessOptions) -> Outcome:
        fairness = Fairness(inputs.groups, **asdict(config))
        result = fairness.find(inputs.table)
        found = fairness.summary()
        metrics = {"fairness_columns_audited": float(len(inputs.groups)),
                   "fairness_min_p_value": float(found["min_chi2_p"]),
                   "fairness_max_group_ratio": float(np.nanmax(result["ratio"].to_numpy(dtype=float))),
                   "fairness_flagged": float(found["any_flagged"])}
        metrics.update({f"fairness.{_metric_name(r.column)}.{_metric_name(r.group)}.ratio": float(r.ratio)
                        for r in result.itertuples()})
        return Outcome(pd.DataFrame(index=inputs.table.index), metrics, fairness.text())

    def draw(self, table: pd.DataFrame, images_by_id: Any, groups: Sequence[str]) -> dict[str, Any]:
        return {"group_histograms": group_histogram_panel(table, groups)}

    def derive(self, table: pd.DataFrame, config: FairnessOptions, groups: Sequence[str]) -> dict[str, pd.DataFrame]:
        return {"fairness": Fairness(groups, **asdict(config)).find(table)}
