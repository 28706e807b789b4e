"""Character-level language model on Penn Treebank: model, float training, BPC evaluation.

The model takes one-hot characters (so the input projection is a crossbar MVM like any other),
runs an LSTM and a linear decoder to next-character logits.  Training is truncated BPTT over
``batch`` contiguous streams with the hidden state carried across windows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from crossbar.errors import CrossbarInputError
from rnn_models.checkpoint import check_meta, load_checkpoint, load_model, resolve_digital_output, save_checkpoint
from rnn_models.data import ptb


class CharLSTM(nn.Module):
    """One-hot input -> ``num_layers`` LSTM of ``hidden_size`` -> linear decoder to ``vocab_size``.

    Regularisation (active in training only; all 0 = the plain model):

    * ``dropout``: standard dropout between LSTM layers and before the decoder;
    * ``weight_drop``: DropConnect on the recurrent weights ``weight_hh`` (AWD-LSTM), one mask per
      forward call (= per BPTT window), applied through ``torch.func.functional_call`` so the
      cuDNN / oneDNN LSTM kernel is kept; only on a float ``nn.LSTM`` (an analog LSTM trains
      hardware-aware without it);
    * ``locked_dropout``: variational dropout on the LSTM output, one mask per sequence shared by
      all time steps.
    """

    OUTPUT_LAYER = "decoder"

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        locked_dropout: float = 0.0,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.weight_drop = float(weight_drop)
        self.locked_dropout = float(locked_dropout)
        self.lstm = nn.LSTM(vocab_size, hidden_size, num_layers=num_layers, dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state=None):
        """``ids`` (T, B) int64 -> logits (T, B, vocab), new state."""
        x = F.one_hot(ids, self.vocab_size).to(self.decoder.weight.dtype)
        if self.training and self.weight_drop > 0 and type(self.lstm) is nn.LSTM:
            dropped = {
                name: F.dropout(p, self.weight_drop)
                for name, p in self.lstm.named_parameters()
                if name.startswith("weight_hh")
            }
            out, state = torch.func.functional_call(self.lstm, dropped, (x, state))
        else:
            out, state = self.lstm(x, state)
        if self.training and self.locked_dropout > 0:
            keep = 1.0 - self.locked_dropout
            mask = torch.empty_like(out[:1]).bernoulli_(keep) / keep
            out = out * mask
        return self.decoder(self.drop(out)), state


def weight_count(model: nn.Module) -> int:
    """Number of weights and biases stored on the chip (every parameter of the model)."""
    return sum(p.numel() for p in model.parameters())


def _detach(state):
    return tuple(s.detach() for s in state) if state is not None else None


# for type checkers: one BPC (float) for one instance (the default), a list of M for M > 1
@overload
def evaluate_bpc(
    model: nn.Module,
    ids: torch.Tensor,
    n_streams: int = ...,
    window: int = ...,
    device: str = ...,
    instances: Literal[1] = ...,
    progress: bool = ...,
) -> float: ...
@overload
def evaluate_bpc(
    model: nn.Module,
    ids: torch.Tensor,
    n_streams: int = ...,
    window: int = ...,
    device: str = ...,
    instances: int = ...,
    progress: bool = ...,
) -> float | list[float]: ...
@torch.no_grad()
def evaluate_bpc(
    model: nn.Module,
    ids: torch.Tensor,
    n_streams: int = 64,
    window: int = 200,
    device: str = "cpu",
    instances: int = 1,
    progress: bool = False,
) -> float | list[float]:
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
        x = data[start : start + window]
        y = data[start + 1 : start + 1 + window]
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


def _lr_at(step: int, total: int, lr: float, warmup: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine to lr/30."""
    if step < warmup:
        return lr * (step + 1) / warmup
    frac = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr / 30 + (lr - lr / 30) * 0.5 * (1 + math.cos(math.pi * frac))


