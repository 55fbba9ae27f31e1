"""The galleries and panels of the findings: near-duplicate groups, the highest outlier scores, flagged samples
and log_influence per group. Each returns an RGB PIL image and never raises on empty input (no duplicate group,
no outlier score, a missing group column): it returns a placeholder that says what is missing.

Each finding's `draw` calls its gallery here (below the findings, so no finding reaches up into the report).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from influencegate.plotting.canvas import (ImagesById, figure_to_image, image_grid, image_of, placeholder, pyplot,
                                           short_id, stack)


def _percentile(row: pd.Series) -> str:
    value = pd.to_numeric(pd.Series([row.get("influence_percentile")]), errors="coerce").iloc[0]
    return "p=n/a" if pd.isna(value) else f"p={value:.0f}"



def duplicate_gallery(table: pd.DataFrame, images_by_id: ImagesById, max_groups: int = 12,
                      max_members: int = 8, cell: int = 64) -> Image.Image:
    """One row per near-duplicate group (the largest groups first, then by group id; at most max_groups rows
    of at most max_members images): the canonical member (the one kept, `duplicate_of`) first, then the
    copies by influence_rank. Captions: the end of the sample_id, then "keep" or "copy" and the influence
    percentile (p=100 most influential). Needs columns sample_id, duplicate_group (from Duplicates)."""
    if not {"sample_id", "duplicate_group"} <= set(table.columns):
        return placeholder("duplicate gallery: the table has no duplicate_group column\n(run Duplicates first)")
    groups = pd.to_numeric(table["duplicate_group"], errors="coerce").fillna(-1).astype(int)
    members = table[groups >= 0].assign(_group=groups[groups >= 0])
    if members.empty:
        return placeholder("duplicate gallery: no near-duplicate group was found")
    sizes = members["_group"].value_counts()
    order = sorted(sizes.index, key=lambda g: (-sizes[g], g))
    rows = []
    for g in order[:max_groups]:
        group = members[members["_group"] == g].copy()
        canonical = group.get("duplicate_of", pd.Series(index=group.index, dtype=object)).astype(str)
        group["_copy"] = group["sample_id"].astype(str) != canonical
        sort = ["_copy"] + (["influence_rank"] if "influence_rank" in group.columns else [])
        group = group.sort_values(sort, kind="stable")
        shown = group.head(max_members)
        captions = [f"{short_id(r['sample_id'], 12)}\n{'copy' if r['_copy'] else 'keep'} {_percentile(r)}"
                    for _, r in shown.iterrows()]
        more = f", {len(group) - len(shown)} more not shown" if len(group) > len(shown) else ""
        rows.append(image_grid([image_of(images_by_id, str(s)) for s in shown["sample_id"]], captions,
                               title=f"group {g}: {len(group)} members{more}", columns=max_members, cell=cell))
    total = len(order)
    return stack(rows, f"near-duplicate groups: {min(total, max_groups)} of {total} shown (largest first); "
                        "p = influence percentile")


def outlier_gallery(table: pd.DataFrame, images_by_id: ImagesById, k: int = 24, columns: int = 8,
                    cell: int = 64) -> Image.Image:
    """The k samples with the highest outlier_score (from Outliers), highest first. Captions: the end of the
    sample_id, then the outlier score ("*" when is_outlier) and the influence percentile."""
    if not {"sample_id", "outlier_score"} <= set(table.columns):
        return placeholder("outlier gallery: the table has no outlier_score column\n(run Outliers first)")
    score = pd.to_numeric(table["outlier_score"], errors="coerce")
    top = table.assign(_score=score)[score.notna()].sort_values("_score", ascending=False, kind="stable").head(k)
    if top.empty:
        return placeholder("outlier gallery: no sample has an outlier score")
    flagged = top.get("is_outlier", pd.Series(False, index=top.index)).fillna(False).astype(bool)
    captions = [f"{short_id(r['sample_id'], 12)}\n{r['_score']:.1f}{'*' if flag else ''} {_percentile(r)}"
                for (_, r), flag in zip(top.iterrows(), flagged)]
    n_flagged = int(table["is_outlier"].fillna(False).astype(bool).sum()) if "is_outlier" in table.columns else 0
    title = (f"{len(top)} highest outlier scores (* = is_outlier; {n_flagged} flagged in all); "
             "p = influence percentile")
    return image_grid([image_of(images_by_id, str(s)) for s in top["sample_id"]], captions, title=title,
                      columns=columns, cell=cell)


def group_histograms(table: pd.DataFrame, group_column: str, bins: int = 40, max_groups: int = 8,
                     top_fraction: float = 0.1) -> Image.Image:
    """log_influence distributions per group of `group_column`, overlaid as density step histograms on
    common bins (the max_groups largest groups), each group's median as a dotted line, and a dashed line
    where the top `top_fraction` most influential samples begin (the Fairness audit's default top 10%).
    Legend: group (n, share among the top)."""
    if group_column not in table.columns:
        return placeholder(f"log_influence per group: the table has no column {group_column!r}")
    if "log_influence" not in table.columns:
        return placeholder("log_influence per group: the table has no log_influence column")
    values = pd.to_numeric(table["log_influence"], errors="coerce")
    keep = np.isfinite(values) & table[group_column].notna()
    data = pd.DataFrame({"x": values[keep], "g": table.loc[keep, group_column].astype(str)})
    if data.empty:
        return placeholder(f"log_influence per group: no scored sample has a {group_column!r} value")
    plt = pyplot()
    sizes = data["g"].value_counts()
    shown = list(sizes.index[:max_groups])
    edges = np.histogram_bin_edges(data["x"], bins=bins)
    cut = float(np.quantile(data["x"], 1.0 - top_fraction))
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.get_cmap("tab10")
    for i, name in enumerate(shown):
        x = data.loc[data["g"] == name, "x"]
        top_share = float((x >= cut).mean())
        ax.hist(x, bins=edges, density=True, histtype="step", linewidth=1.8, color=colours(i % 10),
                label=f"{name} (n={len(x)}, {100 * top_share:.0f}% in top)")
        ax.axvline(float(x.median()), color=colours(i % 10), linestyle=":", linewidth=1)
    ax.axvline(cut, color="black", linestyle="--", linewidth=1, label=f"top {100 * top_fraction:.0f}% from here")
    hidden = len(sizes) - len(shown)
    ax.set_title(f"log_influence by {group_column}" + (f" ({hidden} smaller groups not shown)" if hidden else ""))
    ax.set_xlabel("log_influence (natural log of self-influence)")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    image = figure_to_image(fig)
    plt.close(fig)
    return image



def flagged_gallery(table: pd.DataFrame, images_by_id: ImagesById, flag: str, reason: str, what: str, k: int = 24,
                    columns: int = 8, cell: int = 64) -> Image.Image:
    """The first k rows whose boolean column `flag` is True, in table order. Captions: the end of the
    sample_id, then the row's `reason` value. `what` names the flagged samples in the title."""
    if not {"sample_id", flag} <= set(table.columns):
        return placeholder(f"{what}: the table has no {flag} column")
    flagged = table[table[flag].fillna(False).astype(bool)]
    if flagged.empty:
        return placeholder(f"{what}: no sample is flagged")
    shown = flagged.head(k)
    captions = [f"{short_id(r['sample_id'], 12)}\n{r.get(reason, '')}" for _, r in shown.iterrows()]
    return image_grid([image_of(images_by_id, str(s)) for s in shown["sample_id"]], captions,
                      title=f"{what}: {len(shown)} of {len(flagged)} shown", columns=columns, cell=cell)


def group_histogram_panel(table: pd.DataFrame, groups: Sequence[str]) -> Image.Image:
    """`group_histograms` for each column of `groups`, one below the other; a placeholder without groups."""
    histograms = [group_histograms(table, column) for column in groups]
    if not histograms:
        return placeholder("log_influence per group: no group column was given")
    return stack(histograms) if len(histograms) > 1 else histograms[0]

