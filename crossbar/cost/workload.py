"""What a model asks of the hardware per time step: matrices on crossbars and element-wise work.

A :class:`Workload` lists the model's weight matrices (rows = inputs incl. the bias row, cols =
outputs), how each is read out (``nl``: sigmoid/tanh columns, ``linear``: identity), whether it runs
every time step or once per sequence, its conductance load, and the recurrent cells' element-wise
work.  It comes from a named shape (``paper-kws``, ``paper-lm``) here, or is built from a torch
model by the application side (``rnn_models.workload``): this package knows nothing of RNN models.

Conductance load ``g_load_us`` = sum over devices of a_r^2 * G (uS): the read power of the array at
full-scale inputs is V_read^2 * g_load (a_r = the row's read amplitude, 1 unless per-block row
scaling).  For a model's weights (``mapped_g_load``) it is computed from the mapped target
conductances; for a named shape (no weights) it assumes Gaussian weights mapped with the config's
weight reference (our assumption, stated in the report).

With IR drop (``array.wires`` not all 0) a model's matrices carry ``ramp_charge_factor``
(:func:`ramp_charge_factor`): the NL-ADC ramp columns' charge per conversion through the wires
relative to ideal wires, from the design's ramp and bias devices placed in the arrays of the
mapped weights.  A named shape has no weights to place: factor 1 (ideal wires for its ramps).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from scipy.stats import norm

from crossbar.config import HardwareConfig
from crossbar.errors import CrossbarInputError


@dataclass
class MatrixLoad:
    """One weight matrix on crossbars."""

    name: str
    rows: int  # word lines, incl. the bias row
    cols: int  # output columns
    readout: str  # "nl" (sigmoid / tanh NL-ADC) or "linear"
    per_step: bool  # runs every time step (else once per sequence)
    recurrent: bool  # on the recurrent critical path
    g_load_us: float  # sum of a_r^2 * G over the matrix's devices, uS
    ramp_charge_factor: float = 1.0  # NL-ADC ramp charge through the wires / with ideal wires

    @property
    def macs(self) -> int:
        return self.rows * self.cols


@dataclass
class CellWork:
    """Element-wise work of a recurrent layer per time step."""

    name: str
    kind: str  # "lstm" or "gru"
    hidden: int

    @property
    def multiplies(self) -> int:  # LSTM: f*c, i*g, o*tanh(c); GRU: r*(W_hn h), (1-z)*n, z*h
        return 3 * self.hidden

    @property
    def adds(self) -> int:  # LSTM: c = f*c + i*g; GRU: + W_in x, (1-z), sum
        return (1 if self.kind == "lstm" else 3) * self.hidden

    @property
    def digital_tanh(self) -> int:  # LSTM tanh(c); GRU tanh(n) (n needs r * (W_hn h) first)
        return self.hidden

    @property
    def state_bits_words(self) -> int:  # words of state kept per step (h, and c for an LSTM)
        return (2 if self.kind == "lstm" else 1) * self.hidden


@dataclass
class Workload:
    name: str
    description: str
    matrices: list[MatrixLoad]
    cells: list[CellWork]
    steps_per_inference: int
    weights: int = field(default=0)

    def __post_init__(self):
        if not self.matrices:
            raise CrossbarInputError(f"workload {self.name!r} has no weight matrices")
        if self.steps_per_inference < 1:
            raise CrossbarInputError("steps per inference must be >= 1")


# ---------------------------------------------------------------------- conductance load
def gaussian_g_load(rows: int, cols: int, config: HardwareConfig) -> float:
    """sum_devices G (uS) for Gaussian weights mapped with the config's weight reference."""
    dev, arr = config.device, config.array
    n = rows * cols
    if arr.weight_scale == "percentile":
        z = float(norm.ppf(0.5 + arr.weight_percentile / 200.0))
    else:  # expected largest |w| of n Gaussian weights
        z = float(norm.ppf(1 - 0.5 / max(n, 2)))
    mean_abs = math.sqrt(2 / math.pi) / max(z, 1e-9)  # E|w| / w_ref
    span = dev.g_max - dev.g_min
    if arr.mapping == "differential":
        return n * (2 * dev.g_min + span * min(mean_abs, 1.0))  # G+ + G- per weight
    g_mid = 0.5 * (dev.g_min + dev.g_max)
    return n * g_mid + rows * g_mid  # devices + reference column


def mapped_g_load(weight: torch.Tensor, bias: torch.Tensor | None, config: HardwareConfig, row_groups=None) -> float:
    """sum_devices a_r^2 * G (uS) of the target conductances a Tile would program.

    With IR drop (``array.wires`` not all 0) G is each device's effective conductance through the
    wires (:func:`crossbar.layout.effective_arrays`): row i then draws a_i V_read sum_j T_ij from its
    driver (the wires' own dissipation included), to first order in the current other rows' drivers
    sink; the offset mapping's reference column counts once per array."""
    from crossbar.tile import Tile

    with torch.no_grad():
        tile = Tile(
            weight.detach().double().cpu(),
            None if bias is None else bias.detach().double().cpu(),
            config.replace(**{"simulation.device": "cpu"}),
            x_max=1.0,
            row_groups=row_groups,
        )
        a2 = (tile.row_gain**2)[:, None]
        g_pos, g_neg = tile.programming_targets()
        if tile.ir_drop:
            from crossbar.layout import col_slices, effective_arrays

            t_pos, t_neg, _, _ = effective_arrays(g_pos[None], g_neg[None], tile.config.array)
            g_pos, g_neg = t_pos[0], t_neg[0]
            if tile.config.array.mapping == "offset":
                g_neg = g_neg[:, [s.start for s in col_slices(tile.out_features, tile.config.array.cols)]]
        load = (a2 * g_pos).sum() + (a2 * g_neg).sum()
    return float(load)