class _StopRequest:
    """SIGTERM / SIGINT during training: finish the current step, save the state, stop."""

    def __init__(self):
        self.requested = False
        self._old = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


def _train_phase(
    model: nn.Module,
    data: torch.Tensor,
    valid_ids: torch.Tensor,
    hp: dict,
    state: dict,
    gen: torch.Generator,
    device: str,
    save,
    log,
    max_minutes: float | None,
    valid_model=None,
    save_every_minutes: float = 10.0,
) -> bool:
    """Truncated-BPTT training of one phase, resumable from ``state`` (updated in place).

    ``hp``: epochs, lr, weight_decay, warmup, bptt, clip, bf16, ema_decay, max_steps (or None).
    AdamW with warm-up + cosine LR over the phase's steps; window boundaries move per epoch; the
    hidden state is carried across windows.  With ``ema_decay`` > 0 an exponential moving average
    of the weights is kept and validated (and saved as the phase's best model).  ``save(state,
    best_state_dict or None)`` is called every ``save_every_minutes``, at every epoch end and when
    stopped (time budget, SIGTERM, Ctrl-C).  Returns True when the phase finished.
    """
    bptt = hp["bptt"]
    steps_per_epoch = (data.size(0) - 2) // bptt
    if steps_per_epoch < 1:
        raise CrossbarInputError(
            f"--bptt {bptt} is longer than the training data per stream "
            f"({data.size(0)} characters); use a smaller --bptt or --batch"
        )
    total = hp["epochs"] * steps_per_epoch
    if hp.get("max_steps") is not None:
        total = min(total, hp["max_steps"])
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    if state.get("opt") is not None:
        opt.load_state_dict(state["opt"])
    ema = None
    if hp["ema_decay"] > 0:
        ema = {k: v.detach().clone().float() for k, v in _float_state(model).items()}
        if state.get("ema") is not None:
            ema = {k: v.to(device) for k, v in state["ema"].items()}
    if state.get("torch_rng") is not None:
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["gen_rng"])

    def snapshot(hidden) -> None:
        state.update(
            model={k: v.detach().cpu().clone() for k, v in _float_state(model).items()},
            ema={k: v.cpu().clone() for k, v in ema.items()} if ema is not None else None,
            opt=opt.state_dict(),
            torch_rng=torch.get_rng_state(),
            gen_rng=gen.get_state(),
            hidden=[s.detach().cpu().clone() for s in hidden] if hidden is not None else None,
        )

    def eval_model():
        net = valid_model(model) if valid_model else model
        if ema is None:
            return net
        import copy

        net = copy.deepcopy(net)
        net.load_state_dict({**net.state_dict(), **ema})
        return net

    t_start, base_minutes = time.time(), state.get("minutes", 0.0)
    last_save = t_start

    def elapsed_minutes() -> float:
        return base_minutes + (time.time() - t_start) / 60

    with _StopRequest() as stop:
        while state["epoch"] <= hp["epochs"] and state["steps"] < total:
            epoch = state["epoch"]
            if state.get("start") is None:  # a new epoch
                offset = int(torch.randint(0, bptt, (1,), generator=gen))
                state.update(start=offset, loss_sum=0.0, loss_n=0, hidden=None)
            hidden = tuple(s.to(device) for s in state["hidden"]) if state.get("hidden") else None
            model.train()
            bar = tqdm(
                range(state["start"], data.size(0) - 1 - bptt, bptt),
                desc=f"{state['phase']} {epoch}",
                mininterval=30,
                leave=False,
            )
            stopped = False
            for start in bar:
                for group in opt.param_groups:
                    group["lr"] = _lr_at(state["steps"], total, hp["lr"], hp["warmup"])
                x, y = data[start : start + bptt], data[start + 1 : start + 1 + bptt]
                with torch.autocast("cpu" if device == "cpu" else "cuda", dtype=torch.bfloat16, enabled=hp["bf16"]):
                    logits, hidden = model(x, _detach(hidden))
                loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
                if not torch.isfinite(loss):
                    raise CrossbarInputError(
                        f"training diverged at step {state['steps']} (loss {loss.item()}); lower --lr"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), hp["clip"])
                opt.step()
                if ema is not None:
                    decay = min(hp["ema_decay"], (1 + state["steps"]) / (10 + state["steps"]))
                    with torch.no_grad():
                        for k, v in _float_state(model).items():
                            ema[k].lerp_(v.float(), 1 - decay)
                state["loss_sum"] += loss.item()
                state["loss_n"] += 1
                state["steps"] += 1
                state["start"] = start + bptt
                now = time.time()
                out_of_time = max_minutes is not None and (now - t_start) / 60 > max_minutes
                if stop.requested or out_of_time or state["steps"] >= total:
                    stopped = stop.requested or out_of_time
                    break
                if (now - last_save) / 60 > save_every_minutes:
                    state["minutes"] = elapsed_minutes()
                    snapshot(hidden)
                    save(state, None)
                    last_save = now
            if stopped:
                state["minutes"] = elapsed_minutes()
                snapshot(hidden)
                save(state, None)
                why = "stop requested" if stop.requested else f"time budget of {max_minutes} min reached"
                log(
                    f"{state['phase']}: {why} at epoch {epoch}, step {state['steps']} of {total}; "
                    f"state saved -- run the same command again to continue"
                )
                return False
            entry = {
                "phase": state["phase"],
                "epoch": epoch,
                "steps": state["steps"],
                "train_bpc": state["loss_sum"] / max(state["loss_n"], 1) / math.log(2),
                "valid_bpc": evaluate_bpc(eval_model(), valid_ids, device=device),
                "lr": opt.param_groups[0]["lr"],
                "minutes": round(elapsed_minutes(), 2),
            }
            state["history"].append(entry)
            log(
                f"{state['phase']} epoch {epoch}: train {entry['train_bpc']:.4f} bpc, valid "
                f"{entry['valid_bpc']:.4f} bpc, {entry['minutes']:.1f} min"
            )
            best = None
            if entry["valid_bpc"] < state["best"]:
                state["best"] = entry["valid_bpc"]
                best = {k: v.detach().cpu().clone() for k, v in _float_state(eval_model()).items()}
            state.update(epoch=epoch + 1, start=None, minutes=elapsed_minutes())
            snapshot(None)
            save(state, best)
            last_save = time.time()
    return True


