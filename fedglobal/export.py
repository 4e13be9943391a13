"""Export a run's model: Keras (``.keras``), TF SavedModel, or TFLite.

``fedglobal export runs/<name> --format tflite`` (or :func:`export_model`).

- The **global** model is the run's ``model.keras``.
- A **personalised** model (``--region R``) is the global model with region
  R's own copy of the layers its strategy keeps local (FedPer heads, FedBN
  batch norms, ``rule = "local"`` layers). The run must have collected them:
  ``[output] personal_models = true`` asks every region for its local layers
  at the end of the run (message ``query.local_layers``) and saves them under
  ``<run>/personal/``.

Every format takes encoded features (``schema.json``'s ``feature_names``, in
order, not standardised: normalisation is inside the model) and returns
probabilities (classification) or predictions in the target's units
(regression). :func:`load_export` loads any of them as a predict function.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedglobal.errors import RunError
from fedglobal.results import Result, load_run
from fedglobal.run_folder import PERSONAL_DIR

__all__ = ["FORMATS", "export_model", "load_export", "load_model", "personal_regions"]

FORMATS = ("keras", "savedmodel", "tflite")
_FILES = {"keras": "model.keras", "savedmodel": "savedmodel", "tflite": "model.tflite"}


def _run(run: str | Path | Result) -> Result:
    return run if isinstance(run, Result) else load_run(run)


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "_", text).strip("_") or "region"


def personal_regions(run: str | Path | Result) -> dict[str, str]:
    """``{region: file}`` of the personalised layers saved in the run ({} if none)."""
    index = _run(run).run_dir / PERSONAL_DIR / "index.json"
    if not index.is_file():
        return {}
    return dict(json.loads(index.read_text(encoding="utf-8")))


def _no_personal_layers(result: Result) -> RunError:
    info = result.summary.get("personal_models")
    strategy = result.summary.get("strategy", result.config.strategy.name)
    if info and not info.get("layers"):
        return RunError(
            f"strategy {strategy!r} keeps no layers local, so every region's model is the "
            "global model: export without --region"
        )
    if info and info.get("failed"):
        return RunError(
            "no region sent its local layers at the end of this run "
            f"(first failure: {info['failed'][0]})"
        )
    return RunError(
        f"{result.run_dir} holds no personalised layers: run with "
        "[output] personal_models = true and a strategy that keeps layers local "
        "(layerwise with rule = 'local', fedper, fedbn) or personal models (ditto)"
    )


def load_model(run: str | Path | Result, *, region: str | None = None) -> Any:
    """The run's global ``keras.Model``, or region ``region``'s personalised model."""
    import keras

    result = _run(run)
    model = keras.saving.load_model(result.run_dir / "model.keras")
    if region is None:
        return model
    index = personal_regions(result)
    if not index:
        raise _no_personal_layers(result)
    if region not in index:
        raise RunError(
            f"no personalised layers for region {region!r} in {result.run_dir} "
            f"(regions: {', '.join(sorted(index))})"
        )
    with np.load(result.run_dir / PERSONAL_DIR / index[region]) as own:
        local = {name: own[name] for name in own.files}
    variables = {v.path: v for v in model.weights}
    for name, value in local.items():
        if name not in variables:
            raise RunError(f"personalised layer {name!r} of region {region!r} is not in the model")
        if tuple(variables[name].shape) != value.shape:
            raise RunError(
                f"personalised layer {name!r} of region {region!r} has shape {value.shape}, "
                f"the model expects {tuple(variables[name].shape)}"
            )
        variables[name].assign(value)
    return model


def default_path(result: Result, fmt: str, region: str | None = None) -> Path:
    """``<run>/export/[<region>/]model.keras | savedmodel | model.tflite``."""
    base = result.run_dir / "export"
    if region is not None:
        base = base / _slug(region)
    return base / _FILES[fmt]


def export_model(
    run: str | Path | Result,
    fmt: str = "keras",
    *,
    region: str | None = None,
    out: str | Path | None = None,
) -> Path:
    """Export the run's global (or ``region``'s personalised) model; returns the path written."""
    if fmt not in FORMATS:
        raise RunError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    result = _run(run)
    model = load_model(result, region=region)
    path = Path(out) if out is not None else default_path(result, fmt, region)
    if fmt == "keras" and path.suffix != ".keras":
        raise RunError(f"a Keras export must end in .keras, got {str(path)!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".export-") as tmp:
        staged = Path(tmp) / path.name
        if fmt == "keras":
            model.save(staged)
        elif fmt == "savedmodel":
            model.export(str(staged), format="tf_saved_model", verbose=False)
        else:
            saved = Path(tmp) / "savedmodel"
            model.export(str(saved), format="tf_saved_model", verbose=False)
            staged.write_bytes(_to_tflite(saved))
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        staged.replace(path)
    return path


def _to_tflite(saved_model: Path) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    return bytes(converter.convert())


def load_export(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """A ``predict(x) -> np.ndarray`` function for an exported model of any format."""
    p = Path(path)
    if not p.exists():
        raise RunError(f"no exported model at {str(p)!r}")
    if p.suffix == ".keras":
        import keras

        model = keras.saving.load_model(p)
        return lambda x: np.asarray(model(np.asarray(x, np.float32), training=False))
    if p.is_dir() and (p / "saved_model.pb").is_file():
        import tensorflow as tf

        loaded = tf.saved_model.load(str(p))
        return lambda x: np.asarray(loaded.serve(np.asarray(x, np.float32)))
    if p.suffix == ".tflite":
        return _tflite_predict(p)
    raise RunError(f"{str(p)!r} is not a .keras file, a SavedModel directory or a .tflite file")


def _tflite_predict(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    import warnings

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
        interpreter = tf.lite.Interpreter(model_path=str(path))

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        return np.asarray(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))

    return predict
