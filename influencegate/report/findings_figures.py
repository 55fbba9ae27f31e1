"""Figures of the findings (issue 4): duplicate and outlier galleries, log_influence per group, a t-SNE map of
the embeddings, and one self-contained HTML page per run.

Pure PIL / matplotlib (Agg backend), no tracking calls: callers decide where the PNGs and the page go. Every
figure function returns an RGB PIL image and never raises on empty input (no duplicate group, no outlier
score, a missing group column, too few points): it returns a placeholder image that says what is missing.

Images of samples come from `images_by_id` (type ImagesById): a mapping or a callable sample_id -> array of
pixels in [0, 1], H x W (grey) or C x H x W (C = 1 or 3). A missing id (KeyError, or a None value) is drawn as a
grey tile. `dataset_images(dataset)` builds one from an ImageDataset (denormalised, as influence_grids does).

embedding_map runs scikit-learn's t-SNE, whose OpenMP threads busy-wait on a shared, oversubscribed machine:
there, limit them (OMP_NUM_THREADS=1, or threadpoolctl.threadpool_limits(1, user_api="openmp")).
"""
from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from influencegate.report.figures import _figure_to_image, dataset_images, image_grid, pyplot

ImagesById = Union[Mapping[str, np.ndarray], Callable[[str], np.ndarray]]
#: drawn for a sample whose image is not available (C x H x W, mid grey)
_MISSING = np.full((1, 8, 8), 0.5, dtype=np.float32)


