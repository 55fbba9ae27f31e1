"""Trace-back galleries of a pair audit: one row per mispredicted held-out query, the query image with its
true and predicted class, then the training pairs traced to it (image, caption, influence). Pure PIL."""
from __future__ import annotations

import textwrap

import pandas as pd
from PIL import Image

from influencegate.plotting.canvas import ImagesById, caption_width, image_grid, image_of, placeholder, short_id, stack

#: Pixels of one image cell of a trace-back row.
TRACE_CELL = 96
TITLES = {"plain": "plain ECIF influence (predicted change of the query's loss when the pair is removed, nats)",
          "relative": "relative influence (influence / sqrt(g^T H^-1 g): pairs that move every loss a lot "
                      "do not dominate)"}


def trace_row(query: pd.DataFrame, query_images: ImagesById, pair_images: ImagesById,
              cell: int = TRACE_CELL) -> Image.Image:
    """One row: the query (first row of ``query``: query_id, true_label, predicted_label, query_loss), then
    each traced pair of ``query`` in rank order (sample_id, caption, the value of its kind)."""
    head, width = query.iloc[0], caption_width(cell)
    value = "influence" if head["kind"] == "plain" else "relative_influence"
    captions = [f"query {head['query']}\ntrue {short_id(head['true_label'], width - 5)}\npredicted "
                f"{short_id(head['predicted_label'], width - 10)}\nloss {head['query_loss']:.2f}\n"
                f"{short_id(head['query_id'], width)}"]
    captions += [f"#{r['rank']} {r[value]:.2e}\n{short_id(r['sample_id'], width)}\n"
                 + "\n".join(textwrap.wrap(str(r["caption"]), width)[:3]) for _, r in query.iterrows()]
    images = [image_of(query_images, str(head["query_id"]))]
    images += [image_of(pair_images, str(s)) for s in query["sample_id"]]
    return image_grid(images, captions, columns=len(images), cell=cell)


def trace_gallery(trace: pd.DataFrame, kind: str, query_images: ImagesById, pair_images: ImagesById,
                  cell: int = TRACE_CELL) -> Image.Image:
    """The ``kind`` ("plain" | "relative") rows of a trace-back table (``ecif.trace.trace_mispredictions``),
    one image row per query (worst first), under a title; a placeholder when there is none.
    query_images / pair_images: pixels of the held-out queries / training pairs by sample_id."""
    rows = trace[trace["kind"] == kind].sort_values(["query", "rank"])
    if rows.empty:
        return placeholder(f"trace-back ({kind}): no mispredicted held-out query\n(or no held-out queries: "
                           "a reference set is needed)")
    return stack([trace_row(group, query_images, pair_images, cell) for _, group in rows.groupby("query", sort=True)],
                 f"{rows['query'].nunique()} worst mispredicted held-out queries and their top "
                 f"{int(rows['rank'].max())} training pairs by {TITLES[kind]}; most negative first: removing "
                 "them is predicted to lower the query's loss most")
