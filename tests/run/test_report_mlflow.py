"""Optional MLflow logging: params, per-round metrics and the model (tested when installed)."""

from __future__ import annotations

import pytest

import fedglobal

pytestmark = pytest.mark.slow


def test_a_run_logs_params_metrics_and_artifacts(make_experiment, tmp_path):
    pytest.importorskip("mlflow", reason="mlflow is not installed (pip install mlflow-skinny)")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = make_experiment(
        "tracked",
        output={
            "mlflow": True,
            "mlflow_tracking_uri": uri,
            "mlflow_experiment": "fedglobal-tests",
            "tensorboard": False,
        },
    )
    cfg["experiment"]["output_dir"] = str(tmp_path / "runs")
    result = fedglobal.simulate(cfg, quiet=True)
    info = result.summary["mlflow"]
    assert info["tracking_uri"] == uri and "error" not in info

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.run_name == result.run_dir.name
    assert run.data.params["strategy.name"] == "fedavg"
    assert run.data.params["experiment.rounds"] == "2"
    assert run.data.tags["fedglobal.run_dir"] == str(result.run_dir)
    history = client.get_metric_history(info["run_id"], "test/r2")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == [0, 1, 2]
    assert sorted(history, key=lambda m: m.step)[-1].value == pytest.approx(result.final("r2"))
    assert len(client.get_metric_history(info["run_id"], "comm/bytes_sent")) == 3
    artifacts = {a.path for a in client.list_artifacts(info["run_id"])}
    assert {"model.keras", "summary.json", "history.csv", "config.toml", "plots"} <= artifacts
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "fedglobal-tests"
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()  # not ./mlruns
