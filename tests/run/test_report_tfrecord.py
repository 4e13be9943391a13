"""``tfrecord:DIR``: directories of tf.train.Example records as a data source."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import fedglobal
from fedglobal import data
from fedglobal.config import load_config
from fedglobal.data.tfrecord import read_tfrecords, write_tfrecords
from fedglobal.errors import DataError


def test_round_trip_keeps_types_and_missing_values(tmp_path):
    frame = pd.DataFrame(
        {
            "region": ["a", "b", None, "a"],
            "count": [1, 2, 3, 4],
            "x": [0.5, np.nan, 2.25, -1.0],
            "flag": [True, False, True, True],
        }
    )
    files = write_tfrecords(frame, tmp_path / "recs", shards=2)
    assert [f.name for f in files] == [
        "part-00000-of-00002.tfrecord",
        "part-00001-of-00002.tfrecord",
    ]
    back = read_tfrecords(tmp_path / "recs")
    assert list(back.columns) == ["count", "flag", "region", "x"]  # sorted by name
    assert back["region"].tolist() == ["a", "b", None, "a"]
    assert back["count"].dtype == np.int64 and back["count"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(back["x"], [0.5, np.nan, 2.25, -1.0])
    assert back["flag"].tolist() == [1, 0, 1, 1]


def test_gzip_files_and_a_single_file(tmp_path):
    frame = pd.DataFrame({"r": ["a", "b"], "y": [1.5, 2.5]})  # columns in name order
    (path,) = write_tfrecords(frame, tmp_path, gzip=True)
    assert path.name.endswith(".tfrecord.gz")
    pd.testing.assert_frame_equal(read_tfrecords(tmp_path), frame, check_dtype=False)
    pd.testing.assert_frame_equal(read_tfrecords(path), frame, check_dtype=False)


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for features in examples:
            example = tf.train.Example(features=tf.train.Features(feature=features))
            writer.write(example.SerializeToString())


def test_feature_spec_violations_name_file_record_and_feature(tmp_path):
    floats = lambda *v: tf.train.Feature(float_list=tf.train.FloatList(value=list(v)))  # noqa: E731
    ints = lambda *v: tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))  # noqa: E731
    (tmp_path / "multi").mkdir()
    _write(tmp_path / "multi" / "a.tfrecord", [{"x": floats(1.0)}, {"x": floats(1.0, 2.0)}])
    with pytest.raises(DataError, match=r"record 1: feature 'x' has 2 values"):
        read_tfrecords(tmp_path / "multi")
    (tmp_path / "kinds").mkdir()
    _write(tmp_path / "kinds" / "a.tfrecord", [{"x": floats(1.0)}, {"x": ints(1)}])
    with pytest.raises(DataError, match=r"feature 'x' is a int64_list, but earlier records"):
        read_tfrecords(tmp_path / "kinds")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="has no TFRecord files"):
        read_tfrecords(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.tfrecord").write_bytes(b"this is not a record file at all")
    with pytest.raises(DataError, match="not a readable TFRecord file"):
        read_tfrecords(tmp_path / "junk")
    with pytest.raises(DataError, match="TFRecord path not found"):
        read_tfrecords(tmp_path / "missing")


def test_tfrecord_source_gives_the_same_regions_as_csv(tmp_path, data_folder):
    table = pd.read_csv(data_folder / "data.csv")
    write_tfrecords(table, tmp_path / "records", shards=3)
    (tmp_path / "exp.toml").write_text(
        '[data]\nsource = "tfrecord:records"\nregion = "region"\ntarget = "y"\n'
    )
    from_records = load_config(tmp_path / "exp.toml")
    assert from_records.data.source == f"tfrecord:{tmp_path / 'records'}"  # resolved
    from_csv = from_records.replace({"data.source": f"csv:{data_folder / 'data.csv'}"})
    assert (
        data.list_regions(from_records)
        == data.list_regions(from_csv)
        == [
            "east",
            "north",
            "south",
        ]
    )
    a, b = data.load_region(from_records, "north"), data.load_region(from_csv, "north")
    pd.testing.assert_frame_equal(a.train.reset_index(drop=True), b.train.reset_index(drop=True))


def test_unknown_scheme_error_lists_tfrecord():
    with pytest.raises(DataError, match=r"tfrecord:DIR"):
        data.list_regions(load_config({"data": {"source": "tfrecords:x", "region": "r"}}))


@pytest.mark.slow
def test_a_run_from_tfrecords_matches_the_run_from_csv(tmp_path, make_experiment, data_folder):
    write_tfrecords(pd.read_csv(data_folder / "data.csv"), tmp_path / "records")
    cfg = make_experiment("records", experiment={"rounds": 1})
    csv_run = fedglobal.simulate(cfg, quiet=True)
    cfg["data"]["source"] = f"tfrecord:{tmp_path / 'records'}"
    tf_run = fedglobal.simulate(cfg, quiet=True)
    pd.testing.assert_frame_equal(csv_run.history, tf_run.history)
