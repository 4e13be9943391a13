"""``data.storage = "disk"``: today's column files against a partitioned Parquet dataset
(issue 18, item 4), measured side by side.

    .venv/bin/python experiments/benchmarks/ondisk_store.py               # ~10 min on 2 cores
    .venv/bin/python experiments/benchmarks/ondisk_store.py --regions 1000 --repeats 1

The data and the run are the README's scale table's (``speed.py``'s ``scale_data`` and
``_scale_run``): regions of 200 rows, 20 float32 features, an integer class, one Parquet
file written by pandas, an MLP 32 trained with cohort training, 10% of the regions
trained and evaluated per round, 3 rounds, ``data.storage = "disk"``.

Two stores behind the same interface (:class:`fedglobal.data.ondisk.ColumnStore`'s:
``columns``, ``new_file``, ``block``, ``stat_columns``, ``rows``, ``folder``):

- ``columns``: today's store, one file per column in region order, a region read
  with one ``pread`` per column;
- ``parquet``: :class:`ParquetStore` below. The file is cleaned by the same pass
  (:func:`fedglobal.data.ondisk.prepare_parquet`), then the cleaned rows are written
  with ``pyarrow.dataset.write_dataset`` as a Hive-partitioned dataset,
  ``region=NAME/part-0.parquet`` (snappy, pyarrow's default), regions streamed in
  chunks so that the whole table is never in memory, and the column files are
  removed. The whole-source encoding (``fedglobal.data.encoded``) is a second
  dataset partitioned the same way. A region is read as its own partition's
  fragment (found once by its partition key); reading it with a partition filter
  (``dataset.to_table(filter=field("region") == NAME)``) is timed too, on a few
  regions: pyarrow tests the filter against every fragment, so it costs O(regions).

Each run is a child process of its own (peak memory: the process's peak resident set,
``ru_maxrss``: pyarrow allocates outside Python's allocator, so tracemalloc would not
see it); the two stores alternate (which one goes first alternates too), ``--repeats``
times; medians and ranges are printed. The conversion time (the cleaning pass, and
for Parquet the write of the dataset) is timed inside the run; the start-up is round
0 of rounds.csv (statistics of every region and the schema), and the last round has
no XLA compile in it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
STORES = ("columns", "parquet")
REGION = "region"  # the partition key of the Parquet store
CHUNK_ROWS = 65_536  # rows (whole regions) written at a time

#: The ``pyarrow.fs`` filesystem the store is read through (None: the local one); the
#: test sets a counting one to check that a region opens only its own partition.
FILESYSTEM: Any = None


# -- the Parquet store -------------------------------------------------------------


class _Rows:
    """What :attr:`fedglobal.data.cleaning.Prepared.n_rows` reads: ``file.rows``."""

    def __init__(self, rows: int) -> None:
        self.rows = rows


class _Column:
    def __init__(self, field: str, rows: int, pandas_dtype: Any, vocab: Any) -> None:
        self.field, self.file, self.pandas_dtype, self.vocab = (
            field,
            _Rows(rows),
            pandas_dtype,
            vocab,
        )


class _Partitioned:
    """One Hive-partitioned Parquet dataset of rows in region order: ``region=NAME/``."""

    def __init__(self, folder: Path, names: list[str], bounds: np.ndarray) -> None:
        self.folder, self.names, self.bounds = folder, names, bounds
        self._fragments: dict[str, Any] | None = None
        self._dataset: Any = None
        self._lock = threading.Lock()

    def write(self, schema: Any, batches: Iterator[Any]) -> None:
        import pyarrow as pa
        import pyarrow.dataset as ds

        ds.write_dataset(
            pa.RecordBatchReader.from_batches(schema, batches),
            self.folder,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([(REGION, pa.string())]), flavor="hive"),
            basename_template="part-{i}.parquet",
            max_partitions=len(self.names) + 1,
            use_threads=False,  # rows keep their order within a partition
        )

    def chunks(self) -> Iterator[tuple[int, int, np.ndarray]]:
        """``(start, stop, region name of each row)`` over whole regions, ~CHUNK_ROWS rows."""
        k, n = 0, len(self.names)
        while k < n:
            end = int(np.searchsorted(self.bounds, self.bounds[k] + CHUNK_ROWS, "right")) - 1
            end = min(max(end, k + 1), n)
            counts = np.diff(self.bounds[k : end + 1])
            names = np.repeat(np.array(self.names[k:end], dtype=object), counts)
            yield int(self.bounds[k]), int(self.bounds[end]), names
            k = end

    def dataset(self) -> Any:
        import pyarrow as pa
        import pyarrow.dataset as ds

        with self._lock:
            if self._dataset is None:
                partitioning = ds.partitioning(pa.schema([(REGION, pa.string())]), flavor="hive")
                self._dataset = ds.dataset(
                    str(self.folder),
                    format="parquet",
                    partitioning=partitioning,
                    filesystem=FILESYSTEM,
                )
                self._fragments = {
                    ds.get_partition_keys(f.partition_expression)[REGION]: f
                    for f in self._dataset.get_fragments()
                }
            return self._dataset

    def read(self, fields: list[str], start: int, stop: int) -> Any:
        """Rows ``start``-``stop`` of ``fields`` (a pyarrow Table): the fragments of the
        regions they span, each region's own partition only."""
        import pyarrow as pa

        self.dataset()
        assert self._fragments is not None
        first = int(np.searchsorted(self.bounds, start, "right")) - 1
        last = int(np.searchsorted(self.bounds, stop, "left"))
        tables = [
            self._fragments[self.names[k]].to_table(columns=fields) for k in range(first, last)
        ]
        table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        offset = start - int(self.bounds[first])
        return table.slice(offset, stop - start)

    def read_filtered(self, fields: list[str], region: str) -> Any:
        """A region's rows through a partition filter on the whole dataset."""
        import pyarrow.dataset as ds

        return self.dataset().to_table(columns=fields, filter=ds.field(REGION) == region)


