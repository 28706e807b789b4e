"""Measured device data: the long CSV format that ``crossbar fit-device`` reads and
``crossbar simulate-device`` reads (without ``g_us``) and writes.

One row per read of one device.  Columns (header names; order free; other columns are kept but
not used):

==============  ========  ==============================================================================
column          required  meaning
==============  ========  ==============================================================================
device_id       yes       device label (any text); one physical device
g_us            yes [1]_  read conductance, uS (>= 0)
target_g_us     no        programming target, uS; blank = unknown
target_lo_us    no        lower edge of the write-verify window, uS (with target_hi_us)
target_hi_us    no        upper edge of the window, uS; target = window centre when target_g_us is blank
program_id      no        programming event of the device (default: one event per device)
t_s             no        seconds since that programming ended (>= 0); blank/absent = unknown
read_idx        no        index of repeated reads (order of reads at the same t_s)
verify_ok       no        1/0 (true/false, yes/no): did write-verify pass
temp_c          no        temperature, degrees C
==============  ========  ==============================================================================

.. [1] not in a ``simulate-device`` targets file (a ``g_us`` column there is kept as ``measured_g_us``).

Conductance columns may be given in S, uS or ohm (``units``); ``columns`` maps the names above to a
file's own headers.  Files may be comma, tab or semicolon separated, optionally gzip-compressed
(``.gz``); lines starting with ``#`` before the header are comments.  Every problem is one
:class:`~crossbar.errors.CrossbarInputError` naming the file, row, column, value and what is allowed.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crossbar.errors import CrossbarInputError
from crossbar.io import file_sha256

REQUIRED = ("device_id", "g_us")
OPTIONAL = ("target_g_us", "target_lo_us", "target_hi_us", "program_id", "t_s", "read_idx", "verify_ok", "temp_c")
CANONICAL = REQUIRED + OPTIONAL
CONDUCTANCE_COLUMNS = ("g_us", "target_g_us", "target_lo_us", "target_hi_us")
UNITS = ("uS", "S", "ohm")
_TRUE, _FALSE = {"1", "true", "yes", "y", "t"}, {"0", "false", "no", "n", "f"}
MAX_BYTES = 2 * 1024**3


@dataclass
class Measurements:
    """A parsed long CSV: one entry per row (conductances in uS, times in s, NaN = blank/unknown)."""

    path: str
    sha256: str
    header: list[str]  # the file's own column names
    columns: dict[str, str]  # canonical name -> the file's column name (present ones only)
    device: np.ndarray  # str, per row
    program: np.ndarray  # str, per row ("0" when the file has no program_id)
    g: np.ndarray  # uS (NaN when the file has no g_us: a targets file)
    target: np.ndarray  # uS: target_g_us, else the window centre, else NaN
    lo: np.ndarray  # uS window edges (NaN = none)
    hi: np.ndarray
    t: np.ndarray  # s since programming (NaN = unknown)
    read_idx: np.ndarray  # NaN = not given
    verify_ok: np.ndarray  # 1.0 / 0.0 / NaN
    temp_c: np.ndarray
    rows: list[list[str]] | None = field(default=None, repr=False)  # raw fields (keep_raw=True)

    @property
    def n(self) -> int:
        return len(self.device)

    def groups(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Programming events: (group index per row, device label per group, program label per group),
        groups sorted by (device, program) so that the numbering does not depend on the row order."""
        keys = np.char.add(np.char.add(self.device.astype(str), "\x00"), self.program.astype(str))
        uniq, first, inv = np.unique(keys, return_index=True, return_inverse=True)
        return inv.reshape(-1), self.device[first], self.program[first]

    def has(self, name: str) -> bool:
        return name in self.columns


def parse_columns(text: str | None) -> dict[str, str]:
    """``"device_id=addr,g_us=G"`` -> {"device_id": "addr", "g_us": "G"} (canonical names checked)."""
    if not text:
        return {}
    out: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise CrossbarInputError(f"--columns: {part!r} is not NAME=COLUMN (e.g. device_id=addr,g_us=G)")
        name, col = (s.strip() for s in part.split("=", 1))
        if name not in CANONICAL:
            raise CrossbarInputError(
                f"--columns: {name!r} is not a column of the format; known: {', '.join(CANONICAL)}"
            )
        if not col:
            raise CrossbarInputError(f"--columns: no file column given for {name!r}")
        if name in out:
            raise CrossbarInputError(f"--columns: {name!r} is mapped twice")
        out[name] = col
    return out


