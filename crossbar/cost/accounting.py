"""Per-layer accounting: conversions, cycles, energy (J), area (um^2) and time per step (s).

Three architectures (``ARCHITECTURES``), for one workload, hardware config and ADC bit width N:

* ``nl_adc`` -- the paper's: each column's ramp ADC takes its ramp from an extra column of
  2^N ramp + ``bias_devices`` memristors, so the code *is* the activation; element-wise LSTM/GRU
  work (c, h updates, digital tanh(c)) runs on ``cost.digital_nl_units`` digital lanes.
* ``conventional`` -- same crossbars, a conventional column ADC (``cost.conventional_adc``: a ramp
  ADC with a shared reference ramp, or a SAR ADC), then every sigmoid/tanh on the
  ``cost.digital_nl_units`` digital activation units (``cost.digital_nl_kind``: LUT, PWL or CORDIC).
* ``digital`` -- the float reference: FP16 weights in SRAM, ``cost.digital_macs`` FP16 MAC units,
  activations on the digital units.

Model (ours; every figure it uses comes from the component library with its source):

* one conversion per column per step (``partial_sums = analog``; ``digital`` converts once per
  row-block and adds digitally); conversion cycles have one definition shared with the simulator:
  an NL-ADC conversion is the :class:`~crossbar.periphery.nladc.RampSchedule` of the design its
  readout compiles (bias phase + 2^N ramp steps + ``nl_adc.reset_cycles``: 36 at 5 bits in the
  presets), a conventional one :func:`~crossbar.periphery.adc.conventional_cycles` (ramp:
  2^N + reset; SAR: N + reset); a matrix whose columns read different functions (an LSTM's
  sigmoid and tanh gates) takes the slowest of them;
* the array conducts during the whole conversion: E_array = V_read^2 * activity * sum(a_r^2 G) *
  T_conversion (``cost.input_activity`` = mean (x / x_max)^2; 1 = peak, all rows at full scale);
* the NL-ADC reads its designed ramp and bias conductances, one ramp device per step and the bias
  devices for the bias cycles: E_ramp = V_read^2 * T_clk * (the schedule's uS x cycles), for the
  function of the matrix with the most charge (an upper bound when functions differ);
* a binary counter per array toggles ~2 flip-flops per cycle; each conversion latches N bits;
* word-line drivers: ``dac.bits`` 1-bit driver slices per row and column-block, once per step;
* time per step: the recurrent layers' conversion + element-wise (+ digital activation) cycles,
  layers of a stack pipelined (the slowest sets the pace); non-recurrent per-step layers (a
  decoder) overlap with the next step; once-per-sequence layers add their time once per inference;
* ops = 2 per multiply-accumulate (a bias row counts as MACs).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from crossbar.config import HardwareConfig
from crossbar.cost.library import Library
from crossbar.cost.workload import MatrixLoad, Workload
from crossbar.errors import CrossbarInputError
from crossbar.periphery.adc import conventional_cycles
from crossbar.periphery.nladc import RampSchedule, ramp_schedule, readout_design

ARCHITECTURES = ("nl_adc", "conventional", "digital")
CATEGORIES = ("mac_array", "nl_processing", "rest")
SRAM_REF_BYTES = 8192  # the SRAM read figure is for an 8-KB array; larger arrays scale with sqrt(size)


@dataclass
class Tech:
    """Scaled per-operation figures of the library at the config's node (J, um^2, cycles)."""

    lib: Library
    node: float

    def e(self, name: str) -> float:
        return self.lib.energy_j(name, self.node)

    def a(self, name: str) -> float:
        return self.lib.area_um2(name, self.node)

    def lat(self, name: str) -> float:
        return self.lib.latency_cycles(name)

    # integer datapath scaled from the 8-bit figures: adder ~ bits, array multiplier ~ a_bits * b_bits
    def add_e(self, bits: int) -> float:
        return self.e("adder_8b") * bits / 8

    def add_a(self, bits: int) -> float:
        return self.a("adder_8b") * bits / 8

    def mul_e(self, bits: int, other_bits: int | None = None) -> float:
        return self.e("multiplier_8b") * bits * (other_bits or bits) / 64

    def mul_a(self, bits: int, other_bits: int | None = None) -> float:
        return self.a("multiplier_8b") * bits * (other_bits or bits) / 64

    def sram_bit_e(self, total_bytes: float) -> float:
        """Read energy per bit of an SRAM of ``total_bytes`` (J)."""
        return self.e("sram_read_64b_8kb") / 64 * math.sqrt(max(total_bytes, 64) / SRAM_REF_BYTES)

    # digital activation units (one evaluation of sigmoid / tanh at ``bits``)
    def activation(self, kind: str, bits: int) -> tuple[float, float, float]:
        """(energy J, area um^2, latency cycles) of one ``kind`` unit evaluating one activation."""
        if kind == "lut":  # 2^bits x bits table in a small SRAM/ROM
            table_bits = (2**bits) * bits
            return (
                bits * self.sram_bit_e(table_bits / 8),
                table_bits * self.a("sram_bitcell"),
                self.lat("activation_lut"),
            )
        if kind == "pwl":  # segment select (compare) + slope multiply + offset add
            return (
                self.mul_e(bits) + 2 * self.add_e(bits),
                self.mul_a(bits) + 2 * self.add_a(bits),
                self.lat("activation_pwl"),
            )
        if kind == "cordic":  # hyperbolic CORDIC: ~bits iterations of three add/shifts
            it = self.lat("activation_cordic")
            return (it * 3 * self.add_e(bits), 3 * self.add_a(bits) + 3 * bits * self.a("flip_flop"), it)
        raise CrossbarInputError(f"unknown digital activation unit {kind!r} (lut, pwl or cordic)")