def _numpy(column: Any) -> np.ndarray:
    return column.to_numpy(zero_copy_only=False)


class _Encoded:
    """A whole-source encoding (``new_file``): appended in row order while it is built,
    then written as a partitioned dataset on the first read, read back by region."""

    def __init__(self, store: ParquetStore, staging: Any, index: int) -> None:
        self.store, self.staging, self.index = store, staging, index
        self.row_shape, self.dtype = staging.row_shape, staging.dtype
        self.part: _Partitioned | None = None
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        return self.staging.rows

    def append(self, values: np.ndarray) -> None:
        self.staging.append(values)

    def _written(self) -> _Partitioned:
        import pyarrow as pa

        with self._lock:
            if self.part is None:
                part = self.store.partitioned(f"encoded-{self.index}")
                width = int(np.prod(self.row_shape)) if self.row_shape else 0
                kind = pa.from_numpy_dtype(self.dtype)
                field = pa.list_(kind, width) if width else kind
                schema = pa.schema([("v", field), (REGION, pa.string())])

                def batches() -> Iterator[Any]:
                    for start, stop, names in part.chunks():
                        values = np.asarray(self.staging.read(start, stop))
                        flat = pa.array(values.reshape(-1))
                        v = pa.FixedSizeListArray.from_arrays(flat, width) if width else flat
                        yield pa.record_batch([v, pa.array(names, pa.string())], schema=schema)

                part.write(schema, batches())
                self.staging.path.unlink()
                self.part = part
            return self.part

    def __getitem__(self, rows: slice) -> np.ndarray:
        column = self._written().read(["v"], rows.start, rows.stop).column("v")
        if self.row_shape:
            flat = _numpy(column.combine_chunks().flatten())
            return flat.reshape(-1, *self.row_shape)
        return _numpy(column)


