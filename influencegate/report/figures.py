"""Figures of an audit: the log_influence histogram and grids of the most / least influential images.

Pure PIL / matplotlib (Agg backend), no tracking calls: callers decide where the PNGs go.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw


def _figure_to_image(fig: Any) -> Image.Image:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB")
    image.load()
    return image


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


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
    image = _figure_to_image(fig)
    plt.close(fig)
    return image


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """C x H x W array with pixels in [0, 1] -> H x W x 3 uint8."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    image = np.clip(image, 0.0, 1.0)
    if image.shape[0] == 1:
        image = np.repeat(image, 3, axis=0)
    return (image[:3].transpose(1, 2, 0) * 255).round().astype(np.uint8)


def caption_width(cell: int) -> int:
    """How many characters of a caption line fit under a grid cell of `cell` pixels."""
    return max(12, cell // 6)


def image_grid(images: Sequence[np.ndarray], captions: Sequence[str], title: str = "", columns: int = 8,
               cell: int = 64) -> Image.Image:
    """A captioned grid of images (each C x H x W, pixels in [0, 1]) scaled to `cell` pixels, as RGB PIL.
    A caption may hold several lines ("\n"); each line is cut to `caption_width(cell)` characters."""
    count = len(images)
    columns = max(1, min(columns, count or 1))
    rows = max(1, -(-count // columns))
    lines = [str(caption).split("\n") for caption in captions]
    line_h, width = 12, caption_width(cell)
    caption_h, title_h = line_h * max((len(c) for c in lines), default=1) + 2, 18 if title else 0
    grid = Image.new("RGB", (columns * (cell + 4) + 4, title_h + rows * (cell + caption_h + 4) + 4), "white")
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 2), title, fill="black")
    for i, (array, caption) in enumerate(zip(images, lines)):
        r, c = divmod(i, columns)
        x, y = 4 + c * (cell + 4), title_h + 4 + r * (cell + caption_h + 4)
        tile = Image.fromarray(_to_uint8(array)).resize((cell, cell), Image.NEAREST)
        grid.paste(tile, (x, y))
        for k, line in enumerate(caption):
            draw.text((x, y + cell + 1 + k * line_h), line[:width], fill="black")
    if count == 0:
        draw.text((4, title_h + 4), "no images", fill="black")
    return grid


def short_id(sample_id: str, width: int) -> str:
    """`sample_id` cut to `width` characters for a caption, keeping its end (where ids differ): "~" + tail."""
    text = str(sample_id)
    return text if len(text) <= width else "~" + text[-(width - 1):]


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
