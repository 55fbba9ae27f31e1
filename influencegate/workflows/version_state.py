"""What an audited version keeps for the next, appended one (issue 15): its embeddings and its findings state,
in its resume directory beside the fit and the scores (influence.resume):

    directory/embeddings.npz   sample_ids (M), embeddings (M x D float32), encoder_sha256 (the weights' hash)
    directory/findings.npz     sample_ids (M) and the findings' state (findings.appended): knn (M x k),
                               near_top (M x k'), hashes (M), links_i / links_j (positions of linked samples),
                               index_ids (the sample of each row of the duplicate index kept beside it:
                               findings.kept_index)
    directory/statistics.npz   sample_ids (M), statistics (M x 8 float64, the outliers' image statistics) and
                               statistics_names: what a later version's outliers read as their reference
    directory/map.npz          sample_ids (M), the embedding map's mapped positions (M') and xy (M' x 2)

An appended version (`since` = the previous version's directory) reuses the previous embeddings when its
encoder's weights hash to the same value (else a ValueError: an incremental audit needs the same encoder),
encodes only its new samples, and hands the previous findings state to `findings.find_all` in its own rows.
Files are read with ``np.load(allow_pickle=False)``: nothing in them can run code. Pure core.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from influencegate.data import storage
from influencegate.data.npz import read_npz, write_npz
from influencegate.findings.appended import STATE_FILE, STATISTICS_FILE, Previous
from influencegate.findings.image_stats import STATISTICS

EMBEDDINGS = "embeddings.npz"
FINDINGS = STATE_FILE
MAP = "map.npz"


def _read(directory: str, name: str) -> dict[str, np.ndarray] | None:
    """The arrays of directory/name, None when the file is absent; ValueError when it cannot be read."""
    return read_npz(storage.join(storage.normalise(directory), name))


def _write(directory: str, name: str, **arrays: np.ndarray) -> None:
    write_npz(storage.join(storage.normalise(directory), name), **arrays)


def _positions(previous_ids: np.ndarray, ids: Sequence[str], what: str) -> np.ndarray:
    """int64: each previous sample's position among `ids`; ValueError naming samples this version lacks."""
    where = {sid: p for p, sid in enumerate(ids)}
    missing = [str(s) for s in previous_ids.tolist() if str(s) not in where]
    if missing:
        raise ValueError(f"{len(missing)} samples of the previous version's {what} are not readable in this one "
                         f"(e.g. {missing[:3]}); an incremental audit only adds samples: audit this version in full")
    return np.asarray([where[str(s)] for s in previous_ids.tolist()], dtype=np.int64)


