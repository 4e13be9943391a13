"""``client.distribute = "mirrored"`` on two logical CPU devices.

Logical devices must be configured before TensorFlow initialises, so the check
runs in a fresh Python subprocess. It trains the same region from the same
weights with one device and with MirroredStrategy over two replicas (same
global batch) and compares the results.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from clients.regional import RegionalClient
    from fedglobal import data
    from fedglobal.config import load_config

    csv = sys.argv[1]

    def client_for(distribute):
        cfg = load_config({
            "data": {"source": "csv:" + csv, "region": "r", "target": "y"},
            "model": {"name": "mlp", "hidden": [8]},
            "client": {"optimizer": "sgd", "learning_rate": 0.05, "batch_size": 16,
                       "epochs": 2, "distribute": distribute},
        })
        tables = [data.load_region(cfg, r) for r in data.list_regions(cfg)]
        schema = data.merge_stats([data.local_stats(t, cfg) for t in tables], cfg)
        return RegionalClient(data.encode(tables[0], schema), cfg, schema)

    single, mirrored = client_for("default"), client_for("mirrored")
    rng = np.random.default_rng(3)
    start = {n: rng.normal(scale=0.3, size=w.shape).astype(w.dtype)
             for n, w in single.get_weights().items()}
    a = single.fit(start, server_round=1).weights
    b = mirrored.fit(start, server_round=1).weights
    print(json.dumps({
        "replicas": mirrored._compiled.strategy.num_replicas_in_sync,
        "max_diff": max(float(np.abs(a[n] - b[n]).max()) for n in a),
        "moved": max(float(np.abs(a[n] - start[n]).max()) for n in a),
        "eval_r2": mirrored.evaluate().metrics["r2"],
    }))
    """
)


def test_mirrored_two_replicas_match_one_device(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 3))
    rows = pd.DataFrame({"r": ["a"] * 100 + ["b"] * 100, "x1": x[:, 0], "x2": x[:, 1]})
    rows["y"] = 2 * x[:, 0] - x[:, 1] + 0.05 * rng.normal(size=200)
    csv = tmp_path / "rows.csv"
    rows.to_csv(csv, index=False)
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(csv)],
        capture_output=True,
        text=True,
        cwd=root,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert result["moved"] > 1e-2  # training did happen
    assert result["max_diff"] < 1e-5  # same global batch, same result
    assert np.isfinite(result["eval_r2"])
