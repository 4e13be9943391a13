"""Pins the public API of fedglobal.data: other packages call exactly this."""

from __future__ import annotations

import dataclasses
import inspect

import fedglobal.data as data


def test_exports():
    assert sorted(data.__all__) == [
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


def test_signatures():
    def params(fn) -> list[str]:
        return [f"{p.kind.name}:{p.name}" for p in inspect.signature(fn).parameters.values()]

    assert params(data.list_regions) == ["POSITIONAL_OR_KEYWORD:cfg"]
    assert params(data.load_region) == [
        "POSITIONAL_OR_KEYWORD:cfg",
        "POSITIONAL_OR_KEYWORD:region",
        "KEYWORD_ONLY:data_path",
    ]
    assert params(data.local_stats) == ["POSITIONAL_OR_KEYWORD:table", "POSITIONAL_OR_KEYWORD:cfg"]
    assert params(data.merge_stats) == ["POSITIONAL_OR_KEYWORD:stats", "POSITIONAL_OR_KEYWORD:cfg"]
    assert params(data.encode) == ["POSITIONAL_OR_KEYWORD:table", "POSITIONAL_OR_KEYWORD:schema"]
    assert params(data.make_dataset) == [
        "POSITIONAL_OR_KEYWORD:x",
        "POSITIONAL_OR_KEYWORD:y",
        "KEYWORD_ONLY:batch_size",
        "KEYWORD_ONLY:shuffle",
        "KEYWORD_ONLY:seed",
        "KEYWORD_ONLY:repeat",
    ]
    assert params(data.shuffle_seed) == [
        "POSITIONAL_OR_KEYWORD:seed",
        "POSITIONAL_OR_KEYWORD:server_round",
        "POSITIONAL_OR_KEYWORD:region",
    ]


def test_dataclass_fields():
    def fields(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    assert fields(data.RegionTable) == ["region", "train", "test"]
    assert fields(data.RegionArrays) == ["region", "x_train", "y_train", "x_test", "y_test"]
    assert fields(data.Schema)[:7] == [
        "feature_names",
        "mean",
        "variance",
        "task",
        "classes",
        "target_mean",
        "target_variance",
    ]
    for cls in (data.RegionTable, data.RegionArrays, data.Schema, data.LocalStats):
        assert cls.__dataclass_params__.frozen
    assert callable(data.LocalStats.from_records) and callable(data.Schema.from_json)
