"""Counter-based normals (crossbar.normals): Philox4x32-10 against the Random123 known answers, the
kernel and torch forms bit for bit, the distribution, and the counter layout's guarantees."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from crossbar import normals
from crossbar.errors import CrossbarInputError

# Random123 kat_vectors, philox4x32 with 10 rounds: (counter words, key words, output words)
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF, 0xFFFFFFFF), (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

needs_numba = pytest.mark.skipif(normals.numba is None, reason="numba not installed")


@pytest.mark.parametrize("ctr,key,want", PHILOX_KAT)
def test_philox_torch_form_matches_the_known_answers(ctr, key, want):
    got = normals.philox4x32(ctr, key)
    assert tuple(int(v) for v in got) == want


@needs_numba
@pytest.mark.parametrize("ctr,key,want", PHILOX_KAT)
def test_philox_kernel_form_matches_the_known_answers(ctr, key, want):
    got = normals.philox_block(*(np.uint64(v) for v in ctr), *(np.uint64(k) for k in key))
    assert tuple(int(v) for v in got) == want


def _hard_words(n: int = 200_000, seed: int = 0) -> np.ndarray:
    """32-bit words: random ones plus both ends of the range and every octant boundary."""
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 2**32, n)
    edges = np.concatenate([np.arange(300), 2**32 - 1 - np.arange(300), (np.arange(8) << 29), (np.arange(8) << 29) - 1])
    return np.concatenate([m, edges % 2**32]).astype(np.int64)


@needs_numba
def test_box_muller_kernel_and_torch_forms_agree_bit_for_bit():
    import numba

    words = _hard_words()
    r0, r1 = words, np.roll(words, 1)

    @numba.njit(error_model="numpy")
    def pairs(a, b, out0, out1):
        for i in range(a.shape[0]):
            out0[i], out1[i] = normals._pair(np.uint64(a[i]), np.uint64(b[i]))

    k0, k1 = np.empty(len(words), np.float32), np.empty(len(words), np.float32)
    pairs(r0, r1, k0, k1)
    t0, t1 = normals.box_muller(torch.from_numpy(r0), torch.from_numpy(r1))
    assert t0.dtype == torch.float32
    assert np.array_equal(k0.view(np.uint32), t0.numpy().view(np.uint32))
    assert np.array_equal(k1.view(np.uint32), t1.numpy().view(np.uint32))


def test_box_muller_is_the_textbook_transform_to_float32_precision():
    words = _hard_words(seed=1)
    r0, r1 = words, np.roll(words, 7)
    z0, z1 = normals.box_muller(torch.from_numpy(r0), torch.from_numpy(r1))
    u = (r0 + 0.5) * 2.0**-32
    angle = 2 * np.pi * (r1 + 0.5) * 2.0**-32
    radius = np.sqrt(-2 * np.log(u))
    # float32 arithmetic: a few float32 ulps of the largest values (|z| < 6.8), also next to u = 1
    assert np.abs(z0.numpy() - radius * np.cos(angle)).max() < 2e-6
    assert np.abs(z1.numpy() - radius * np.sin(angle)).max() < 2e-6
    assert float(torch.maximum(z0.abs(), z1.abs()).max()) <= math.sqrt(66 * math.log(2)) + 1e-5


@needs_numba
def test_stream_blocks_kernel_rows_and_torch_form_are_the_same_numbers():
    stream = normals.NormalStream(3, "adc/test", 5, 2)
    block = stream.normals((2, 6, 37), torch.float64, read=4, step=9)
    twin = normals._torch_normals(stream.keys, 4, 9, torch.arange(6), torch.arange(37))
    assert torch.equal(block, twin)
    row = np.empty(37)
    k = stream.keys_np[1]
    normals.normal_row(row, np.uint64(k[0]), np.uint64(k[1]), np.uint64(4), np.uint64(9), np.uint64(3))
    assert np.array_equal(row, block[1, 3].numpy())
    # any subset of rows and columns (absolute indices) gives the same numbers as the whole
    cols = torch.tensor([36, 0, 17, 5])
    rows = torch.tensor([5, 2])
    part = stream.normals((2, 2, 4), torch.float64, read=4, step=9, rows=rows, cols=cols)
    assert torch.equal(part, block[:, rows][:, :, cols])


def test_instance_m_does_not_depend_on_the_others():
    whole = normals.NormalStream(0, "adc/x", 0, 4).normals((4, 3, 8), torch.float64, read=2, step=1)
    alone = normals.NormalStream(0, "adc/x", 2, 1).normals((1, 3, 8), torch.float64, read=2, step=1)
    assert torch.equal(whole[2:3], alone)


def test_the_counters_give_independent_standard_normals():
    stream = normals.NormalStream(7, "adc/dist", 0, 2)
    blocks = [stream.normals((2, 100, 256), torch.float64, read=n, step=t) for n in range(3) for t in range(4)]
    z = torch.stack(blocks).numpy()
    flat = z.ravel()
    assert abs(flat.mean()) < 0.01 and abs(flat.std() - 1) < 0.01
    assert scipy.stats.kstest(flat, "norm").pvalue > 1e-3
    # no correlation between neighbouring columns, rows, steps, reads or instances
    for axis in (0, 1, 2, 3):
        a = np.moveaxis(z, axis, 0)
        r = np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1]
        assert abs(r) < 0.02, axis
    c = np.corrcoef(z[..., :-1].ravel(), z[..., 1:].ravel())[0, 1]
    assert abs(c) < 0.02


def test_counters_outside_32_bits_are_refused():
    stream = normals.NormalStream(0, "adc/x", 0, 1)
    with pytest.raises(CrossbarInputError, match="step"):
        stream.normals((1, 1, 4), step=2**32)
    with pytest.raises(CrossbarInputError, match="instance"):
        stream.normals((2, 1, 4))
