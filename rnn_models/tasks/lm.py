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

from crossbar.errors import CrossbarInputError
from rnn_models.checkpoint import load_model, save_checkpoint
from rnn_models.data import ptb


class CharLSTM(nn.Module):
    """One-hot input -> ``num_layers`` LSTM of ``hidden_size`` -> linear decoder to ``vocab_size``."""

    OUTPUT_LAYER = "decoder"

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
                 device: str = "cpu", instances: int = 1, progress: bool = False) -> float | list[float]:
    """Bits per character of ``model`` over the whole sequence ``ids``.

    The sequence is cut into ``n_streams`` contiguous streams scored in parallel, the state carried
    from window to window; every symbol but the first of each stream is predicted once.  With
    ``instances`` > 1 (a model programmed with M Monte-Carlo instances) the inputs get the leading
    instance dimension and a list of M BPC values is returned.
    """
    model.eval()
    data = ptb.batchify(ids, n_streams).to(device)
    state, count = None, 0
    nats = torch.zeros(instances, dtype=torch.float64)
    starts = range(0, data.size(0) - 1, window)
    for start in tqdm(starts, desc="bpc", leave=False, disable=not progress, mininterval=5):
        x = data[start:start + window]
        y = data[start + 1:start + 1 + window]
        x = x[: y.size(0)]
        if instances > 1:
            x = x.expand(instances, *x.shape)
        logits, state = model(x, state)
        logits = logits.float().reshape(instances, -1, logits.size(-1))
        for m in range(instances):
            nats[m] += F.cross_entropy(logits[m], y.reshape(-1), reduction="sum").item()
        count += y.numel()
    bpc = (nats / count / math.log(2)).tolist()
    return bpc if instances > 1 else bpc[0]