class Ledger:
    """Energy per step (J) and area (um^2) by (category, component); cycles by phase."""

    def __init__(self):
        self.energy: dict[tuple[str, str], float] = {}
        self.area: dict[tuple[str, str], float] = {}

    def add(self, category: str, component: str, energy_j: float = 0.0, area_um2: float = 0.0) -> None:
        key = (category, component)
        self.energy[key] = self.energy.get(key, 0.0) + energy_j
        self.area[key] = self.area.get(key, 0.0) + area_um2

    def by_category(self, table: dict) -> dict[str, float]:
        out = {c: 0.0 for c in CATEGORIES}
        for (cat, _), v in table.items():
            out[cat] += v
        return out

    def by_component(self, table: dict) -> dict[str, float]:
        out: dict[str, float] = {}
        for (cat, comp), v in table.items():
            out[f"{cat}/{comp}"] = out.get(f"{cat}/{comp}", 0.0) + v
        return out


def readout_functions(readout: str, config: HardwareConfig) -> tuple[str, ...]:
    """The activation functions a matrix's columns are read out through: ``nl`` (recurrent gates)
    -> the config's gate and candidate functions, ``linear`` -> identity."""
    if readout == "nl":
        fns = config.nl_adc.functions
        return tuple(dict.fromkeys((fns.gate, fns.candidate)))
    return ("identity",)


@functools.lru_cache(maxsize=512)
def _cached_schedule(function: str, bits: int, config_json: str) -> RampSchedule:
    cfg = HardwareConfig.model_validate_json(config_json)
    return ramp_schedule(readout_design(function, cfg), cfg)


def nladc_schedule(function: str, bits: int, config: HardwareConfig) -> RampSchedule:
    """The conversion sequence of an NL-ADC reading ``function`` at ``bits`` bits under ``config``
    -- the design the simulator's readout compiles (``range_mode: calibrated`` and the data-aware
    design need data the cost model does not have: it uses f's own domain and the uniform design,
    and :func:`cost_assumptions` says so)."""
    changes: dict = {"adc.bits": bits, "nl_adc.ramp_devices": None, "adc.kind": "nl_ramp"}
    if config.nl_adc.design == "data_aware":
        changes["nl_adc.design"] = "uniform"
    cfg = config.replace(**changes)
    return _cached_schedule(function, bits, cfg.model_dump_json())


