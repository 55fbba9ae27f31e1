"""The findings' figures of a run (each finding's own, drawn through the registry), a t-SNE map of the embeddings,
and one self-contained HTML page per run. The galleries themselves are in `influencegate.plotting.galleries`.

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
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from influencegate.findings.base import align_embeddings
from influencegate.findings.run import draw_figures
from influencegate.influence.loading import encode
from influencegate.plotting.canvas import figure_to_image, placeholder, pyplot
from influencegate.report.figures import dataset_images
from influencegate.report.map_layout import tsne_layout


def embedding_map(embeddings: np.ndarray, table: pd.DataFrame, seed: int = 0, max_points: int = 5000,
                  sample_ids: Sequence[str] | None = None, perplexity: float = 30.0,
                  layout: tuple[np.ndarray, np.ndarray] | None = None) -> Image.Image:
    """A 2-D t-SNE map (report.map_layout.tsne_layout: scikit-learn, PCA initialisation, random_state=seed) of
    the embeddings (M x D, rows aligned with the table as in findings.base.align_embeddings), coloured by
    log_influence; near-duplicate group members drawn as black crosses, outliers (is_outlier) circled in red.
    Above max_points samples a seeded random subset is mapped, flagged samples first. perplexity is capped at
    (n - 1) / 3. layout: (positions among the M embeddings, xy) already laid out (map_layout.placed_layout)."""
    positions, emb = align_embeddings(table, embeddings, sample_ids, "embedding_map")
    rows = table.iloc[positions]
    n = len(rows)
    if n < 5:
        return placeholder(f"embedding map: {n} samples with embeddings, t-SNE needs at least 5")
    grouped = (pd.to_numeric(rows["duplicate_group"], errors="coerce").fillna(-1).to_numpy() >= 0
               if "duplicate_group" in rows.columns else np.zeros(n, dtype=bool))
    outlier = (rows["is_outlier"].fillna(False).astype(bool).to_numpy()
               if "is_outlier" in rows.columns else np.zeros(n, dtype=bool))
    pick, xy = layout if layout is not None else tsne_layout(emb, grouped | outlier, seed, max_points, perplexity)
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
    how = "t-SNE of the embeddings" if layout is None else "previous t-SNE, new samples at their neighbours"
    ax.set_title(f"{how}: {len(pick)} of {n} samples (seed {seed})")
    ax.set_xticks([])
    ax.set_yticks([])
    image = figure_to_image(fig)
    plt.close(fig)
    return image


def render_all(dataset: Any, encoder: Any, table: pd.DataFrame, groups: Sequence[str] = (), device: str = "cpu",
               seed: int = 0, max_points: int = 5000, batch_size: int = 256, config: Any = None,
               embeddings: np.ndarray | None = None,
               layout: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Image.Image]:
    """The findings figures of a scored dataset, by short name: each enabled finding's figures (findings
    registry; by default duplicate_gallery, outlier_gallery, group_histograms) and embedding_map.
    dataset: the ImageDataset that was scored; encoder: its encoder (embeddings from one forward pass, as
    audit.find_issues does); table: the scores table with the findings' columns (findings.run.find_all);
    config: the FindingsConfig (or its mapping) that ran, default FindingsConfig(groups=groups); embeddings:
    the M x D embeddings when the findings already computed them (None: one forward pass here); layout: the
    map's (positions, xy) when already laid out (report.map_layout; None: t-SNE here)."""
    if embeddings is None:
        import torch

        with torch.no_grad():
            embeddings = encode(encoder.to(device).eval(), dataset, batch_size, torch.device(device))
    figures = draw_figures(table, config if config is not None else {"groups": list(groups)}, dataset_images(dataset))
    return {**figures, "embedding_map": embedding_map(embeddings, table, seed=seed, max_points=max_points,
                                                      sample_ids=dataset.sample_ids, layout=layout)}


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
