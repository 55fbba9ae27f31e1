"""The reference to a dataset version that workflows, steps and pipelines pass around instead of the images.

One type for both audits: `DatasetRef.of(dataset, kind, **load_options)` takes it from a loaded version,
`ref.open()` reloads that version anywhere (another step, another process) and refuses data that changed
since (another version id). It is a frozen pydantic model, so ZenML stores it as JSON.

Within one process a version is decoded once: `of` and `open` keep the dataset they hold for the reference
(the newest OPENED_LIMIT versions), and a later `open` hands it back. The local orchestrator runs every step of
an audit in one process, so an audit decodes its version once instead of once per step; the pixels a step
reads are then the version's own, as first decoded. Where steps run in separate processes (a remote
orchestrator) each process decodes once and checks the version id as before; `open(fresh=True)` always does.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from influencegate.data import DatasetError, ImageDataset, load_images, load_pairs

#: The two kinds of dataset version: images (the image audit) and image-text pairs (the pair audit).
Kind = Literal["images", "pairs"]
#: Load options that apply to pairs only (the embedded digits-captions: corruption share, seed, part).
PAIR_OPTIONS = ("shuffled_fraction", "seed", "part")
#: How many dataset versions one process keeps opened: an image audit needs one, a pair audit two (the pairs and
#: the clean reference). Each keeps its pixel store (a temporary file of N x C x H x W bytes, 3 GB for a million
#: 32 px colour images) until it is evicted or the process ends, so a notebook auditing version after version
#: holds at most two.
OPENED_LIMIT = 2
#: The versions opened in this process, by reference (its JSON), least recently used first.
_opened: OrderedDict[str, ImageDataset] = OrderedDict()


class DatasetRef(BaseModel):
    """A loaded dataset version: how to reload it (source and load options), its name and content version id,
    and its size (rows, readable and failed samples, and a folder's entries its scan skipped, by kind)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Kind
    source: str
    name: str
    version: str
    image_size: int | None = None
    channels: int | None = None
    workers: int = 0
    shuffled_fraction: float | None = None
    seed: int | None = None
    part: str | None = None
    n_rows: int = 0
    n_readable: int = 0
    n_failed: int = 0
    skipped: dict[str, int] = {}

    @classmethod
    def of(cls, dataset: ImageDataset, kind: Kind = "images", **options: Any) -> DatasetRef:
        """The reference to `dataset`, loaded with `options` (`load_images` or `load_pairs` keyword arguments;
        the source defaults to the dataset's own)."""
        options = {k: v for k, v in options.items() if v is not None}
        options.setdefault("source", str(dataset.source))
        options["name"] = str(dataset.name)  # the name the version was loaded under (given or derived)
        ref = cls(kind=kind, version=str(dataset.version), n_rows=int(len(dataset.records)),
                  n_readable=int(len(dataset)), n_failed=int(len(dataset.failed)),
                  skipped={str(k): int(v) for k, v in dataset.skipped.items()}, **options)
        return ref._keep(dataset)

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments that reload this version (`load_images` or `load_pairs`), None values left out."""
        keys = ("source", "image_size", "channels", "name", "workers") + (PAIR_OPTIONS if self.kind == "pairs" else ())
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}

    def open(self, fresh: bool = False) -> ImageDataset:
        """This version: the dataset this process already holds for the reference, else (or with `fresh`) reloaded
        from the source; DatasetError when the data there has another version id now (it changed since the
        reference was taken)."""
        key = self.model_dump_json()
        if not fresh and key in _opened:
            _opened.move_to_end(key)
            return _opened[key]
        dataset = (load_pairs if self.kind == "pairs" else load_images)(**self.load_options())
        self._keep(self.check(dataset))
        return dataset

    def _keep(self, dataset: ImageDataset) -> DatasetRef:
        """Remember `dataset` as this reference's version in this process (evicting the least recently used
        beyond OPENED_LIMIT); self."""
        key = self.model_dump_json()
        _opened[key] = dataset
        _opened.move_to_end(key)
        while len(_opened) > OPENED_LIMIT:
            _opened.popitem(last=False)
        return self

    def check(self, dataset: ImageDataset) -> ImageDataset:
        """`dataset` when it is this version; DatasetError naming the data when it is another."""
        if dataset.version != self.version:
            raise DatasetError(f"{self.kind} {self.name!r} at {self.source!r} changed during the audit: version "
                               f"{dataset.version} instead of {self.version}")
        return dataset

    def logged(self) -> dict[str, Any]:
        """What the MLflow run logs of this version: the settings that identify it (kind, source, name, version
        and the load options of its kind; `dataset.*` params) and its counts (n_rows, n_readable, n_failed,
        skipped by kind; metrics)."""
        return {"kind": self.kind, **self.load_options(), "image_size": self.image_size, "channels": self.channels,
                "version": self.version, "n_rows": self.n_rows, "n_readable": self.n_readable,
                "n_failed": self.n_failed, "skipped": dict(self.skipped)}