def matrix_schedules(readout: str, bits: int, config: HardwareConfig) -> list[RampSchedule]:
    """The NL-ADC schedules of a matrix's readout functions."""
    return [nladc_schedule(f, bits, config) for f in readout_functions(readout, config)]


#: what an idealised part of a config is costed as (an ideal part has no hardware to cost; these
#: widths are stated in every report that uses them, see :func:`cost_assumptions`)
IDEAL_DAC_COST_BITS = 8
FLOAT_DATAPATH_COST_BITS = 16


def cost_assumptions(config: HardwareConfig) -> list[str]:
    """The assumptions a report must state because the config leaves a part ideal."""
    notes = []
    if config.dac.bits is None:
        notes.append(
            f"dac.bits is null (an ideal DAC): the word-line drivers are costed as {IDEAL_DAC_COST_BITS}-bit drivers"
        )
    if config.datapath.bits is None:
        notes.append(
            f"datapath.bits is null (a float datapath): the element-wise lanes and state registers are "
            f"costed as {FLOAT_DATAPATH_COST_BITS}-bit fixed point"
        )
    if config.adc.range_mode == "calibrated":
        notes.append(
            "adc.range_mode is calibrated: NL-ADC cycles and ramp charge use each function's own input "
            "range (the calibrated ranges come from data)"
        )
    if config.nl_adc.design == "data_aware":
        notes.append("nl_adc.design is data_aware: NL-ADC cycles and ramp charge use the uniform design")
    if config.adc.kind == "ideal":
        notes.append(
            f"adc.kind is ideal: the columns are costed with the conventional architecture's "
            f"{config.cost.conventional_adc} ADC of adc.bits bits"
        )
    return notes


def conversion_cycles(bits: int, config: HardwareConfig, kind: str, readout: str = "nl") -> int:
    """Cycles of one column conversion of a matrix with ``readout`` columns: ``kind`` ``nl_adc``
    -> the slowest of its functions' NL-ADC schedules; ``ramp`` / ``sar`` -> the conventional ADC."""
    if kind == "nl_adc":
        return max(s.cycles for s in matrix_schedules(readout, bits, config))
    return conventional_cycles(kind, bits, config.nl_adc.reset_cycles)


def ramp_column_devices(bits: int, config: HardwareConfig, readout: str = "nl") -> int:
    """Memristors in one NL-ADC ramp column of a matrix with ``readout`` columns: one per ramp step
    plus the bias devices."""
    return max(s.devices for s in matrix_schedules(readout, bits, config))


@dataclass
class MatrixCounts:
    """How one weight matrix lands on the arrays of a crossbar architecture."""

    row_blocks: int
    col_blocks: int
    conversions: int  # column conversions per run (one per array row-block with digital partial sums)
    weight_devices: int  # memristors holding the weights (pairs, or one + a reference column per array)
    ramps: int  # NL-ADC ramp columns (0 outside the NL-ADC architecture)

    @property
    def arrays(self) -> int:
        return self.row_blocks * self.col_blocks


def matrix_counts(m: MatrixLoad, config: HardwareConfig, architecture: str) -> MatrixCounts:
    arr = config.array
    rb, cb = math.ceil(m.rows / arr.rows), math.ceil(m.cols / arr.cols)
    conversions = m.cols * (rb if arr.partial_sums == "digital" else 1)
    devices = 2 * m.macs if arr.mapping == "differential" else m.macs + m.rows * cb
    ramps = 0
    if architecture == "nl_adc":
        ramps = rb * cb if config.nl_adc.shared_ramp else conversions
    return MatrixCounts(rb, cb, conversions, devices, ramps)


