"""Export: .keras, SavedModel and TFLite of the global and personalised models predict the same."""

from __future__ import annotations

import numpy as np
import pytest

from fedglobal import data
from fedglobal.cli.main import main as cli_main
from fedglobal.errors import RunError
from fedglobal.protocol import LOCAL_LAYERS_QUERY
from fedglobal.run.export import FORMATS, export_model, load_export, load_model, personal_regions

pytestmark = pytest.mark.slow


def _test_rows(result, region: str) -> np.ndarray:
    """The region's encoded test rows, as a client would feed its model."""
    schema = data.Schema.from_json((result.run_dir / "schema.json").read_text())
    return data.encode(data.load_region(result.config, region), schema).x_test


@pytest.mark.parametrize("fmt", FORMATS)
def test_global_model_exports_predict_like_the_run_model(tiny_runs, run_copy, fmt):
    run_dir = run_copy("fedavg")
    x = _test_rows(tiny_runs.fedavg, "north")
    expected = np.asarray(tiny_runs.fedavg.model(x, training=False))
    path = export_model(run_dir, fmt)
    assert path.exists() and path.is_relative_to(run_dir / "export")
    got = load_export(path)(x)
    assert got.shape == expected.shape == (len(x), 1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("fmt", FORMATS)
def test_personalised_exports_carry_the_regions_own_head(tiny_runs, run_copy, fmt):
    run_dir = run_copy("fedper")
    assert sorted(personal_regions(run_dir)) == ["east", "north", "south"]
    x = _test_rows(tiny_runs.fedper, "south")
    personal = load_model(run_dir, region="south")
    expected = np.asarray(personal(x, training=False))
    got = load_export(export_model(run_dir, fmt, region="south"))(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    # the head differs from the global model's, the shared layers do not
    global_weights = {v.path: v.numpy() for v in tiny_runs.fedper.model.weights}
    own = {v.path: v.numpy() for v in personal.weights}
    assert not np.allclose(own["output/kernel"], global_weights["output/kernel"])
    np.testing.assert_array_equal(own["hidden_0/kernel"], global_weights["hidden_0/kernel"])


def test_personal_model_matches_what_the_region_evaluated(tiny_runs):
    """The collected head is the one the region trained and evaluated with in the last round."""
    result = tiny_runs.fedper
    h = result.history
    mae = h[(h.region == "east") & (h.split == "test") & (h.metric == "mae")].value.iloc[-1]
    table = data.load_region(result.config, "east")
    schema = data.Schema.from_json((result.run_dir / "schema.json").read_text())
    arrays = data.encode(table, schema)
    pred = np.asarray(result.personal_model("east")(arrays.x_test, training=False))
    assert float(np.abs(pred - arrays.y_test).mean()) == pytest.approx(mae, rel=1e-4)


def test_export_errors_say_what_to_do(tiny_runs, run_copy):
    with pytest.raises(RunError, match="holds no personalised layers"):
        export_model(tiny_runs.fedavg.run_dir, "keras", region="north")
    with pytest.raises(RunError, match=r"regions: east, north, south"):
        export_model(tiny_runs.fedper.run_dir, "keras", region="west")
    with pytest.raises(RunError, match="unknown export format 'onnx'"):
        export_model(tiny_runs.fedavg.run_dir, "onnx")
    with pytest.raises(RunError, match="must end in .keras"):
        export_model(tiny_runs.fedavg.run_dir, "keras", out=run_copy() / "model.h5")
    with pytest.raises(RunError, match="not a complete run folder"):
        export_model(tiny_runs.folder, "keras")


def test_cli_export(run_copy, capsys):
    run_dir = run_copy("fedper")
    code = cli_main(["export", str(run_dir), "--format", "tflite", "--region", "north"])
    assert code == 0
    assert (run_dir / "export" / "north" / "model.tflite").is_file()
    assert "exported tflite" in capsys.readouterr().out
    assert cli_main(["export", str(run_dir), "--region", "atlantis"]) == 2
    assert "no personalised layers for region 'atlantis'" in capsys.readouterr().err


def test_a_client_without_the_handler_does_not_break_the_run(make_experiment):
    """A client of an older version (no ``query.local_layers`` handler): the run completes."""
    import clients.app as client_app
    import fedglobal

    registered = client_app.app._registered_funcs
    saved = registered.pop(LOCAL_LAYERS_QUERY)  # the real handler, put back below
    try:
        result = fedglobal.simulate(
            make_experiment(
                "no-handler",
                experiment={"rounds": 1},
                strategy={"name": "fedper", "head": "output/*"},
                output={"personal_models": True, "plots": False, "tensorboard": False},
            ),
            quiet=True,
        )
    finally:
        registered[LOCAL_LAYERS_QUERY] = saved
    info = result.summary["personal_models"]
    assert info["regions"] == [] and len(info["failed"]) == 3
    assert "local_layers" in info["failed"][0]
    with pytest.raises(RunError, match="no region sent its local layers"):
        export_model(result.run_dir, "keras", region="north")


def test_a_region_that_never_trained_sends_a_clear_error(make_experiment):
    """One region trains in the single round: the two others reply why they have no layers."""
    import fedglobal

    result = fedglobal.simulate(
        make_experiment(
            "one-trained",
            experiment={"rounds": 1},
            strategy={
                "name": "fedper",
                "head": "output/*",
                "fraction_train": 0.34,
                "min_train_clients": 1,
            },
            output={"personal_models": True, "plots": False, "tensorboard": False},
        ),
        quiet=True,
    )
    info = result.summary["personal_models"]
    assert len(info["regions"]) == 1 and len(info["failed"]) == 2
    for reason in info["failed"]:
        assert "has no local layers: it never trained" in reason
    trained = info["regions"][0]
    assert sorted(personal_regions(result.run_dir)) == [trained]
