"""The local run directory: everything one audit logs to MLflow, written to disk before any upload.

The gate decision and the scores must survive a tracking outage, so an audit first writes its MLflow run here
(plain files, no MLflow needed to read them) and only then uploads it (`upload.upload_run_dir`); a failed
upload is retried later with `influencegate sync RUN_DIR`. Layout:

    run.json                 tracking target, run name, tags, params, metrics, the tables and the dataset input
    artifacts/<path>         files uploaded as they are, at their artifact paths (artifacts/gate/decision.json is
                             the gate decision, artifacts/scores/scores.parquet the scores table)
    tables/<n>.parquet       tables logged with `log_table` at upload (image columns stored as PNG bytes)
    records.parquet          the dataset's rows, logged as the run's dataset input
    upload.json              the MLflow run it went to: {"status": "started" | "finished", "run_id", ...}

Every file is written atomically (`influencegate.data.storage.write_bytes`).
"""
from __future__ import annotations

import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from influencegate.data import storage

RUN_FILE, UPLOAD_FILE, RECORDS_FILE = "run.json", "upload.json", "records.parquet"
ARTIFACTS_DIR, TABLES_DIR = "artifacts", "tables"
DECISION_PATH = "gate/decision.json"


class RunDirError(ValueError):
    """A folder that is not a run directory (no or unreadable run.json): a usage error."""


@dataclass
class RunRecord:
    """What one MLflow run holds, before it is written. artifacts: {artifact path: PIL image | dict | str (text)
    | bytes | Path of a folder to copy}; tables: {artifact file: DataFrame}; dataset_input: {"name", "digest",
    "source"} of `records`; start_ms / end_ms: the audit's start and end (milliseconds since the epoch), the
    run's times in MLflow whenever it is uploaded."""

    experiment: str
    run_name: str | None
    tracking_uri: str
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    records: pd.DataFrame | None = None
    dataset_input: dict[str, str] | None = None
    start_ms: int | None = None
    end_ms: int | None = None


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _is_image(value: Any) -> bool:
    return hasattr(value, "save") and hasattr(value, "mode") and hasattr(value, "size")


def _artifact_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, Mapping):
        return json.dumps(dict(item), indent=2, default=str).encode("utf-8")
    if _is_image(item):
        return _png(item)
    raise TypeError(f"cannot write an artifact of type {type(item).__name__}")


def _table_parquet(table: pd.DataFrame) -> tuple[bytes, list[str]]:
    """Parquet bytes of a table whose PIL-image columns become PNG bytes; returns (bytes, image columns)."""
    images = [c for c in table.columns if table[c].map(_is_image).any()]
    plain = table.assign(**{c: table[c].map(lambda v: _png(v) if _is_image(v) else None) for c in images})
    buffer = io.BytesIO()
    plain.to_parquet(buffer, index=False)
    return buffer.getvalue(), images


def write_run_dir(run_dir: str | Path, record: RunRecord) -> Path:
    """Write `record` under `run_dir` (created; an existing run.json is replaced). Returns the folder."""
    root = Path(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    for path, item in record.artifacts.items():
        target = root / ARTIFACTS_DIR / path
        if isinstance(item, Path):
            shutil.copytree(item, target, dirs_exist_ok=True)
        elif item is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.write_bytes(str(target), _artifact_bytes(item))
    tables = {}
    (root / TABLES_DIR).mkdir(exist_ok=True)
    for number, (path, table) in enumerate(record.tables.items()):
        data, images = _table_parquet(table)
        name = f"{TABLES_DIR}/{number}.parquet"
        storage.write_bytes(str(root / name), data)
        tables[path] = {"file": name, "image_columns": images}
    if record.records is not None:
        buffer = io.BytesIO()
        record.records.to_parquet(buffer, index=False)
        storage.write_bytes(str(root / RECORDS_FILE), buffer.getvalue())
    run = {"format": 1, "experiment": record.experiment, "run_name": record.run_name,
           "tracking_uri": record.tracking_uri, "tags": record.tags, "params": record.params,
           "metrics": record.metrics, "tables": tables,
           "dataset_input": record.dataset_input if record.records is not None else None,
           "start_ms": record.start_ms, "end_ms": record.end_ms}
    storage.write_text(str(root / RUN_FILE), json.dumps(run, indent=2))
    return root


def read_run(run_dir: str | Path) -> dict[str, Any]:
    """The run.json of a run directory; RunDirError when there is none or it is not JSON."""
    file = Path(run_dir) / RUN_FILE
    if not file.is_file():
        raise RunDirError(f"{str(run_dir)!r} is not a run directory (no {RUN_FILE})")
    try:
        return json.loads(file.read_text())
    except (ValueError, OSError) as exc:
        raise RunDirError(f"{file}: unreadable ({exc})") from exc


def read_table(run_dir: str | Path, entry: Mapping[str, Any]) -> pd.DataFrame:
    """A table of run.json's `tables`, its image columns back as PIL images."""
    from PIL import Image

    table = pd.read_parquet(Path(run_dir) / entry["file"])
    for column in entry.get("image_columns") or []:
        table[column] = table[column].map(lambda v: Image.open(io.BytesIO(v)) if v is not None else None)
    return table


def read_decision(run_dir: str | Path) -> dict[str, Any]:
    """The gate decision kept in a run directory."""
    return json.loads((Path(run_dir) / ARTIFACTS_DIR / DECISION_PATH).read_text())


def read_upload(run_dir: str | Path) -> dict[str, Any]:
    """upload.json: the MLflow run this directory went to ({} before any upload started)."""
    file = Path(run_dir) / UPLOAD_FILE
    return json.loads(file.read_text()) if file.is_file() else {}


def write_upload(run_dir: str | Path, upload: Mapping[str, Any]) -> None:
    """Record where (and how far) the run directory was uploaded."""
    storage.write_text(str(Path(run_dir) / UPLOAD_FILE), json.dumps(dict(upload), indent=2))
