"""FedProx Synthetic(alpha, beta) (Li et al. 2020) and its IID variant."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedglobal.data import encode, list_regions, load_region, local_stats, merge_stats

SYNTH = {"source": "synthetic:fedprox", "task": "classification", "num_regions": 30}


def _pooled(cfg) -> dict[str, pd.DataFrame]:
    out = {}
    for region in list_regions(cfg):
        t = load_region(cfg, region)
        out[region] = pd.concat([t.train, t.test], ignore_index=True)
    return out


def test_thirty_devices_sixty_features_ten_classes(make_cfg):
    cfg = make_cfg(**SYNTH)
    data = _pooled(cfg)
    assert list(data) == [f"device_{k:02d}" for k in range(30)]
    for frame in data.values():
        assert len(frame) >= 50
        assert list(frame.columns) == [*(f"x{j}" for j in range(60)), "y"]
        assert frame["y"].between(0, 9).all()
    labels = pd.concat(data.values())["y"]
    assert labels.nunique() > 2


def test_power_law_sizes_and_device_heterogeneity(make_cfg):
    data = _pooled(make_cfg(**SYNTH))
    sizes = np.array([len(f) for f in data.values()])
    assert sizes.max() > 4 * np.median(sizes)  # lognormal(4, 2): heavy tail
    # Synthetic(0.5, 0.5): device means v_k ~ N(B_k, 1) differ between devices.
    means = np.array([f["x0"].mean() for f in data.values()])
    assert means.std() > 0.3


def test_iid_variant_shares_one_distribution(make_cfg):
    data = _pooled(make_cfg(**SYNTH, synthetic_iid=True))
    means = np.array([f["x0"].mean() for f in data.values()])
    sizes = np.array([len(f) for f in data.values()])
    # x ~ N(0, Sigma) on every device: Sigma_11 = 1, so the mean's sd is 1/sqrt(n).
    assert (np.abs(means) < 5 / np.sqrt(sizes)).all()


def test_deterministic_by_seed(make_cfg):
    a = load_region(make_cfg(seed=3, **SYNTH), "device_05")
    b = load_region(make_cfg(seed=3, **SYNTH), "device_05")
    c = load_region(make_cfg(seed=4, **SYNTH), "device_05")
    pd.testing.assert_frame_equal(a.train, b.train)
    x_a, x_c = a.train.to_numpy(), c.train.to_numpy()
    assert x_a.shape != x_c.shape or not np.allclose(x_a, x_c)


def test_schema_and_encoding(make_cfg):
    cfg = make_cfg(**SYNTH)
    tables = [load_region(cfg, r) for r in list_regions(cfg)]
    schema = merge_stats([local_stats(t, cfg) for t in tables], cfg)
    assert schema.input_dim == 60
    seen = sorted({int(v) for t in tables for v in t.train["y"]})
    assert schema.classes == [str(k) for k in seen]
    arrays = encode(tables[0], schema)
    np.testing.assert_array_equal(arrays.y_train, tables[0].train["y"].to_numpy())


@pytest.mark.parametrize("n", [5, 120])
def test_num_regions_sets_devices(make_cfg, n):
    regions = list_regions(make_cfg(**{**SYNTH, "num_regions": n}))
    assert len(regions) == n and regions == sorted(regions)
