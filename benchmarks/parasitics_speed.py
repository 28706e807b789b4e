"""Speed of the IR-drop model (issue 16 item 5), as ratios from one run on this machine.

1. an MVM of a programmed 256 x 256 tile with IR drop (effective matrices cached) vs the ideal tile;
2. building the effective matrix T of one 256 x 256 array (the one-off cost per programming) by
   each solver (nested dissection, the automatic choice; the line-by-line ladder; the sparse LU),
   nested dissection against the ladder on several shapes (one thread), and a batch of six arrays
   on one thread vs ``--threads``;
   and the ladder's per-row step, the inverse of a C x C admittance matrix (the solver's blocked
   inverse), against LAPACK's potrf + potri, torch's MKL (cholesky + cholesky_inverse) and one
   dgemm of the same size, on one thread: how far the step is from what the machine multiplies;
3. a KWS evaluation (shipped GSC checkpoint, dev clips) with IR drop vs without -- programming,
   calibration and inference together; skipped when the dataset is absent.

    .venv/bin/python benchmarks/parasitics_speed.py [--clips 200] [--mc 2] [--rounds 3] [--r 1.0] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from timing import interleaved_medians  # noqa: E402

from crossbar.config import load_config  # noqa: E402
from crossbar.parasitics import PREFIX_CACHE, effective_matrix  # noqa: E402
from crossbar.rng import generator  # noqa: E402
from crossbar.tile import Tile  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GSC = REPO.parent / "shared" / "data" / "speech_commands_v0.02_test"


def mvm_ratio(r: float) -> None:
    base = load_config("rram_nladc_5b").replace(**{"device.read_noise.sigma_rel": 0.0})
    wired = base.replace(**{"array.wires.r_wl": r, "array.wires.r_bl": r})
    gen = generator(0, "bench/parasitics")
    w = torch.randn(256, 255, generator=gen) * 0.1
    b = torch.randn(256, generator=gen) * 0.1
    x = torch.rand(64, 255, generator=gen) * 2 - 1
    ideal = Tile(w, b, base).program(0, 1)
    t0 = time.perf_counter()
    ir = Tile(w, b, wired).program(0, 1)
    ir.mvm(x)  # builds and caches T+ and T- of the 256 x 256 arrays
    first = time.perf_counter() - t0
    # in turn, round after round: this machine's speed drifts within seconds
    medians = interleaved_medians({"ideal": lambda: ideal.mvm(x), "ir": lambda: ir.mvm(x)}, 100)
    t_ideal, t_ir = medians["ideal"], medians["ir"]
    print(
        f"MVM 256x256 tile, batch 64: ideal {t_ideal * 1e6:.0f} us, IR drop (cached T) {t_ir * 1e6:.0f} us, "
        f"ratio {t_ir / t_ideal:.2f} (first call with T+ and T- built: {first:.1f} s)"
    )


def build_t(r: float) -> None:
    """T of one 256 x 256 array by each solver: nested dissection (the automatic choice), the
    line-by-line ladder and the sparse LU of the whole network; and the largest difference."""
    g = 1 + 99 * torch.rand(256, 256, generator=generator(0, "bench/parasitics/g"), dtype=torch.float64)
    took, t = {}, {}
    for solver in ("dissection", "lines", "sparse"):
        effective_matrix(g[:8, :8], r_wl=r, r_bl=r, progress=False, solver=solver)  # compiled kernels loaded
        t0 = time.perf_counter()
        t[solver] = effective_matrix(g, r_wl=r, r_bl=r, progress=solver == "sparse", solver=solver)
        took[solver] = time.perf_counter() - t0
    diff = max(float((t[s] - t["sparse"]).abs().max() / t["sparse"].abs().max()) for s in ("dissection", "lines"))
    print(
        f"effective matrix of one 256x256 array (r_wl = r_bl = {r} ohm): nested dissection {took['dissection']:.3f} s, "
        f"line-by-line ladder {took['lines']:.3f} s (ratio {took['lines'] / took['dissection']:.1f}), sparse LU of the "
        f"whole network {took['sparse']:.2f} s (ratio {took['sparse'] / took['dissection']:.1f}); largest difference "
        f"from the sparse LU {diff:.1e} of max |T|; mean attenuation T/G {float((t['dissection'] / g).mean()):.3f}"
    )


def solver_shapes(r: float) -> None:
    """T by nested dissection (the automatic choice) against the line-by-line ladder (the cheaper of
    its two orientations) on arrays of several shapes, one thread, interleaved medians of 3 (ms)."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from crossbar.dissection import effective as dissection
    from crossbar.parasitics import Wires, _dual, _dual_g, _effective_lines, cell_conductance

    w = Wires(r_wl=r, r_bl=r)
    rng = np.random.default_rng(0)
    parts = []
    with threadpool_limits(limits=1, user_api="blas"):
        for rows, cols in ((8, 8), (64, 64), (130, 12), (128, 128), (206, 256), (256, 256), (512, 128)):
            g = rng.uniform(1.0, 100.0, (rows, cols))
            med = interleaved_medians(
                {
                    "dissection": lambda g=g: dissection(cell_conductance(g, 0.0), w),
                    "lines": lambda g=g: _effective_lines(g, w, lambda n: None),
                    "dual_lines": lambda g=g: _effective_lines(_dual_g(g), _dual(w), lambda n: None),
                },
                3,
            )
            t_nd, ladder = med["dissection"] * 1e3, min(med["lines"], med["dual_lines"]) * 1e3
            parts.append(f"{rows}x{cols} {t_nd:.2f} / {ladder:.2f} ({ladder / t_nd:.1f}x)")
    print("T by nested dissection / the ladder, one thread, ms: " + ", ".join(parts))