def placeholder(text: str, size: tuple[int, int] = (480, 120)) -> Image.Image:
    """A white RGB image of `size` (width, height) pixels saying `text` (what is missing and why)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, size[0] - 1, size[1] - 1], outline=(180, 180, 180))
    draw.multiline_text((10, 10), text, fill="black")
    return image


def _image(images_by_id: ImagesById, sample_id: str) -> np.ndarray:
    try:
        array = images_by_id(sample_id) if callable(images_by_id) else images_by_id[sample_id]
    except (KeyError, IndexError):
        return _MISSING
    return _MISSING if array is None else np.asarray(array, dtype=np.float32)


def _short(sample_id: Any, width: int = 12) -> str:
    """The end of an id (its most specific part, e.g. the file name), at most `width` characters."""
    text = str(sample_id)
    return text if len(text) <= width else "~" + text[-(width - 1):]


def _percentile(row: pd.Series) -> str:
    value = pd.to_numeric(pd.Series([row.get("influence_percentile")]), errors="coerce").iloc[0]
    return "p=n/a" if pd.isna(value) else f"p={value:.0f}"


def _stack(images: Sequence[Image.Image], title: str = "") -> Image.Image:
    """Images one below the other on white, under an optional title line (wide enough for the title)."""
    title_h = 20 if title else 0
    title_w = int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(title)) + 12 if title else 0
    width = max(title_w, *(image.size[0] for image in images))
    canvas = Image.new("RGB", (width, title_h + sum(image.size[1] for image in images)), "white")
    if title:
        ImageDraw.Draw(canvas).text((6, 4), title, fill="black")
    y = title_h
    for image in images:
        canvas.paste(image, (0, y))
        y += image.size[1]
    return canvas


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
        captions = [f"{_short(r['sample_id'])}\n{'copy' if r['_copy'] else 'keep'} {_percentile(r)}"
                    for _, r in shown.iterrows()]
        more = f", {len(group) - len(shown)} more not shown" if len(group) > len(shown) else ""
        rows.append(image_grid([_image(images_by_id, str(s)) for s in shown["sample_id"]], captions,
                               title=f"group {g}: {len(group)} members{more}", columns=max_members, cell=cell))
    total = len(order)
    return _stack(rows, f"near-duplicate groups: {min(total, max_groups)} of {total} shown (largest first); "
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
    captions = [f"{_short(r['sample_id'])}\n{r['_score']:.1f}{'*' if flag else ''} {_percentile(r)}"
                for (_, r), flag in zip(top.iterrows(), flagged)]
    n_flagged = int(table["is_outlier"].fillna(False).astype(bool).sum()) if "is_outlier" in table.columns else 0
    title = (f"{len(top)} highest outlier scores (* = is_outlier; {n_flagged} flagged in all); "
             "p = influence percentile")
    return image_grid([_image(images_by_id, str(s)) for s in top["sample_id"]], captions, title=title,
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
    image = _figure_to_image(fig)
    plt.close(fig)
    return image


def embedding_map(embeddings: np.ndarray, table: pd.DataFrame, seed: int = 0, max_points: int = 5000,
                  sample_ids: Sequence[str] | None = None, perplexity: float = 30.0) -> Image.Image:
    """A 2-D t-SNE map (scikit-learn, PCA initialisation, random_state=seed) of the embeddings (M x D, rows
    aligned with the table as in findings.base.align_embeddings), coloured by log_influence; near-duplicate
    group members drawn as black crosses, outliers (is_outlier) circled in red. Above max_points samples a
    seeded random subset is mapped, flagged samples first. perplexity is capped at (n - 1) / 3."""
    from influencegate.findings.base import align_embeddings

    positions, emb = align_embeddings(table, embeddings, sample_ids, "embedding_map")
    rows = table.iloc[positions]
    n = len(rows)
    if n < 5:
        return placeholder(f"embedding map: {n} samples with embeddings, t-SNE needs at least 5")
    grouped = (pd.to_numeric(rows["duplicate_group"], errors="coerce").fillna(-1).to_numpy() >= 0
               if "duplicate_group" in rows.columns else np.zeros(n, dtype=bool))
    outlier = (rows["is_outlier"].fillna(False).astype(bool).to_numpy()
               if "is_outlier" in rows.columns else np.zeros(n, dtype=bool))
    pick = np.arange(n)
    if n > max_points:
        rng = np.random.default_rng(seed)
        flagged, plain = np.flatnonzero(grouped | outlier), np.flatnonzero(~(grouped | outlier))
        flagged = rng.permutation(flagged)[:max_points]
        pick = np.sort(np.concatenate([flagged, rng.choice(plain, max_points - len(flagged), replace=False)]))
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    x = emb[pick].astype(np.float64)
    if x.shape[1] > 50:
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    xy = TSNE(n_components=2, perplexity=min(perplexity, (len(pick) - 1) / 3.0), init="pca", random_state=seed
              ).fit_transform(x)
    colour = pd.to_numeric(rows["log_influence"], errors="coerce").to_numpy()[pick] \
        if "log_influence" in rows.columns else np.full(len(pick), np.nan)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 6))
    known = np.isfinite(colour)
    ax.scatter(xy[~known, 0], xy[~known, 1], s=8, c="lightgrey", label="no log_influence" if (~known).any() else None)
    points = ax.scatter(xy[known, 0], xy[known, 1], s=8, c=colour[known], cmap="viridis")
    if known.any():
        fig.colorbar(points, ax=ax, label="log_influence")
    g, o = grouped[pick], outlier[pick]
    if g.any():
        ax.scatter(xy[g, 0], xy[g, 1], s=28, marker="x", c="black", linewidths=1, label=f"near-duplicate ({g.sum()})")
    if o.any():
        ax.scatter(xy[o, 0], xy[o, 1], s=70, facecolors="none", edgecolors="red", linewidths=1.2,
                   label=f"outlier ({o.sum()})")
    if g.any() or o.any() or (~known).any():
        ax.legend(fontsize=8, loc="best")
    ax.set_title(f"t-SNE of the embeddings: {len(pick)} of {n} samples (seed {seed})")
    ax.set_xticks([])
    ax.set_yticks([])
    image = _figure_to_image(fig)
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
    captions = [f"{_short(r['sample_id'])}\n{r.get(reason, '')}" for _, r in shown.iterrows()]
    return image_grid([_image(images_by_id, str(s)) for s in shown["sample_id"]], captions,
                      title=f"{what}: {len(shown)} of {len(flagged)} shown", columns=columns, cell=cell)


def group_histogram_panel(table: pd.DataFrame, groups: Sequence[str]) -> Image.Image:
    """`group_histograms` for each column of `groups`, one below the other; a placeholder without groups."""
    histograms = [group_histograms(table, column) for column in groups]
    if not histograms:
        return placeholder("log_influence per group: no group column was given")
    return _stack(histograms) if len(histograms) > 1 else histograms[0]


def render_all(dataset: Any, encoder: Any, table: pd.DataFrame, groups: Sequence[str] = (), device: str = "cpu",
               seed: int = 0, max_points: int = 5000, batch_size: int = 256, config: Any = None) -> dict[str, Image.Image]:
    """The findings figures of a scored dataset, by short name: each enabled finding's figures (findings
    registry; by default duplicate_gallery, outlier_gallery, group_histograms) and embedding_map.
    dataset: the ImageDataset that was scored; encoder: its encoder (embeddings from one forward pass, as
    audit.find_issues does); table: the scores table with the findings' columns (findings.run.find_all);
    config: the FindingsConfig (or its mapping) that ran, default FindingsConfig(groups=groups)."""
    import torch

    from influencegate.findings.run import draw_figures
    from influencegate.influence.scorer import encode

    with torch.no_grad():
        embeddings = encode(encoder.to(device).eval(), dataset, batch_size, torch.device(device))
    figures = draw_figures(table, config if config is not None else {"groups": list(groups)}, dataset_images(dataset))
    return {**figures, "embedding_map": embedding_map(embeddings, table, seed=seed, max_points=max_points,
                                                      sample_ids=dataset.sample_ids)}


def png_base64(image: Image.Image) -> str:
    """The image as PNG bytes, base64 (ASCII), for a data: URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    return str(value)