def estimate(
    workload: Workload, config: HardwareConfig, library: Library, bits: int, architecture: str = "nl_adc"
) -> dict:
    """Cost of one time step and one inference of ``workload`` at ADC resolution ``bits``."""
    if architecture not in ARCHITECTURES:
        raise CrossbarInputError(f"unknown architecture {architecture!r}; use one of {', '.join(ARCHITECTURES)}")
    if not 1 <= bits <= 16:
        raise CrossbarInputError(f"ADC bits must be 1..16, got {bits}")
    cost = config.cost
    tech = Tech(library, cost.node_nm)
    t_clk = 1e-9 / cost.clock_ghz
    k = cost.digital_nl_units
    dp_bits = config.datapath.bits or FLOAT_DATAPATH_COST_BITS
    ledger = Ledger()
    cycles_step: dict[str, float] = {}
    cycles_seq = 0.0
    macs_step = sum(m.macs for m in workload.matrices if m.per_step)
    macs_seq = sum(m.macs for m in workload.matrices if not m.per_step)
    nl_columns = sum(m.cols for m in workload.matrices if m.readout == "nl")

    if architecture == "digital":
        crit = _digital_matrices(workload, config, tech, ledger)
        cycles_step["mvm"] = crit["step"]
        cycles_seq += crit["sequence"]
    else:
        adc_kind = "nl_adc" if architecture == "nl_adc" else cost.conventional_adc
        conv = {m.name: conversion_cycles(bits, config, adc_kind, m.readout) for m in workload.matrices}
        for m in workload.matrices:
            _crossbar_matrix(
                m,
                config,
                tech,
                ledger,
                bits,
                architecture,
                adc_kind,
                conv[m.name],
                1.0 if m.per_step else 1.0 / workload.steps_per_inference,
            )
        recurrent = [conv[m.name] for m in workload.matrices if m.recurrent]
        if recurrent:
            cycles_step["mvm_and_conversion"] = max(recurrent)
        once = [conv[m.name] for m in workload.matrices if not m.per_step]
        if once:
            cycles_seq += max(once)

    # digital gate activations (conventional / digital): nl_kind units at the ADC resolution
    nl_kind = cost.digital_nl_kind
    if architecture != "nl_adc" and nl_columns:
        act_e, act_a, act_lat = tech.activation(nl_kind, bits if architecture == "conventional" else 16)
        ledger.add("nl_processing", f"digital_{nl_kind}", nl_columns * act_e, k * act_a)
        cycles_step["digital_activations"] = math.ceil(nl_columns / k) * act_lat
    if workload.cells:
        cell_mode = config.nl_adc.functions.cell
        if architecture != "nl_adc" and cell_mode == "nl_adc":
            cell_mode = "digital"  # without NL-ADCs, tanh(c) is digital too
        slowest = _cells(workload, config, tech, ledger, bits, dp_bits, k, cell_mode, architecture)
        cycles_step["elementwise"] = slowest
    # step input / output buffers (a small SRAM): inputs read once, outputs written once
    io_bits = dp_bits * sum(m.rows + m.cols for m in workload.matrices if m.per_step)
    ledger.add("rest", "io_buffers", io_bits * tech.sram_bit_e(io_bits / 8), io_bits * tech.a("sram_bitcell"))

    summary = _summary(
        workload, config, ledger, cycles_step, cycles_seq, macs_step, macs_seq, t_clk, bits, architecture
    )
    summary["layers"] = layer_table(workload, config, bits, architecture)
    return summary