def previous_embeddings(since: str, ids: Sequence[str], encoder_sha256: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(positions among `ids` of the previous version's samples, their embeddings P x D float32), None when
    `since` kept none. ValueError when they come from another encoder or this version lacks a sample."""
    stored = _read(since, EMBEDDINGS)
    if stored is None:
        return None
    if str(stored["encoder_sha256"]) != encoder_sha256:
        raise ValueError(f"{storage.redact(since)} kept embeddings of another encoder (weights sha256 "
                         f"{str(stored['encoder_sha256'])[:12]}, this one {encoder_sha256[:12]}); an incremental "
                         "audit needs the same encoder")
    return _positions(stored["sample_ids"], ids, "embeddings"), stored["embeddings"].astype(np.float32)


def save_embeddings(directory: str, ids: Sequence[str], embeddings: np.ndarray, encoder_sha256: str) -> None:
    """Keep this version's M x D embeddings of the readable samples `ids` (their order) in `directory`."""
    _write(directory, EMBEDDINGS, sample_ids=np.asarray(list(ids), dtype=str),
           embeddings=np.asarray(embeddings, dtype=np.float32), encoder_sha256=np.asarray(encoder_sha256))


def previous_findings(since: str, ids: Sequence[str]) -> Previous | None:
    """The previous version's findings state in the rows `ids` of this version (findings.appended.Previous),
    None when `since` kept none. ValueError when this version lacks one of its samples."""
    stored = _read(since, FINDINGS)
    if stored is None:
        return None
    at = _positions(stored["sample_ids"], ids, "findings")
    m = len(ids)
    new = np.ones(m, dtype=bool)
    new[at] = False

    def rows(name: str) -> np.ndarray | None:
        if name not in stored:
            return None
        out = np.zeros((m, stored[name].shape[1]), dtype=np.float32)
        out[at] = stored[name]
        return out

    hashes: list[str | None] | None = None
    if "hashes" in stored:
        hashes = [None] * m
        for p, h in zip(at.tolist(), stored["hashes"].tolist()):
            hashes[p] = h.decode("ascii") if isinstance(h, bytes) else str(h)
    links = (at[stored["links_i"]], at[stored["links_j"]]) if "links_i" in stored else Previous(new).links
    index_rows = _positions(stored["index_ids"], ids, "duplicate index") if "index_ids" in stored else None
    return Previous(new, rows("knn"), rows("near_top"), hashes, links, _statistics(since, ids), index_rows, since)


def _statistics(since: str, ids: Sequence[str]) -> np.ndarray | None:
    """M x len(STATISTICS) float64: the image statistics `since` kept, in the rows `ids` of this version (NaN for
    its new samples); None when it kept none or other statistics than image_stats.STATISTICS."""
    stored = _read(since, STATISTICS_FILE)
    if stored is None or [str(n) for n in stored["statistics_names"].tolist()] != list(STATISTICS):
        return None
    out = np.full((len(ids), len(STATISTICS)), np.nan)
    out[_positions(stored["sample_ids"], ids, "image statistics")] = stored["statistics"]
    return out


def save_findings(directory: str, ids: Sequence[str], state: dict[str, dict[str, Any]]) -> None:
    """Keep the findings' state (`FindingsResult.state`: outliers' knn and image statistics, duplicates'
    near_top, hashes, links) of the M examined samples `ids` in `directory`."""
    arrays: dict[str, np.ndarray] = {"sample_ids": np.asarray(list(ids), dtype=str)}
    outliers, duplicates = state.get("outliers", {}), state.get("duplicates", {})
    if "knn" in outliers:
        arrays["knn"] = np.asarray(outliers["knn"], dtype=np.float32)
    if "near_top" in duplicates:
        arrays["near_top"] = np.asarray(duplicates["near_top"], dtype=np.float32)
    if "hashes" in duplicates:
        arrays["hashes"] = np.asarray(duplicates["hashes"], dtype="S64")  # hex sha256, 64 B each (not 256)
    if "links" in duplicates:
        arrays["links_i"], arrays["links_j"] = (np.asarray(a, dtype=np.int64) for a in duplicates["links"])
    if "index_order" in duplicates:  # the sample of each row of the index kept beside (findings.kept_index)
        arrays["index_ids"] = arrays["sample_ids"][np.asarray(duplicates["index_order"], dtype=np.int64)]
    _write(directory, FINDINGS, **arrays)
    if "statistics" in outliers:  # a later version's outliers may take these as their clean reference
        _write(directory, STATISTICS_FILE, sample_ids=arrays["sample_ids"],
               statistics=np.asarray(outliers["statistics"], dtype=np.float64),
               statistics_names=np.asarray(outliers["statistics_names"], dtype=str))


def previous_layout(since: str, ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(bool M: new in this version, the previous map's mapped rows as positions among `ids`, their xy), None
    when `since` kept no map. ValueError when this version lacks one of its samples."""
    stored = _read(since, MAP)
    if stored is None:
        return None
    at = _positions(stored["sample_ids"], ids, "map")
    new = np.ones(len(ids), dtype=bool)
    new[at] = False
    return new, at[stored["mapped"]], stored["xy"]


def save_layout(directory: str, ids: Sequence[str], layout: tuple[np.ndarray, np.ndarray]) -> None:
    """Keep the embedding map's layout (positions among the M rows `ids`, xy) in `directory`."""
    _write(directory, MAP, sample_ids=np.asarray(list(ids), dtype=str), mapped=np.asarray(layout[0], np.int64),
           xy=np.asarray(layout[1], np.float64))
