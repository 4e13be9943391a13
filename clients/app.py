"""The Flower ClientApp of a regional client (component ``clients.app:app``).

The same app runs on every engine. Its region comes from the node config
(``region``, and in deployment ``data-path``, the region's own file); the
experiment and the federated schema arrive in each message's config. The
region's rows are loaded here, on the client, and never leave it: replies hold
model weights, counts and scalar statistics only.
"""

from __future__ import annotations

import collections
import functools

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import attacks, compress, paths
from clients.faults import fault_mod
from clients.mods import optional_clipping_mod
from clients.regional import EvaluateResult, FitResult, RegionalClient
from fedglobal import data, metrics
from fedglobal.config import ExperimentConfig
from fedglobal.errors import DataError
from fedglobal.protocol import TRAINED_BY_KEY, WHY_KEY
from fedglobal.weights import from_record, to_record
from strategies import compression

#: The app's mods, in order; cohort training applies them to its replies too.
#: ``fault_mod`` acts only when ``FEDGLOBAL_FAULTS`` plans a fault (clients.faults).
MODS = [fault_mod, optional_clipping_mod]

app = ClientApp(mods=MODS)

LOCAL_STATE_KEY = "fedglobal-last-trained"


@functools.lru_cache(maxsize=16)
def _experiment(toml_text: str, base_dir: str) -> ExperimentConfig:
    import tomllib

    return ExperimentConfig.from_dict(tomllib.loads(toml_text), base_dir=base_dir)


def experiment_from(config: ConfigRecord) -> ExperimentConfig:
    """The experiment carried in a message's config."""
    return _experiment(str(config["experiment"]), str(config.get("base-dir", ".")))


@functools.lru_cache(maxsize=64)
def _regions(cfg: ExperimentConfig) -> tuple[str, ...]:
    return tuple(data.list_regions(cfg))


def _region(context: Context, cfg: ExperimentConfig) -> tuple[str, str | None]:
    """This node's region (and local data file) from its node config.

    A SuperNode names its region (``region``, optionally ``data-path``). A node
    that only has Flower's simulation keys (``partition-id``, ``num-partitions``)
    is the ``partition-id``-th of the experiment's sorted regions.
    """
    node_config = context.node_config
    region = node_config.get("region")
    if not region and "partition-id" in node_config:
        regions = _regions(cfg)
        partition = int(node_config["partition-id"])
        num = int(node_config.get("num-partitions", len(regions)))
        if num != len(regions) or not 0 <= partition < len(regions):
            raise DataError(
                f"this node is partition {partition} of {num}, but the experiment has "
                f"{len(regions)} regions: run one node per region"
            )
        region = regions[partition]
    if not region:
        raise DataError("this node has no 'region' in its node config (e.g. region='europe')")
    path = node_config.get("data-path")
    return str(region), (str(path) if path else None)


#: Bytes of encoded region arrays a process keeps (least recently used first
#: out). A fixed budget, so memory does not grow with the number of regions
#: simulated. A miss is cheap in a simulation: the region's rows are sliced from
#: the process's once-encoded source (:func:`fedglobal.data.encode_region`).
CLIENT_CACHE_BYTES = 128 << 20


_clients: collections.OrderedDict[tuple, tuple[RegionalClient, int]] = collections.OrderedDict()
_clients_bytes = 0


def _client(
    cfg: ExperimentConfig, region: str, data_path: str | None, schema_json: str
) -> RegionalClient:
    global _clients_bytes
    key = (cfg, region, data_path, schema_json)
    hit = _clients.get(key)
    if hit is not None:
        _clients.move_to_end(key)
        return hit[0]
    schema = data.Schema.from_json(schema_json)
    arrays = data.encode_region(cfg, region, schema, data_path=data_path)
    client = RegionalClient(arrays, cfg, schema)
    size = sum(a.nbytes for a in (arrays.x_train, arrays.y_train, arrays.x_test, arrays.y_test))
    _clients[key] = (client, size)
    _clients_bytes += size
    while _clients_bytes > CLIENT_CACHE_BYTES and len(_clients) > 1:
        _, (_, dropped) = _clients.popitem(last=False)
        _clients_bytes -= dropped
    return client


def _meta(region: str, config: ConfigRecord) -> ConfigRecord:
    return ConfigRecord({"region": region, "round": int(config.get("server-round", 0))})


@app.query()
def query(message: Message, context: Context) -> Message:
    """Send the region's aggregate statistics (sums, counts, label set); no rows."""
    config = message.content["config"]
    cfg = experiment_from(config)
    region, path = _region(context, cfg)
    stats = data.region_stats(cfg, region, data_path=path)
    scalars, lists = stats.to_records()
    meta = _meta(region, config)
    content = RecordDict(
        {"metrics": MetricRecord(scalars), "lists": ConfigRecord(lists), "meta": meta}
    )
    return Message(content, reply_to=message)