class ParquetStore:
    """The cleaned rows as a partitioned Parquet dataset, ``region=NAME/part-0.parquet``,
    with :class:`fedglobal.data.ondisk.ColumnStore`'s interface."""

    def __init__(self, folder: Path, names: list[str], bounds: np.ndarray) -> None:
        self.folder, self.names, self.bounds = folder, names, bounds
        self.columns: dict[str, _Column] = {}
        self._encoded = 0
        self._scratch: Any = None  # a ColumnStore for the encodings' staging files
        owner = os.getpid()
        self._cleanup = weakref.finalize(self, _remove, folder, owner)

    def partitioned(self, name: str) -> _Partitioned:
        return _Partitioned(self.folder / name, self.names, self.bounds)

    @classmethod
    def convert(cls, store: Any, groups: Any) -> ParquetStore:
        """The rows of ``store`` (a ColumnStore, region order; ``groups``: its regions'
        blocks) written with ``pyarrow.dataset.write_dataset``; the column files go."""
        import pyarrow as pa

        names, bounds = list(groups), np.asarray(groups.bounds)
        out = cls(Path(tempfile.mkdtemp(prefix="fedglobal-parquet-")), names, bounds)
        for j, (name, column) in enumerate(store.columns.items()):
            out.columns[name] = _Column(
                f"c{j}", column.file.rows, column.pandas_dtype, column.vocab
            )
        part = out.main = out.partitioned("rows")
        fields = [
            (out.columns[n].field, pa.from_numpy_dtype(c.file.dtype))
            for n, c in store.columns.items()
        ]
        schema = pa.schema([*fields, (REGION, pa.string())])

        def batches() -> Iterator[Any]:
            for start, stop, region in part.chunks():
                arrays = [pa.array(store.block(n, start, stop)) for n in store.columns]
                yield pa.record_batch([*arrays, pa.array(region, pa.string())], schema=schema)

        part.write(schema, batches())
        return out

    def new_file(self, dtype: Any, row_shape: tuple[int, ...] = ()) -> _Encoded:
        from fedglobal.data.ondisk import ColumnStore

        if self._scratch is None:
            self._scratch = ColumnStore(self.folder / "staging")
            self._scratch.folder.mkdir()
        self._encoded += 1
        return _Encoded(self, self._scratch.new_file(dtype, row_shape), self._encoded)

    def _read(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        table = self.main.read([self.columns[n].field for n in names], start, stop)
        return {n: _numpy(table.column(self.columns[n].field)) for n in names}

    def block(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._read([name], start, stop)[name]

    def stat_columns(self, features: list[str], target: str, start: int, stop: int) -> dict:
        labels = [n for n in self.columns if n not in (*features, target)]
        names = [*features, *(labels or [target])]
        block = self._read(names, start, stop)
        numeric, categorical = {}, {}
        for col in features:
            vocab = self.columns[col].vocab
            if vocab is None:
                numeric[col] = block[col]
            else:
                categorical[col] = (vocab.decode(block[col]), block[col] >= 0)
        if labels:
            vocab = self.columns[labels[0]].vocab
            codes = vocab.decode(np.arange(len(vocab.values)))
            target_values: Any = (block[labels[0]], codes)
        else:
            target_values = block[target].astype(np.float64)
        return {"numeric": numeric, "categorical": categorical, "target": target_values}

    def rows(self, positions: np.ndarray, names: list[str]) -> pd.DataFrame:
        start = int(positions[0]) if len(positions) else 0
        stop = int(positions[-1]) + 1 if len(positions) else 0
        block = self._read(names, start, stop) if stop > start else {}
        out = {}
        for name in names:
            column = self.columns[name]
            values = block[name][positions - start] if block else np.empty(0, np.int32)
            if column.vocab is not None:
                values = column.vocab.decode(values)
            out[name] = pd.Series(values, dtype=column.pandas_dtype, name=name)
        return pd.DataFrame(out)


def _remove(folder: Path, owner: int) -> None:
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


# -- a child: one run ----------------------------------------------------------------


def child(store: str, config: str, output_dir: str) -> None:
    """simulate() the config with ``store``; prints one JSON line."""
    import resource

    import fedglobal
    from fedglobal.config import load_config
    from fedglobal.data import ondisk, regions
    from fedglobal.data.cleaning import Prepared

    timing: dict[str, float] = {}
    original = ondisk.prepare_parquet

    def prepare(path: Path, cfg: Any) -> Prepared:
        t0 = time.perf_counter()
        prepared = original(path, cfg)
        timing["clean_s"] = time.perf_counter() - t0
        if store == "parquet":
            t1 = time.perf_counter()
            parquet = ParquetStore.convert(prepared.store, prepared.groups)
            prepared = Prepared(None, prepared.features, prepared.target, prepared.groups,
                                prepared.rare, parquet)  # fmt: skip
            timing["write_s"] = time.perf_counter() - t1
        return prepared

    ondisk.prepare_parquet = prepare
    started = time.perf_counter()
    result = fedglobal.simulate(config, engine="inprocess", output_dir=output_dir, quiet=True)
    run_s = time.perf_counter() - started
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rounds = pd.read_csv(result.run_dir / "rounds.csv").to_dict("records")
    prepared = regions.prepared_source(load_config(config))
    folder = prepared.store.folder
    disk = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    # reading one region's block of every column, 200 regions (and 20 by filter)
    rng = np.random.default_rng(0)
    names = list(prepared.groups)
    picks = [names[k] for k in rng.choice(len(names), min(200, len(names)), replace=False)]
    t0 = time.perf_counter()
    for name in picks:
        start, stop = prepared.groups.span(name)
        prepared.store.stat_columns(prepared.features, prepared.target, start, stop)
    read_ms = (time.perf_counter() - t0) / len(picks) * 1e3
    filter_ms = None
    if store == "parquet":
        fields = [c.field for c in prepared.store.columns.values()]
        t0 = time.perf_counter()
        for name in picks[:20]:
            prepared.store.main.read_filtered(fields, name)
        filter_ms = (time.perf_counter() - t0) / 20 * 1e3
    out = {
        "store": store,
        "max_rss_mb": round(max_rss, 1),
        "run_s": round(run_s, 2),
        "clean_s": round(timing.get("clean_s", 0.0), 2),
        "write_s": round(timing.get("write_s", 0.0), 2),
        "startup_s": [r["seconds"] for r in rounds if r["round"] == 0],
        "per_round_s": [r["seconds"] for r in rounds if r["round"] >= 1],
        "disk_mb": round(disk / 2**20, 1),
        "files": sum(1 for f in folder.rglob("*") if f.is_file()),
        "region_read_ms": round(read_ms, 3),
        "region_filter_read_ms": None if filter_ms is None else round(filter_ms, 2),
        "accuracy": float(result.metric("accuracy").iloc[-1]),
    }
    print(json.dumps(out), flush=True)
    shutil.rmtree(folder, ignore_errors=True)


# -- the comparison ------------------------------------------------------------------


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def scale_config(folder: Path, data: Path, regions: int, fraction: float, rounds: int) -> Path:
    """speed.py's scale experiment (:func:`speed.scale_experiment`) on ``data``, as TOML."""
    import speed
    import tomli_w

    raw = speed.scale_experiment(f"store{regions}", data, fraction, rounds=rounds)
    path = folder / f"store{regions}.toml"
    path.write_text(tomli_w.dumps(raw), encoding="utf-8")
    return path


def _run_child(store: str, config: Path, folder: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    args = [sys.executable, str(Path(__file__).resolve()), "child", store, str(config)]
    out = subprocess.run(
        [*args, str(folder / "runs")], capture_output=True, text=True, env=env, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"{store} run failed:\n{out.stderr[-3000:]}")
    return json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][-1])


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "child":
        from fedglobal.runtime.fast_exit import exit_now

        child(argv[1], argv[2], argv[3])
        exit_now(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regions", type=int, default=10_000)
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="write every run's numbers to this file")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import speed

    print(f"data.storage = disk: column files vs partitioned Parquet | {_load()}")
    runs: dict[str, list[dict]] = {s: [] for s in STORES}
    with tempfile.TemporaryDirectory(prefix="fedglobal-store-") as tmp:
        folder = Path(tmp)
        data = speed.scale_data(folder, args.regions)
        config = scale_config(folder, data, args.regions, args.fraction, args.rounds)
        for repeat in range(args.repeats):
            order = STORES if repeat % 2 == 0 else STORES[::-1]
            for store in order:
                r = _run_child(store, config, folder)
                runs[store].append(r)
                print(f"  run {repeat + 1} {store}: {json.dumps(r)}", flush=True)
    print(
        f"\n{args.regions} regions of 200 rows, {round(args.regions * args.fraction)} trained "
        f"and evaluated per round; median (range) of {args.repeats} runs | {_load()}"
    )
    rows = [
        ("peak RSS, MB", lambda r: r["max_rss_mb"]),
        ("cleaning pass, s", lambda r: r["clean_s"]),
        ("writing the Parquet dataset, s", lambda r: r["write_s"]),
        ("start-up + schema (round 0), s", lambda r: r["startup_s"][0]),
        ("round 1 (XLA compile, encoding), s", lambda r: r["per_round_s"][0]),
        ("last round, s", lambda r: r["per_round_s"][-1]),
        ("whole run, s", lambda r: r["run_s"]),
        ("on disk, MB", lambda r: r["disk_mb"]),
        ("files on disk", lambda r: r["files"]),
        ("one region, every column, ms", lambda r: r["region_read_ms"]),
    ]
    for what, get in rows:
        cells = [_summary([get(r) for r in runs[s]]) for s in STORES]
        print(
            f"  {what:<38} " + " | ".join(f"{s}: {c}" for s, c in zip(STORES, cells, strict=True))
        )
    filtered = [r["region_filter_read_ms"] for r in runs["parquet"]]
    print(f"  {'one region by partition filter, ms':<38} parquet: {_summary(filtered)}")
    last = {s: statistics.median(r["per_round_s"][-1] for r in runs[s]) for s in STORES}
    rss = {s: statistics.median(r["max_rss_mb"] for r in runs[s]) for s in STORES}
    print(f"  RATIO last round parquet / columns: {last['parquet'] / last['columns']:.2f}x")
    print(f"  RATIO peak RSS parquet / columns:   {rss['parquet'] / rss['columns']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
