"""Datasets: offline TFDS builders, the TFDS catalog passthrough, preprocessing, batching.

`load_dataset(config)` maps `config.dataset` to a `Dataset` with a `DataSpec`, an endless
train iterator (grain, checkpointable) and deterministic evaluation batches.
"""

from genjax.data.builders import OFFLINE_NAMES, is_offline_name, prepare_offline
from genjax.data.pipeline import (
    Dataset,
    DatasetUnavailableError,
    DataSpec,
    default_data_dir,
    load_dataset,
)

__all__ = [
    "OFFLINE_NAMES",
    "DataSpec",
    "Dataset",
    "DatasetUnavailableError",
    "default_data_dir",
    "is_offline_name",
    "load_dataset",
    "prepare_offline",
]
