"""Load a dataset version and its version id."""
from __future__ import annotations

from typing import Annotated, Optional, Tuple

import pandas as pd
from zenml import step

from influencegate.data import load_images
from influencegate.data.errors import require_readable
from influencegate.workflows.references import DatasetRef


# Never cached: the cache key would be the source *path*, but the files behind it may have changed.
@step(enable_cache=False)
def load_dataset(source: str = "digits", image_size: Optional[int] = None, channels: Optional[int] = None,
                 name: Optional[str] = None, workers: int = 0) -> Tuple[Annotated[DatasetRef, "dataset"], Annotated[pd.DataFrame, "dataset_records"]]:
    """Load `source` ("digits", a folder, a .csv/.parquet/.jsonl manifest, WebDataset or Parquet shards, local
    or an fsspec URL; see `influencegate.data.load_images`), decoding in `workers` DataLoader processes.

    Returns the dataset reference (source, name, version content hash, counts; what later steps take) and
    every row of the version (sample_id, path, manifest columns, error), unreadable files included.
    DatasetError (an input error: the CLI exits 2) when no sample at all is readable.
    """
    dataset = load_images(source, image_size=image_size, channels=channels, name=name, workers=workers)
    require_readable(dataset)
    return DatasetRef.of(dataset, "images", image_size=image_size, channels=channels, workers=workers), dataset.records