def layer_table(workload: Workload, config: HardwareConfig, bits: int, architecture: str) -> list[dict]:
    """Per-layer counts: arrays and their utilisation, devices, conversions per run and cycles per
    conversion (crossbar architectures) or SRAM bytes and MAC cycles (digital); element-wise work."""
    rows = []
    arr = config.array
    for m in workload.matrices:
        row = {
            "layer": m.name,
            "rows": m.rows,
            "cols": m.cols,
            "readout": m.readout,
            "runs": "every step" if m.per_step else "once per sequence",
            "macs": m.macs,
        }
        if architecture == "digital":
            row.update({"sram_bytes": 2 * m.macs, "mac_cycles": math.ceil(m.macs / config.cost.digital_macs)})
        else:
            n = matrix_counts(m, config, architecture)
            kind = "nl_adc" if architecture == "nl_adc" else config.cost.conventional_adc
            row.update(
                {
                    "arrays": n.arrays,
                    "array_shape": [arr.rows, arr.cols],
                    "utilisation": m.macs / (n.arrays * arr.rows * arr.cols),
                    "weight_devices": n.weight_devices,
                    "ramp_devices": n.ramps * ramp_column_devices(bits, config, m.readout)
                    if architecture == "nl_adc"
                    else 0,
                    "conversions_per_run": n.conversions,
                    "cycles_per_conversion": conversion_cycles(bits, config, kind, m.readout),
                }
            )
        rows.append(row)
    for c in workload.cells:
        rows.append(
            {
                "layer": f"{c.name} (element-wise)",
                "hidden": c.hidden,
                "multiplies_per_step": c.multiplies,
                "adds_per_step": c.adds,
                "digital_tanh_per_step": c.digital_tanh,
                "gate_activations_per_step": 0
                if architecture == "nl_adc"
                else sum(m.cols for m in workload.matrices if m.readout == "nl" and m.name.split("/")[0] == c.name),
            }
        )
    return rows


def _cells(
    workload: Workload,
    config: HardwareConfig,
    tech: Tech,
    ledger: Ledger,
    bits: int,
    dp_bits: int,
    k: int,
    mode: str,
    architecture: str,
) -> float:
    """Element-wise cell work on min(k, hidden) lanes; returns its cycles per step.

    Each lane has one multiplier (gate code x datapath width) and one adder and does a unit's multiplies
    and adds one per cycle; h (and c) live in registers.  tanh(c) (LSTM) / tanh(n) (GRU) follows
    ``mode`` (``nl_adc.functions.cell``): ``digital`` = piecewise-linear at the datapath width
    on the lane's multiplier and adder plus a 16-segment coefficient table,
    ``digital_lut`` = a 2^N-entry table per lane, ``nl_adc`` = one more NL-ADC conversion per unit
    (a DAC-driven column with its own ramp, after the gate conversion).
    """
    # every element-wise product has a gate operand (an N-bit ADC code, or FP16-class in the digital
    # reference) and a datapath operand: the lane multiplier is gate_bits x datapath bits
    gate_bits = dp_bits if architecture == "digital" else min(bits, dp_bits)
    hidden_max = max(c.hidden for c in workload.cells)
    hidden_total = sum(c.hidden for c in workload.cells)
    lanes = min(k, hidden_max)
    e_elem, slowest = 0.0, 0.0
    for c in workload.cells:
        e_elem += c.multiplies * tech.mul_e(gate_bits, dp_bits) + c.adds * tech.add_e(dp_bits)
        e_elem += 2 * c.state_bits_words * dp_bits * tech.e("flip_flop")  # write + read of h (and c)
        per_unit = (c.multiplies + c.adds) / c.hidden * max(tech.lat("multiplier_8b"), tech.lat("adder_8b"))
        slowest = max(slowest, math.ceil(c.hidden / lanes) * per_unit)
    ledger.add("rest", "elementwise_lanes", e_elem, lanes * (tech.mul_a(gate_bits, dp_bits) + tech.add_a(dp_bits)))
    state_words = sum(c.state_bits_words for c in workload.cells)
    ledger.add("rest", "state_registers", 0.0, state_words * dp_bits * tech.a("flip_flop"))
    if mode == "nl_adc":
        # tanh(c) on an NL-ADC of its own (its ramp spans tanh's domain, as the simulator's cell readout)
        sched = nladc_schedule("tanh", bits, config.replace(**{"adc.range_mode": "function"}))
        t_clk = 1e-9 / config.cost.clock_ghz
        conv = sched.cycles
        per_unit_e = (
            conv * tech.e("column_converter")
            + bits * tech.e("flip_flop")
            + (config.dac.bits or IDEAL_DAC_COST_BITS) * tech.e("word_line_driver")
            + config.array.v_read**2 * sched.ramp_charge_us * 1e-6 * t_clk
        )
        per_unit_a = tech.a("column_converter") + sched.devices * tech.a("rram_cell")
        ledger.add("nl_processing", "cell_tanh_nladc", hidden_total * per_unit_e, hidden_total * per_unit_a)
        return slowest + conv
    kind, width = ("lut", bits) if mode == "digital_lut" else ("pwl", dp_bits)
    e1, a1, lat1 = tech.activation(kind, width)
    if kind == "pwl":  # runs on the lane's own multiplier and adder: only a 16-segment table is added
        a1 = 16 * 2 * width * tech.a("sram_bitcell")
    ledger.add("nl_processing", f"cell_tanh_{kind}", hidden_total * e1, lanes * a1)
    return slowest + math.ceil(hidden_max / lanes) * lat1


