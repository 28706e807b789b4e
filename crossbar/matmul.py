"""Batched x @ W for a weight matrix that is used many times (a programmed tile's conductances).

On CPU in float32 the weights are packed once for oneDNN and every product runs through
``torch.ops.mkldnn._linear_pointwise`` -- the kernel torch's own compiler (inductor) uses for
linear layers on CPU.  On this project's shapes it is 1.7-2.7x faster than ``torch.bmm``
(``benchmarks/component_speed.py`` on the 2-core AMD EPYC machine: 37 vs 64 us for
64 x 169 @ 169 x 512, 108 vs 294 us for 32 x 435 @ 435 x 1536; not on every CPU: on a 2-core Intel
Xeon it took 57 vs 38 us and 166 vs 170 us, docs/speed.md) and gives bit-identical results
when called again, for any subset of the rows and any thread count (tested).  Everywhere else --
CUDA, float64, tensors that require grad, a torch without these ops -- it is ``torch.bmm``.  The
reference path and the fast path of the layers both multiply through the same
:class:`PreparedMatmul`, so they agree exactly.
"""

from __future__ import annotations

import torch


def _onednn_available() -> bool:
    ops = getattr(torch.ops, "mkldnn", None)
    try:
        return (
            torch.backends.mkldnn.is_available()
            and ops is not None
            and hasattr(ops, "_linear_pointwise")
            and hasattr(ops, "_reorder_linear_weight")
        )
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


ONEDNN = _onednn_available()


def _onednn_bf16() -> bool:
    try:
        return ONEDNN and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without the query
        return False


#: oneDNN multiplies bfloat16 on this CPU (AVX-512); else bfloat16 products are emulated in float32
ONEDNN_BF16 = _onednn_bf16()
PRECISIONS = ("full", "bfloat16")


def to_bfloat16(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to bfloat16 (nearest, ties to even), in x's dtype."""
    return x.to(torch.bfloat16).to(x.dtype)


class PreparedMatmul:
    """``x (M, B, K) -> x @ w (M, B, N)`` for fixed weights ``w`` (M, K, N), one per instance;
    ``precision``: ``full`` (w's dtype) or ``bfloat16`` (operands and result rounded, see above)."""

    def __init__(self, w: torch.Tensor, precision: str = "full"):
        self._prepare(w, precision)

    def _prepare(self, w: torch.Tensor, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.bf16 = precision == "bfloat16"
        self.w = to_bfloat16(w) if self.bf16 else w
        self.packed = None
        self.onednn_dtype = torch.bfloat16 if (self.bf16 and ONEDNN_BF16) else torch.float32
        if (
            ONEDNN
            and w.device.type == "cpu"
            and w.dtype == torch.float32
            and not w.requires_grad
            and w.dim() == 3
            and w.shape[1] > 0
            and w.shape[2] > 0
        ):
            try:
                self.packed = [
                    torch.ops.mkldnn._reorder_linear_weight(self.w[m].t().contiguous().to(self.onednn_dtype), 64)
                    for m in range(w.shape[0])
                ]
            except RuntimeError:  # pragma: no cover - an op that refuses these weights
                self.packed = None

    def __getstate__(self) -> dict:
        """What ``copy.deepcopy`` and pickle keep: the weights (already rounded for bfloat16) and the
        precision.  oneDNN's packed weights are opaque tensors that neither can read; the copy packs
        its own (:meth:`__setstate__`)."""
        return {"w": self.w, "precision": self.precision}

    def __setstate__(self, state: dict) -> None:
        # rounding to bfloat16 again leaves the rounded weights as they are: the same product
        self._prepare(state["w"], state["precision"])

    def _in(self, x: torch.Tensor) -> torch.Tensor:
        """The operand as the product reads it (bfloat16-rounded for a bfloat16 product)."""
        if not self.bf16:
            return x
        return x.to(torch.bfloat16) if self.onednn_dtype == torch.bfloat16 else to_bfloat16(x)

    def _out(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The result in ``dtype`` (bfloat16-rounded first for a bfloat16 product)."""
        if not self.bf16:
            return y
        return y.to(torch.bfloat16).to(dtype)

    def _onednn(self, x: torch.Tensor, m: int) -> torch.Tensor:
        assert self.packed is not None
        return torch.ops.mkldnn._linear_pointwise(self._in(x.contiguous()), self.packed[m], None, "none", [], "")

    @property
    def backend(self) -> str:
        return "onednn" if self.packed is not None else "bmm"

    @property
    def per_instance(self) -> bool:
        """Whether :meth:`instance` gives exactly the numbers of ``self(x)[m]`` (the oneDNN backend
        multiplies instance by instance anyway; ``torch.bmm`` may sum in another order)."""
        return self.packed is not None

    def instance(self, m: int, x: torch.Tensor) -> torch.Tensor:
        """``x (B, K) @ w[m]`` -> (B, N) for instance ``m`` alone (no stacked output: a caller that
        works instance by instance keeps each product in cache); equal to ``self(x)[m]`` when
        :attr:`per_instance`."""
        if self.packed is None or x.requires_grad or x.dtype != torch.float32 or x.shape[0] == 0:
            return self._out(to_bfloat16(x) @ self.w[m] if self.bf16 else x @ self.w[m], x.dtype)
        return self._out(self._onednn(x, m), x.dtype)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.packed is None
            or x.requires_grad
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or x.shape[0] != len(self.packed)
            or x.shape[1] == 0
        ):
            return self._out(torch.bmm(to_bfloat16(x) if self.bf16 else x, self.w), x.dtype)
        outs = [self._out(self._onednn(x[m], m), x.dtype) for m in range(len(self.packed))]
        return outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)