def inverse_bound() -> None:
    """The line solver's per-row inverse (``_spd_inverse_lower``: blocked on SciPy's OpenBLAS) vs
    LAPACK's potrf + potri (SciPy's wrappers), torch's MKL Cholesky inverse and a dgemm of the same
    size, one thread, ms and GFLOP/s (the inverse counted as n^3 flops, the dgemm as 2 n^3)."""
    import numpy as np
    from scipy.linalg import blas, lapack
    from threadpoolctl import threadpool_limits

    from crossbar.parasitics import _spd_inverse_lower

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1, user_api="blas"):
            for n in (169, 256):
                a = torch.randn(n, n, generator=generator(0, "bench/parasitics/spd"), dtype=torch.float64)
                a = a @ a.T / n + torch.eye(n, dtype=torch.float64)
                an = np.asfortranarray(a.numpy())
                took = interleaved_medians(
                    {
                        "blocked (the solver)": lambda an=an: _spd_inverse_lower(an.copy(order="F")),
                        "LAPACK potrf + potri": lambda an=an: lapack.dpotri(lapack.dpotrf(an, lower=1)[0], lower=1),
                        "torch (MKL) cholesky + cholesky_inverse": lambda a=a: torch.cholesky_inverse(
                            torch.linalg.cholesky(a)
                        ),
                        "dgemm (n x n @ n x n)": lambda an=an: blas.dgemm(1.0, an, an),
                    },
                    50,
                )
                line = ", ".join(
                    f"{name} {t * 1e3:.2f} ms ({(2 if 'dgemm' in name else 1) * n**3 / t / 1e9:.0f} GFLOP/s)"
                    for name, t in took.items()
                )
                print(f"one {n}x{n} step, one thread: {line}")
    finally:
        torch.set_num_threads(threads)


def batch_threads(r: float, threads: int) -> None:
    """A batch of arrays (3 instances x G+ / G- of a 169 x 256 block) on one thread and on
    ``threads``: the solver's threads run in parallel when its kernels release the GIL."""
    g = 1 + 99 * torch.rand(6, 169, 256, generator=generator(0, "bench/parasitics/batch"), dtype=torch.float64)
    took = {}
    for n in sorted({1, threads}):
        torch.set_num_threads(n)
        t0 = time.perf_counter()
        effective_matrix(g, r_wl=r, r_bl=r, progress=False)
        took[n] = time.perf_counter() - t0
    torch.set_num_threads(threads)
    line = ", ".join(f"{n} thread(s) {t:.2f} s" for n, t in took.items())
    print(f"batch of 6 arrays 169x256: {line}, speed-up {took[1] / took[threads]:.2f}")


def kws(r: float, clips: int, mc: int, rounds: int) -> None:
    """Both configurations once on a few clips first (numba compilation, the feature cache and the
    IR-drop solver's first calls are paid there, not by whichever runs first), then ``rounds``
    rounds run alternately (this machine's speed drifts), each from an empty ladder cache (the
    solver's state after an array's weight rows, which the same seed's arrays of an earlier round
    would otherwise find); the ratio is that of the medians."""
    ckpt = REPO / "checkpoints" / "kws_gsc12.pt"
    if not GSC.is_dir() or not ckpt.is_file():
        print(f"KWS: skipped ({GSC} or {ckpt} missing)")
        return
    from rnn_models.tasks.kws import evaluate_kws

    base = load_config("rram_nladc_5b")
    wired = base.replace(**{"array.wires.r_wl": r, "array.wires.r_bl": r})
    configs = {"ideal wires": base, f"IR drop {r} ohm": wired}
    for cfg in configs.values():
        evaluate_kws(ckpt, GSC, cfg, 1, split="dev", limit=min(clips, 16))
    times: dict[str, list[float]] = {name: [] for name in configs}
    accs = {}
    for _ in range(rounds):
        for name, cfg in configs.items():
            PREFIX_CACHE.clear()  # as in a fresh process: no solver state from an earlier round
            t0 = time.perf_counter()
            accs[name] = evaluate_kws(ckpt, GSC, cfg, mc, split="dev", limit=clips)
            times[name].append(time.perf_counter() - t0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    names = list(configs)
    print(
        f"KWS evaluation ({clips} dev clips, {mc} instances, feature extraction included; after a warm-up, "
        f"{rounds} alternate rounds, median): "
        + ", ".join(f"{n} {med[n]:.1f} s ({', '.join(f'{t:.1f}' for t in times[n])})" for n in names)
        + f", ratio {med[names[1]] / med[names[0]]:.2f}"
    )
    for n in names:
        hw = accs[n]
        print(f"  {n}: software {hw.get('software')}, hardware {hw.get('hardware', {}).get('mean')}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--mc", type=int, default=2)
    ap.add_argument("--r", type=float, default=1.0, help="r_wl = r_bl, ohm")
    ap.add_argument("--rounds", type=int, default=3, help="alternate KWS evaluation rounds (median)")
    ap.add_argument("--skip-kws", action="store_true")
    ap.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="torch threads for everything measured: the MVMs, the Monte-Carlo fast path and the IR-drop "
        "solves (crossbar.parasitics.solve_workers); default: torch's default, all cores",
    )
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error(f"--rounds {args.rounds}: must be >= 1")
    if args.threads < 1:
        ap.error(f"--threads {args.threads}: must be >= 1")
    torch.set_num_threads(args.threads)
    print(f"threads: {args.threads}")
    mvm_ratio(args.r)
    build_t(args.r)
    solver_shapes(args.r)
    inverse_bound()
    batch_threads(args.r, args.threads)
    if not args.skip_kws:
        kws(args.r, args.clips, args.mc, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