def _crossbar_matrix(
    m: MatrixLoad,
    config: HardwareConfig,
    tech: Tech,
    ledger: Ledger,
    bits: int,
    architecture: str,
    adc_kind: str,
    conv: int,
    weight: float,
) -> None:
    """Energy (scaled by ``weight``: 1 per step, 1/steps for once-per-sequence) and area of one matrix."""
    arr, cost = config.array, config.cost
    t_clk = 1e-9 / cost.clock_ghz
    n = matrix_counts(m, config, architecture)
    rb, cb, arrays, conversions = n.row_blocks, n.col_blocks, n.arrays, n.conversions
    v2 = arr.v_read**2
    dac_bits = config.dac.bits or IDEAL_DAC_COST_BITS
    # MAC array: cells conduct through the conversion; word-line drivers once per step
    ledger.add(
        "mac_array",
        "array_read",
        weight * v2 * cost.input_activity * m.g_load_us * 1e-6 * conv * t_clk,
        n.weight_devices * tech.a("rram_cell"),
    )
    ledger.add(
        "mac_array",
        "word_line_drivers",
        weight * m.rows * cb * dac_bits * tech.e("word_line_driver"),
        m.rows * cb * dac_bits * tech.a("word_line_driver"),
    )
    # column conversion
    ledger.add(
        "nl_processing",
        "latches",
        weight * conversions * bits * tech.e("flip_flop"),
        conversions * bits * tech.a("flip_flop"),
    )
    if adc_kind == "sar":
        ledger.add(
            "nl_processing",
            "sar_adc",
            weight * conversions * tech.e("sar_adc") * 2**bits,
            conversions * tech.a("sar_adc") * 2**bits / 2**8,
        )
    else:
        ledger.add(
            "nl_processing",
            "column_converters",
            weight * conversions * conv * tech.e("column_converter"),
            conversions * tech.a("column_converter"),
        )
        ledger.add(
            "nl_processing",
            "counters",
            weight * arrays * conv * 2 * tech.e("flip_flop"),
            arrays * bits * tech.a("flip_flop"),
        )
        if architecture == "nl_adc":
            scheds = matrix_schedules(m.readout, bits, config)
            # S x cycles; through the wires the devices deliver T instead of G (ramp_charge_factor)
            charge = max(s.ramp_charge_us for s in scheds) * 1e-6 * m.ramp_charge_factor
            ledger.add(
                "nl_processing",
                "ramp_columns",
                weight * n.ramps * v2 * charge * t_clk,
                n.ramps * max(s.devices for s in scheds) * tech.a("rram_cell"),
            )
        else:
            ledger.add(
                "nl_processing",
                "reference_ramps",
                weight * arrays * conv * tech.e("ramp_reference"),
                arrays * tech.a("ramp_reference"),
            )
    if arr.partial_sums == "digital" and rb > 1:
        dp = config.datapath.bits or FLOAT_DATAPATH_COST_BITS
        ledger.add("rest", "partial_sum_adders", weight * m.cols * (rb - 1) * tech.add_e(dp), 0.0)


