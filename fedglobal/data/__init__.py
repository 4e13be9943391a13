"""Data for fedglobal: sources, regional partitions, federated statistics, encoding.

A client loads only its own region (:func:`load_region`), computes aggregate
statistics on its train split (:func:`local_stats`) and sends them, never
rows; the server merges them into the global :class:`Schema`
(:func:`merge_stats`); each client then encodes its rows with that schema
(:func:`encode`) and trains on :func:`make_dataset` pipelines.
"""

from fedglobal.data.encoded import encode_region, region_stats
from fedglobal.data.pipeline import make_dataset, shuffle_seed
from fedglobal.data.regions import RegionTable, list_regions, load_region
from fedglobal.data.schema import RegionArrays, Schema, encode
from fedglobal.data.stats import LocalStats, local_stats, merge_stats

__all__ = [
    "LocalStats",
    "RegionArrays",
    "RegionTable",
    "Schema",
    "encode",
    "encode_region",
    "list_regions",
    "load_region",
    "local_stats",
    "make_dataset",
    "merge_stats",
    "region_stats",
    "shuffle_seed",
]
