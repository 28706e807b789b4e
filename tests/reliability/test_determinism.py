"""Same seed -> identical numbers (across runs and thread counts); outputs are written atomically."""

import pytest
import torch
from torch import nn

from crossbar.io import atomic_path, write_json
from rnn_models import convert_to_analog


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(20, 32, batch_first=True)
        self.fc = nn.Linear(32, 5)

    def forward(self, x):
        y, _ = self.lstm(x)
        return self.fc(y.mean(-2))


def _run(seed: int, threads: int, preset: str = "rram_nladc_5b") -> torch.Tensor:
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(0)
        net = _Net().eval()
        x = torch.randn(16, 30, 20, generator=torch.Generator().manual_seed(1))
        ana = convert_to_analog(net, preset)
        ana.calibrate([x])
        ana.program(seed, 3)
        with torch.no_grad():
            return ana(x.expand(3, *x.shape))
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("preset", ["rram_nladc_5b", "rram_conventional_adc_5b", "pcm_nladc_5b_drift"])
def test_same_seed_identical_across_runs_and_threads(preset):
    a, b, c = _run(5, 1, preset), _run(5, 1, preset), _run(5, 2, preset)
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    assert not torch.equal(a, _run(6, 1, preset))


def test_atomic_write_leaves_target_untouched_on_error(tmp_path):
    target = tmp_path / "out.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"v": 2, "half')
            raise RuntimeError("interrupted")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_outputs_have_normal_permissions(tmp_path):
    import os
    import stat

    path = write_json(tmp_path / "r.json", {"a": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
