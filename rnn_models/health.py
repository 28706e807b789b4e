"""Numerical health of a simulation: how often inputs clip at the DAC and linear ADCs saturate.

The chip path of every analog matrix counts, per conversion, inputs beyond the DAC full scale and
column outputs beyond the range of a *linear* readout (conventional ramp ADC or identity NL-ADC;
a saturated sigmoid/tanh NL-ADC is the function, not a fault).  :func:`health_report` turns the
counts into fractions and warns, with the numbers, when they exceed the thresholds.
"""

from __future__ import annotations

import warnings

from torch import nn

DAC_CLIP_THRESHOLD = 0.01  # warn when more than 1 % of DAC inputs clip
ADC_SATURATION_THRESHOLD = 0.05  # warn when more than 5 % of linear conversions saturate


class HealthWarning(UserWarning):
    """A configuration clips or saturates more than the thresholds."""


def _matrices(model: nn.Module):
    from rnn_models.convert import analog_layers

    for name, layer in analog_layers(model):
        for key, (mat, *_rest) in layer._matrices().items():
            yield f"{name}/{key}", mat


def reset_health(model: nn.Module) -> None:
    for _, mat in _matrices(model):
        for k in mat.health:
            mat.health[k] = 0


def health_report(
    model: nn.Module,
    warn: bool = True,
    dac_threshold: float = DAC_CLIP_THRESHOLD,
    adc_threshold: float = ADC_SATURATION_THRESHOLD,
) -> dict:
    """{matrix: {dac_clip_fraction, adc_saturation_fraction}} since the last reset; warns above thresholds."""
    report = {}
    for name, mat in _matrices(model):
        h = mat.health
        entry = {
            "dac_clip_fraction": h["dac_clipped"] / h["dac_total"] if h["dac_total"] else 0.0,
            "adc_saturation_fraction": h["adc_saturated"] / h["adc_total"] if h["adc_total"] else 0.0,
        }
        report[name] = entry
        if warn and entry["dac_clip_fraction"] > dac_threshold:
            warnings.warn(
                f"{name}: {100 * entry['dac_clip_fraction']:.2f} % of DAC inputs clipped "
                f"(threshold {100 * dac_threshold:g} %); recalibrate or raise the DAC range",
                HealthWarning,
                stacklevel=2,
            )
        if warn and entry["adc_saturation_fraction"] > adc_threshold:
            warnings.warn(
                f"{name}: {100 * entry['adc_saturation_fraction']:.2f} % of linear ADC conversions "
                f"saturated (threshold {100 * adc_threshold:g} %); recalibrate or widen adc.in_min/in_max",
                HealthWarning,
                stacklevel=2,
            )
    return report
