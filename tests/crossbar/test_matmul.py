"""PreparedMatmul: the tile's products (oneDNN on CPU float32, torch.bmm elsewhere)."""

import torch

from crossbar.matmul import ONEDNN, PreparedMatmul


def _wx(m=3, k=169, n=512, b=64, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(m, k, n, generator=g, dtype=dtype), torch.randn(m, b, k, generator=g, dtype=dtype)


def test_products_match_bmm_and_are_reproducible():
    w, x = _wx()
    mm = PreparedMatmul(w)
    assert mm.backend == ("onednn" if ONEDNN else "bmm")
    y = mm(x)
    assert torch.allclose(y, torch.bmm(x, w), rtol=1e-5, atol=1e-4)
    assert torch.equal(y, mm(x))  # same call, same bits
    assert torch.equal(y[:, :7], mm(x[:, :7].contiguous()))  # rows do not depend on the batch
    assert torch.equal(y[1:2], PreparedMatmul(w[1:2])(x[1:2]))  # instance m alone = in the batch
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(y, mm(x))  # nor on the thread count
    finally:
        torch.set_num_threads(threads)


def test_fallback_to_bmm_where_onednn_does_not_apply():
    w, x = _wx(m=2, k=8, n=5, b=3, dtype=torch.float64)
    assert PreparedMatmul(w).backend == "bmm" and torch.equal(PreparedMatmul(w)(x), torch.bmm(x, w))
    w32, x32 = w.float().requires_grad_(), x.float()
    mm = PreparedMatmul(w32)
    assert mm.backend == "bmm"
    mm(x32).sum().backward()  # training keeps its gradients
    assert w32.grad is not None
    assert PreparedMatmul(w.float())(x.float()[:, :0]).shape == (2, 0, 5)  # empty batch


def test_bfloat16_products_round_operands_and_result():
    """The variance product's reduced precision: bfloat16 operands, float32 sums, a bfloat16 result
    -- within 0.5 % of the exact product for non-negative terms (the read-noise variance), the same
    numbers for any batch subset and thread count, and the same definition on the bmm fallback."""
    from crossbar.matmul import to_bfloat16

    g = torch.Generator().manual_seed(1)
    w = torch.rand(2, 169, 512, generator=g) * 1e-2  # variances: non-negative
    x = torch.rand(2, 64, 169, generator=g)
    mm = PreparedMatmul(w, "bfloat16")
    y = mm(x)
    assert torch.equal(y, to_bfloat16(y))  # the result is a bfloat16 value
    exact = torch.bmm(x.double(), w.double())
    assert ((y.double() - exact) / exact).abs().max() < 5e-3
    emulated = to_bfloat16(torch.bmm(to_bfloat16(x).double(), to_bfloat16(w).double()).float())
    assert ((y - emulated).abs() <= 2**-7 * emulated.abs()).all()  # summation order: at most one bf16 step
    assert torch.equal(y[:, 3:40], mm(x[:, 3:40].contiguous()))
    assert torch.equal(mm.instance(1, x[1, 5:9]), y[1, 5:9])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(y, mm(x))
    finally:
        torch.set_num_threads(threads)
    fallback = PreparedMatmul(w.double(), "bfloat16")(x.double())  # the bmm path: float64 sums
    assert fallback.dtype == torch.float64 and torch.equal(fallback, fallback.float().bfloat16().double())
    assert ((fallback - exact) / exact).abs().max() < 5e-3
