"""Fit the device model to measured conductance data, and simulate measured-style reads with it.

``fit(meas)`` turns a long measurement file (:mod:`crossbar.measurements`) into a validated
:class:`~crossbar.config.DeviceConfig` and a report; ``simulate(device, targets)`` runs a targets
file (the same format without ``g_us``) through the simulator's own device model
(:func:`crossbar.devices.program`, :func:`~crossbar.devices.conductance_at`,
:func:`~crossbar.devices.read`, :func:`~crossbar.devices.flicker`) -- the model a crossbar is
programmed with.

What is fitted from what (methods, stated in every fit's description and in docs/device_fit.md):

* programming error: the first read of each programming event (the mean of its reads at the first
  time point when it was read repeatedly there -- likewise at later times -- so that the tables
  describe the device and the read noise is added once, by the read-noise model) minus its target
  (target_g_us, else the verify window's centre), per target bin (the distinct targets when there are few, else
  equal-count bins).  ``empirical`` keeps the measured distribution as quantiles (inverse-CDF
  resampling, heavy tails and failed devices included); ``parametric`` a Gaussian sigma(G) table
  (the core sigma: std of the errors within 5 robust sigmas of the bin median) plus stuck-at
  probabilities.  Both print sigma(G) per bin and an abs + rel fit sigma^2 = a^2 + (b G)^2.
* stuck devices (reported; the parametric model's stuck_*_prob): verify failed (``verify_ok`` = 0,
  else the first read outside the verify window, else more than 5 robust sigmas from the bin
  median) and the read beyond the programmable range (above the highest target / window edge:
  stuck at ON; below the lowest: stuck at OFF).
* relaxation: reads of the same event at later times (t_s grouped into time points).  Targets
  known: quantiles of G(t) - target per target bin and time (``reference = target``); unknown:
  quantiles of G(t) - G(first read) per bin of the first read (``first_read``).
* read noise: repeated reads at the same time (std per event, binned over G), and time series
  (>= 256 evenly spaced reads of one event): PSD slope (Welch), windowed sigma(T) (std of the
  reads inside a sliding window of T s), and a fit of sigma(T)^2 by white noise plus
  Ornstein-Uhlenbeck components (non-negative least squares) -> ``read_noise`` (white, per read) and
  ``read_noise.flicker`` (the slow part).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.typing import ArrayLike

from crossbar import devices
from crossbar.config import DeviceConfig, HardwareConfig, _format_error, load_config
from crossbar.errors import CrossbarInputError
from crossbar.io import pyplot, save_figure
from crossbar.measurements import Measurements
from crossbar.rng import generator

# cumulative probabilities of the quantile tables: dense in the tails, where heavy-tailed
# relaxation and failed devices live
P_GRID = (
    [0.0, 0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.075]
    + [round(0.1 + 0.05 * i, 2) for i in range(17)]
    + [0.925, 0.95, 0.97, 0.98, 0.99, 0.997, 0.999, 1.0]
)
MAX_DISTINCT_TARGETS = 128  # up to this many distinct targets are used as the bins themselves
TS_MIN_READS = 256  # a programming event with this many evenly spaced reads is a time series
DECIMALS = 4  # uS in the written tables (0.1 nS)


@dataclass
class FitOptions:
    method: str = "auto"  # auto | empirical | parametric
    reference: str = "auto"  # auto | target | first_read (relaxation table)
    min_per_bin: int = 30  # devices per conductance bin (at every time point)
    max_bins: int = 32
    g_min: float | None = None
    g_max: float | None = None
    t_inference: float | None = None
    name: str | None = None
    seed: int = 0  # of the goodness-of-fit simulation


@dataclass
class FitResult:
    device: DeviceConfig
    report: dict
    text: str
    plots: dict = field(default_factory=dict)  # data for plot_fit


# ----------------------------------------------------------------------------- small statistics
def mad_sigma(x: np.ndarray) -> float:
    """1.4826 x median absolute deviation: a Gaussian-equivalent sigma insensitive to outliers."""
    x = np.asarray(x, dtype=float)
    return float(1.4826 * np.median(np.abs(x - np.median(x)))) if x.size else float("nan")


def core_sigma(x: np.ndarray, k: float = 5.0) -> float:
    """Standard deviation of the values within ``k`` robust sigmas (:func:`mad_sigma`) of the median:
    the programming-error sigma of the devices that are not outliers (failed / stuck)."""
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return float("nan")
    s = mad_sigma(x)
    keep = np.abs(x - np.median(x)) <= k * s if s > 0 else np.ones(x.size, bool)
    return float(np.std(x[keep])) if keep.sum() > 1 else 0.0


def abs_rel_fit(g: ArrayLike, sigma: ArrayLike) -> tuple[float, float]:
    """sigma^2 = a^2 + (b G)^2 by non-negative least squares on the squares (relative weights)."""
    from scipy.optimize import nnls

    g, sigma = np.asarray(g, float), np.asarray(sigma, float)
    ok = np.isfinite(sigma) & (sigma > 0)
    if ok.sum() == 0:
        return 0.0, 0.0
    w = 1.0 / sigma[ok] ** 2
    coef, _ = nnls(np.column_stack([np.ones(ok.sum()), g[ok] ** 2]) * w[:, None], sigma[ok] ** 2 * w)
    return float(math.sqrt(coef[0])), float(math.sqrt(coef[1]))


def ks(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import ks_2samp

    return float(ks_2samp(a, b).statistic) if len(a) and len(b) else float("nan")


def windowed_sigma(x: np.ndarray, n: int) -> float:
    """Std of the samples inside a sliding window of ``n`` samples, RMS over all window positions
    (population std within each window)."""
    x = np.asarray(x, dtype=np.float64) - np.mean(x)
    if n < 2 or n > len(x):
        return float("nan")
    c1 = np.concatenate([[0.0], np.cumsum(x)])
    c2 = np.concatenate([[0.0], np.cumsum(x * x)])
    s1, s2 = c1[n:] - c1[:-n], c2[n:] - c2[:-n]
    return float(math.sqrt(max(np.mean(s2 / n - (s1 / n) ** 2), 0.0)))


def ou_window_fraction(n: np.ndarray, rho: float) -> np.ndarray:
    """E[population variance of n consecutive samples] / sigma^2 of an AR(1) process with lag-one
    correlation ``rho`` (0 <= rho < 1): 1 - (1 + 2 sum_k (1 - k/n) rho^k) / n."""
    n = np.asarray(n, dtype=np.float64)
    if rho <= 0:
        return 1 - 1 / n
    one_m = 1 - rho
    s = rho / one_m - rho * (1 - rho**n) / (n * one_m**2)
    return np.clip(1 - (1 + 2 * s) / n, 0.0, 1.0)


def psd_slope(x: np.ndarray, fs: float) -> tuple[float, np.ndarray, np.ndarray, tuple[float, float]]:
    """Welch PSD of ``x`` (sampling rate ``fs``, Hz) and its log-log slope alpha (PSD ~ f^alpha)
    fitted over log-spaced bands between 8 frequency bins and fs / 8."""
    from scipy.signal import welch

    nper = 2 ** int(math.floor(math.log2(max(len(x) / 4, 16))))
    f, pxx = welch(np.asarray(x, float) - np.mean(x), fs=fs, nperseg=nper)
    lo, hi = 8 * fs / nper, fs / 8
    edges = np.geomspace(lo, hi, 25)
    fc, pc = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        m = (f >= a) & (f < b)
        if m.any() and np.all(pxx[m] > 0):
            fc.append(math.sqrt(a * b))
            pc.append(np.mean(pxx[m]))
    slope = float(np.polyfit(np.log10(fc), np.log10(pc), 1)[0]) if len(fc) >= 2 else float("nan")
    return slope, f, pxx, (lo, hi)


# ------------------------------------------------------------------------------ grouping helpers
def time_points(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group read times (s) into time points: the distinct values when there are at most 64
    (compared at 6 significant digits), else log-spaced bands (4 per decade; t = 0 on its own)
    labelled by their median.  Returns (label per read, NaN where t is unknown; sorted labels)."""
    t = np.asarray(t, dtype=np.float64)
    ok = np.isfinite(t)
    label = np.full(t.shape, np.nan)
    if not ok.any():
        return label, np.array([])
    rounded = np.array([float(f"{v:.6g}") for v in np.unique(t[ok])])
    uniq = np.unique(rounded)
    if len(uniq) <= 64:
        lab = np.array([float(f"{v:.6g}") for v in t[ok]])
        label[ok] = lab
        return label, uniq
    pos = t[ok] > 0
    key = np.where(pos, np.floor(np.log10(np.where(pos, t[ok], 1.0)) * 4), -np.inf)
    out = np.empty(ok.sum())
    for k in np.unique(key):
        m = key == k
        out[m] = float(np.median(t[ok][m]))
    label[ok] = out
    return label, np.unique(out)


