"""What a run writes besides the model: server rows, rounds.csv, layer norms, TensorBoard, plots."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedglobal.run.results import check_run
from fedglobal.server.callbacks.tensorboard import read_scalars

pytestmark = pytest.mark.slow


def test_server_side_evaluation_rows(tiny_runs):
    h = tiny_runs.fedavg.history
    server = h[h.split == "server"]
    assert set(server.region) == {"all"}
    assert sorted(server["round"].unique()) == [0, 1, 2]
    assert set(server.metric) == {"loss", "mae", "rmse", "r2"}
    assert (
        tiny_runs.fedavg.final("r2", split="server")
        > tiny_runs.fedavg.metric("r2", split="server")[0]
    )
    assert not (tiny_runs.fedper.history.split == "server").any()


def test_run_folders_match_the_documented_schema(tiny_runs):
    assert check_run(tiny_runs.fedavg.run_dir) == []
    assert check_run(tiny_runs.fedper.run_dir) == []


def test_rounds_csv_counts_the_bytes_of_every_message(tiny_runs):
    result = tiny_runs.fedavg
    rounds = result.rounds
    assert list(rounds["round"]) == [0, 1, 2]
    weights = np.load(result.run_dir / "checkpoint.npz")
    model_bytes = sum(weights[k].nbytes for k in weights.files if k != "__round__")
    # round 0: 3 statistics queries (no arrays) + 3 evaluations; rounds 1-2: 3 train + 3 evaluate
    assert (rounds.messages_sent == 6).all() and (rounds.messages_received == 6).all()
    assert rounds.array_bytes_sent[0] >= 3 * model_bytes
    for r in (1, 2):
        sent = rounds.array_bytes_sent[r]
        assert 6 * model_bytes <= sent < 6 * model_bytes + 6 * 2048  # + npy headers and names
        assert 3 * model_bytes <= rounds.array_bytes_received[r] < 3 * model_bytes + 3 * 2048
    assert (rounds.bytes_sent > rounds.array_bytes_sent).all()  # configs carry the experiment
    comm = result.summary["comm"]
    assert comm["bytes_sent"] == rounds.bytes_sent.sum()
    assert comm["bytes_received"] == rounds.bytes_received.sum()


def test_layer_norms_match_the_checkpoint(tiny_runs):
    result = tiny_runs.fedavg
    norms = result.layer_norms
    weights = np.load(result.run_dir / "checkpoint.npz")
    last = norms[norms["round"] == 2].set_index("variable")
    for name in weights.files:
        if name != "__round__":
            assert last.loc[name, "weight_norm"] == pytest.approx(
                np.linalg.norm(weights[name].astype(np.float64)), rel=1e-9
            )
    assert norms[norms["round"] == 0].update_norm.isna().all()
    assert (norms[norms["round"] > 0].update_norm > 0).any()


def test_fedper_never_updates_the_server_copy_of_the_local_head(tiny_runs):
    norms = tiny_runs.fedper.layer_norms
    head = norms[(norms.variable == "output/kernel") & (norms["round"] > 0)]
    hidden = norms[(norms.variable == "hidden_0/kernel") & (norms["round"] > 0)]
    assert (head.update_norm == 0).all()
    assert (hidden.update_norm > 0).all()


def test_tensorboard_scalars_mirror_the_history(tiny_runs):
    result = tiny_runs.fedavg
    scalars = read_scalars(result.run_dir / "tensorboard")
    h = result.history
    for split in ("test", "server"):
        expected = h[(h.region == "all") & (h.split == split) & (h.metric == "r2")]
        got = scalars[f"{split}/r2"]
        assert sorted(got) == [0, 1, 2]
        for row in expected.itertuples():
            assert got[row.round] == pytest.approx(row.value, rel=1e-5)
    assert scalars["train/loss"].keys() == {1, 2}
    assert {"regions/test/r2/east", "regions/train/loss/north"} <= set(scalars)
    assert {"weight_norm/output/kernel", "update_norm/output/kernel"} <= set(scalars)
    rounds = result.rounds
    assert [scalars["comm/bytes_sent"][r] for r in (0, 1, 2)] == list(rounds.bytes_sent)
    assert "time/round_seconds" in scalars
    assert not (tiny_runs.fedper.run_dir / "tensorboard").exists()  # output.tensorboard = false


def test_plots_are_written_as_pngs(tiny_runs):
    from PIL import Image

    result = tiny_runs.fedavg
    names = result.summary["plots"]
    assert names == [
        "plots/r2_rounds.png",
        "plots/r2_spread.png",
        "plots/r2_by_region.png",
        "plots/loss_rounds.png",
    ]
    for name in names:
        with Image.open(result.run_dir / name) as image:
            assert image.format == "PNG"
            assert image.size[0] >= 600 and image.size[1] >= 250
            # not blank: many distinct colours
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50


def test_classification_plots_use_accuracy(tmp_path):
    from fedglobal.run.plots import write_run_plots

    rows = [
        (r, region, "test", metric, 0.5 + 0.1 * r)
        for r in range(3)
        for region in ("all", "a", "b")
        for metric in ("loss", "accuracy")
    ]
    history = pd.DataFrame(rows, columns=["round", "region", "split", "metric", "value"])
    files = write_run_plots(history, "classification", tmp_path)
    assert [f.name for f in files][:3] == [
        "accuracy_rounds.png",
        "accuracy_spread.png",
        "accuracy_by_region.png",
    ]


def test_summary_records_hooks_and_no_early_stop(tiny_runs):
    summary = json.loads((tiny_runs.fedavg.run_dir / "summary.json").read_text())
    assert summary["stopped"] is None
    assert summary["hooks"] and "HeldOutEvaluation" in summary["hooks"][0]
    assert summary["personal_models"] is None
    assert tiny_runs.fedper.summary["personal_models"]["regions"] == ["east", "north", "south"]
