"""Convert a trained nn.LSTM to the crossbar and print its output error vs NL-ADC bits.

Trains a small float LSTM (next-step prediction of noisy sine mixtures, ~5 s), converts it with
``convert_to_analog`` under each preset, calibrates DAC/ADC ranges on training data, programs 8
Monte-Carlo device instances in one batched pass, and prints the relative RMS output error
(mean +- std over instances) against the float model.

    python examples/convert_lstm.py
"""

from __future__ import annotations

import torch
from torch import nn

from rnn_models import convert_to_analog


class Predictor(nn.Module):
    def __init__(self, hidden: int = 32):
        super().__init__()
        self.lstm = nn.LSTM(1, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.head(y)


def make_data(n: int, steps: int, gen: torch.Generator) -> torch.Tensor:
    t = torch.arange(steps + 1).float()
    freq = 0.05 + 0.25 * torch.rand(n, 2, 1, generator=gen)
    phase = 6.28 * torch.rand(n, 2, 1, generator=gen)
    s = (torch.sin(freq * t + phase)).sum(1) * 0.5 + 0.05 * torch.randn(n, steps + 1, generator=gen)
    return s.unsqueeze(-1)


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    data = make_data(512, 60, gen)
    x, y = data[:, :-1], data[:, 1:]
    model = Predictor()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    test = make_data(64, 60, gen)
    xt = test[:, :-1]
    with torch.no_grad():
        ref = model(xt)
    print(f"float model: train MSE {loss.item():.4f}")
    mc = 8
    print(f"{'config':28s}{'rel. RMS output error':>26s}")
    for preset in [
        "ideal",
        "rram_nladc_3b",
        "rram_nladc_4b",
        "rram_nladc_5b",
        "rram_nladc_8b",
        "rram_conventional_adc_5b",
    ]:
        ana = convert_to_analog(model, preset).eval()
        ana.calibrate([x[:128]])
        ana.program(seed=0, instances=mc)
        with torch.no_grad():
            out = ana(xt.expand(mc, *xt.shape))
        err = (out - ref).pow(2).mean((1, 2, 3)).sqrt() / ref.pow(2).mean().sqrt()
        print(f"{preset:28s}{float(err.mean()):>18.4f} +- {float(err.std()):.4f}")


if __name__ == "__main__":
    main()
