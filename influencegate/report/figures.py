"""Figures of an audit: the log_influence histogram and grids of the most / least influential images.

Pure PIL / matplotlib (Agg backend), no tracking calls: callers decide where the PNGs go.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pandas as pd
from PIL import Image

from influencegate.plotting.canvas import caption_width, figure_to_image, image_grid, pyplot, short_id


def influence_histogram(table: pd.DataFrame, title: str = "log_influence", bins: int = 50) -> Image.Image:
    """Histogram of the scored rows' log_influence (natural log of the self-influence), as an RGB PIL image.

    High-influence samples (`is_high_influence`, when the column exists) are drawn in a second colour.
    """
    plt = pyplot()
    values = pd.to_numeric(table.get("log_influence"), errors="coerce")
    finite = values[np.isfinite(values)] if values is not None else pd.Series(dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if len(finite):
        edges = np.histogram_bin_edges(finite, bins=bins)
        high = table.get("is_high_influence")
        if high is not None and bool(high.fillna(False).any()):
            mask = high.fillna(False).astype(bool).reindex(finite.index, fill_value=False)
            ax.hist([finite[~mask], finite[mask]], bins=edges, stacked=True, color=["#4c72b0", "#dd8452"],
                    label=["scored", "high influence"])
            ax.legend()
        else:
            ax.hist(finite, bins=edges, color="#4c72b0")
    else:
        ax.text(0.5, 0.5, "no scored samples", ha="center", va="center", transform=ax.transAxes)
    n_errors = int(table["error"].notna().sum()) if "error" in table.columns else 0
    ax.set_title(f"{title} (n={len(finite)}, errors={n_errors})")
    ax.set_xlabel("log_influence (natural log of self-influence)")
    ax.set_ylabel("samples")
    image = figure_to_image(fig)
    plt.close(fig)
    return image



def dataset_images(dataset: Any) -> Callable[[str], np.ndarray]:
    """images_by_id for an ImageDataset: sample_id -> C x H x W float32 pixels in [0, 1] (denormalised with the
    dataset's mean and std); KeyError for an id without an image (e.g. an unreadable file)."""
    from influencegate.data import denormalize

    index = {sid: i for i, sid in enumerate(dataset.sample_ids)}

    def lookup(sample_id: str) -> np.ndarray:
        return denormalize(dataset.batch([index[sample_id]])[0], dataset).cpu().numpy()

    return lookup


def influence_grids(table: pd.DataFrame, dataset: Any, k: int = 16) -> tuple[Image.Image, Image.Image]:
    """(most influential, least influential) grids of the k top / bottom scored samples of `dataset`
    (an ImageDataset: images are denormalised for display). Captions: the influence rank and the sample id."""
    images = dataset_images(dataset)
    scored = table[table["influence"].notna() & table["sample_id"].isin(set(dataset.sample_ids))]
    scored = scored.sort_values("influence_rank")

    def grid(rows: pd.DataFrame, title: str, cell: int = 72) -> Image.Image:
        width = caption_width(cell)
        captions = [f"#{int(r)}\n{short_id(s, width)}" for r, s in zip(rows["influence_rank"], rows["sample_id"])]
        return image_grid([images(s) for s in rows["sample_id"]], captions, title=title, cell=cell)

    return (grid(scored.head(k), f"{dataset.name}: {k} most influential"),
            grid(scored.tail(k).iloc[::-1], f"{dataset.name}: {k} least influential"))