@app.query("local_layers")
def local_layers(message: Message, context: Context) -> Message:
    """Send this region's own copy of the layers its strategy keeps local.

    The server asks at the end of a run (``[output] personal_models``,
    :data:`fedglobal.monitor.LOCAL_LAYERS_QUERY`) with the layer names in the
    config key ``local-layers``. The reply holds those variables as this region
    last trained them (the state :func:`train_reply` keeps), and ``meta.region``.

    Raises:
        DataError: this region never trained in this process (it has no local
            layers of its own), or its copy lacks a requested layer.
    """
    config = message.content["config"]
    cfg = experiment_from(config)
    region, _ = _region(context, cfg)
    names = [str(n) for n in config.get("local-layers", [])]
    saved = context.state.get(LOCAL_STATE_KEY)
    if saved is None:
        raise DataError(
            f"region {region!r} has no local layers: it never trained with a strategy that "
            "keeps layers local (it was not sampled, or its node restarted)"
        )
    own = from_record(saved)
    missing = [n for n in names if n not in own]
    if missing:
        raise DataError(
            f"region {region!r} has no local copy of {missing[:5]} "
            f"(its model has {len(own)} variables, e.g. {sorted(own)[:5]})"
        )
    content = RecordDict(
        {"arrays": to_record({n: own[n] for n in names}), "meta": _meta(region, config)}
    )
    return Message(content, reply_to=message)


def _weights_for(message: Message, context: Context) -> dict:
    """Global weights, with this region's own copy of any layer it keeps local."""
    config = message.content["config"]
    weights = from_record(message.content["arrays"])
    local_names = list(config.get("local-layers", []))
    saved = context.state.get(LOCAL_STATE_KEY)
    if local_names and saved is not None:
        own = from_record(saved)
        weights.update({n: own[n] for n in local_names if n in own})
    return weights


def _client_for(message: Message, context: Context) -> RegionalClient:
    config = message.content["config"]
    cfg = experiment_from(config)
    region, path = _region(context, cfg)
    return _client(cfg, region, path, str(config["schema"]))


def fit_options(config: ConfigRecord) -> dict:
    """The keyword options of :meth:`RegionalClient.fit` a train message asks for."""
    steps = config.get("local-steps")  # a straggler's partial work (strategies.FedAvg)
    return {
        "proximal_mu": float(config.get("proximal-mu", 0.0)),  # strategies.FedProx
        "local_steps": None if steps is None else int(steps),
    }


def train_reply(
    message: Message,
    context: Context,
    client: RegionalClient,
    result: FitResult,
    *,
    trained_by: str = paths.KERAS_FIT,
    why: str = "",
) -> Message:
    """The reply to a train message (new weights, count, metrics); keeps local layers.

    Layers the round keeps local (config ``local-layers``: FedPer heads, FedBN
    statistics, interval-skipped layers) stay here, in ``context.state``: the
    reply carries the server's own value of them back (the server keeps its
    value for those layers anyway), never this region's trained copy.
    """
    config = message.content["config"]
    weights = result.weights
    if "local-layers" in config:
        context.state[LOCAL_STATE_KEY] = to_record(result.weights)
        sent = message.content["arrays"]
        local = [str(n) for n in config["local-layers"] if str(n) in sent]
        if local:
            weights = {**result.weights, **{n: sent[n].numpy() for n in local}}
    arrays, codec = compress.reply_arrays(message, context, weights, client.config)
    meta = _meta(client.region, config)
    meta[TRAINED_BY_KEY] = trained_by
    if why:  # no empty string: Flower's count_bytes() refuses one
        meta[WHY_KEY] = why
    content = RecordDict(
        {
            "arrays": arrays,
            "metrics": MetricRecord({"num-examples": result.num_examples, **result.metrics}),
            "meta": meta,
        }
    )
    if codec is not None:  # strategies.compression.DecodingGrid rebuilds the weights
        content[compression.CODEC_KEY] = codec
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Local training from the global weights; reply with new weights and the count.

    :func:`clients.cohort.train_cohort` produces the same replies for many train
    messages at once (cohort training); keep the two in step.
    """
    config = message.content["config"]
    honest = _client_for(message, context)
    client = attacks.for_training(honest)  # a label-flipped copy for a malicious region
    result = client.fit(
        _weights_for(message, context), int(config["server-round"]), **fit_options(config)
    )
    result = attacks.poison_update(result, message, honest.region)  # sign flip / noise
    why = paths.fallback_reason(message, honest.config.client.cohort)
    return train_reply(message, context, honest, result, why=why)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Test-split metrics of the global model (with local layers, if any)."""
    client = _client_for(message, context)
    return evaluate_reply(message, client, client.evaluate(_weights_for(message, context)))


def evaluate_reply(message: Message, client: RegionalClient, result: EvaluateResult) -> Message:
    """The reply to an evaluate message: the count and the sufficient statistics."""
    config = message.content["config"]
    values = {"num-examples": result.num_examples, **metrics.to_record_values(result.stats)}
    content = RecordDict({"metrics": MetricRecord(values), "meta": _meta(client.region, config)})
    return Message(content, reply_to=message)


# query.client_state / query.restore_client_state: saved and restored by checkpoints
from clients import state as _state  # noqa: E402  (it imports this module lazily)

_state.register(app)
