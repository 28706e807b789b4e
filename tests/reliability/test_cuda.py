"""CPU vs CUDA (runs only where a GPU is present; skipped otherwise).

Programming draws come from CPU generators on both devices, so the programmed conductances are
identical; per-read noise comes from per-device generators, whose streams differ between CPU and
CUDA -- so the comparison is made with per-read noise off, where only floating-point rounding
(matmul summation order) separates the two, and an NL-ADC code can flip only for a column output
within rounding distance of a threshold.
"""

import pytest
import torch
from torch import nn

from crossbar.config import load_config
from rnn_models import AnalogLSTM

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: CPU-vs-CUDA check skipped")


def _pair(cfg_cpu, seed=0):
    torch.manual_seed(seed)
    ref = nn.LSTM(12, 24).eval()
    out = []
    for cfg in (cfg_cpu, cfg_cpu.replace(**{"simulation.device": "cuda"})):
        layer = AnalogLSTM(12, 24, config=cfg).eval()
        layer.load_state_dict(ref.state_dict())
        out.append(layer.to(cfg.torch_device()))
    return ref, out


def test_ideal_config_on_cuda_equals_torch():
    ref, (_, gpu) = _pair(load_config("ideal"))
    x = torch.randn(6, 5, 12)
    with torch.no_grad():
        y_ref, _ = ref(x)
        y_gpu, _ = gpu(x.cuda())
    assert torch.allclose(y_gpu.cpu(), y_ref, atol=1e-5)


def test_nladc_chip_cpu_vs_cuda_differs_only_by_rounding():
    cfg = load_config("rram_nladc_5b").replace(
        **{"device.read_noise.sigma_rel": 0.0, "nl_adc.comparator_noise_sigma": 0.0}
    )
    _, (cpu, gpu) = _pair(cfg)
    cpu.program(0, 4)
    gpu.program(0, 4)
    x = torch.randn(4, 5, 8, 12)  # (M instances, T, B, in)
    with torch.no_grad():
        y_cpu, _ = cpu(x)
        y_gpu, _ = gpu(x.cuda())
    diff = (y_gpu.cpu() - y_cpu).abs()
    # the datapath is 12-bit fixed point: equal outputs are bit-equal; report the rest
    equal = float((diff < 1e-6).float().mean())
    print(f"CPU vs CUDA: {100 * equal:.3f} % of outputs equal, max difference {float(diff.max()):.4g}")
    assert equal > 0.99
