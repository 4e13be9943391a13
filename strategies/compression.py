"""Compressed model updates: float16 / int8 quantisation and top-k sparsification.

A client that compresses sends its *update* ``delta = w_local - w_global``
(``w_global``: the arrays of the train message it answers), encoded by a codec,
instead of its weights:

- ``float16``: ``delta`` in half precision (2x fewer bytes than float32);
- ``int8``: per-tensor symmetric quantisation, ``q = round(delta / s)`` with
  ``s = max|delta| / 127`` (4x fewer bytes; one float32 scale per tensor);
  QSGD-style (Alistarh et al. 2017, "QSGD: Communication-Efficient SGD via
  Gradient Quantization and Encoding"), deterministic rounding;
- ``topk``: the ``ceil(fraction * n)`` entries of largest magnitude of each
  tensor, as int32 flat indices and float32 values (Aji & Heafield 2017,
  "Sparse Communication for Distributed Gradient Descent"; Lin et al. 2018,
  "Deep Gradient Compression").

**Error feedback** (Seide et al. 2014, "1-bit SGD"; Karimireddy et al. 2019,
"Error Feedback Fixes SignSGD and other Gradient Compression Schemes"): the
client keeps what compression lost, ``e = (delta + e) - decode(encode(delta + e))``,
in its node state and adds it to its next update, so that no part of an update
is lost for good, only delayed.

On the server, :class:`fedglobal.server.comm.DecodingGrid` wraps the Grid the ServerApp uses: it
remembers the arrays each node was sent and rebuilds ``w_global + decode(...)``
in the replies, so strategies see ordinary named weights whatever the codec.
It sits *inside* the byte counting, so the counted bytes are the compressed
ones. Integer (non-float) arrays are sent as they are.

Only numpy and Flower here: strategies depend on neither fedglobal nor clients.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from flwr.app import Array, ArrayRecord, RecordDict

from .errors import StrategyError

__all__ = [
    "CODECS",
    "CODEC_KEY",
    "array_view",
    "compress",
    "decode",
    "decode_reply",
    "encode",
]

CODECS = ("none", "float16", "int8", "topk")
#: Reply content key of the ConfigRecord naming the codec of its arrays.
CODEC_KEY = "compression"
#: Message content key of the model weights.
ARRAYS_KEY = "arrays"
_SCALE = "@scale"
_INDEX = "@index"
_VALUE = "@value"


def array_view(array: Array) -> np.ndarray:
    """A read-only NumPy view of a Flower ``Array``'s bytes: no copy.

    ``Array.numpy()`` runs ``np.load`` and copies every byte into a new array;
    reading the ``.npy`` header and viewing the payload in place skips that copy
    (and the page faults of a fresh allocation), which measured here cost more
    than the aggregation itself. Falls back to ``numpy()`` for other encodings.
    """
    data = array.data
    if getattr(array, "stype", None) != "numpy.ndarray" or not isinstance(data, bytes):
        return array.numpy()
    import io

    stream = io.BytesIO(data)
    version = np.lib.format.read_magic(stream)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
    else:
        return array.numpy()
    if dtype.hasobject:
        return array.numpy()
    count = int(np.prod(shape)) if shape else 1
    flat = np.frombuffer(data, dtype=dtype, count=count, offset=stream.tell())
    return flat.reshape(shape, order="F" if fortran else "C")


def _check_codec(codec: str, fraction: float) -> None:
    if codec not in CODECS:
        raise StrategyError(f"unknown compression codec {codec!r}; known: {', '.join(CODECS)}")
    if not (0.0 < fraction <= 1.0):
        raise StrategyError(f"top-k fraction must be in (0, 1], got {fraction!r}")


def encode(
    delta: Mapping[str, np.ndarray], codec: str, *, fraction: float = 0.01
) -> dict[str, np.ndarray]:
    """The wire arrays of ``delta`` under ``codec`` (names carry ``@scale`` etc.)."""
    _check_codec(codec, fraction)
    out: dict[str, np.ndarray] = {}
    for name, value in delta.items():
        value = np.asarray(value)
        if codec == "none" or value.dtype.kind != "f":
            out[name] = value
        elif codec == "float16":
            out[name] = value.astype(np.float16)
        elif codec == "int8":
            peak = float(np.max(np.abs(value))) if value.size else 0.0
            scale = np.float32(peak / 127.0) if peak > 0 else np.float32(1.0)
            out[name] = np.clip(np.rint(value / scale), -127, 127).astype(np.int8)
            out[name + _SCALE] = np.array(scale, np.float32)
        else:  # topk
            flat = value.reshape(-1)
            k = min(flat.size, max(1, math.ceil(fraction * flat.size))) if flat.size else 0
            if k == flat.size:
                index = np.arange(flat.size, dtype=np.int64)
            else:
                index = np.argpartition(np.abs(flat), flat.size - k)[flat.size - k :]
                index.sort()
            out[name + _INDEX] = index.astype(np.int32)
            out[name + _VALUE] = flat[index].astype(np.float32)
    return out


def decode(
    wire: Mapping[str, np.ndarray], codec: str, reference: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``delta`` back from its wire arrays; ``reference`` gives names, shapes, dtypes."""
    _check_codec(codec, 0.5)
    out: dict[str, np.ndarray] = {}
    for name, ref in reference.items():
        ref = np.asarray(ref)
        if codec == "none" or ref.dtype.kind != "f":
            out[name] = np.asarray(wire[name])
        elif codec == "float16":
            out[name] = np.asarray(wire[name]).astype(ref.dtype)
        elif codec == "int8":
            scale = np.float32(np.asarray(wire[name + _SCALE]))
            out[name] = (np.asarray(wire[name]).astype(np.float32) * scale).astype(ref.dtype)
        else:
            dense = np.zeros(ref.size, ref.dtype)
            index = np.asarray(wire[name + _INDEX]).astype(np.int64)
            if index.size and (index.min() < 0 or index.max() >= ref.size):
                raise StrategyError(f"top-k indices of {name!r} out of range", layer=name)
            dense[index] = np.asarray(wire[name + _VALUE]).astype(ref.dtype)
            out[name] = dense.reshape(ref.shape)
    return out


