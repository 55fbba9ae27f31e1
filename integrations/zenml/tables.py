"""A pandas materializer for side tables that may be empty (no duplicates found, no group columns audited)."""
from __future__ import annotations

from typing import Any, Union

import pandas as pd
from zenml.enums import VisualizationType
from zenml.integrations.pandas.materializers.pandas_materializer import PandasMaterializer


class TableMaterializer(PandasMaterializer):
    """ZenML's PandasMaterializer, with metadata and visualisations that survive empty tables.

    The stock one calls float() on df.mean/std/min/max(numeric_only=True). On a table with no rows and a
    nullable column (Int64, the dtype of influence_rank) pandas returns None for every column, so the
    artifact loses all its metadata with a "Failed to extract materializer metadata" warning; a table with
    no columns fails df.describe() and loses its visualisations. Here an empty table records its shape and
    dtypes only, and a table without columns gets no describe.csv. Storage and loading are unchanged.
    Not registered as a default: steps name it in ``output_materializers``.
    """

    SKIP_REGISTRATION = True

    def extract_metadata(self, df: Union[pd.DataFrame, pd.Series]) -> dict[str, Any]:
        if len(df) == 0:
            frame = df.to_frame(name="series") if isinstance(df, pd.Series) else df
            return {"shape": df.shape, "dtype": {str(k): str(v) for k, v in frame.dtypes.items()}}
        return super().extract_metadata(df)

    def save_visualizations(self, df: Union[pd.DataFrame, pd.Series]) -> dict[str, VisualizationType]:
        if isinstance(df, pd.DataFrame) and df.shape[1] == 0:
            return {}
        return super().save_visualizations(df)
