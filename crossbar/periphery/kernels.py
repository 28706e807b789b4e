"""Fused per-element kernels (numba) for the simulator's hot loops.

The torch code next to each caller is the definition (and runs on CUDA); these kernels compute the
same numbers on CPU in one pass, in the same floating-point type and order of operations, so their
results are identical (tests compare them).  ``available()`` is False when numba cannot be imported;
callers then fall back to torch.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch

numba: ModuleType | None  # None without numba (torch fallback)
try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the fallback keeps torch-only installs working
    numba = None


def available() -> bool:
    return numba is not None


def counter_dtype(thresholds: int):
    """Smallest counter type for codes 0..``thresholds``: uint8 up to 8-bit converters."""
    return np.uint8 if thresholds <= 255 else np.int32


def as_numpy(t: torch.Tensor) -> np.ndarray:
    """A contiguous numpy view (or copy) of a CPU tensor."""
    return t.detach().contiguous().numpy()


if numba is not None:
    from crossbar.periphery.sampling import comparison_variance, noisy_value
    from crossbar.pointwise import compiled, kernel, reinterpret

    _comparison_variance = compiled(comparison_variance)
    _noisy_value = compiled(noisy_value)

    @kernel
    def count_below(t_kc, y, cnt):  # pragma: no cover - compiled
        """cnt[c] = number of thresholds t_kc[k, c] below y[c] (k = 0..L-2).

        For sorted thresholds this is bisect-left (= torch's searchsorted).  The loop runs over the
        columns innermost, so it is branch-free and vectorised (columns are independent); with
        ``cnt`` of uint8 (see :func:`counter_dtype`) a vector holds 4x more counters than int32."""
        cnt[:] = 0
        for k in range(t_kc.shape[0]):
            row = t_kc[k]
            for c in range(cnt.shape[0]):
                cnt[c] += row[c] < y[c]

    @kernel
    def noisy_input(y, cnt, read_var_c, in_var, noise, v2, cmp2, has_in_var, out):  # pragma: no cover
        """out[c] = y[c] + sd * noise[c], sd = sqrt(read_var[c, ideal code] * v2 + cmp2[c] (+ in_var[c]))."""
        last = read_var_c.shape[1] - 1
        for c in range(y.shape[0]):
            k = cnt[c] if cnt[c] < last else last
            if has_in_var:
                s = _comparison_variance(read_var_c[c, k], v2, cmp2[c], in_var[c])
            else:
                s = _comparison_variance(read_var_c[c, k], v2, cmp2[c], None)
            out[c] = _noisy_value(y[c], s, noise[c])

    @kernel
    def _nl_codes(y, t_kc, read_var, in_var, noise, v2, cmp2, noisy, has_in_var, cnt, out):  # pragma: no cover
        m_count, b_count, c_count = y.shape
        yn = np.empty(c_count, y.dtype)
        for m in range(m_count):  # serial: numba threads would compete with torch's
            for b in range(b_count):
                count_below(t_kc[m], y[m, b], cnt)
                if noisy:
                    noisy_input(
                        y[m, b],
                        cnt,
                        read_var[m],
                        in_var[m, b] if has_in_var else y[m, b],
                        noise[m, b],
                        v2,
                        cmp2,
                        has_in_var,
                        yn,
                    )
                    count_below(t_kc[m], yn, cnt)
                out[m, b] = cnt


def nl_codes(
    y: torch.Tensor,
    t: torch.Tensor,
    read_var: torch.Tensor,
    noise: torch.Tensor | None,
    v2: float,
    cmp2: float,
    in_var: torch.Tensor | None = None,
    t_kc: torch.Tensor | None = None,
) -> torch.Tensor:
    """NL-ADC codes (M, B, C) of ``y`` (M, B, C) against thresholds ``t`` (M, C, L-1), sorted
    along L-1, on CPU (``t_kc``: the same thresholds as (M, L-1, C), if the caller has them).

    With ``noise`` (M, B, C standard normals): the ideal code picks the ramp's read-noise variance
    ``read_var`` (M, C, L-1) at that position, the input gets sd * noise with
    sd = sqrt(read_var * v2 + cmp2 + in_var) (``in_var``: the input's own variance, e.g. the
    array's read noise) and the code is counted again -- the steps of ``nladc.reference_codes``.
    """
    ty = np.float32 if y.dtype == torch.float32 else np.float64
    y_np = as_numpy(y)
    nz = as_numpy(noise) if noise is not None else np.zeros((1, 1, 1), ty)
    iv = as_numpy(in_var) if in_var is not None else np.zeros((1, 1, 1), ty)
    out = np.empty(y_np.shape, np.int32)
    t_kc = t.transpose(1, 2) if t_kc is None else t_kc
    cnt = np.empty(y_np.shape[-1], counter_dtype(t.shape[-1]))
    _nl_codes(
        y_np,
        as_numpy(t_kc),
        as_numpy(read_var),
        iv,
        nz,
        ty(v2),
        np.full(y_np.shape[-1], cmp2, ty),
        noise is not None,
        in_var is not None,
        cnt,
        out,
    )
    return torch.from_numpy(out).long()


# ----------------------------------------------------------------------------- bit patterns
if numba is not None:
    from numba import types as _types

    #: the IEEE bit pattern of a float32 as uint32, and the float32 of a uint32 pattern
    _f32_bits = reinterpret(_types.float32, _types.uint32)
    _f32_from_bits = reinterpret(_types.uint32, _types.float32)

    @kernel(inline=True)
    def bfloat16_bits(x):  # pragma: no cover - compiled
        """float32 ``x`` rounded to bfloat16 (nearest, ties to even: torch's conversion of finite
        values), as its 16 bits."""
        b = _f32_bits(np.float32(x))
        return np.uint16((b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16))

    @kernel(inline=True)
    def bfloat16_value(bits):  # pragma: no cover - compiled
        """The float32 value of 16 bfloat16 bits (exact: the bits move up by 16)."""
        return _f32_from_bits(np.uint32(bits) << np.uint32(16))


# ----------------------------------------------------------------------------- AVX-512 blocks
#: rows of one vector block (float32 lanes of a 512-bit register)
BLOCK = 16
#: at most this many codes per converter in the vector block kernel (two registers of thresholds)
BLOCK_CODES = 32


def _host_has_avx512() -> bool:
    """Whether numba compiles for this CPU (no NUMBA_CPU_NAME override) and it has AVX-512F."""
    if numba is None:
        return False
    try:
        from llvmlite import binding
        from numba.core import config

        features = binding.get_host_cpu_features()
        return getattr(config, "CPU_NAME", None) is None and bool(features.get("avx512f", False))
    except Exception:  # pragma: no cover - an llvmlite without the query
        return False


#: the vector block kernel is compiled and used (AVX-512 hosts); elsewhere the row kernels serve
AVX512 = _host_has_avx512()


def block_tables(t: torch.Tensor, read_var: torch.Tensor, values: torch.Tensor) -> tuple[np.ndarray, ...]:
    """The vector block kernel's per-column tables of NL-ADCs with L <= 32 codes, float32:
    thresholds (M, C, 32) padded with +inf, the ramp's read-noise variance at each ideal code
    (M, C, 32) (``read_var[min(k, L - 2)]``, as the conversion's definition clamps the code), and
    the values of each code (C, 32) (the last one repeated).  ``t`` (M, C, L-1), ``read_var``
    (M, C, L-1), ``values`` (C, L); columns padded to a multiple of :data:`BLOCK` (+inf thresholds)."""
    m_count, cols, n_t = t.shape
    padded = -(-cols // BLOCK) * BLOCK
    tt = np.full((m_count, padded, BLOCK_CODES), np.inf, np.float32)
    tt[:, :cols, :n_t] = as_numpy(t.to(torch.float32))
    idx = torch.clamp(torch.arange(BLOCK_CODES), max=n_t - 1)
    rv = np.zeros((m_count, padded, BLOCK_CODES), np.float32)
    rv[:, :cols] = as_numpy(read_var.to(torch.float32)[..., idx])
    vi = torch.clamp(torch.arange(BLOCK_CODES), max=values.shape[1] - 1)
    val = np.zeros((padded, BLOCK_CODES), np.float32)
    val[:cols] = as_numpy(values.to(torch.float32)[:, vi])
    return tt, rv, val


if numba is not None and AVX512:
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    _I32, _I64, _F32 = ir.IntType(32), ir.IntType(64), ir.FloatType()
    _VF = ir.VectorType(_F32, BLOCK)
    _VI = ir.VectorType(_I32, BLOCK)

    def _vec(builder, base, offset):
        return builder.bitcast(builder.gep(base, [offset]), _VF.as_pointer())

    def _splat(builder, value, vty):
        vec = ir.Constant(vty, ir.Undefined)
        for i in range(BLOCK):
            vec = builder.insert_element(vec, value, ir.Constant(_I32, i))
        return vec

    def _transpose16(builder, rows):
        """16 vectors (rows of a 16 x 16 block) -> its 16 columns: for each bit b of the index,
        elements (i, j) and (i + b, j - b) swap where bit b of i is clear and set in j."""
        rows = list(rows)
        for b in (1, 2, 4, 8):
            lo = [j if not (j & b) else BLOCK + j - b for j in range(BLOCK)]
            hi = [j + b if not (j & b) else BLOCK + j for j in range(BLOCK)]
            out = list(rows)
            for i in range(BLOCK):
                if i & b:
                    continue
                a, c = rows[i], rows[i + b]
                out[i] = builder.shuffle_vector(a, c, ir.Constant(_VI, lo))
                out[i + b] = builder.shuffle_vector(a, c, ir.Constant(_VI, hi))
            rows = out
        return rows

    @intrinsic
    def _nladc_block(typingctx, t_tab, rv_tab, val_tab, y, v, z, cmp2, v2, has_var, out):
        """NL-ADC values of a block of 16 rows, every column (see :func:`convert_block`)."""
        sig = types.void(t_tab, rv_tab, val_tab, y, v, z, cmp2, v2, has_var, out)

        def codegen(context, builder, signature, args):
            arrays = [
                context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 1, 2, 3, 4, 5, 6, 9)
            ]
            t_a, rv_a, val_a, y_a, v_a, z_a, cmp_a, out_a = arrays
            v2_vec, use_var = _splat(builder, args[7], _VF), args[8]
            cols, stride = (
                cgutils.unpack_tuple(builder, y_a.shape, 2)[1],
                cgutils.unpack_tuple(builder, y_a.shape, 2)[1],
            )
            permute = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_VF, [_VF, _VI, _VF]), "llvm.x86.avx512.vpermi2var.ps.512"
            )
            sqrt = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VF, [_VF]), "llvm.sqrt.v16f32")
            zero = ir.Constant(_VI, [0] * BLOCK)

            def search(lo, hi, x):  # number of table entries below x: five branch-free halvings
                k = zero
                for step in (16, 8, 4, 2, 1):
                    entry = builder.call(permute, [lo, builder.add(k, ir.Constant(_VI, [step - 1] * BLOCK)), hi])
                    below = builder.fcmp_ordered("<", entry, x)
                    k = builder.add(k, builder.select(below, ir.Constant(_VI, [step] * BLOCK), zero))
                return k

            def load_block(arr, c0):
                return [
                    builder.load(
                        _vec(builder, arr.data, builder.add(builder.mul(ir.Constant(_I64, r), stride), c0)), align=4
                    )
                    for r in range(BLOCK)
                ]

            n_chunks = builder.udiv(cols, ir.Constant(_I64, BLOCK))
            with cgutils.for_range(builder, n_chunks) as chunk:
                c0 = builder.mul(chunk.index, ir.Constant(_I64, BLOCK))
                ys = _transpose16(builder, load_block(y_a, c0))
                vs = _transpose16(builder, load_block(v_a, c0))
                zs = _transpose16(builder, load_block(z_a, c0))
                cmps = builder.load(_vec(builder, cmp_a.data, c0), align=4)
                results = []
                for j in range(BLOCK):
                    col = builder.add(c0, ir.Constant(_I64, j))
                    base = builder.mul(col, ir.Constant(_I64, BLOCK_CODES))
                    base_hi = builder.add(base, ir.Constant(_I64, BLOCK))
                    t_lo, t_hi = (builder.load(_vec(builder, t_a.data, o), align=4) for o in (base, base_hi))
                    r_lo, r_hi = (builder.load(_vec(builder, rv_a.data, o), align=4) for o in (base, base_hi))
                    v_lo, v_hi = (builder.load(_vec(builder, val_a.data, o), align=4) for o in (base, base_hi))
                    # comparison_variance: ramp variance at the ideal code * v2 + comparator (+ input)
                    ramp = builder.call(permute, [r_lo, search(t_lo, t_hi, ys[j]), r_hi])
                    cmp_j = builder.shuffle_vector(cmps, cmps, ir.Constant(_VI, [j] * BLOCK))
                    s = builder.fadd(builder.fmul(ramp, v2_vec), cmp_j)
                    s = builder.select(use_var, builder.fadd(s, vs[j]), s)
                    # noisy_value: y + sqrt(s) * z, counted again
                    noisy = builder.fadd(ys[j], builder.fmul(builder.call(sqrt, [s]), zs[j]))
                    results.append(builder.call(permute, [v_lo, search(t_lo, t_hi, noisy), v_hi]))
                for r, row in enumerate(_transpose16(builder, results)):
                    offset = builder.add(builder.mul(ir.Constant(_I64, r), stride), c0)
                    builder.store(row, _vec(builder, out_a.data, offset), align=4)
            return context.get_dummy_value()

        return sig, codegen

    @kernel(inline=True)
    def convert_block(t_tab, rv_tab, val_tab, y, v, z, cmp2, v2, has_var, out):  # pragma: no cover - compiled
        """out[r, c] = the value of NL-ADC column c for row r of a block of 16 rows: the ideal code of
        ``y`` picks the ramp's read-noise variance, the input gets sqrt(var * v2 + cmp2[c]
        (+ v[r, c] with ``has_var``)) * z[r, c], the noisy code picks the value -- exactly
        :func:`~crossbar.periphery.nladc.reference_codes`, then the value table, as the row kernels
        compute it (tested bit for bit).  Rows lie along the vector lanes: each 16 x 16 block is
        transposed in registers, each column's tables (:func:`block_tables`; C padded to 16)
        stay in six registers, and each count is a five-step binary search by permutation.
        ``y``, ``v``, ``z``, ``out``: (16, C) float32; ``cmp2`` (C,)."""
        _nladc_block(t_tab, rv_tab, val_tab, y, v, z, cmp2, v2, has_var, out)


if numba is not None and not AVX512:

    @numba.njit(nogil=True, error_model="numpy")
    def convert_block(t_tab, rv_tab, val_tab, y, v, z, cmp2, v2, has_var, out):  # pragma: no cover - never called
        """Placeholder where the vector block kernel is not compiled (callers check ``AVX512``)."""
        raise RuntimeError("the NL-ADC vector block kernel needs AVX-512")