def html_summary(title: str, metrics: Mapping[str, Any], sections: Mapping[str, str],
                 figures: Mapping[str, Image.Image], described: Mapping[str, Any] | None = None) -> str:
    """One self-contained HTML page: the title, a table of the metrics (name, value; floats to 4 significant
    digits; with `described`, {name: findings.registry.Metric}, also each metric's unit and meaning), one block of plain-language text per section (heading = key; blank lines separate paragraphs,
    e.g. Fairness.text()), and the figures as inline PNGs (base64 data: URIs, caption = key). All text is
    HTML-escaped."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
             "figure{margin:1.5em 0}img{max-width:100%;border:1px solid #ddd}figcaption{color:#555}</style>",
             "</head><body>", f"<h1>{esc(title)}</h1>"]
    if metrics:
        described = described or {}
        extra = "<th>unit</th><th>meaning</th>" if described else ""
        parts.append(f"<h2>Metrics</h2><table><tr><th>metric</th><th>value</th>{extra}</tr>")
        for k, v in metrics.items():
            about = described.get(k)
            cells = (f"<td>{esc(about.unit)}</td><td>{esc(about.meaning)}</td>" if about is not None
                     else "<td></td><td></td>" if described else "")
            parts.append(f"<tr><td>{esc(str(k))}</td><td>{esc(_value(v))}</td>{cells}</tr>")
        parts.append("</table>")
    for heading, text in sections.items():
        paragraphs = [p.strip() for p in str(text).split("\n\n") if p.strip()]
        parts.append(f"<h2>{esc(str(heading))}</h2>")
        parts += [f"<p>{esc(p).replace(chr(10), '<br>')}</p>" for p in paragraphs]
    if figures:
        parts.append("<h2>Figures</h2>")
        for name, image in figures.items():
            parts.append(f'<figure><img alt="{esc(str(name), quote=True)}" '
                         f'src="data:image/png;base64,{png_base64(image)}"><figcaption>{esc(str(name))}'
                         "</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
