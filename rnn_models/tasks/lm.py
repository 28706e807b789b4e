"""Character-level language model on Penn Treebank: model, float training, BPC evaluation.

The model takes one-hot characters (so the input projection is a crossbar MVM like any other),
runs an LSTM and a linear decoder to next-character logits.  Training is truncated BPTT over
``batch`` contiguous streams with the hidden state carried across windows.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from rnn_models.checkpoint import load_checkpoint, save_checkpoint
from rnn_models.data import ptb


class CharLSTM(nn.Module):
    """One-hot input -> ``num_layers`` LSTM of ``hidden_size`` -> linear decoder to ``vocab_size``."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0):
        super().__init__()
        self.vocab_size = vocab_size
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers=num_layers,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        """``ids`` (T, B) int64 -> logits (T, B, vocab), new state."""
        x = F.one_hot(ids, self.vocab_size).to(self.decoder.weight.dtype)
        out, state = self.lstm(x, state)
        return self.decoder(self.drop(out)), state


def weight_count(model: nn.Module) -> int:
    """Number of weights and biases stored on the chip (every parameter of the model)."""
    return sum(p.numel() for p in model.parameters())


def _detach(state):
    return tuple(s.detach() for s in state) if state is not None else None


@torch.no_grad()
def evaluate_bpc(model: nn.Module, ids: torch.Tensor, n_streams: int = 64, window: int = 200,
                 device: str = "cpu") -> float:
    """Bits per character of ``model`` over the whole sequence ``ids``.

    The sequence is cut into ``n_streams`` contiguous streams scored in parallel, the state carried
    from window to window; every symbol but the first of each stream is predicted once.
    """
    model.eval()
    data = ptb.batchify(ids, n_streams).to(device)
    state, nats, count = None, 0.0, 0
    for start in range(0, data.size(0) - 1, window):
        x = data[start:start + window]
        y = data[start + 1:start + 1 + window]
        x = x[: y.size(0)]
        logits, state = model(x, state)
        nats += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                reduction="sum").item()
        count += y.numel()
    return nats / count / math.log(2)


def train_lm(data_dir: str | Path, out: str | Path, hidden_size: int = 360, num_layers: int = 1,
             dropout: float = 0.0, epochs: int = 30, batch: int = 128, bptt: int = 100,
             lr: float = 3e-3, weight_decay: float = 0.0, clip: float = 1.0, seed: int = 0,
             bf16: bool = False, device: str = "cpu", max_minutes: float | None = None,
             command: str = "", log=print) -> dict:
    """Float training with Adam + cosine LR; keeps the best-valid checkpoint at ``out``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_ids, vocab = ptb.load_split(data_dir, "train")
    valid_ids, _ = ptb.load_split(data_dir, "valid", vocab)
    arch = {"vocab_size": len(vocab), "hidden_size": hidden_size, "num_layers": num_layers,
            "dropout": dropout}
    model = CharLSTM(**arch).to(device)
    log(f"char-LM: vocab {len(vocab)}, hidden {hidden_size} x {num_layers} layer(s), "
        f"{weight_count(model):,} weights; train {train_ids.numel():,} chars, valid {valid_ids.numel():,}")
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    data = ptb.batchify(train_ids, batch).to(device)
    steps_per_epoch = (data.size(0) - 1) // bptt
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch, eta_min=lr / 30)
    best, history, t0 = float("inf"), [], time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        # a random phase per epoch so window boundaries move (drawn from the seeded generator)
        offset = int(torch.randint(0, bptt, (1,), generator=gen))
        state, tot, n = None, 0.0, 0
        bar = tqdm(range(offset, data.size(0) - 1 - bptt, bptt), desc=f"epoch {epoch}",
                   mininterval=30, leave=False)
        for start in bar:
            x, y = data[start:start + bptt], data[start + 1:start + 1 + bptt]
            with torch.autocast("cpu" if device == "cpu" else "cuda", dtype=torch.bfloat16, enabled=bf16):
                logits, state = model(x, _detach(state))
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            tot, n = tot + loss.item(), n + 1
        train_bpc = tot / max(n, 1) / math.log(2)
        valid_bpc = evaluate_bpc(model, valid_ids, device=device)
        elapsed = (time.time() - t0) / 60
        history.append({"epoch": epoch, "train_bpc": train_bpc, "valid_bpc": valid_bpc,
                        "minutes": round(elapsed, 2)})
        log(f"epoch {epoch}: train {train_bpc:.4f} bpc, valid {valid_bpc:.4f} bpc, {elapsed:.1f} min")
        if valid_bpc < best:
            best = valid_bpc
            save_checkpoint(out, "lm", arch, model, {"vocab": vocab, "valid_bpc": valid_bpc,
                                                      "epoch": epoch, "history": history,
                                                      "command": command, "seed": seed})
        if max_minutes is not None and elapsed > max_minutes:
            log(f"stopping after epoch {epoch}: time budget of {max_minutes} min reached")
            break
    return {"best_valid_bpc": best, "history": history}


def load_lm(path: str | Path) -> tuple[CharLSTM, dict]:
    """Load a char-LM checkpoint: (model in eval mode, checkpoint dict)."""
    ckpt = load_checkpoint(path, task="lm")
    model = CharLSTM(**ckpt["arch"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval(), ckpt