def ramp_charge_factor(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    config: HardwareConfig,
    groups: list[tuple[torch.Tensor, str]],
    row_groups=None,
) -> float:
    """The NL-ADC ramp columns' charge per conversion through the wires relative to ideal wires
    (1 with ideal wires or no NL-ADC): each column group's (``groups``: (columns, function)) ramp
    and bias devices at the design's target conductances (``NLADC.g_ramp_target``,
    ``g_bias_target``) placed where the simulator places them (:class:`crossbar.tile.RampSite`,
    :mod:`crossbar.layout`), the weights at their mapped targets, every other NL-ADC's devices
    absent (our approximation: they sit on other columns).  A ramp step reads row k of the extra
    rows, which then delivers V_read T_k to the integrators (T_k: the device's effective
    conductance, uS) instead of V_read G_k -- to first order the charge its driver supplies, as
    for the weight rows (:func:`mapped_g_load`); the bias devices count for their bias cycles."""
    if config.array.wires.ideal or config.adc.kind != "nl_ramp" or not groups:
        return 1.0
    from crossbar.periphery.nladc import NLADC, readout_design
    from crossbar.tile import Tile

    cfg = config.replace(**{"simulation.device": "cpu"})
    with torch.no_grad():
        tile = Tile(
            weight.detach().double().cpu(),
            None if bias is None else bias.detach().double().cpu(),
            cfg,
            x_max=1.0,
            row_groups=row_groups,
        )
        shared = cfg.nl_adc.shared_ramp
        through = ideal = 0.0
        for k, (columns, function) in enumerate(groups):
            adc = NLADC(readout_design(function, cfg), cfg, len(columns))
            ramps = 1 if shared else len(columns)
            g_ramp = adc.g_ramp_target.expand(ramps, -1)
            g_bias = adc.g_bias_target.expand(ramps, -1)
            site = tile.ramp_site(columns, f"cost/{k}", shared)
            placed = (g_ramp, g_bias)
            if cfg.array.wires.ir_drop_aware_programming:  # the devices the simulator programs
                placed = site.aware_targets(g_ramp, g_bias, cfg.array.wires.aware_iterations, cfg.device)
            t_ramp, t_bias = site.effective(0, *placed, targets=True)
            through += float(t_ramp.sum()) + adc.bias_cycles * float(t_bias.sum())
            ideal += float(g_ramp.sum()) + adc.bias_cycles * float(g_bias.sum())
    return through / ideal if ideal > 0 else 1.0


# ---------------------------------------------------------------------- named shapes
#: Table 1's weight memory, read at 4 bits per weight (one 16-level analog cell per weight): with
#: these shapes the ops per time step reproduce Table 1's throughput, with 8 bits per weight they
#: fall short by 1.9x (KWS) / 1.5x (LM) -- which is why we infer 4 (ours; the paper does not say).
PAPER_SHAPES = {
    # name: (input, hidden, decoder outputs or None, steps per inference, description)
    "paper-kws": (
        20,
        16,
        None,
        100,
        "paper KWS shape (inferred): 1.125 kB at 4 bit/weight = 2,304 weights = LSTM 20 -> 16 "
        "(4*16*(20+16)); classifier off-chip (the paper's LSTM I/O is off-chip); 100 steps per 1-s clip",
    ),
    "paper-lm": (
        50,
        528,
        50,
        1,
        "paper char-LM shape (inferred): 623 kB at 4 bit/weight ~ 1.25M weights = LSTM 50 (one-hot) -> 528 "
        "+ decoder 528 -> 50 (1,249,278 weights incl. biases); one character per step",
    ),
}


def paper_shape(name: str, config: HardwareConfig) -> Workload:
    """The paper's models as LSTM shapes consistent with Table 1's weight memory (``PAPER_SHAPES``)."""
    if name not in PAPER_SHAPES:
        raise CrossbarInputError(f"unknown model shape {name!r}: use paper-kws, paper-lm, kws, lm or a checkpoint")
    n_in, hidden, out, steps, desc = PAPER_SHAPES[name]
    rows = n_in + hidden + 1
    mats = [MatrixLoad("lstm", rows, 4 * hidden, "nl", True, True, gaussian_g_load(rows, 4 * hidden, config))]
    if out:
        mats.append(
            MatrixLoad("decoder", hidden + 1, out, "linear", True, False, gaussian_g_load(hidden + 1, out, config))
        )
    weights = sum(m.rows * m.cols for m in mats)
    return Workload(name, desc, mats, [CellWork("lstm", "lstm", hidden)], steps, weights)
