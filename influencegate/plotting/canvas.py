"""Drawing primitives every figure of the package shares: matplotlib on Agg, a figure to a PIL image, a captioned
image grid, a placeholder that says what is missing, images stacked under a title, and the lookup of a sample's
pixels by id.

Pure PIL / matplotlib, no tracking calls and no knowledge of findings or audits: the findings (their galleries)
and the report both draw with these, so they sit below both.
"""
from __future__ import annotations

import io
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np
from PIL import Image, ImageDraw

#: Images of samples by id: a mapping or a callable sample_id -> pixels in [0, 1], H x W (grey) or C x H x W
#: (C = 1 or 3). A missing id (KeyError, or a None value) is drawn as a grey tile.
ImagesById = Union[Mapping[str, np.ndarray], Callable[[str], np.ndarray]]
#: drawn for a sample whose image is not available (C x H x W, mid grey)
MISSING = np.full((1, 8, 8), 0.5, dtype=np.float32)


def figure_to_image(fig: Any) -> Image.Image:
    """A matplotlib figure as an RGB PIL image (PNG at 110 dpi, tight bounding box)."""
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



def to_uint8(image: np.ndarray) -> np.ndarray:
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
        tile = Image.fromarray(to_uint8(array)).resize((cell, cell), Image.NEAREST)
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



def placeholder(text: str, size: tuple[int, int] = (480, 120)) -> Image.Image:
    """A white RGB image of `size` (width, height) pixels saying `text` (what is missing and why)."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    draw.rectangle([0, 0, size[0] - 1, size[1] - 1], outline=(180, 180, 180))
    draw.multiline_text((10, 10), text, fill="black")
    return image



def image_of(images_by_id: ImagesById, sample_id: str) -> np.ndarray:
    """The pixels of `sample_id` (C x H x W float32 in [0, 1]), MISSING when `images_by_id` has none."""
    try:
        array = images_by_id(sample_id) if callable(images_by_id) else images_by_id[sample_id]
    except (KeyError, IndexError):
        return MISSING
    return MISSING if array is None else np.asarray(array, dtype=np.float32)



def stack(images: Sequence[Image.Image], title: str = "") -> Image.Image:
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

