"""Demonstration data (robomimic / LIBERO HDF5 layout)."""
from tristream.data.demos import (
    LIBERO_CAMERA_KEYS,
    LIBERO_STATE_KEYS,
    DatasetError,
    DemoDataset,
    DemoWriter,
    instruction_from_filename,
)

__all__ = [
    "DatasetError",
    "DemoDataset",
    "DemoWriter",
    "LIBERO_CAMERA_KEYS",
    "LIBERO_STATE_KEYS",
    "instruction_from_filename",
]