def _train_epochs(model: nn.Module, data: torch.Tensor, valid_ids: torch.Tensor, epochs: int, lr: float,
                  bptt: int, clip: float, gen: torch.Generator, bf16: bool, device: str,
                  max_minutes: float | None, phase: str, on_epoch, log, valid_model=None,
                  max_steps: int | None = None) -> list[dict]:
    """Truncated-BPTT epochs over ``data`` (T, B) with Adam + cosine LR; ``on_epoch(entry)`` per epoch.

    ``max_steps`` caps the optimizer steps of the phase (the cosine schedule spans them); the epoch
    in which the cap is reached ends there and is validated."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = (data.size(0) - 1) // bptt
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, total), eta_min=lr / 30)
    steps = 0
    history, t0 = [], time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        offset = int(torch.randint(0, bptt, (1,), generator=gen))  # window boundaries move per epoch
        state, tot, n = None, 0.0, 0
        bar = tqdm(range(offset, data.size(0) - 1 - bptt, bptt), desc=f"{phase} {epoch}", mininterval=30, leave=False)
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
            steps += 1
            if (max_minutes is not None and (time.time() - t0) / 60 > max_minutes) or steps >= total:
                break
        entry = {"phase": phase, "epoch": epoch, "train_bpc": tot / max(n, 1) / math.log(2),
                 "valid_bpc": evaluate_bpc(valid_model(model) if valid_model else model, valid_ids, device=device),
                 "minutes": round((time.time() - t0) / 60, 2)}
        history.append(entry)
        log(f"{phase} epoch {epoch}: train {entry['train_bpc']:.4f} bpc, valid {entry['valid_bpc']:.4f} bpc, "
            f"{entry['minutes']:.1f} min")
        on_epoch(entry)
        if max_minutes is not None and entry["minutes"] > max_minutes:
            log(f"stopping {phase} after epoch {epoch}: time budget of {max_minutes} min reached")
            break
        if steps >= total:
            break
    return history


def train_lm(data_dir: str | Path, out: str | Path, hidden_size: int = 364, num_layers: int = 1,
             dropout: float = 0.0, epochs: int = 30, batch: int = 128, bptt: int = 100,
             lr: float = 3e-3, clip: float = 1.0, seed: int = 0, bf16: bool = False, device: str = "cpu",
             max_minutes: float | None = None, config=None, hwa_epochs: int = 1, hwa_lr: float = 5e-4,
             hwa_max_minutes: float | None = None, hwa_max_steps: int | None = None,
             init: str | Path | None = None, digital_output: bool = False,
             command: str = "", log=print) -> dict:
    """Float training (skipped with ``init``), then hardware-aware fine-tuning for ``config``.

    Keeps the checkpoint with the best software valid BPC of each phase at ``out`` (the HWA phase
    replaces the float weights only by its own best).
    """
    from rnn_models.convert import calibrate, convert_to_analog, to_digital

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_ids, vocab = ptb.load_split(data_dir, "train")
    valid_ids, _ = ptb.load_split(data_dir, "valid", vocab)
    data = ptb.batchify(train_ids, batch).to(device)
    if init is not None:
        model, ckpt = load_lm(init)
        if ckpt["meta"]["vocab"] != vocab:
            raise CrossbarInputError(f"checkpoint {str(init)!r} was trained with another vocabulary")
        arch, meta = dict(ckpt["arch"]), dict(ckpt["meta"])
        model = model.to(device)
    else:
        arch = {"vocab_size": len(vocab), "hidden_size": hidden_size, "num_layers": num_layers, "dropout": dropout}
        model = CharLSTM(**arch).to(device)
        meta = {"vocab": vocab, "seed": seed, "history": []}
    log(f"char-LM: vocab {len(vocab)}, hidden {arch['hidden_size']} x {arch['num_layers']} layer(s), "
        f"{weight_count(model):,} weights; train {train_ids.numel():,} chars, valid {valid_ids.numel():,}")
    meta["command"] = command
    best = {"bpc": float("inf")}

    def keep_best(net):  # net: a function returning the float model to save
        def on_epoch(entry):
            meta["history"] = meta.get("history", []) + [entry]
            if entry["valid_bpc"] < best["bpc"]:
                best["bpc"] = entry["valid_bpc"]
                meta.update(valid_bpc=entry["valid_bpc"], epoch=entry["epoch"], phase=entry["phase"])
                save_checkpoint(out, "lm", arch, net(), meta)
        return on_epoch

    if init is None:
        _train_epochs(model, data, valid_ids, epochs, lr, bptt, clip, gen, bf16, device, max_minutes,
                      "float", keep_best(lambda: model), log)
        model, _ = load_lm(out)
    if config is not None and hwa_epochs > 0:
        from crossbar.config import load_config

        cfg = load_config(config)
        best["bpc"] = float("inf")
        ana = convert_to_analog(model, cfg, exclude=(model.OUTPUT_LAYER,) if digital_output else ())
        calib = ptb.batchify(train_ids[:20000], 50)
        calibrate(ana, [calib[i:i + 100] for i in range(0, calib.size(0), 100)])
        meta["hwa_config"] = cfg.name
        meta["hwa_digital_output"] = digital_output
        _train_epochs(ana, data, valid_ids, hwa_epochs, hwa_lr, bptt, clip, gen, False, device, hwa_max_minutes,
                      "hwa", keep_best(lambda: to_digital(ana)), log, valid_model=to_digital,
                      max_steps=hwa_max_steps)
    return {"best_valid_bpc": best["bpc"], "history": meta.get("history", [])}


def load_lm(path: str | Path) -> tuple[CharLSTM, dict]:
    """Load a char-LM checkpoint: (model in eval mode, checkpoint dict)."""
    model, ckpt = load_model(path, "lm", CharLSTM, "char-LM")
    if "vocab" not in ckpt["meta"]:
        raise CrossbarInputError(f"checkpoint {str(path)!r} has no vocabulary in its meta")
    return model.eval(), ckpt


def evaluate_lm(checkpoint: str | Path, data_dir: str | Path, config, mc: int, split: str = "valid",
                n_streams: int = 128, window: int = 100, seed: int | None = None, limit: int | None = None,
                digital_output: bool = False) -> dict:
    """Software and hardware (``mc`` Monte-Carlo instances, batched) BPC of a checkpoint on a split.

    The input DAC and ADC ranges are calibrated on the first 20,000 characters of the training split.
    ``limit``: score only the first ``limit`` characters (quick checks).
    """
    from crossbar.config import load_config
    from rnn_models.convert import calibrate, convert_to_analog, program
    from rnn_models.evaluate import result
    from rnn_models.health import health_report

    model, ckpt = load_lm(checkpoint)
    vocab = ckpt["meta"]["vocab"]
    ids, _ = ptb.load_split(data_dir, split, vocab)
    if limit is not None:
        ids = ids[:limit]
    software = evaluate_bpc(model, ids, n_streams, window)
    cfg = load_config(config)
    seed = cfg.simulation.seed if seed is None else seed
    ana = convert_to_analog(model, cfg, exclude=(model.OUTPUT_LAYER,) if digital_output else ()).eval()
    train_ids, _ = ptb.load_split(data_dir, "train", vocab)
    calib = ptb.batchify(train_ids[:20000], 50)
    calibrate(ana, [calib[i:i + 100] for i in range(0, calib.size(0), 100)])
    program(ana, seed, mc)
    per_instance = evaluate_bpc(ana, ids, n_streams, window, instances=mc, progress=True)
    health_report(ana)  # warns when the DAC clips or linear ADCs saturate too often
    if mc == 1:
        per_instance = [per_instance]
    predicted = (ids.numel() // n_streams - 1) * n_streams  # every symbol but each stream's first
    return result("lm", "bpc", predicted, software, per_instance, cfg, checkpoint)