def compress(
    weights: Mapping[str, np.ndarray],
    global_weights: Mapping[str, np.ndarray],
    codec: str,
    *,
    fraction: float = 0.01,
    residual: Mapping[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Client side: ``(wire arrays, new residual)`` for the update ``weights - global``.

    With a ``residual`` (error feedback), it is added to the update first, and
    the new residual is what this encoding lost; without, the new residual is
    still returned (the caller decides whether to keep it).
    """
    delta = {}
    for name, value in weights.items():
        value = np.asarray(value)
        if value.dtype.kind == "f":
            d = value - np.asarray(global_weights[name], value.dtype)
            if residual is not None and name in residual:
                d = d + np.asarray(residual[name], value.dtype)
            delta[name] = d
        else:
            delta[name] = value  # integer state travels as it is
    wire = encode(delta, codec, fraction=fraction)
    sent = decode(wire, codec, delta)
    new_residual = {
        name: (delta[name] - sent[name]).astype(delta[name].dtype)
        for name in delta
        if delta[name].dtype.kind == "f"
    }
    return wire, new_residual


def apply_update(
    global_weights: Mapping[str, np.ndarray], delta: Mapping[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """``w_global + delta`` for float arrays; integer arrays are taken from ``delta``."""
    out = {}
    for name, d in delta.items():
        g = np.asarray(global_weights[name])
        out[name] = (g + d).astype(g.dtype) if g.dtype.kind == "f" else np.asarray(d)
    return out


def decode_reply(content: RecordDict, global_arrays: ArrayRecord) -> RecordDict:
    """A reply's content with its compressed arrays replaced by full weights."""
    codec = str(content[CODEC_KEY]["codec"])
    reference = {name: array_view(array) for name, array in global_arrays.items()}
    wire = {name: array_view(array) for name, array in content[ARRAYS_KEY].items()}
    weights = apply_update(reference, decode(wire, codec, reference))
    out = RecordDict()
    for key, record in content.items():
        if key == ARRAYS_KEY:
            out[key] = ArrayRecord({n: Array(np.asarray(v)) for n, v in weights.items()})
        elif key != CODEC_KEY:
            out[key] = record
    return out