def _equal_count_edges(x: np.ndarray, max_bins: int, min_per_bin: int) -> np.ndarray:
    n_bins = int(max(1, min(max_bins, len(x) // max(min_per_bin, 1))))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([x.min(), x.max() + 1e-9])
    return edges


def _assign(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    return np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)


@dataclass
class Bins:
    """Conductance bins: ``centres`` (uS), and a rule mapping values to bin indices."""

    centres: np.ndarray
    edges: np.ndarray | None = None  # equal-count bins
    discrete: bool = False  # one bin per distinct value (centres = the values)

    def index(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if self.discrete:
            i = np.clip(np.searchsorted(self.centres, x), 0, len(self.centres) - 1)
            j = np.clip(i - 1, 0, len(self.centres) - 1)
            return np.where(np.abs(self.centres[j] - x) < np.abs(self.centres[i] - x), j, i)
        assert self.edges is not None  # equal-count bins always carry their edges
        return _assign(x, self.edges)


def _target_bins(target: np.ndarray, opts: FitOptions) -> Bins:
    values, counts = np.unique(np.round(target, 9), return_counts=True)
    if 1 <= len(values) <= MAX_DISTINCT_TARGETS and counts.min() >= opts.min_per_bin:
        return Bins(centres=values, discrete=True)
    edges = _equal_count_edges(target, opts.max_bins, opts.min_per_bin)
    idx = _assign(target, edges)
    centres = np.array([np.mean(target[idx == i]) for i in range(len(edges) - 1)])
    keep = np.isfinite(centres)
    return _merge_centres(Bins(centres=centres[keep], edges=np.r_[edges[:-1][keep], edges[-1]]))


def _value_bins(x: np.ndarray, opts: FitOptions) -> Bins:
    edges = _equal_count_edges(x, opts.max_bins, opts.min_per_bin)
    idx = _assign(x, edges)
    centres = np.array([np.median(x[idx == i]) if (idx == i).any() else np.nan for i in range(len(edges) - 1)])
    keep = np.isfinite(centres)
    return _merge_centres(Bins(centres=centres[keep], edges=np.r_[edges[:-1][keep], edges[-1]]))


def _merge_centres(b: Bins) -> Bins:
    """Centres must be strictly increasing (bins of equal centre are merged)."""
    c = b.centres
    keep = np.r_[True, np.diff(c) > 1e-9 * max(1.0, float(np.abs(c).max()))]
    if keep.all():
        return b
    assert b.edges is not None  # only equal-count bins are merged
    edges = np.r_[b.edges[:-1][keep], b.edges[-1]]
    return Bins(centres=c[keep], edges=edges)


def _quantiles(values: np.ndarray) -> list[float]:
    q = np.quantile(values, P_GRID)
    q = np.maximum.accumulate(np.round(q, DECIMALS))
    return [float(v) for v in q]


# ------------------------------------------------------------------------------------ the data
@dataclass
class _Events:
    """Per programming event (device, program_id): its rows and summary values."""

    gi: np.ndarray  # event index per row
    n: int
    device: np.ndarray
    program: np.ndarray
    target: np.ndarray  # per event, NaN unknown
    lo: np.ndarray
    hi: np.ndarray
    first_row: np.ndarray  # row of the first read
    first_label: np.ndarray  # its time point (NaN unknown)
    is_series: np.ndarray  # bool: a time series (read noise)
    n_reads: np.ndarray


def _events(meas: Measurements, label: np.ndarray) -> _Events:
    gi, dev_lab, prog_lab = meas.groups()
    n_ev = len(dev_lab)
    order = np.lexsort(
        (
            meas.read_idx if np.isfinite(meas.read_idx).any() else np.zeros(meas.n),
            np.where(np.isfinite(meas.t), meas.t, -1.0),
            gi,
        )
    )
    # per-event target: every given value must agree
    target = np.full(n_ev, np.nan)
    lo, hi = np.full(n_ev, np.nan), np.full(n_ev, np.nan)
    has = np.flatnonzero(np.isfinite(meas.target))
    if has.size:
        first_has = {}
        for r in has:
            e = gi[r]
            if e not in first_has:
                first_has[e] = r
                target[e], lo[e], hi[e] = meas.target[r], meas.lo[r], meas.hi[r]
            elif not (math.isclose(meas.target[r], target[e], rel_tol=1e-9, abs_tol=1e-9)):
                r0 = first_has[e]
                raise CrossbarInputError(
                    f"{meas.path}: row {r + 1}: device {str(meas.device[r])!r} (program {str(meas.program[r])!r}) "
                    f"has target {meas.target[r]:g} uS but row {r0 + 1} gave {target[e]:g} uS; one programming "
                    f"event has one target (use program_id to tell programming events apart)"
                )
    starts = np.r_[True, gi[order][1:] != gi[order][:-1]]
    first_row = np.empty(n_ev, dtype=np.int64)
    first_row[gi[order][starts]] = order[starts]
    n_reads = np.bincount(gi, minlength=n_ev)
    is_series = np.zeros(n_ev, dtype=bool)
    for e in np.flatnonzero(n_reads >= TS_MIN_READS):
        rows = np.flatnonzero(gi == e)
        t = np.sort(meas.t[rows])
        if np.all(np.isfinite(t)):
            d = np.diff(t)
            if d.min() > 0 and (d.max() - d.min()) <= 1e-3 * np.median(d):
                is_series[e] = True
    return _Events(
        gi=gi,
        n=n_ev,
        device=dev_lab,
        program=prog_lab,
        target=target,
        lo=lo,
        hi=hi,
        first_row=first_row,
        first_label=label[first_row],
        is_series=is_series,
        n_reads=n_reads,
    )


def _set_means(meas: Measurements, ev: _Events, label: np.ndarray) -> np.ndarray:
    """Per row, the mean of the reads of its event at its time point (repeated reads averaged, so
    that the programming and relaxation tables describe the device's state, not one read's noise;
    a single read is its own mean)."""
    lab = np.where(np.isfinite(label), label, -1.0)
    _u, inv, cnt = np.unique(np.stack([ev.gi.astype(float), lab], 1), axis=0, return_inverse=True, return_counts=True)
    inv = inv.reshape(-1)
    return (np.bincount(inv, weights=meas.g) / cnt)[inv]


# ------------------------------------------------------------------------------------ the fit
def fit(meas: Measurements, opts: FitOptions | None = None) -> FitResult:
    """Fit a device model to ``meas`` (see the module docstring for the methods)."""
    opts = opts or FitOptions()
    if opts.method not in ("auto", "empirical", "parametric"):
        raise CrossbarInputError(f"--method {opts.method!r}: allowed are auto, empirical, parametric")
    if opts.reference not in ("auto", "target", "first_read"):
        raise CrossbarInputError(f"--reference {opts.reference!r}: allowed are auto, target, first_read")
    if not np.isfinite(meas.g).all():
        raise CrossbarInputError(f"{meas.path}: fit-device needs the measured conductance g_us in every row")
    label, _ = time_points(meas.t)
    ev = _events(meas, label)
    rep: dict = {
        "file": meas.path,
        "sha256": meas.sha256,
        "rows": meas.n,
        "devices": int(len(np.unique(meas.device))),
        "programming_events": ev.n,
        "columns": meas.columns,
        "notes": [],
    }
    notes = rep["notes"]
    g_all = meas.g
    rep["conductance_uS"] = {
        "min": float(g_all.min()),
        "p01": float(np.percentile(g_all, 1)),
        "median": float(np.median(g_all)),
        "p99": float(np.percentile(g_all, 99)),
        "max": float(g_all.max()),
    }
    if np.isfinite(meas.temp_c).any():
        tc = meas.temp_c[np.isfinite(meas.temp_c)]
        rep["temp_c"] = {"min": float(tc.min()), "max": float(tc.max())}
        if tc.max() - tc.min() > 5:
            notes.append(f"reads span {tc.min():g}..{tc.max():g} C; the fit pools all temperatures")
    ev_ok = ~ev.is_series
    g_set = _set_means(meas, ev, label)
    g_first = g_set[ev.first_row]  # state after programming: mean of the reads at the first time
    known = ev_ok & np.isfinite(ev.target)
    rep["events_with_target"] = int(known.sum())
    rep["time_series_events"] = int(ev.is_series.sum())
    method = opts.method
    device: dict = {"name": opts.name or f"fit_{Path(meas.path).stem}"}
    prov: list[str] = []

    # ---- conductance range and levels
    if known.any():
        tg = ev.target[known]
        g_min, g_max = float(tg.min()), float(tg.max())
        levels = np.unique(np.round(tg, 9))
        steps = np.diff(levels)
        level_count = None
        if 2 <= len(levels) <= 65536 and steps.size and np.all(np.abs(steps - steps.mean()) <= 0.01 * steps.mean()):
            level_count = int(len(levels))
        range_rule = (
            f"g_min/g_max = lowest/highest target; levels = {level_count} (the distinct targets are evenly spaced)"
            if level_count
            else "g_min/g_max = lowest/highest target; analog (targets not a few evenly spaced levels)"
        )
    else:
        src = g_first[ev_ok] if ev_ok.any() else g_all
        g_min, g_max, level_count = float(src.min()), float(src.max()), None
        range_rule = "targets unknown: g_min/g_max = lowest/highest first read after programming; analog"
    if opts.g_min is not None:
        g_min, range_rule = float(opts.g_min), range_rule + "; g_min given (--g-min)"
    if opts.g_max is not None:
        g_max, range_rule = float(opts.g_max), range_rule + "; g_max given (--g-max)"
    g_min = max(g_min, 0.0)
    if not g_max > g_min:
        raise CrossbarInputError(
            f"{meas.path}: the conductance range is empty (g_min {g_min:g} uS >= g_max "
            f"{g_max:g} uS); give --g-min / --g-max"
        )
    device.update(g_min=round(g_min, 6), g_max=round(g_max, 6), levels=level_count)
    rep["range"] = {"g_min": g_min, "g_max": g_max, "levels": level_count, "rule": range_rule}
    prov.append(f"range: {range_rule}")

    # ---- programming error
    prog: dict | None = None  # the report's "programming" section (JSON), when fitted
    bins_t: Bins | None = None
    if known.sum() >= max(2, opts.min_per_bin):
        err = g_first[known] - ev.target[known]
        bins_t = _target_bins(ev.target[known], opts)
        bi = bins_t.index(ev.target[known])
        rows = []
        for i, c in enumerate(bins_t.centres):
            e = err[bi == i]
            rows.append(
                {
                    "g": float(c),
                    "n": int(e.size),
                    "mean": float(e.mean()),
                    "std": float(e.std()),
                    "core_sigma": core_sigma(e),
                    "mad_sigma": mad_sigma(e),
                }
            )
        a, b = abs_rel_fit(bins_t.centres, [r["core_sigma"] for r in rows])
        # failed verify and stuck devices
        vo = meas.verify_ok[ev.first_row[known]]
        if np.isfinite(vo).all():
            failed, fail_rule = vo == 0, "verify_ok = 0"
        elif np.isfinite(ev.lo[known]).all():
            failed = (g_first[known] < ev.lo[known]) | (g_first[known] > ev.hi[known])
            fail_rule = "first read outside its verify window"
        else:
            med = np.array([np.median(err[bi == i]) for i in range(len(rows))])
            sig = np.array([r["mad_sigma"] for r in rows])
            failed = np.abs(err - med[bi]) > 5 * np.maximum(sig[bi], 1e-12)
            fail_rule = "first read more than 5 robust sigmas (1.4826 MAD) from its bin's median error"
        top = np.nanmax(ev.hi[known]) if np.isfinite(ev.hi[known]).any() else ev.target[known].max()
        bottom = np.nanmin(ev.lo[known]) if np.isfinite(ev.lo[known]).any() else ev.target[known].min()
        margin = 5 * float(np.nanmedian([r["core_sigma"] for r in rows]))
        on = failed & (g_first[known] > top + margin)
        off = failed & (g_first[known] < bottom - margin)
        off_text = (
            f"below {bottom - margin:.4g} uS = stuck at OFF"
            if bottom - margin > 0
            else f"stuck at OFF would read below {bottom - margin:.4g} uS: none possible"
        )
        stuck_rule = (
            f"verify failed ({fail_rule}) and the read beyond the programmable range by more than 5 "
            f"median core sigmas ({margin:.3g} uS): above {top + margin:.4g} uS (highest target / window "
            f"edge {top:g} uS + margin) = stuck at ON; {off_text}"
        )
        prog = {
            "bins": rows,
            "abs_rel": {"sigma_abs": a, "sigma_rel": b},
            "n": int(known.sum()),
            "verify_failed": float(failed.mean()),
            "stuck_on": float(on.mean()),
            "stuck_off": float(off.mean()),
            "stuck_rule": stuck_rule,
            "bin_rule": (
                "one bin per distinct target" if bins_t.discrete else f"{len(bins_t.centres)} equal-count target bins"
            ),
        }
        rep["programming"] = prog
        if method == "auto":
            method = "empirical"
    else:
        notes.append(
            "no (or too few) targets: programming error not fitted (programming is ideal: G = target)"
            if not known.any()
            else f"only {int(known.sum())} events with a target (< --min-per-bin "
            f"{opts.min_per_bin}): programming error not fitted"
        )
    if method == "auto":
        method = "empirical"
    rep["method"] = method
    if prog is not None:
        assert bins_t is not None  # binned together with prog
        if method == "empirical":
            err = g_first[known] - ev.target[known]
            bi = bins_t.index(ev.target[known])
            device["programming"] = {
                "quantiles": {
                    "g": [round(float(c), 6) for c in bins_t.centres],
                    "p": P_GRID,
                    "q": [_quantiles(err[bi == i]) for i in range(len(bins_t.centres))],
                }
            }
            prov.append(
                f"programming: empirical quantiles of (first read - target) per target bin "
                f"({prog['bin_rule']}; {prog['n']} events, {min(r['n'] for r in prog['bins'])}.."
                f"{max(r['n'] for r in prog['bins'])} per bin); stuck devices are part of the measured "
                f"distribution (stuck_*_prob = 0; measured: ON {prog['stuck_on']:.4f}, OFF "
                f"{prog['stuck_off']:.4f}; rule: {prog['stuck_rule']})"
            )
        else:
            sigmas = [max(r["core_sigma"], 0.0) for r in prog["bins"]]
            if len(sigmas) >= 2:
                device["programming"] = {
                    "table": {"g": [round(float(c), 6) for c in bins_t.centres], "sigma": [round(s, 6) for s in sigmas]}
                }
            else:
                device["programming"] = {"sigma_abs": round(sigmas[0], 6)}
            device["stuck_on_prob"] = round(prog["stuck_on"], 6)
            device["stuck_off_prob"] = round(prog["stuck_off"], 6)
            prov.append(
                f"programming: Gaussian sigma(G) = core sigma (std within 5 robust sigmas of the median) of "
                f"(first read - target) per target bin ({prog['bin_rule']}; {prog['n']} events); "
                f"stuck_on/off_prob measured by the rule: {prog['stuck_rule']}"
            )

    # ---- relaxation
    relax = _fit_relaxation(meas, ev, label, known, bins_t, opts, rep, notes, g_set)
    if relax is not None:
        if method == "empirical":
            device.setdefault("drift", {})["relaxation"] = relax["table"]
            prov.append(relax["provenance"])
        else:
            notes.append(
                "parametric method: the measured relaxation is reported but not modelled (the power law "
                "cannot express it; use --method empirical)"
            )
    # ---- read noise
    rn = _fit_read_noise(meas, ev, label, rep, notes)
    if rn is not None:
        device["read_noise"] = rn["spec"]
        prov.append(rn["provenance"])
    else:
        prov.append("read noise: not fitted (no repeated reads at one time and no time series); 0")
    drift = device.setdefault("drift", {})
    if opts.t_inference is not None:
        drift["t_inference"] = float(opts.t_inference)
    t_inf = drift.get("t_inference", 20.0)
    if relax is not None and method == "empirical" and t_inf > relax["table"]["t"][-1]:
        notes.append(
            f"t_inference {t_inf:g} s is beyond the last measured time {relax['table']['t'][-1]:g} s: the "
            "relaxation is held at its last measured state there"
        )
    prov.append(f"drift.t_inference = {t_inf:g} s ({'--t-inference' if opts.t_inference is not None else 'default'})")
    header = (
        f"Fitted by `crossbar fit-device` ({method}) from {Path(meas.path).name} (sha256 {meas.sha256}; "
        f"{meas.n} rows, {rep['devices']} devices, {ev.n} programming events, {int(ev.is_series.sum())} time "
        f"series). "
    )
    device["description"] = (header + " ".join(p if p.endswith(".") else p + "." for p in prov))[:20_000]
    dev_cfg = validate_device(device, f"<fit of {meas.path}>")
    res = FitResult(device=dev_cfg, report=rep, text="")
    _goodness(res, meas, ev, label, known, bins_t, relax, opts)
    res.text = format_report(res)
    return res


def _fit_relaxation(meas, ev, label, known, bins_t, opts, rep, notes, g_set):
    ev_ok = ~ev.is_series
    lab_ok = np.isfinite(label)
    if not lab_ok.any():
        return None
    # events with reads at >= 2 time points
    pairs = np.unique(np.stack([ev.gi[lab_ok], label[lab_ok]], 1), axis=0)
    counts = np.bincount(pairs[:, 0].astype(np.int64), minlength=ev.n)
    multi = ev_ok & (counts >= 2)
    if multi.sum() == 0:
        return None
    fl = ev.first_label[multi]
    vals, cnt = np.unique(fl[np.isfinite(fl)], return_counts=True)
    if not len(vals):
        return None
    t_ref = float(vals[np.argmax(cnt)])
    use = multi & (ev.first_label == t_ref)
    if (multi & ~use).any():
        notes.append(
            f"relaxation: {int((multi & ~use).sum())} events whose first read is not at t = {t_ref:g} s are left out"
        )
    reference = opts.reference
    if reference == "auto":
        reference = "target" if bins_t is not None and (use & known).sum() >= 0.5 * use.sum() else "first_read"
    if reference == "target":
        if bins_t is None:
            raise CrossbarInputError(
                f"{meas.path}: --reference target needs targets (target_g_us or the verify "
                "window) for the programming events"
            )
        use = use & known
    if use.sum() < opts.min_per_bin:
        notes.append(
            f"relaxation: only {int(use.sum())} events with reads at several times (< --min-per-bin "
            f"{opts.min_per_bin}): not fitted"
        )
        return None
    g_ref = g_set[ev.first_row]
    if reference == "target":
        key, bins = ev.target, bins_t
    else:
        key, bins = g_ref, _value_bins(g_ref[use], opts)
    # value of each event at each later time point: the mean of its reads at that time
    rows = np.flatnonzero(lab_ok & use[ev.gi])
    rows = rows[
        np.lexsort(
            (meas.read_idx[rows] if np.isfinite(meas.read_idx).any() else np.zeros(rows.size), label[rows], ev.gi[rows])
        )
    ]
    key_rows = np.stack([ev.gi[rows], label[rows]], 1)
    firsts = np.r_[True, np.any(key_rows[1:] != key_rows[:-1], axis=1)]
    rows = rows[firsts]
    times = np.unique(label[rows])
    times = times[times > t_ref]
    b_ev = np.full(ev.n, -1)
    b_ev[use] = bins.index(key[use])
    nb = len(bins.centres)
    need = max(5, opts.min_per_bin // 3)
    kept, dropped = [t_ref], []
    per_time = {}
    for t in times:
        r = rows[label[rows] == t]
        e = ev.gi[r]
        v = g_set[r] - (ev.target[e] if reference == "target" else g_ref[e])
        bi = b_ev[e]
        counts = np.bincount(bi, minlength=nb)
        if counts.min() < need:
            dropped.append(float(t))
            continue
        kept.append(float(t))
        per_time[float(t)] = (bi, v, g_set[r] - g_ref[e])
    if dropped:
        notes.append(
            f"relaxation: time points {', '.join(f'{t:g}' for t in dropped)} s left out (fewer than {need} "
            "devices in some conductance bin)"
        )
    if len(kept) < 2:
        notes.append("relaxation: no later time point with enough devices per bin: not fitted")
        return None
    e0 = np.flatnonzero(use)
    v0 = g_ref[e0] - ev.target[e0] if reference == "target" else np.zeros(e0.size)
    q = []
    stats = []
    for i in range(nb):
        per_t = [_quantiles(v0[b_ev[e0] == i])]
        row_stats = []
        for t in kept[1:]:
            bi, v, change = per_time[t]
            per_t.append(_quantiles(v[bi == i]))
            ci = change[bi == i]
            row_stats.append({"t": t, "n": int(ci.size), "mean": float(ci.mean()), "std": float(ci.std())})
        q.append(per_t)
        stats.append({"g": float(bins.centres[i]), "per_t": row_stats})
    table = {"reference": reference, "g": [round(float(c), 6) for c in bins.centres], "t": kept, "p": P_GRID, "q": q}
    what = (
        "G(t) - target, per target bin"
        if reference == "target"
        else "G(t) - G(first read), per bin of the first read (targets unknown)"
    )
    prov = (
        f"relaxation: empirical quantiles of {what} at t = {', '.join(f'{t:g}' for t in kept)} s "
        f"({int(use.sum())} events; {nb} bins; held after {kept[-1]:g} s)"
    )
    rep["relaxation"] = {
        "reference": reference,
        "t_ref": t_ref,
        "times": kept,
        "events": int(use.sum()),
        "bins": stats,
        "dropped_times": dropped,
    }
    return {"table": table, "provenance": prov, "bins": bins, "use": use, "key": key, "reference": reference}


def _fit_read_noise(meas, ev, label, rep, notes):
    out_spec: dict = {}
    prov = []
    # repeated reads at one time point of one event (not time series)
    ok = ~ev.is_series[ev.gi]
    lab = np.where(np.isfinite(label), label, -1.0)
    keys = np.stack([ev.gi, lab], 1)[ok]
    g = meas.g[ok]
    rep_sets = None
    if keys.size:
        uniq, inv, cnt = np.unique(keys, axis=0, return_inverse=True, return_counts=True)
        inv = inv.reshape(-1)
        multi = cnt >= 2
        if multi.sum() >= 2:
            s1 = np.bincount(inv, weights=g)
            s2 = np.bincount(inv, weights=g * g)
            mean = s1 / cnt
            var = np.maximum(s2 / cnt - mean**2, 0.0) * cnt / np.maximum(cnt - 1, 1)
            mean, var = mean[multi], var[multi]
            edges = _equal_count_edges(mean, 16, 10)
            bi = _assign(mean, edges)
            rows = []
            for i in range(len(edges) - 1):
                m = bi == i
                if m.any():
                    rows.append(
                        {
                            "g": float(np.median(mean[m])),
                            "n_sets": int(m.sum()),
                            "sigma": float(math.sqrt(var[m].mean())),
                        }
                    )
            a, b = abs_rel_fit([r["g"] for r in rows], [r["sigma"] for r in rows])
            rep_sets = {"bins": rows, "abs_rel": {"sigma_abs": a, "sigma_rel": b}, "sets": int(multi.sum())}
            rep["read_noise_repeated"] = rep_sets
    series = []
    for e in np.flatnonzero(ev.is_series):
        rows = np.flatnonzero(ev.gi == e)
        rows = rows[np.argsort(meas.t[rows])]
        x = meas.g[rows]
        dt = float(np.median(np.diff(meas.t[rows])))
        series.append(_fit_series(x, dt, f"{ev.device[e]}/{ev.program[e]}"))
    if series:
        rep["time_series"] = [{k: v for k, v in s.items() if not k.startswith("_")} for s in series]
        # flicker table over the series' mean conductance (equal means merged)
        order = np.argsort([s["g_mean"] for s in series])
        taus = series[0]["_taus"]
        gs, white, comps = [], [], []
        for i in order:
            s = series[i]
            if gs and abs(s["g_mean"] - gs[-1]) <= 1e-9 * max(1.0, gs[-1]):
                white[-1] = math.sqrt((white[-1] ** 2 + s["white_sigma"] ** 2) / 2)
                comps[-1] = np.sqrt((comps[-1] ** 2 + s["_sigmas"] ** 2) / 2)
                continue
            gs.append(s["g_mean"])
            white.append(s["white_sigma"])
            comps.append(s["_sigmas"])
        if len(gs) >= 2:
            out_spec["table"] = {"g": [round(v, 6) for v in gs], "sigma": [round(v, 6) for v in white]}
        else:
            out_spec["sigma_abs"] = round(white[0], 6)
        out_spec["flicker"] = {
            "tau": [float(f"{t:.6g}") for t in taus],
            "g": [round(v, 6) for v in gs],
            "sigma": [[round(float(v), 6) for v in c] for c in comps],
        }
        slopes = ", ".join(format(s["psd_slope"], ".2f") for s in series)
        prov.append(
            f"read noise: {len(series)} time series (Welch PSD slope {slopes}); "
            "windowed sigma(T) fitted by white noise "
            f"(read_noise, per read) + {len(taus)} Ornstein-Uhlenbeck components tau = {taus[0]:.3g}..{taus[-1]:.3g} s "
            f"(read_noise.flicker), non-negative least squares, per series, tabulated over its mean G"
        )
        if rep_sets is not None:
            notes.append("repeated reads and time series both present: the per-read sigma comes from the time series")
    elif rep_sets is not None:
        rows = rep_sets["bins"]
        if len(rows) >= 2:
            out_spec["table"] = {"g": [round(r["g"], 6) for r in rows], "sigma": [round(r["sigma"], 6) for r in rows]}
        else:
            out_spec["sigma_abs"] = round(rows[0]["sigma"], 6)
        prov.append(
            f"read noise: sigma(G) of repeated reads at one time ({rep_sets['sets']} sets, std per set, RMS per G bin)"
        )
    if not out_spec:
        return None
    return {"spec": out_spec, "provenance": "; ".join(prov)}


WINDOWS_S = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)


def _fit_series(x: np.ndarray, dt: float, name: str) -> dict:
    """Read-noise fit of one evenly spaced series (reads ``x`` uS, spacing ``dt`` s)."""
    from scipy.optimize import nnls

    n_total = len(x)
    slope, f, pxx, band = psd_slope(x, 1.0 / dt)
    ns = np.unique(np.round(np.geomspace(2, max(n_total // 2, 3), 40)).astype(int))
    y = np.array([windowed_sigma(x, int(n)) ** 2 for n in ns])
    taus = np.geomspace(2 * dt, max(n_total * dt / 2, 4 * dt), max(int(round(3 * math.log10(n_total / 4))), 2))
    cols = [1 - 1 / ns] + [ou_window_fraction(ns, math.exp(-dt / tau)) for tau in taus]
    A = np.column_stack(cols)
    w = 1.0 / np.maximum(y, 1e-30)
    coef, _ = nnls(A * w[:, None], y * w)
    model = A @ coef
    win = [T for T in WINDOWS_S if 2 <= round(T / dt) <= n_total]
    measured = {f"{T:g}": windowed_sigma(x, int(round(T / dt))) for T in win}
    return {
        "series": name,
        "reads": n_total,
        "dt_s": dt,
        "g_mean": float(np.mean(x)),
        "psd_slope": slope,
        "psd_band_hz": list(band),
        "white_sigma": float(math.sqrt(coef[0])),
        "window_fit_max_rel_err": float(np.max(np.abs(np.sqrt(model / y) - 1))),
        "windowed_sigma_measured": measured,
        "_taus": taus,
        "_sigmas": np.sqrt(coef[1:]),
        "_x": x,
        "_f": f,
        "_pxx": pxx,
    }


# ------------------------------------------------------------------------------- simulation
def simulate(device: DeviceConfig, targets: Measurements, seed: int = 0) -> np.ndarray:
    """Simulated reads (uS, one per row of ``targets``) of the device model: each programming event
    (device, program_id) is programmed once to its target (target_g_us, else the window centre),
    then read at each row's t_s (blank: 0 s) with read noise (and flicker) -- clipped at 0 uS.

    Draws: generator (seed, "simulate-device/program") programs the events in (device, program_id)
    order; (seed, "simulate-device/read") the per-read noise in row order; (seed,
    "simulate-device/flicker") the slow noise.  Same seed, same numbers."""
    gi, dev_lab, prog_lab = targets.groups()
    n_ev = len(dev_lab)
    target = np.full(n_ev, np.nan)
    for r in np.flatnonzero(np.isfinite(targets.target)):
        e = gi[r]
        if np.isnan(target[e]):
            target[e] = targets.target[r]
        elif not math.isclose(targets.target[r], target[e], rel_tol=1e-9, abs_tol=1e-9):
            raise CrossbarInputError(
                f"{targets.path}: row {r + 1}: device {str(targets.device[r])!r} (program "
                f"{str(targets.program[r])!r}) has target {targets.target[r]:g} uS but an earlier row "
                f"gave {target[e]:g} uS; one programming event has one target"
            )
    missing = np.flatnonzero(np.isnan(target[gi]))
    if missing.size:
        row = int(missing[0])
        raise CrossbarInputError(
            f"{targets.path}: row {row + 1}: device {str(targets.device[row])!r} has no target (give "
            "target_g_us or target_lo_us/target_hi_us in at least one row of each programming "
            "event; simulate-device programs each event to its target)"
        )
    dtype = torch.float64
    p = devices.program(torch.tensor(target, dtype=dtype), device, generator(seed, "simulate-device/program"))
    t = np.where(np.isfinite(targets.t), targets.t, 0.0)
    idx = torch.as_tensor(gi, dtype=torch.long)
    rows = devices.ProgrammedDevices(
        g=p.g[idx],
        g_max_dev=p.g_max_dev[idx],
        nu=p.nu[idx],
        stuck=p.stuck[idx],
        z_acc=None if p.z_acc is None else p.z_acc[idx],
    )
    state = devices.conductance_at(rows.g, rows, device.drift, torch.as_tensor(t, dtype=dtype))
    g = devices.read(state, device.read_noise, generator(seed, "simulate-device/read")).numpy().copy()
    if device.read_noise.flicker is not None:
        g += devices.flicker(p.g.numpy(), device.read_noise.flicker, gi, t, generator(seed, "simulate-device/flicker"))
    return np.maximum(g, 0.0)


# ----------------------------------------------------------------------------- goodness of fit
def _goodness(res: FitResult, meas, ev, label, known, bins_t, relax, opts) -> None:
    """In-sample check: simulate the fitted events at their own times and compare distributions."""
    dev = res.device
    rep = res.report
    ev_ok = ~ev.is_series
    g_first = _set_means(meas, ev, label)[ev.first_row]
    # targets for the simulation: the known target, else (targets unknown) the first read -- or, for
    # a time series, its mean (the conductance its read-noise table row is keyed by)
    tgt = np.where(np.isfinite(ev.target), ev.target, g_first)
    for e in np.flatnonzero(ev.is_series & ~np.isfinite(ev.target)):
        tgt[e] = float(np.mean(meas.g[ev.gi == e]))
    sim_meas = _targets_like(meas, tgt[ev.gi])
    sim = simulate(dev, sim_meas, seed=opts.seed)
    rep["goodness"] = {"seed": opts.seed, "note": "in-sample: the fitted events simulated at their own times"}
    plots = res.plots
    plots["sim"], plots["meas"] = sim, meas
    if bins_t is not None or relax is not None:
        if relax is not None and relax["reference"] == "first_read":
            bins, key = relax["bins"], g_first
            ref_name = "bin of the first read"
        else:
            bins, key = bins_t, ev.target
            ref_name = "target bin"
        lab_ok = np.isfinite(label) & ev_ok[ev.gi]
        sel_ev = (known if relax is None or relax["reference"] == "target" else relax["use"]) & ev_ok
        times = sorted(set(label[lab_ok & sel_ev[ev.gi]].tolist())) if lab_ok.any() else []
        if not times:
            times = [float("nan")]
        ks_tab = []
        b_ev = np.full(ev.n, -1)
        b_ev[sel_ev] = bins.index(key[sel_ev])
        for t in times:
            if np.isnan(t):
                m = sel_ev[ev.gi] & (np.arange(meas.n) == ev.first_row[ev.gi])
            else:
                m = sel_ev[ev.gi] & (label == t)
            row = []
            for i in range(len(bins.centres)):
                mi = m & (b_ev[ev.gi] == i)
                row.append(ks(meas.g[mi], sim[mi]) if mi.sum() >= 5 else float("nan"))
            ks_tab.append(
                {
                    "t": t,
                    "ks": row,
                    "median": float(np.nanmedian(row)) if np.isfinite(row).any() else None,
                    "max": float(np.nanmax(row)) if np.isfinite(row).any() else None,
                }
            )
        rep["goodness"]["ks"] = {"by": ref_name, "g": [float(c) for c in bins.centres], "per_time": ks_tab}
        plots["ks_bins"], plots["ks_key"], plots["ks_sel"] = bins, key, sel_ev
    if ev.is_series.any():
        sims = []
        for e in np.flatnonzero(ev.is_series):
            rows = np.flatnonzero(ev.gi == e)
            rows = rows[np.argsort(meas.t[rows])]
            dt = float(np.median(np.diff(meas.t[rows])))
            x_m, x_s = meas.g[rows], sim[rows]
            win = {
                f"{T:g}": windowed_sigma(x_s, int(round(T / dt))) for T in WINDOWS_S if 2 <= round(T / dt) <= len(rows)
            }
            meas_win = {k: windowed_sigma(x_m, int(round(float(k) / dt))) for k in win}
            sims.append(
                {
                    "series": f"{ev.device[e]}/{ev.program[e]}",
                    "psd_slope_simulated": psd_slope(x_s, 1 / dt)[0],
                    "windowed_sigma_simulated": win,
                    "windowed_sigma_ratio": {k: win[k] / meas_win[k] for k in win},
                }
            )
        rep["goodness"]["time_series"] = sims


def _targets_like(meas: Measurements, target_rows: np.ndarray) -> Measurements:
    nan = np.full(meas.n, np.nan)
    return Measurements(
        path=meas.path,
        sha256=meas.sha256,
        header=meas.header,
        columns=meas.columns,
        device=meas.device,
        program=meas.program,
        g=nan,
        target=target_rows,
        lo=nan,
        hi=nan,
        t=meas.t,
        read_idx=meas.read_idx,
        verify_ok=meas.verify_ok,
        temp_c=meas.temp_c,
    )


# ----------------------------------------------------------------------------------- report
def format_report(res: FitResult) -> str:
    rep = res.report
    out = [
        f"fit-device: {rep['file']} ({rep['rows']} rows, {rep['devices']} devices, {rep['programming_events']} "
        f"programming events, {rep['time_series_events']} time series); method {rep['method']}"
    ]
    c = rep["conductance_uS"]
    out.append(
        f"conductance range (all reads): {c['min']:.4g} .. {c['max']:.4g} uS (1 % {c['p01']:.4g}, median "
        f"{c['median']:.4g}, 99 % {c['p99']:.4g}); model range {rep['range']['g_min']:.4g} .. "
        f"{rep['range']['g_max']:.4g} uS, {rep['range']['levels'] or 'analog'} levels ({rep['range']['rule']})"
    )
    pr = rep.get("programming")
    if pr:
        out.append(f"programming error (first read - target), {pr['n']} events, {pr['bin_rule']}:")
        out.append("  target_uS      n     mean_uS    std_uS  core_sigma  mad_sigma")
        for r in pr["bins"]:
            out.append(
                f"  {r['g']:9.3f} {r['n']:6d} {r['mean']:10.3f} {r['std']:9.3f} {r['core_sigma']:11.3f} "
                f"{r['mad_sigma']:10.3f}"
            )
        ar = pr["abs_rel"]
        out.append(
            f"  abs + rel fit of the core sigma: "
            f"sigma(G) = sqrt({ar['sigma_abs']:.4g}^2 + ({ar['sigma_rel']:.4g} G)^2) uS"
        )
        out.append(
            f"  verify failed {100 * pr['verify_failed']:.2f} %; stuck at ON {100 * pr['stuck_on']:.2f} %, stuck at "
            f"OFF {100 * pr['stuck_off']:.2f} % (rule: {pr['stuck_rule']})"
        )
    rl = rep.get("relaxation")
    if rl:
        out.append(
            f"relaxation ({rl['reference']}-referenced, {rl['events']} events, first read at t = {rl['t_ref']:g} s): "
            "mean / std of the change since the first read per bin, uS"
        )
        head = "  g_uS      " + "".join(f"{'t=' + format(t, 'g') + 's':>17s}" for t in rl["times"][1:])
        out.append(head)
        for b in rl["bins"]:
            vals = "".join(f"{s['mean']:8.3f}/{s['std']:<8.3f}" for s in b["per_t"])
            out.append(f"  {b['g']:8.3f}  {vals}")
    rr = rep.get("read_noise_repeated")
    if rr:
        out.append(
            f"read noise from repeated reads ({rr['sets']} sets): "
            + ", ".join(f"{r['sigma']:.4g} uS at {r['g']:.4g} uS" for r in rr["bins"])
            + f"; abs + rel fit sqrt({rr['abs_rel']['sigma_abs']:.4g}^2 + ({rr['abs_rel']['sigma_rel']:.4g} G)^2)"
        )
    for s in rep.get("time_series", []):
        win = ", ".join(f"{k} s {v:.4g}" for k, v in s["windowed_sigma_measured"].items())
        out.append(
            f"time series {s['series']}: {s['reads']} reads at {1 / s['dt_s']:g} Hz, mean {s['g_mean']:.4g} uS, "
            f"PSD slope {s['psd_slope']:.2f} ({s['psd_band_hz'][0]:.3g}-{s['psd_band_hz'][1]:.3g} Hz), white "
            f"{s['white_sigma']:.4g} uS; windowed sigma (uS): {win}; fit max rel. error "
            f"{100 * s['window_fit_max_rel_err']:.1f} %"
        )
    gd = rep.get("goodness", {})
    if "ks" in gd:
        out.append(
            f"goodness ({gd['note']}, seed {gd['seed']}): KS distance measured vs simulated per {gd['ks']['by']}:"
        )
        for row in gd["ks"]["per_time"]:
            t = "first read" if row["t"] != row["t"] else f"t = {row['t']:g} s"
            if row["median"] is not None:
                out.append(f"  {t:>16s}: median {row['median']:.3f}, max {row['max']:.3f}")
    for s in gd.get("time_series", []):
        ratios = ", ".join(f"{k} s {v:.2f}" for k, v in s["windowed_sigma_ratio"].items())
        out.append(
            f"goodness {s['series']}: simulated/measured windowed sigma {ratios}; simulated PSD slope "
            f"{s['psd_slope_simulated']:.2f}"
        )
    for n in rep["notes"]:
        out.append(f"note: {n}")
    return "\n".join(out)


# ------------------------------------------------------------------------------- device files
def validate_device(data: dict, source: str) -> DeviceConfig:
    from pydantic import ValidationError

    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        for e in errors:
            e["loc"] = ("device",) + tuple(e["loc"])
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise CrossbarInputError(_format_error(errors[0], source) + more) from None


def load_device(path: str | Path) -> DeviceConfig:
    """A device from a device-section JSON (what ``fit-device`` writes) or a whole hardware config
    (its ``device``; a preset name works too)."""
    p = Path(path)
    if p.is_file():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise CrossbarInputError(f"{path}: not a JSON file ({exc})") from None
        if isinstance(data, dict) and "schema_version" not in data:
            return validate_device(data, str(path))
    return load_config(path).device


def device_json(device: DeviceConfig) -> str:
    """Indented JSON of a device section with the numeric tables kept one row per line."""
    return compact_json(device.model_dump(mode="json"))


def config_json(cfg: HardwareConfig) -> str:
    return compact_json(cfg.model_dump(mode="json"))


def compact_json(data) -> str:
    import re

    text = json.dumps(data, indent=2)
    # put lists of plain numbers on one line
    pattern = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")
    return pattern.sub(lambda m: "[" + ", ".join(s.strip() for s in m.group(1).split(",")) + "]", text) + "\n"


# ------------------------------------------------------------------------------------ plots
def plot_fit(res: FitResult, out_dir: str | Path) -> list[Path]:
    """PNG plots of measured vs simulated distributions (matplotlib); returns the paths."""
    plt = pyplot()
    out = Path(out_dir)
    paths = []
    rep, pl = res.report, res.plots
    meas, sim = pl.get("meas"), pl.get("sim")
    if meas is None or sim is None:
        raise CrossbarInputError("plot_fit: the fit result has no goodness-of-fit data (res.plots is empty)")
    label, _ = time_points(meas.t)
    if "ks_bins" in pl:
        bins, key, sel = pl["ks_bins"], pl["ks_key"], pl["ks_sel"]
        ev_gi, _d, _p = meas.groups()
        per_time = rep["goodness"]["ks"]["per_time"]
        times = [row["t"] for row in per_time]
        show = np.unique(np.linspace(0, len(bins.centres) - 1, min(6, len(bins.centres))).round().astype(int))
        for t_sel, fname in ((times[0], "distributions_first_read.png"), (times[-1], "distributions_last_time.png")):
            fig, axes = plt.subplots(1, len(show), figsize=(3.2 * len(show), 3.0), squeeze=False)
            for ax, i in zip(axes[0], show):
                m = sel[ev_gi] & (bins.index(key[ev_gi]) == i)
                m &= (label == t_sel) if t_sel == t_sel else np.ones_like(m)
                for vals, lab, st in ((meas.g[m], "measured", "-"), (sim[m], "simulated", "--")):
                    v = np.sort(vals)
                    ax.plot(v, np.arange(1, len(v) + 1) / max(len(v), 1), st, label=lab)
                ax.set_title(f"bin {bins.centres[i]:.3g} uS", fontsize=9)
                ax.set_xlabel("G (uS)")
            axes[0][0].set_ylabel("CDF")
            axes[0][0].legend(fontsize=8)
            fig.suptitle(
                f"measured vs simulated at {'t = ' + format(t_sel, 'g') + ' s' if t_sel == t_sel else 'first read'}"
            )
            paths.append(save_figure(fig, out / fname))
        ks_mat = np.array([row["ks"] for row in per_time], dtype=float)
        fig, ax = plt.subplots(figsize=(7, 3.2))
        im = ax.imshow(ks_mat, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=max(0.3, np.nanmax(ks_mat)))
        ax.set_yticks(range(len(times)), [f"{t:g}" if t == t else "first" for t in times])
        ax.set_ylabel("t (s)")
        ax.set_xlabel(f"{rep['goodness']['ks']['by']} index")
        fig.colorbar(im, ax=ax, label="KS distance")
        paths.append(save_figure(fig, out / "ks_per_bin_and_time.png"))
    pr = rep.get("programming")
    if pr:
        g = np.array([r["g"] for r in pr["bins"]])
        fig, ax = plt.subplots(figsize=(5, 3.4))
        ax.plot(g, [r["std"] for r in pr["bins"]], "o", label="std (all devices)")
        ax.plot(g, [r["core_sigma"] for r in pr["bins"]], "s", label="core sigma")
        a, b = pr["abs_rel"]["sigma_abs"], pr["abs_rel"]["sigma_rel"]
        gg = np.linspace(g.min(), g.max(), 200)
        ax.plot(gg, np.sqrt(a**2 + (b * gg) ** 2), "-", label="abs + rel fit")
        ax.set_yscale("log")
        ax.set_xlabel("target G (uS)")
        ax.set_ylabel("programming error sigma (uS)")
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out / "programming_sigma.png"))
    series = rep.get("time_series", [])
    if series:
        ev_gi, dev_lab, prog_lab = meas.groups()
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6))
        for s, sg in zip(series, rep["goodness"]["time_series"]):
            dev_id, prog_id = s["series"].rsplit("/", 1)
            e = int(np.flatnonzero((dev_lab == dev_id) & (prog_lab == prog_id))[0])
            rows = np.flatnonzero(ev_gi == e)
            rows = rows[np.argsort(meas.t[rows])]
            dt = s["dt_s"]
            _sl, f, pxx, _b = psd_slope(meas.g[rows], 1 / dt)
            _sl2, f2, pxx2, _b2 = psd_slope(sim[rows], 1 / dt)
            (line,) = a1.loglog(f[1:], pxx[1:], lw=0.8, label=f"{s['series']} measured")
            a1.loglog(f2[1:], pxx2[1:], "--", lw=0.8, color=line.get_color())
            ts = [float(k) for k in s["windowed_sigma_measured"]]
            a2.loglog(ts, list(s["windowed_sigma_measured"].values()), "o-", color=line.get_color(), label=s["series"])
            a2.loglog(ts, list(sg["windowed_sigma_simulated"].values()), "x--", color=line.get_color())
        a1.set_xlabel("f (Hz)")
        a1.set_ylabel("PSD (uS^2/Hz)")
        a1.set_title("read noise PSD: measured (solid) vs simulated (dashed)", fontsize=9)
        a2.set_xlabel("window T (s)")
        a2.set_ylabel("windowed sigma (uS)")
        a2.set_title("windowed sigma: measured (o) vs simulated (x)", fontsize=9)
        a2.legend(fontsize=7)
        paths.append(save_figure(fig, out / "read_noise.png"))
    return paths