def _open_text(path: Path):
    raw = path.read_bytes()
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise CrossbarInputError(f"{path}: not a readable gzip file ({exc})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CrossbarInputError(f"{path}: not UTF-8 text") from None


def read_measurements(
    path: str | Path,
    units: str = "uS",
    columns: dict[str, str] | None = None,
    require_g: bool = True,
    keep_raw: bool = False,
) -> Measurements:
    """Read and check a long measurement CSV (see the module docstring).

    ``require_g=False`` reads a ``simulate-device`` targets file (no ``g_us``; each row then needs a
    target).  ``units`` applies to every conductance column; ``columns`` maps canonical names to the
    file's headers.
    """
    p = Path(path)
    if units not in UNITS:
        raise CrossbarInputError(f"--units {units!r}: allowed are {', '.join(UNITS)}")
    if not p.is_file():
        raise CrossbarInputError(f"{path}: file not found")
    if p.stat().st_size > MAX_BYTES:
        raise CrossbarInputError(f"{path}: larger than {MAX_BYTES} bytes")
    text = _open_text(p)
    lines = text.splitlines()
    skip = 0
    while skip < len(lines) and (not lines[skip].strip() or lines[skip].lstrip().startswith("#")):
        skip += 1
    if skip == len(lines):
        raise CrossbarInputError(
            f"{path}: empty file (no header line; expected columns "
            f"{', '.join(REQUIRED if require_g else ('device_id',))} ...)"
        )
    head = lines[skip]
    delim = "\t" if "\t" in head else (";" if ";" in head and "," not in head else ",")
    reader = csv.reader(io.StringIO("\n".join(lines[skip:])), delimiter=delim)
    try:
        header = [h.strip() for h in next(reader)]
        body = [r for r in reader]
    except csv.Error as exc:
        raise CrossbarInputError(f"{path}: not a readable CSV ({exc})") from None
    seen = set()
    for h in header:
        if h in seen:
            raise CrossbarInputError(f"{path}: column {h!r} appears twice in the header")
        seen.add(h)
    mapping = dict(columns or {})
    for name, col in mapping.items():
        if col not in header:
            raise CrossbarInputError(
                f"{path}: --columns maps {name} to {col!r}, but the header has no such "
                f"column (columns: {', '.join(header)})"
            )
    present: dict[str, str] = {}
    for name in CANONICAL:
        column = mapping.get(name, name if name in header and name not in mapping.values() else None)
        if column is not None:
            present[name] = column
    needed = REQUIRED if require_g else ("device_id",)
    for name in needed:
        if name not in present:
            raise CrossbarInputError(
                f"{path}: missing required column {name!r} (columns: {', '.join(header)}; "
                f"map your own names with --columns {name}=YOURCOLUMN)"
            )
    # drop trailing blank lines, then check every row's width
    while body and not any(f.strip() for f in body[-1]):
        body.pop()
    if not body:
        raise CrossbarInputError(f"{path}: no data rows after the header")
    first_line = skip + 2  # file line number of data row 1
    width = len(header)
    for i, r in enumerate(body):
        if len(r) != width:
            raise CrossbarInputError(
                f"{path}: row {i + 1} (line {first_line + i}) has {len(r)} fields but the header has {width}"
            )
    index = {h: j for j, h in enumerate(header)}

    def raw(name: str) -> list[str]:
        j = index[present[name]]
        return [r[j].strip() for r in body]

    def where(name: str, i: int) -> str:
        col = present[name]
        shown = name if col == name else f"{name} (file column {col!r})"
        return f"{path}: row {i + 1} (line {first_line + i}), column {shown}"

    def numbers(name: str, allow_blank: bool, what: str) -> np.ndarray:
        vals = raw(name)
        text = np.array(vals, dtype=str)
        blank = text == ""
        try:  # fast path; the loop below finds and names the first bad value
            arr = np.where(blank, "nan", text).astype(np.float64)
            if np.isfinite(arr[~blank]).all() and (allow_blank or not blank.any()):
                return arr
        except ValueError:
            pass
        arr = np.full(len(vals), np.nan)
        for i, v in enumerate(vals):
            if not v:
                if not allow_blank:
                    raise CrossbarInputError(f"{where(name, i)}: empty value; {what}")
                continue
            try:
                x = float(v)
            except ValueError:
                raise CrossbarInputError(f"{where(name, i)}: {v!r} is not a number; {what}") from None
            if not np.isfinite(x):
                raise CrossbarInputError(f"{where(name, i)}: {v!r} is not finite; {what}")
            arr[i] = x
        return arr

    unit_word = {"uS": "uS", "S": "S", "ohm": "ohm"}[units]

    def conductance(name: str, allow_blank: bool) -> np.ndarray:
        if units == "ohm":
            what = f"allowed: a resistance > 0 ohm (--units ohm){', or blank' if allow_blank else ''}"
        else:
            what = f"allowed: a conductance >= 0 {unit_word}{', or blank' if allow_blank else ''}"
        arr = numbers(name, allow_blank, what)
        bad = np.flatnonzero((arr <= 0) if units == "ohm" else (arr < 0))
        if bad.size:
            i = int(bad[0])
            kind = "resistance" if units == "ohm" else "conductance"
            raise CrossbarInputError(
                f"{where(name, i)}: {raw(name)[i]!r} is a {'non-positive' if units == 'ohm' else 'negative'} "
                f"{kind}; {what}"
            )
        if units == "S":
            return arr * 1e6
        if units == "ohm":
            return 1e6 / arr
        return arr

    n = len(body)
    nan = np.full(n, np.nan)
    device = np.array(raw("device_id"), dtype=object)
    for i, v in enumerate(device):
        if not v:
            raise CrossbarInputError(f"{where('device_id', i)}: empty device_id; every row needs a device label")
    device = device.astype(str)
    if "program_id" in present:
        program = np.array(raw("program_id"), dtype=object)
        for i, v in enumerate(program):
            if not v:
                raise CrossbarInputError(
                    f"{where('program_id', i)}: empty program_id; give the programming "
                    "event's label (or drop the column: one event per device)"
                )
        program = program.astype(str)
    else:
        program = np.full(n, "0")
    g = conductance("g_us", allow_blank=False) if "g_us" in present and require_g else nan.copy()
    target = conductance("target_g_us", True) if "target_g_us" in present else nan.copy()
    lo = conductance("target_lo_us", True) if "target_lo_us" in present else nan.copy()
    hi = conductance("target_hi_us", True) if "target_hi_us" in present else nan.copy()
    if ("target_lo_us" in present) != ("target_hi_us" in present):
        missing = "target_hi_us" if "target_lo_us" in present else "target_lo_us"
        raise CrossbarInputError(
            f"{path}: a verify window needs both target_lo_us and target_hi_us; {missing} is missing"
        )
    if units == "ohm":  # R_lo is the high-conductance edge
        lo, hi = np.fmin(lo, hi), np.fmax(lo, hi)
    half = np.isnan(lo) != np.isnan(hi)
    if half.any():
        i = int(np.flatnonzero(half)[0])
        name = "target_hi_us" if np.isnan(hi[i]) else "target_lo_us"
        raise CrossbarInputError(
            f"{where(name, i)}: blank, but the other window edge is given; give both "
            "edges of the verify window or neither"
        )
    bad = np.flatnonzero(lo > hi)
    if bad.size:
        i = int(bad[0])
        raise CrossbarInputError(
            f"{where('target_lo_us', i)}: {raw('target_lo_us')[i]!r} is above target_hi_us "
            f"{raw('target_hi_us')[i]!r}; the window must have lo <= hi"
        )
    target = np.where(np.isnan(target), 0.5 * (lo + hi), target)
    t = nan.copy()
    if "t_s" in present:
        t = numbers("t_s", True, "allowed: seconds since programming ended, >= 0, or blank")
        bad = np.flatnonzero(t < 0)
        if bad.size:
            i = int(bad[0])
            raise CrossbarInputError(
                f"{where('t_s', i)}: {raw('t_s')[i]!r} is negative; allowed: seconds since "
                "programming ended, >= 0, or blank"
            )
    read_idx = (
        numbers("read_idx", True, "allowed: a read index (number) or blank") if "read_idx" in present else nan.copy()
    )
    temp_c = numbers("temp_c", True, "allowed: degrees C or blank") if "temp_c" in present else nan.copy()
    verify = nan.copy()
    if "verify_ok" in present:
        for i, v in enumerate(raw("verify_ok")):
            lv = v.lower()
            if not lv:
                continue
            if lv in _TRUE:
                verify[i] = 1.0
            elif lv in _FALSE:
                verify[i] = 0.0
            else:
                raise CrossbarInputError(
                    f"{where('verify_ok', i)}: {v!r} is not a yes/no value; allowed: 1/0, true/false, yes/no or blank"
                )
    if not require_g and "g_us" in present:
        pass  # a targets file may carry measured values; simulate-device keeps them as measured_g_us
    return Measurements(
        path=str(path),
        sha256=file_sha256(p),
        header=header,
        columns=present,
        device=device,
        program=program,
        g=g,
        target=target,
        lo=lo,
        hi=hi,
        t=t,
        read_idx=read_idx,
        verify_ok=verify,
        temp_c=temp_c,
        rows=body if keep_raw else None,
    )


def write_csv(path: str | Path, header: list[str], rows) -> Path:
    """Write a CSV atomically (``rows``: an iterable of sequences of strings)."""
    from crossbar.io import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(header)
            w.writerows(rows)
    return Path(path)
