"""Exact and near-duplicates: the samples linked by content hash, pixel or multi-view similarity and/or the
embedding cosine (duplicate_links.py), grouped as connected components, one canonical member kept per group
(docs/design.md sections 2 and 5); and the finding's plug-in."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import connected_components

from influencegate.findings.appended import Previous
from influencegate.findings.base import Finding, align_embeddings, check_table
from influencegate.findings.duplicate_edges import duplicate_edges
from influencegate.findings.duplicate_links import IMAGE_MAX_SAMPLES, VIEW_EXACT_MAX_SAMPLES, image_paths, link_signals
from influencegate.findings.image_similarity import ImageMatch
from influencegate.findings.image_stats import StatisticsStream
from influencegate.findings.registry import (Artifact, FindingInputs, FindingPlugin, Metric, Outcome, between,
                                             flagged_ids, register)
from influencegate.findings.similarity import DEFAULT_BLOCK, check_index
from influencegate.findings.views import ViewMatch
from influencegate.plotting.galleries import duplicate_gallery

#: Default cosine threshold (of the centred, L2-normalised embeddings) for a near-duplicate pair by embeddings.
#: Chosen by measurement (benchmarks/findings_quality.py: digits + 60 planted near-copies + 20 exact copies,
#: SmallCNN SimCLR 15 epochs, four runs with different encoder initialisations, whose sweeps differ): the
#: highest-recall threshold whose precision stayed >= 0.85 in every run (0.87-0.97; 0.993-0.994 fell to
#: 0.73-0.76 in two runs; 0.996+ loses recall). It finds noisy copies but almost no shifted or cropped ones:
#: the pixel similarity (ImageMatch) is the default signal whenever images are given.
#: Embedding-dependent: re-measure for another encoder.
NEAR_DUPLICATE_THRESHOLD = 0.995
KEEP_RULES = ("first", "most_influential", "least_influential")
NEAR_SIGNALS = ("auto", "image", "embedding", "both", "none")
MATCHERS = ("auto", "pixels", "views")
SEARCHES = ("auto", "exact", "index")


class Duplicates(Finding):
    """Near-duplicate groups. Columns: duplicate_group (int, -1 = none), is_duplicate, duplicate_of.

    Links between two samples, any of:
      * exact (exact=True, needs `images`): identical image tensors (content hash);
      * image (needs `images`), by one of two matchers (`matcher`; "auto" picks by the shorter image side):
        - "pixels" (side <= PIXEL_MAX_SIDE = 10 px): the shift/crop-tolerant pixel similarity of thumbnails,
          `image`'s absolute or relative rule (ImageMatch; image_similarity.py), all pairs. On the digits
          benchmark with planted copies (noise, shifts of 1-2 px, crops; benchmarks/findings_quality.py):
          recall 1.0 at precision >= 0.997 on five planting/encoder seeds, where the embedding cosine alone
          reaches recall 0.17-0.30 (cleanlab's near_duplicate check on the same embeddings: 0.23-0.33);
        - "views" (larger images): the multi-view low-frequency matcher (`views`: ViewMatch; views.py)
          proposes pairs, an aligned check (align.py: scale and sub-pixel shift estimated per pair, NCC of
          the aligned overlap) decides, at any resolution (held-out natural photos at 32-224 px:
          benchmarks/results/duplicates_natural.json), over all pairs up to `view_exact_max_samples`
          examined images and over the candidate pairs of the streaming index above (`search`;
          duplicate_index.py: flat memory, thumbnails on disk, faiss HNSW when installed);
      * embedding (needs `embeddings`): cosine similarity >= threshold of the embeddings, centred first when
        center=True. SSL embeddings share a large common direction: on the digits benchmark the raw cosine of
        a sample to its nearest neighbour has median 0.999, so any threshold chains almost everything into one
        group; centred, the median is 0.95 and planted copies separate.
    near: which near-duplicate signal links: "auto" (default) = image when `images` are given and at most
      `image_max_samples` samples are examined, else embedding; "image", "embedding", "both" (either links),
      or "none" (exact duplicates only). With the views matcher "auto" stays on images at any size (the
      index is sub-quadratic); "image" and "both" with the pixel matcher search all pairs at any size.
    matcher: "auto" (default; PIXEL_MAX_SIDE), "pixels" or "views". search: the views matcher's pairs,
      "auto" (default: all pairs up to view_exact_max_samples = VIEW_EXACT_MAX_SAMPLES images, index
      candidates above), "exact" or "index". summary() and the finding's text name the path that ran.
    index: the embedding search, "exact" (blockwise, default) or a faiss index ("faiss-flat" exact,
      "faiss-hnsw" approximate; pairs among each sample's 10 nearest neighbours) for very large sets.
    image_max_samples: the scale guard of near="auto" with the pixel matcher (IMAGE_MAX_SAMPLES, measured:
      see there). Above it the embedding cosine links (summary(): signals "embedding", auto_fallback True); with images but no
      embeddings that is a ValueError rather than a search of hours.
    Groups are the connected components of the links (so a chain a~b~c is one group even when a and c are
    not linked themselves).
    keep: the canonical member of a group, the one kept (`duplicate_of` names it for every member):
      "first" (default) = the first in table order: stable across scorer seeds and devices, and in a dataset
        with appended copies it is the original; "most_influential" = the lowest influence_rank (ties: first);
        "least_influential" = the highest influence_rank.
    Group ids are 0, 1, ... in the table order of their canonical members.
    image, views: the two matchers' settings, an ImageMatch / ViewMatch or a mapping of its fields (YAML-style).
    block_size, device: tiles of the blockwise searches (similarity.py, image_similarity.py) and where they run.
    """

    name = "duplicates"
    columns = ("duplicate_group", "is_duplicate", "duplicate_of")

    def __init__(self, threshold: float = NEAR_DUPLICATE_THRESHOLD, exact: bool = True, keep: str = "first",
                 center: bool = True, block_size: int = DEFAULT_BLOCK, device: str = "cpu", near: str = "auto",
                 image: ImageMatch | Mapping[str, Any] = ImageMatch(),
                 image_max_samples: int = IMAGE_MAX_SAMPLES, index: str = "exact", matcher: str = "auto",
                 views: ViewMatch | Mapping[str, Any] = ViewMatch(), search: str = "auto",
                 view_exact_max_samples: int = VIEW_EXACT_MAX_SAMPLES) -> None:
        if not -1.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold is a cosine similarity in [-1, 1], got {threshold}")
        if keep not in KEEP_RULES:
            raise ValueError(f"keep must be one of {KEEP_RULES}, got {keep!r}")
        if near not in NEAR_SIGNALS:
            raise ValueError(f"near must be one of {NEAR_SIGNALS}, got {near!r}")
        if isinstance(image, Mapping):  # YAML-style configuration
            image = ImageMatch(**image)
        if not isinstance(image, ImageMatch):
            raise ValueError(f"image must be an ImageMatch or a mapping of its fields, got {type(image).__name__}")
        if int(image_max_samples) < 0:
            raise ValueError(f"image_max_samples must be >= 0, got {image_max_samples}")
        if matcher not in MATCHERS:
            raise ValueError(f"matcher must be one of {MATCHERS}, got {matcher!r}")
        if search not in SEARCHES:
            raise ValueError(f"search must be one of {SEARCHES}, got {search!r}")
        if matcher == "pixels" and search == "index":
            raise ValueError("search='index' runs the multi-view matcher; matcher='pixels' searches all pairs")
        if isinstance(views, Mapping):
            views = ViewMatch(**{k: tuple(v) if isinstance(v, list) else v for k, v in views.items()})
        if not isinstance(views, ViewMatch):
            raise ValueError(f"views must be a ViewMatch or a mapping of its fields, got {type(views).__name__}")
        if int(view_exact_max_samples) < 0:
            raise ValueError(f"view_exact_max_samples must be >= 0, got {view_exact_max_samples}")
        self.matcher, self.views, self.search = matcher, views, search
        self.view_exact_max_samples = int(view_exact_max_samples)
        self.threshold, self.exact, self.keep, self.near, self.image = float(threshold), exact, keep, near, image
        self.center, self.block_size, self.device = center, block_size, device
        self.image_max_samples = int(image_max_samples)
        self.index = check_index(index)
        self._result: pd.DataFrame | None = None
        self._table: pd.DataFrame | None = None
        self._stats: dict[str, Any] = {}
        self.state: dict[str, Any] = {}

    def find(self, table: pd.DataFrame, embeddings: np.ndarray | None = None, *,
             images: torch.Tensor | np.ndarray | None = None, sample_ids: Sequence[str] | None = None,
             previous: Previous | None = None, statistics: StatisticsStream | None = None,
             **_: Any) -> pd.DataFrame:
        """embeddings: M x D for the readable rows (see base.align_embeddings); images: M x C x H x W in the
        same order (as given to the scorer, any normalisation), for the exact check and the image similarity.
        At least one of them is needed. previous: the previous version's state (findings.appended; then
        `state` holds this version's). statistics: filled with the images' statistics (image_stats) where the
        index's streaming pass reads the images, for the outliers finding (FindingInputs.shared)."""
        needed = ["sample_id"] + (["influence_rank"] if self.keep != "first" else [])
        check_table(table, needed, "duplicates")
        if embeddings is None and images is None:
            raise ValueError("duplicates: pass images (exact and near-duplicates) and/or embeddings (near-duplicates)")
        rows = embeddings if embeddings is not None else np.zeros((len(images), 1), np.float32)
        positions, emb = align_embeddings(table, rows, sample_ids, "duplicates")
        m = len(positions)
        if images is not None and len(images) != m:
            raise ValueError(f"duplicates: {len(images)} images for {m} embeddings/rows")
        matcher, search = image_paths(images, self.matcher, self.search, self.view_exact_max_samples)
        use_image, use_embedding = link_signals(self.near, embeddings is not None, images is not None, m, matcher,
                                                self.image_max_samples)
        ii, jj, counts, exact_members, self.state = duplicate_edges(self, emb, images, use_image, use_embedding,
                                                                    matcher, search, previous, statistics)
        graph = sp.coo_matrix((np.ones(len(ii), dtype=np.int8), (ii, jj)), shape=(m, m)).tocsr()
        _, labels = connected_components(graph, directed=False)

        # rows (table positions) of each multi-member component, canonical member chosen by the keep rule
        group = np.full(len(table), -1, dtype=np.int64)
        is_dup = np.zeros(len(table), dtype=bool)
        dup_of = np.full(len(table), None, dtype=object)
        sizes = np.bincount(labels, minlength=m) if m else np.zeros(0, int)
        comp_rows: dict[int, list[int]] = {}
        for local, comp in enumerate(labels):
            if sizes[comp] > 1:
                comp_rows.setdefault(int(comp), []).append(int(positions[local]))
        ranks = (pd.to_numeric(table["influence_rank"], errors="coerce").to_numpy(dtype=float)
                 if "influence_rank" in table.columns else None)
        canon = {c: self._canonical(sorted(rows), ranks) for c, rows in comp_rows.items()}
        ids = table["sample_id"].astype(str).to_numpy()
        for gid, comp in enumerate(sorted(canon, key=lambda c: canon[c])):
            keep_row = canon[comp]
            for row in comp_rows[comp]:
                group[row] = gid
                dup_of[row] = ids[keep_row]
                is_dup[row] = row != keep_row
        result = pd.DataFrame({"duplicate_group": group, "is_duplicate": is_dup, "duplicate_of": dup_of},
                              index=table.index)
        self._result, self._table = result, table
        signals = [name for name, used in (("image", use_image), ("embedding", use_embedding)) if used]
        auto_fallback = self.near == "auto" and images is not None and not use_image
        self._stats = {"signals": "+".join(signals) or "none", "auto_fallback": auto_fallback,
                       "matcher": matcher if use_image else None, "search": search if use_image else None, **counts,
                       "exact_members": int(exact_members.sum()), "examined": int(m)}
        return result

    def _canonical(self, rows: list[int], ranks: np.ndarray | None) -> int:
        if self.keep == "first" or ranks is None:
            return rows[0]
        r = np.array([ranks[x] for x in rows])
        r = np.where(np.isnan(r), np.inf if self.keep == "most_influential" else -np.inf, r)
        pick = np.argmin(r) if self.keep == "most_influential" else np.argmax(r)
        return rows[int(pick)]

    def groups(self) -> pd.DataFrame:
        """`group_members` of the last `find` call."""
        result = self._require_found("_result")
        return group_members(self._table.assign(**{c: result[c] for c in result.columns}))

    def summary(self) -> dict[str, Any]:
        """Settings (near, the signals used, matcher ("pixels"/"views") and search ("exact" all pairs /
        "index" candidates, with `candidates` = pairs checked) of the image similarity, None when it did not
        run, auto_fallback = near="auto" linked by the embedding cosine although
        images were given, because more than image_max_samples were examined; threshold = embedding cosine,
        image_* = ImageMatch), link counts
        per signal (image_pairs_relative: linked by the relative rule only), group counts (groups, members,
        duplicates = removable copies), duplicate_fraction (copies / examined rows), and the median influence
        percentile of the copies and of all members."""
        result = self._require_found("_result")
        table = self._table
        grouped = result["duplicate_group"] >= 0
        out: dict[str, Any] = {
            "near": self.near, "image_max_samples": self.image_max_samples, "threshold": self.threshold,
            "center": self.center, "keep": self.keep,
            "view_exact_max_samples": self.view_exact_max_samples,
            **{f"image_{k}": v for k, v in asdict(self.image).items()},
            **{f"view_{k}": list(v) if isinstance(v, tuple) else v for k, v in asdict(self.views).items()},
            **self._stats,
            "groups": int(result.loc[grouped, "duplicate_group"].nunique()),
            "group_members": int(grouped.sum()),
            "duplicates": int(result["is_duplicate"].sum()),
            "duplicate_fraction": float(result["is_duplicate"].sum() / max(self._stats.get("examined", 0), 1)),
        }
        if "influence_percentile" in table.columns:
            pct = pd.to_numeric(table["influence_percentile"], errors="coerce")
            for key, mask in (("duplicates", result["is_duplicate"]), ("group_members", grouped)):
                values = pct[mask.to_numpy()].dropna()
                out[f"median_influence_percentile_{key}"] = float(values.median()) if len(values) else None
        return out


def path_text(found: Mapping[str, Any]) -> str:
    """One sentence naming the image matcher and search that ran (from Duplicates.summary()), or ""."""
    if found.get("matcher") is None:
        return ""
    name = {"pixels": "the pixel matcher (thumbnail shifts and crops)",
            "views": "the multi-view matcher (blurred windows)"}[found["matcher"]]
    how = ("all pairs" if found["search"] == "exact"
           else f"{found['candidates']:,} candidate pairs from the streaming index")
    if found.get("new_samples", found["examined"]) < found["examined"]:  # an appended version (findings.appended)
        how += (f" with at least one of the {found['new_samples']:,} new samples, the previous version's "
                f"{found['carried_links']:,} links kept")
    return f" Images compared by {name} over {how}."


def group_members(table: pd.DataFrame) -> pd.DataFrame:
    """One row per member of a near-duplicate group of a scores table with the Duplicates columns: sample_id,
    influence, log_influence, influence_rank, influence_percentile (where present), duplicate_group,
    is_duplicate, duplicate_of; sorted by group then influence_rank."""
    extra = [c for c in ("influence", "log_influence", "influence_rank", "influence_percentile") if c in table.columns]
    members = table.loc[table["duplicate_group"] >= 0, ["sample_id", *extra, *Duplicates.columns]]
    order = ["duplicate_group"] + (["influence_rank"] if "influence_rank" in extra else [])
    return members.sort_values(order, kind="stable").reset_index(drop=True)


@register
class DuplicatesFinding(FindingPlugin):
    """The registered near-duplicates finding; its options are the keyword arguments of `Duplicates`."""

    name = "duplicates"
    Config = Duplicates
    columns = Duplicates.columns
    metrics = (Metric("duplicate_fraction", "fraction of examined samples", "removable copies (group members "
                      "beyond each group's kept one) / examined samples"),
               Metric("n_duplicates", "count of samples", "removable copies"),
               Metric("duplicate_groups", "count of groups", "near-duplicate groups"))
    figures = (Artifact("duplicate_gallery", "figures/duplicate_groups.png"),)
    tables = (Artifact("duplicate_groups", "findings/duplicate_groups.json"),)
    expectations = {"summary": [between(
        "duplicate_fraction", "duplicate_fraction = removable copies (exact or near duplicates beyond each group's "
        "kept member) / examined samples. Copies sit at the lowest influence (they teach the encoder nothing new) "
        "and bias what it learns towards the copied content; above 5% the version should be deduplicated before "
        "training. The clean digits measure 0.0.", 0, 0.05)]}

    def run(self, inputs: FindingInputs, config: Duplicates) -> Outcome:
        columns = config.find(inputs.table, inputs.embeddings, images=inputs.images, sample_ids=inputs.sample_ids,
                              previous=inputs.previous, statistics=inputs.shared.get("image_statistics"))
        found = config.summary()
        median = found.get("median_influence_percentile_duplicates")
        text = (f"{found['duplicates']} removable copies in {found['groups']} near-duplicate groups "
                f"({found['duplicate_fraction']:.1%} of {found['examined']} samples)"
                + (f"; the copies' median influence percentile is {median:.0f}." if median is not None else ".")
                + (f" Copies: {flagged_ids(inputs.table, columns['is_duplicate'])}." if found["duplicates"] else "")
                + (f" Near-duplicates by embedding cosine only: more than image_max_samples = "
                   f"{found['image_max_samples']} samples for the pixel comparison." if found["auto_fallback"] else "")
                + path_text(found))
        return Outcome(columns, {"duplicate_fraction": float(found["duplicate_fraction"]),
                                 "n_duplicates": float(found["duplicates"]), "duplicate_groups": float(found["groups"])},
                       text, config.state)

    def draw(self, table: pd.DataFrame, images_by_id: Any, groups: Sequence[str]) -> dict[str, Any]:
        return {"duplicate_gallery": duplicate_gallery(table, images_by_id)}

    def derive(self, table: pd.DataFrame, config: Duplicates, groups: Sequence[str]) -> dict[str, pd.DataFrame]:
        return {"duplicate_groups": group_members(table)}
