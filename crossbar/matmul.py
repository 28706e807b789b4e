"""Batched x @ W for a weight matrix that is used many times (a programmed tile's conductances).

On CPU in float32 the weights are packed once for oneDNN and every product runs through
``torch.ops.mkldnn._linear_pointwise`` -- the kernel torch's own compiler (inductor) uses for
linear layers on CPU.  On this project's shapes it is 1.7-2.7x faster than ``torch.bmm``
(``benchmarks/component_speed.py`` on the 2-core AMD EPYC machine: 37 vs 64 us for
64 x 169 @ 169 x 512, 108 vs 294 us for 32 x 435 @ 435 x 1536) and gives bit-identical results
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


class PreparedMatmul:
    """``x (M, B, K) -> x @ w (M, B, N)`` for fixed weights ``w`` (M, K, N), one per instance."""

    def __init__(self, w: torch.Tensor):
        self.w = w
        self.packed = None
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
                    torch.ops.mkldnn._reorder_linear_weight(w[m].t().contiguous(), 64) for m in range(w.shape[0])
                ]
            except RuntimeError:  # pragma: no cover - an op that refuses these weights
                self.packed = None

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
            return x @ self.w[m]
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed[m], None, "none", [], "")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.packed is None
            or x.requires_grad
            or x.dtype != torch.float32
            or x.device.type != "cpu"
            or x.shape[0] != len(self.packed)
            or x.shape[1] == 0
        ):
            return torch.bmm(x, self.w)
        outs = [
            torch.ops.mkldnn._linear_pointwise(x[m].contiguous(), p, None, "none", [], "")
            for m, p in enumerate(self.packed)
        ]
        return outs[0].unsqueeze(0) if len(outs) == 1 else torch.stack(outs)
