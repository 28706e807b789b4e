"""The converter registry: one interface, chosen by adc.kind; the config's name lists come from
the registries."""

from types import SimpleNamespace
from typing import get_args

import pytest
import torch

from crossbar.config import AdcKind, RoleFunctions, load_config
from crossbar.errors import CrossbarInputError
from crossbar.normals import NormalStream
from crossbar.periphery.converters import (
    CONVERTERS,
    IdealConverter,
    LinearRampConverter,
    NLRampConverter,
    make_converter,
)
from crossbar.periphery.functions import REGISTRY, get_activation
from crossbar.periphery.readout import ColumnReadout


def test_registries_and_config_name_the_same_things():
    assert set(CONVERTERS) == set(get_args(AdcKind)) == {"ideal", "linear_ramp", "nl_ramp"}
    assert list(get_args(RoleFunctions.model_fields["gate"].annotation)) == list(REGISTRY)


@pytest.mark.parametrize(
    "kind, cls", [("ideal", IdealConverter), ("linear_ramp", LinearRampConverter), ("nl_ramp", NLRampConverter)]
)
def test_column_readout_is_the_registered_converter(kind, cls):
    cfg = load_config("rram_nladc_5b").replace(**{"adc.kind": kind, "adc.range_mode": "fixed"})
    ro = ColumnReadout(cfg, "sigmoid", 6).program(seed=1, instances=2, name="g")
    assert type(ro.converter) is cls and ro.converter.kind == kind
    y = torch.linspace(-5, 5, 2 * 4 * 6).reshape(2, 4, 6)
    var = torch.full_like(y, 0.01)
    outs = []
    for obj in (ro, ro.converter):  # the same normals: the same values
        outs.append(obj.convert(y, NormalStream(7, "adc/test", 0, 2).at(read=0), var=var))
    assert torch.equal(outs[0], outs[1])
    ideal = torch.sigmoid(y)
    assert (outs[0] - ideal).abs().max() < (0.2 if kind != "ideal" else 0.5)
    assert ro.extra_repr() == ro.converter.describe()
    assert (ro.cycles_per_conversion() is None) == (kind == "ideal")


def test_linear_ramp_converts_each_arrays_partial_sum_and_nl_ramp_joins_them():
    cfg = load_config("rram_nladc_5b").replace(**{"adc.kind": "linear_ramp", "adc.range_mode": "fixed"})
    conv = make_converter(cfg, get_activation("identity"), 3)
    y = torch.tensor([[[[0.26, 0.26, 0.26], [0.26, 0.26, 0.26]]]])  # (M, B, R=2, C)
    step = (cfg.adc.in_max - cfg.adc.in_min) / (2**cfg.adc.bits - 1)
    per_block = conv.convert_blocks(y)
    joined = conv.convert(y.sum(2))
    # each block is quantised on its own before the digital sum: 2 x q(0.26) vs q(0.52)
    assert torch.allclose(per_block, 2 * conv.convert(y[:, :, 0]))
    assert (per_block - joined).abs().max() <= step
    nl = make_converter(cfg.replace(**{"adc.kind": "nl_ramp"}), get_activation("sigmoid"), 3)
    nl.program(0, 1, "nl")
    at = NormalStream(3, "adc/nl", 0, 1).at(read=0)
    assert torch.equal(nl.convert_blocks(y, at), nl.convert(y.sum(2), at))


def test_an_unregistered_kind_is_one_clear_error():
    fake = SimpleNamespace(adc=SimpleNamespace(kind="flash"))
    with pytest.raises(CrossbarInputError, match="adc.kind 'flash' has no converter; registered: ideal, linear_ramp"):
        make_converter(fake, get_activation("tanh"), 2)
