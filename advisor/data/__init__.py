"""Datasets: sources, validation, splitting and the analysis subset."""

from advisor.data.bundle import Dataset, RawDataset
from advisor.data.prepare import analysis_indices, prepare_dataset
from advisor.data.registry import SOURCES, load_dataset, load_raw

__all__ = ["Dataset", "RawDataset", "SOURCES", "analysis_indices", "load_dataset", "load_raw", "prepare_dataset"]