def _float_state(model: nn.Module) -> dict:
    """The float weights of ``model`` (analog layers keep the names of their torch twins)."""
    return {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor) and v.is_floating_point()}


TRAIN_DEFAULTS = {"weight_drop": 0.0, "locked_dropout": 0.0, "weight_decay": 0.0, "ema_decay": 0.0, "warmup": 0}


def train_lm(
    data_dir: str | Path,
    out: str | Path,
    hidden_size: int = 364,
    num_layers: int = 1,
    dropout: float = 0.0,
    epochs: int = 30,
    batch: int = 128,
    bptt: int = 100,
    lr: float = 3e-3,
    clip: float = 1.0,
    seed: int = 0,
    bf16: bool = False,
    device: str = "cpu",
    max_minutes: float | None = None,
    config=None,
    hwa_epochs: int = 1,
    hwa_lr: float = 5e-4,
    hwa_max_minutes: float | None = None,
    hwa_max_steps: int | None = None,
    init: str | Path | None = None,
    finetune_epochs: int = 0,
    digital_output: bool = False,
    weight_drop: float = 0.0,
    locked_dropout: float = 0.0,
    weight_decay: float = 0.0,
    ema_decay: float = 0.0,
    warmup: int = 0,
    save_every_minutes: float = 10.0,
    command: str = "",
    log=print,
) -> dict:
    """Float training (skipped with ``init``), then hardware-aware fine-tuning for ``config``.

    With ``init`` and ``finetune_epochs`` > 0 the float phase is a fine-tuning of ``init``'s weights
    for that many epochs (phase ``"finetune"``) with this call's regularisation (``dropout``,
    ``weight_drop``, ``locked_dropout``, ``weight_decay``, ``ema_decay``), ``lr`` and ``warmup``;
    the network's shape stays the checkpoint's.

    Resumable: the checkpoint at ``out`` holds, next to the best weights so far, the whole training
    state (weights, weight average, optimizer, RNG streams, position in the epoch, carried hidden
    state) until training ends; running the same command again continues where it stopped (a
    different hyper-parameter is refused).  ``max_minutes`` caps this invocation's float training
    (the state is saved; rerun to continue).  The saved model is the best of each phase by software
    valid BPC (the HWA phase replaces the float weights only by its own best).  The checkpoint
    records its deployment (``meta["deployment"]``: the HWA config and the layers kept digital) so
    that evaluation defaults to it.
    """
    from rnn_models.convert import calibrate, convert_to_analog, to_digital

    out = Path(out)
    cfg = None
    if finetune_epochs and init is None:
        raise CrossbarInputError("--finetune-epochs fine-tunes an --init checkpoint; give --init")
    if config is not None and hwa_epochs > 0:
        from crossbar.config import load_config

        cfg = load_config(config)  # checked before any training
    train_ids, vocab = ptb.load_split(data_dir, "train")
    valid_ids, _ = ptb.load_split(data_dir, "valid", vocab)
    data = ptb.batchify(train_ids, batch).to(device)
    hp_float = {
        "epochs": finetune_epochs or epochs,  # finetune_epochs needs init (checked above)
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup": warmup,
        "bptt": bptt,
        "clip": clip,
        "bf16": bf16,
        "ema_decay": ema_decay,
        "max_steps": None,
        "batch": batch,
        "seed": seed,
        "init": str(init) if init is not None else None,
    }
    hp_hwa = {
        "epochs": hwa_epochs,
        "lr": hwa_lr,
        "weight_decay": 0.0,
        "warmup": 0,
        "bptt": bptt,
        "clip": clip,
        "bf16": False,
        "ema_decay": 0.0,
        "max_steps": hwa_max_steps,
        "batch": batch,
        "seed": seed,
        "config": cfg.name if cfg is not None else None,
        "digital_output": digital_output,
    }
    arch: dict[str, Any] = {  # CharLSTM keyword arguments (as a checkpoint's "arch" holds them)
        "vocab_size": len(vocab),
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "dropout": dropout,
        "weight_drop": weight_drop,
        "locked_dropout": locked_dropout,
    }
    init_ckpt = None
    if init is not None:  # the network (and, without fine-tuning, its regularisation) is init's
        model0, init_ckpt = load_lm(init)
        if init_ckpt["meta"]["vocab"] != vocab:
            raise CrossbarInputError(f"checkpoint {str(init)!r} was trained with another vocabulary")
        arch = dict(init_ckpt["arch"])
        if finetune_epochs:
            arch.update(dropout=dropout, weight_drop=weight_drop, locked_dropout=locked_dropout)
    resumed = None
    if out.exists():
        prior = load_checkpoint(out, task="lm")
        resumed = prior["meta"].get("train_state")
        if resumed is None:
            raise CrossbarInputError(
                f"--out {str(out)!r} exists and holds no unfinished training; choose another "
                f"--out (an existing checkpoint is never overwritten)"
            )
        want: dict[str, Mapping[str, object]] = {"arch": arch, "float": hp_float, "hwa": hp_hwa}
        diff = [
            f"{part}.{k} ({resumed['hparams'][part].get(k)!r} in the checkpoint, {v!r} now)"
            for part in want
            for k, v in want[part].items()
            if resumed["hparams"][part].get(k) != v
        ]
        if diff:
            raise CrossbarInputError(
                f"--out {str(out)!r} holds an unfinished training with other settings: "
                f"{', '.join(diff[:6])}; use the same arguments to continue or another --out"
            )
        meta = dict(prior["meta"])
        best_sd = prior["state_dict"]
        log(f"resuming {resumed['phase']} training from {out}: epoch {resumed['epoch']}, step {resumed['steps']}")
    elif init_ckpt is not None:
        meta = dict(init_ckpt["meta"])
        meta.pop("train_state", None)
        best_sd = model0.state_dict()
    else:
        meta = {"vocab": vocab, "seed": seed, "history": []}
        best_sd = None
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = CharLSTM(**arch).to(device)
    log(
        f"char-LM: vocab {len(vocab)}, hidden {arch['hidden_size']} x {arch['num_layers']} layer(s), "
        f"{weight_count(model):,} weights; train {train_ids.numel():,} chars, valid {valid_ids.numel():,}"
    )
    meta["command"] = command
    meta["deployment"] = {"hwa_config": None, "digital_layers": []}
    state = resumed or {
        "phase": "float" if init is None else ("finetune" if finetune_epochs else "hwa"),
        "epoch": 1,
        "steps": 0,
        "start": None,
        "history": meta.get("history", []),
        "best": float("inf"),
        "hparams": {"arch": arch, "float": hp_float, "hwa": hp_hwa},
    }
    if resumed is not None:
        meta["deployment"] = prior["meta"].get("deployment", meta["deployment"])

    def save(st, best):
        nonlocal best_sd
        if best is not None:
            best_sd = best
            meta.update(valid_bpc=st["best"], epoch=st["epoch"] - 1, phase=st["phase"])
        meta["history"] = st["history"]
        meta["train_state"] = st
        _save_state_dict(out, arch, best_sd if best_sd is not None else _float_state(model), meta)

    if state["phase"] in ("float", "finetune"):
        if state.get("model") is not None:
            model.load_state_dict(state["model"])
        elif best_sd is not None:  # fine-tuning starts from --init's weights
            model.load_state_dict(best_sd)
        done = _train_phase(
            model,
            data,
            valid_ids,
            hp_float,
            state,
            gen,
            device,
            save,
            log,
            max_minutes,
            save_every_minutes=save_every_minutes,
        )
        if not done:
            return {"best_valid_bpc": state["best"], "history": state["history"], "finished": False}
        state.update(phase="hwa", epoch=1, steps=0, start=None, best=float("inf"), model=None, ema=None, opt=None)
    if cfg is not None:
        model.load_state_dict(state["model"] if state.get("model") is not None else best_sd)
        ana = convert_to_analog(model, cfg, exclude=(model.OUTPUT_LAYER,) if digital_output else ())
        calib = ptb.batchify(train_ids[:20000], 50)
        calibrate(ana, [calib[i : i + 100] for i in range(0, calib.size(0), 100)])
        meta["deployment"] = {"hwa_config": cfg.name, "digital_layers": [model.OUTPUT_LAYER] if digital_output else []}
        meta["hwa_config"], meta["hwa_digital_output"] = cfg.name, digital_output
        done = _train_phase(
            ana,
            data,
            valid_ids,
            hp_hwa,
            state,
            gen,
            device,
            save,
            log,
            hwa_max_minutes,
            valid_model=to_digital,
            save_every_minutes=save_every_minutes,
        )
        if not done:
            return {"best_valid_bpc": state["best"], "history": state["history"], "finished": False}
    meta.pop("train_state", None)
    meta["history"] = state["history"]
    _save_state_dict(out, arch, best_sd, meta)
    return {"best_valid_bpc": meta.get("valid_bpc", state["best"]), "history": state["history"], "finished": True}


