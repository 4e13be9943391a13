"""Fuzz: any experiment table yields a config or a ConfigError, never another error."""

from __future__ import annotations

import tomllib
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedglobal.config import ExperimentConfig, load_config, parse_override
from fedglobal.errors import ConfigError

QUICKSTART = tomllib.loads(
    (Path(__file__).resolve().parents[1] / "experiments" / "quickstart.toml").read_text()
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
known_keys = sorted({f"{s}.{k}" for s, sec in QUICKSTART.items() for k in sec})
section_keys = st.one_of(st.sampled_from(known_keys), st.text(max_size=20))


def _only_config_errors(build):
    try:
        cfg = build()
    except ConfigError as exc:
        assert str(exc)  # every error says something
    else:
        assert isinstance(cfg, ExperimentConfig)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(section_keys, values, max_size=4))
def test_mutated_quickstart_gives_config_or_config_error(changes):
    raw = {section: dict(keys) for section, keys in QUICKSTART.items()}
    for dotted, value in changes.items():
        section, _, key = dotted.partition(".")
        if isinstance(raw.get(section), dict) and key:
            raw[section][key] = value
        else:
            raw[section] = value
    _only_config_errors(lambda: ExperimentConfig.from_dict(raw))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=30), max_size=3))
def test_override_strings_give_config_or_config_error(overrides):
    _only_config_errors(lambda: load_config(QUICKSTART, overrides))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_parse_override_only_raises_config_error(text):
    try:
        parse_override(text)
    except ConfigError:
        pass
