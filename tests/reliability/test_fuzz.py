"""Fuzzing: no input makes the loaders fail other than with one clear CrossbarInputError."""

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossbar.config import load_config, validate_config
from crossbar.errors import CrossbarInputError

SECTIONS = ["device", "array", "dac", "adc", "nl_adc", "datapath", "cost", "simulation"]
FIELDS = [
    "g_min",
    "g_max",
    "bits",
    "levels",
    "rows",
    "cols",
    "kind",
    "seed",
    "v_read",
    "sigma_abs",
    "nu",
    "programming",
    "table",
    "g",
    "sigma",
    "functions",
    "gate",
    "library",
    "x_max",
    "in_min",
]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["sigmoid", "nl_ramp", "../x", "/etc/passwd", "cuda"]),
)
trees = st.recursive(
    scalars,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5), st.dictionaries(st.sampled_from(FIELDS + SECTIONS), kids, max_size=6)
    ),
    max_leaves=30,
)
configs = st.fixed_dictionaries(
    {"schema_version": st.one_of(st.just(1), scalars), "name": scalars}, optional={s: trees for s in SECTIONS}
)


def _only_clear_errors(fn):
    try:
        fn()
    except CrossbarInputError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and len(msg) < 2000
        return False
    return True


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs)
def test_config_trees_validate_or_fail_clearly(data):
    _only_clear_errors(lambda: validate_config(data, source="fuzz.json"))


@settings(max_examples=150, deadline=None)
@given(raw=st.binary(max_size=300))
def test_config_bytes_load_or_fail_clearly(raw, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "c.json"
    path.write_bytes(raw)
    _only_clear_errors(lambda: load_config(path))


def test_extreme_config_values(tmp_path):
    deep = {"schema_version": 1, "name": "x", "device": {}}
    node = deep["device"]
    for _ in range(5000):
        node["programming"] = {}
        node = node["programming"]
    big = {
        "schema_version": 1,
        "name": "x",
        "device": {"programming": {"table": {"g": list(range(100_000)), "sigma": [1.0] * 100_000}}},
    }
    for data in (
        deep,
        big,
        {"schema_version": 1, "name": "x", "adc": {"bits": 1e308}},
        {"schema_version": 1, "name": "x", "simulation": {"seed": 2**80}},
    ):
        assert not _only_clear_errors(lambda data=data: validate_config(data, source="x.json"))
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"schema_version": 1, "name": "x", "description": "a" * (11 * 1024 * 1024)}))
    with pytest.raises(CrossbarInputError, match="larger than"):
        load_config(huge)


@pytest.mark.parametrize("library", ["/etc/passwd", "../outside.json", "a/../../b.json", "~/lib.json", "C:\\\\x.json"])
def test_config_paths_cannot_escape(library):
    with pytest.raises(CrossbarInputError, match="cost.library"):
        validate_config({"schema_version": 1, "name": "x", "cost": {"library": library}}, source="c.json")
    validate_config({"schema_version": 1, "name": "x", "cost": {"library": "libs/components.json"}})


@pytest.mark.slow
@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=configs)
def test_config_trees_long_fuzz(data):
    _only_clear_errors(lambda: validate_config(data, source="fuzz.json"))


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=5),
    fill=st.sampled_from([0.0, 1.0, float("nan"), float("inf"), -1e30]),
)
def test_layer_inputs_fail_clearly(shape, fill):
    from rnn_models import AnalogLinear, AnalogLSTM

    x = torch.full(shape, fill)
    for layer in (AnalogLSTM(3, 4, config="ideal").eval(), AnalogLinear(3, 2, config="ideal").eval()):
        try:
            out = layer(x)
        except CrossbarInputError:
            continue
        out = out[0] if isinstance(out, tuple) else out
        assert torch.isfinite(out).all() or not math.isfinite(fill)