def _save_state_dict(path: Path, arch: dict, state_dict: dict, meta: dict) -> None:
    holder = CharLSTM(**arch)
    holder.load_state_dict(state_dict)
    save_checkpoint(path, "lm", arch, holder, meta)


def load_lm(path: str | Path) -> tuple[CharLSTM, dict]:
    """Load a char-LM checkpoint: (model in eval mode, checkpoint dict)."""
    model, ckpt = load_model(path, "lm", CharLSTM, "char-LM")
    check_meta(path, ckpt["meta"], {"vocab": list})
    if not all(isinstance(c, str) for c in ckpt["meta"]["vocab"]) or len(ckpt["meta"]["vocab"]) != model.vocab_size:
        raise CrossbarInputError(f"checkpoint {str(path)!r}: meta vocab must be {model.vocab_size} characters")
    return model.eval(), ckpt


def evaluate_lm(
    checkpoint: str | Path,
    data_dir: str | Path,
    config,
    mc: int,
    split: str = "valid",
    n_streams: int = 128,
    window: int = 100,
    seed: int | None = None,
    limit: int | None = None,
    digital_output: bool | None = None,
    first: int = 0,
    measured: str | Path | None = None,
) -> dict:
    """Software and hardware (``mc`` Monte-Carlo instances, batched) BPC of a checkpoint on a split.

    ``first``: number of the first instance (instance m is the same chip in any block).
    ``digital_output``: keep the decoder digital; None = as the checkpoint's deployment says.

    The input DAC and ADC ranges are calibrated on the first 20,000 characters of the training split.
    ``limit``: score only the first ``limit`` characters (quick checks).
    ``measured``: a folder in the ``crossbar export`` layout with a chip's measured conductances,
    simulated instead of programmed instances (see :mod:`rnn_models.export`).
    """
    from crossbar.config import load_config
    from rnn_models.convert import program
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
    ana, digital_output, dep_source = analog_lm(model, ckpt, cfg, data_dir, digital_output)
    chip = None
    if measured is None:
        program(ana, seed, mc, first=first)
    else:  # a measured chip instead of programmed ones (rnn_models.export)
        from rnn_models.export import load_measured

        chip = load_measured(ana, measured, seed=seed, instances=mc, first=first)
    per_instance = evaluate_bpc(ana, ids, n_streams, window, instances=mc, progress=True)
    # warns when the DAC clips, linear ADCs saturate or IR drop distorts the weights too much
    health = health_report(ana)
    if not isinstance(per_instance, list):  # one instance (mc = 1): a single BPC
        per_instance = [per_instance]
    predicted = (ids.numel() // n_streams - 1) * n_streams  # every symbol but each stream's first
    res = result("lm", "bpc", predicted, software, per_instance, cfg, checkpoint)
    res["deployment"] = {"digital_layers": [model.OUTPUT_LAYER] if digital_output else [], "from": dep_source}
    res["health"] = health
    if chip is not None:
        res["measured"] = chip
    return res


def analog_lm(model: CharLSTM, ckpt: dict, config, data_dir: str | Path, digital_output: bool | None = None):
    """The analog twin of a loaded char-LM checkpoint as :func:`evaluate_lm` simulates it (and
    ``crossbar export`` exports it): converted under ``config`` with the decoder digital as
    ``digital_output`` / the checkpoint's deployment says, DAC and ADC ranges calibrated on the
    first 20,000 characters of the training split in ``data_dir``; not programmed.
    Returns (model, digital_output, source)."""
    from rnn_models.convert import calibrate, convert_to_analog

    digital_output, dep_source = resolve_digital_output(ckpt, model.OUTPUT_LAYER, digital_output)
    ana = convert_to_analog(model, config, exclude=(model.OUTPUT_LAYER,) if digital_output else ()).eval()
    train_ids, _ = ptb.load_split(data_dir, "train", ckpt["meta"]["vocab"])
    calib = ptb.batchify(train_ids[:20000], 50)
    calibrate(ana, [calib[i : i + 100] for i in range(0, calib.size(0), 100)])
    return ana, digital_output, dep_source
