"""The Flower ClientApp of a regional client (component ``clients.app:app``).

The same app runs on every engine. Its region comes from the node config
(``region``, and in deployment ``data-path``, the region's own file); the
experiment and the federated schema arrive in each message's config. The
region's rows are loaded here, on the client, and never leave it: replies hold
model weights, counts and scalar statistics only.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clients import attacks, compress, ditto, paths, scaffold, state
from clients.faults import fault_mod
from clients.mods import optional_clipping_mod
from clients.node import (
    LOCAL_STATE_KEY,
    client_for,
    experiment_from,
    fit_options,
    meta_record,
    node_region,
    weights_for,
)
from clients.regional import EvaluateResult, FitResult, RegionalClient
from fedglobal import data, metrics
from fedglobal.engines import placement
from fedglobal.errors import DataError
from fedglobal.protocol import (
    LOCAL_LAYERS_KEY,
    LOCAL_LAYERS_QUERY,
    META_KEY,
    SERVER_ROUND_KEY,
    TRAINED_BY_KEY,
    WHY_KEY,
    from_record,
    to_record,
)
from strategies import compression

#: The app's mods, in order; cohort training applies them to its replies too.
#: ``fault_mod`` acts only when ``FEDGLOBAL_FAULTS`` plans a fault (clients.faults).
MODS = [fault_mod, optional_clipping_mod]

app = ClientApp(mods=MODS)


@app.query()
def query(message: Message, context: Context) -> Message:
    """Send the region's aggregate statistics (sums, counts, label set); no rows."""
    config = message.content["config"]
    cfg = experiment_from(config)
    region, path = node_region(context, cfg)
    stats = data.region_stats(cfg, region, data_path=path)
    scalars, lists = stats.to_records()
    meta = meta_record(region, config)
    content = RecordDict(
        {"metrics": MetricRecord(scalars), "lists": ConfigRecord(lists), META_KEY: meta}
    )
    return Message(content, reply_to=message)


@app.query(LOCAL_LAYERS_QUERY.split(".", 1)[1])
def local_layers(message: Message, context: Context) -> Message:
    """Send this region's own copy of the layers its strategy keeps local.

    The server asks at the end of a run (``[output] personal_models``,
    :data:`fedglobal.protocol.LOCAL_LAYERS_QUERY`) with the layer names in the
    config key ``local-layers``. The reply holds those variables as this region
    last trained them (the state :func:`train_reply` keeps; with Ditto, its
    personal model), and ``meta.region``.

    Raises:
        DataError: this region never trained in this process (it has no local
            layers of its own), or its copy lacks a requested layer.
    """
    config = message.content["config"]
    cfg = experiment_from(config)
    region, _ = node_region(context, cfg)
    names = [str(n) for n in config.get(LOCAL_LAYERS_KEY, [])]
    saved = context.state.get(ditto.STATE_KEY)  # Ditto: the personal model, every variable
    if saved is None:
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
        {"arrays": to_record({n: own[n] for n in names}), META_KEY: meta_record(region, config)}
    )
    return Message(content, reply_to=message)


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
    if LOCAL_LAYERS_KEY in config:
        context.state[LOCAL_STATE_KEY] = to_record(result.weights)
        sent = message.content["arrays"]
        local = [str(n) for n in config[LOCAL_LAYERS_KEY] if str(n) in sent]
        if local:
            weights = {**result.weights, **{n: sent[n].numpy() for n in local}}
    arrays, codec = compress.reply_arrays(message, context, weights, client.config)
    meta = ConfigRecord({**meta_record(client.region, config), **placement.here()})
    meta[TRAINED_BY_KEY] = trained_by
    if why:  # no empty string: Flower's count_bytes() refuses one
        meta[WHY_KEY] = why
    content = RecordDict(
        {
            "arrays": arrays,
            "metrics": MetricRecord({"num-examples": result.num_examples, **result.metrics}),
            META_KEY: meta,
        }
    )
    if codec is not None:  # fedglobal.server.comm.DecodingGrid rebuilds the weights
        content[compression.CODEC_KEY] = codec
    delta = scaffold.control_delta(message, context, client, result)
    if delta is not None:  # SCAFFOLD: only Delta c_i leaves; c_i stays in context.state
        content[scaffold.DELTA_KEY] = to_record(delta)
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """Local training from the global weights; reply with new weights and the count.

    :func:`clients.cohort.train_cohort` produces the same replies for many train
    messages at once (cohort training); keep the two in step.
    """
    config = message.content["config"]
    honest = client_for(message, context)
    client = attacks.for_training(honest)  # a label-flipped copy for a malicious region
    weights = weights_for(message, context)
    result = client.fit(
        weights,
        int(config[SERVER_ROUND_KEY]),
        **fit_options(config),
        correction=scaffold.correction_for(message, context, honest),
    )
    ditto.train_personal(message, context, client, weights)  # Ditto: v_k, kept here
    result = attacks.poison_update(result, message, honest.region)  # sign flip / noise
    why = paths.fallback_reason(message, honest.config.client.cohort)
    return train_reply(message, context, honest, result, why=why)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    """Test-split metrics of the global model (with local layers, if any), or of the
    region's personal model (Ditto)."""
    client = client_for(message, context)
    weights = ditto.evaluation_weights(message, context) or weights_for(message, context)
    return evaluate_reply(message, client, client.evaluate(weights))


def evaluate_reply(message: Message, client: RegionalClient, result: EvaluateResult) -> Message:
    """The reply to an evaluate message: the count and the sufficient statistics."""
    config = message.content["config"]
    values = {"num-examples": result.num_examples, **metrics.to_record_values(result.stats)}
    content = RecordDict(
        {"metrics": MetricRecord(values), META_KEY: meta_record(client.region, config)}
    )
    return Message(content, reply_to=message)


# query.client_state / query.restore_client_state: saved and restored by checkpoints
state.register(app)