def _digital_matrices(workload: Workload, config: HardwareConfig, tech: Tech, ledger: Ledger) -> dict:
    """FP16 weights in SRAM and ``cost.digital_macs`` FP16 MAC units; returns cycles per step / sequence."""
    n_mac = config.cost.digital_macs
    total_bytes = 2 * sum(m.macs for m in workload.matrices)
    e_bit = tech.sram_bit_e(total_bytes)
    e_mac = tech.e("fp16_multiplier") + tech.e("fp16_adder")
    cycles = {"step": 0.0, "sequence": 0.0}
    for m in workload.matrices:
        w = 1.0 if m.per_step else 1.0 / workload.steps_per_inference
        ledger.add("mac_array", "fp16_macs", w * m.macs * e_mac, 0.0)
        ledger.add("mac_array", "sram_weight_reads", w * m.macs * 16 * e_bit, 0.0)
        cycles["step" if m.per_step else "sequence"] += math.ceil(m.macs / n_mac)
    ledger.add("mac_array", "fp16_macs", 0.0, n_mac * (tech.a("fp16_multiplier") + tech.a("fp16_adder")))
    ledger.add("mac_array", "sram_weight_reads", 0.0, total_bytes * 8 * tech.a("sram_bitcell"))
    return cycles


def _summary(
    workload: Workload,
    config: HardwareConfig,
    ledger: Ledger,
    cycles_step: dict,
    cycles_seq: float,
    macs_step: int,
    macs_seq: int,
    t_clk: float,
    bits: int,
    architecture: str,
) -> dict:
    steps = workload.steps_per_inference
    step_cycles = sum(cycles_step.values())
    t_step = step_cycles * t_clk
    e_step = sum(ledger.energy.values())
    area_um2 = sum(ledger.area.values())
    ops_step = 2 * macs_step + 2 * macs_seq / steps
    t_inf = steps * t_step + cycles_seq * t_clk
    peak_tops = ops_step / t_step / 1e12
    return {
        "architecture": architecture,
        "bits": bits,
        "ops_per_step": ops_step,
        "cycles_per_step": {**cycles_step, "total": step_cycles},
        "latency_per_step_s": t_step,
        "latency_per_inference_s": t_inf,
        "energy_per_step_j": e_step,
        "energy_per_inference_j": e_step * steps,
        "area_mm2": area_um2 * 1e-6,
        "peak_tops": peak_tops,
        "power_mw": e_step / t_step * 1e3,
        "tops_per_w": ops_step / e_step / 1e12,
        "tops_per_mm2": peak_tops / (area_um2 * 1e-6),
        "energy_breakdown": ledger.by_category(ledger.energy),
        "energy_by_component": ledger.by_component(ledger.energy),
        "area_breakdown_mm2": {k: v * 1e-6 for k, v in ledger.by_category(ledger.area).items()},
        "area_by_component_mm2": {k: v * 1e-6 for k, v in ledger.by_component(ledger.area).items()},
    }


def nl_time_ratio(
    hidden: int, units: int, bits: int, config: HardwareConfig, library: Library, kinds=("lut", "pwl", "cordic")
) -> dict:
    """Fig. 1c: digital sigmoid/tanh time of one LSTM step on ``units`` digital units vs the MVM time.

    Per step an LSTM of ``hidden`` units needs 4 * hidden gate activations + hidden tanh(c); the
    MVM time is one conversion of the conventional column ADC.  Returns {kind: ratio} and the MVM
    cycles; with the NL-ADC the gate activations cost no extra cycles (ratio 0 for the gates).
    """
    tech = Tech(library, config.cost.node_nm)
    conv = conversion_cycles(bits, config, config.cost.conventional_adc)
    ratio: dict[str, float] = {}
    for kind in kinds:
        _, _, lat = tech.activation(kind, bits)
        ratio[kind] = math.ceil(5 * hidden / units) * lat / conv
    return {
        "hidden": hidden,
        "units": units,
        "bits": bits,
        "adc": config.cost.conventional_adc,
        "mvm_cycles": conv,
        "ratio": ratio,
    }
