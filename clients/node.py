"""What a regional client node is and holds, shared by the ClientApp's handlers.

The experiment carried in a message, this node's region (from its node
config), the process's cache of regional clients (compiled model and encoded
rows), the weights a train message starts from (with the region's own copy of
the layers it keeps local), the options it asks for, and the ``meta`` record
every reply carries. :mod:`clients.app` (the Flower handlers),
:mod:`clients.cohort` (a round's regions at once) and :mod:`clients.state`
(checkpoint and resume) use these public names, so none imports another's
privates.
"""

from __future__ import annotations

import collections
import functools

from flwr.app import ConfigRecord, Context, Message

from clients.regional import RegionalClient
from fedglobal import data
from fedglobal.config import ExperimentConfig
from fedglobal.errors import DataError
from fedglobal.protocol import LOCAL_LAYERS_KEY, SERVER_ROUND_KEY, from_record
from strategies.client_metrics import REPORT_KEY

__all__ = [
    "CLIENT_CACHE_BYTES",
    "LOCAL_STATE_KEY",
    "client_for",
    "experiment_from",
    "fit_options",
    "meta_record",
    "node_region",
    "regional_client",
    "weights_for",
]

#: ``context.state`` key of this region's own trained copy of its local layers.
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


def node_region(context: Context, cfg: ExperimentConfig) -> tuple[str, str | None]:
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


def regional_client(
    cfg: ExperimentConfig, region: str, data_path: str | None, schema_json: str
) -> RegionalClient:
    """The region's client (compiled model, encoded rows), from the process's cache."""
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


def meta_record(region: str, config: ConfigRecord) -> ConfigRecord:
    """The ``meta`` record of a reply: the region and the round."""
    return ConfigRecord({"region": region, "round": int(config.get(SERVER_ROUND_KEY, 0))})


def weights_for(message: Message, context: Context) -> dict:
    """Global weights, with this region's own copy of any layer it keeps local."""
    config = message.content["config"]
    weights = from_record(message.content["arrays"])
    local_names = list(config.get(LOCAL_LAYERS_KEY, []))
    saved = context.state.get(LOCAL_STATE_KEY)
    if local_names and saved is not None:
        own = from_record(saved)
        weights.update({n: own[n] for n in local_names if n in own})
    return weights


def client_for(message: Message, context: Context) -> RegionalClient:
    """This node's regional client for the message's experiment and schema (cached)."""
    config = message.content["config"]
    cfg = experiment_from(config)
    region, path = node_region(context, cfg)
    return regional_client(cfg, region, path, str(config["schema"]))


def fit_options(config: ConfigRecord) -> dict:
    """The keyword options of :meth:`RegionalClient.fit` a train message asks for."""
    steps = config.get("local-steps")  # a straggler's partial work (strategies.FedAvg)
    return {
        "proximal_mu": float(config.get("proximal-mu", 0.0)),  # strategies.FedProx
        "local_steps": None if steps is None else int(steps),
        # extra metrics the strategy asks for (strategies.client_metrics)
        "report": tuple(str(name) for name in config.get(REPORT_KEY, [])),
    }
