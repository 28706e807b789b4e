"""Numerical health of a simulation: how often inputs clip at the DAC and linear ADCs saturate,
and how much IR drop distorts the weights.

The chip path of every analog matrix counts, per conversion, inputs beyond the DAC full scale and
column outputs beyond the range of a *linear* readout (conventional ramp ADC or identity NL-ADC;
a saturated sigmoid/tanh NL-ADC is the function, not a fault).  :func:`health_report` turns the
counts into fractions and warns, with the numbers, when they exceed the thresholds.  With IR drop
(and without IR-drop-aware programming) it also reports each programmed matrix's
:meth:`crossbar.tile.Tile.ir_drop_distortion` and warns when the residual -- the change of the
effective weights that no per-column gain explains -- exceeds :data:`IR_DROP_RESIDUAL_THRESHOLD`.
"""

from __future__ import annotations

import warnings

from torch import nn

DAC_CLIP_THRESHOLD = 0.01  # warn when more than 1 % of DAC inputs clip
ADC_SATURATION_THRESHOLD = 0.05  # warn when more than 5 % of linear conversions saturate
#: warn when IR drop changes a matrix's effective weights by more than 5 % (relative, Frobenius)
#: beyond a per-column gain, in its worst instance.  Our choice, from the shipped KWS model on
#: 256 x 256 arrays (``scripts/ir_drop_kws.py`` prints the residuals; docs/parasitics.md): with the
#: differential mapping its matrices stay below it at 0.3 ohm per segment and the first passes it
#: at 1 ohm, where the accuracy starts to move (up to -0.011); with the offset mapping they stay
#: below it at 0.01 ohm and pass it at 0.03 ohm (0.06-0.07 lost)
IR_DROP_RESIDUAL_THRESHOLD = 0.05


class HealthWarning(UserWarning):
    """A configuration clips, saturates or (IR drop) distorts the weights more than the thresholds."""


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
    ir_drop_threshold: float = IR_DROP_RESIDUAL_THRESHOLD,
) -> dict:
    """{matrix: {dac_clip_fraction, adc_saturation_fraction}} since the last reset, with IR drop
    (programmed, no IR-drop-aware programming) also ``ir_drop_gain`` (the mean per-column gain) and
    ``ir_drop_residual`` of the worst instance; warns above thresholds."""
    report = {}
    for name, mat in _matrices(model):
        h = mat.health
        entry = {
            "dac_clip_fraction": h["dac_clipped"] / h["dac_total"] if h["dac_total"] else 0.0,
            "adc_saturation_fraction": h["adc_saturated"] / h["adc_total"] if h["adc_total"] else 0.0,
        }
        tile = mat.tile  # (set before programming: a programming that failed leaves it unprogrammed)
        distortion = tile.ir_drop_distortion() if tile is not None and tile.g_pos is not None else None
        if distortion is not None:
            gain, residual = distortion
            worst = int(residual.argmax())
            entry["ir_drop_gain"], entry["ir_drop_residual"] = float(gain[worst]), float(residual[worst])
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
        if warn and entry.get("ir_drop_residual", 0.0) > ir_drop_threshold:
            remedies = "array.wires.ir_drop_aware_programming or smaller arrays"
            if tile.config.array.mapping == "offset":
                remedies += " (or the differential mapping: the offset mapping's reference column does not track)"
            warnings.warn(
                f"{name}: IR drop changes the effective weights by {100 * entry['ir_drop_residual']:.1f} % "
                f"beyond a per-column gain (threshold {100 * ir_drop_threshold:g} %; mean gain "
                f"{entry['ir_drop_gain']:.3f}); consider {remedies} (docs/parasitics.md)",
                HealthWarning,
                stacklevel=2,
            )
    return report
