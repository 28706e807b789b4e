"""Keyword spotting: LSTM over log-mel frames, float training with augmentation, hardware-aware
fine-tuning, Monte-Carlo evaluation on simulated crossbars.

Model (ours): per-band feature normalisation (training-set mean/std, digital) -> 1-layer LSTM ->
mean of the hidden states over time (digital accumulation) -> linear classifier.  On hardware the
LSTM and the classifier run on crossbars (``convert_to_analog``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from crossbar.config import HardwareConfig, load_config
from crossbar.errors import CrossbarInputError
from rnn_models.checkpoint import check_meta, load_model, resolve_digital_output, save_checkpoint
from rnn_models.convert import calibrate, convert_to_analog, program, to_digital
from rnn_models.data import speech
from rnn_models.evaluate import result
from rnn_models.health import health_report


class KWSLSTM(nn.Module):
    """(B, T, n_mels) log-mel frames (+ leading Monte-Carlo dim) -> (B, classes) logits."""

    OUTPUT_LAYER = "fc"
    # buffers (n_mels,): training-set mean and std of the (mean-subtracted) log-mel features
    feat_mean: torch.Tensor
    feat_std: torch.Tensor

    def __init__(
        self, n_mels: int = 40, hidden_size: int = 128, classes: int = 12, dropout: float = 0.2, cmn: bool = True
    ):
        super().__init__()
        self.cmn = cmn  # subtract each clip's mean log-mel per band (removes level and channel)
        self.drop = nn.Dropout(dropout)
        self.register_buffer("feat_mean", torch.zeros(n_mels))
        self.register_buffer("feat_std", torch.ones(n_mels))
        self.lstm = nn.LSTM(n_mels, hidden_size, batch_first=True)
        self.fc = nn.Linear(hidden_size, classes)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.dim() == 4 and feats.shape[0] > 1 and feats.stride(0) == 0:
            # Monte-Carlo instances that share their clips (x.expand(M, ...)): normalised once,
            # the instances' views kept (the analog layers compute a shared input's word lines once)
            return self._classify(self._normalised(feats[0]).expand(feats.shape[0], -1, -1, -1))
        return self._classify(self._normalised(feats))

    def _normalised(self, feats: torch.Tensor) -> torch.Tensor:
        if self.cmn:
            feats = feats - feats.mean(-2, keepdim=True)
        return (feats - self.feat_mean) / self.feat_std

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        y, _ = self.lstm(x)
        return self.fc(self.drop(y.mean(-2)))


def weight_bytes(model: nn.Module, bits: int = 8) -> float:
    """Bytes of weight memory at ``bits`` per weight (LSTM + classifier, biases included)."""
    n = sum(p.numel() for p in model.parameters())
    return n * bits / 8


@torch.no_grad()
def accuracy(
    model: nn.Module, feats: torch.Tensor, labels: torch.Tensor, batch: int = 512, instances: int = 1
) -> list[float]:
    """Accuracy per instance (a list of length ``instances``); inputs get the instance dim when > 1."""
    model.eval()
    correct = torch.zeros(instances)
    for i in range(0, len(feats), batch):
        x = feats[i : i + batch]
        if instances > 1:
            x = x.expand(instances, *x.shape)
        logits = model(x)
        pred = logits.argmax(-1).reshape(instances, -1)
        correct += (pred == labels[i : i + batch]).sum(-1).float()
    return (correct / len(feats)).tolist()


def _noise_bank(data_dir: Path, train: speech.SpeechSet, settings: speech.FeatureSettings) -> torch.Tensor:
    """1 s background-noise pieces: the training split's _silence_ clips and _background_noise_ files."""
    pieces = [train.waves[i] for i, c in enumerate(train.clips) if c.label == speech.SILENCE]
    for f in speech.background_noise_files(data_dir):
        try:
            import soundfile as sf

            x, sr = sf.read(str(f), dtype="float32", always_2d=True)
        except Exception:
            continue
        x = torch.from_numpy(x.mean(1))
        n = settings.clip_samples
        pieces += [x[s : s + n] for s in range(0, len(x) - n, n // 2)] if sr == settings.sample_rate else []
    return torch.stack(pieces) if pieces else torch.zeros(0, settings.clip_samples)


def train_kws(
    data_dir: str | Path,
    out: str | Path,
    task: str = "gsc12",
    config: str | HardwareConfig | None = None,
    hidden_size: int = 128,
    epochs: int = 120,
    hwa_epochs: int = 6,
    batch: int = 32,
    lr: float = 5e-3,
    dev_fraction: float = 0.2,
    seed: int = 0,
    speed_perturb: float = 0.0,
    command: str = "",
    log=print,
) -> dict:
    """Float training with augmentation, then hardware-aware fine-tuning for ``config`` (if given).

    Keeps the weights with the best speaker-disjoint dev accuracy; writes a checkpoint whose meta
    records the split (fraction, seed, dev speakers), classes, feature settings and the command.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    data_dir = Path(data_dir)
    settings = speech.task_settings(task)
    clips = speech.scan(data_dir, task)
    train_clips, dev_clips, dev_speakers = speech.speaker_split(clips, dev_fraction, seed)
    if not dev_clips or not train_clips:
        raise CrossbarInputError(f"{data_dir}: cannot make a speaker-disjoint split (need >= 2 speakers)")
    tr = speech.load_set(train_clips, task, settings)
    dv = speech.load_set(dev_clips, task, settings)
    for name, s in (("train", tr), ("dev", dv)):
        if s.report["rejected"]:
            log(
                f"{name}: rejected {len(s.report['rejected'])} unreadable file(s), e.g. "
                f"{next(iter(s.report['rejected'].values()))}"
            )
        if s.report["resampled"]:
            log(f"{name}: resampled {s.report['resampled']} file(s) to {settings.sample_rate} Hz")
    classes = speech.TASK_CLASSES[task]
    model = KWSLSTM(settings.n_mels, hidden_size, len(classes))
    norm = tr.features - tr.features.mean(1, keepdim=True) if model.cmn else tr.features
    model.feat_mean.copy_(norm.mean((0, 1)))
    # floor 0.5 (log units): a near-constant band is not amplified into noise
    model.feat_std.copy_(norm.std((0, 1)).clamp(min=0.5))
    noise = _noise_bank(data_dir, tr, settings)
    fb = speech.mel_filterbank(settings)
    log(
        f"KWS {task}: {len(tr.clips)} train / {len(dv.clips)} dev clips ({len(dev_speakers)} dev speakers), "
        f"{len(noise)} noise pieces; model hidden {hidden_size}, {weight_bytes(model):.0f} B of 8-bit weights"
    )

    def run_epochs(net, n_epochs, lr_, phase, software=lambda n: n):
        opt = torch.optim.AdamW(net.parameters(), lr=lr_, weight_decay=1e-2)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=lr_, total_steps=max(1, n_epochs * ((len(tr.waves) + batch - 1) // batch))
        )
        best = (-1.0, None)
        for epoch in range(1, n_epochs + 1):
            net.train()
            perm = torch.randperm(len(tr.waves), generator=gen)
            tot = 0.0
            for i in tqdm(range(0, len(perm), batch), desc=f"{phase} {epoch}", leave=False, mininterval=10):
                idx = perm[i : i + batch]
                waves = speech.augment(tr.waves[idx], noise, gen, speed=speed_perturb)
                feats = speech.spec_augment(speech.log_mel(waves, settings, fb), gen)
                loss = F.cross_entropy(net(feats), tr.labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                tot += loss.item() * len(idx)
            acc = accuracy(software(net), dv.features, dv.labels)[0]  # software accuracy of these weights
            log(f"{phase} epoch {epoch}: train loss {tot / len(perm):.4f}, dev accuracy {acc:.4f}")
            if acc > best[0]:
                best = (acc, copy.deepcopy(net.state_dict()))
        net.load_state_dict(best[1])
        return best[0]

    t0 = time.time()
    float_acc = run_epochs(model, epochs, lr, "float")
    meta = {
        "task": task,
        "classes": classes,
        "speed_perturb": speed_perturb,
        "settings": settings.__dict__,
        "dev_fraction": dev_fraction,
        "split_seed": seed,
        "dev_speakers": dev_speakers,
        "float_dev_accuracy": float_acc,
        "command": command,
        "data": str(data_dir),
        "hwa_config": None,
        "software_dev_accuracy_after_hwa": None,
    }
    if config is not None and hwa_epochs > 0:
        cfg = load_config(config)
        ana = convert_to_analog(model, cfg)
        calib = tr.features[torch.randperm(len(tr.features), generator=gen)[:256]]
        calibrate(ana, [calib[i : i + 64] for i in range(0, len(calib), 64)])
        meta["software_dev_accuracy_after_hwa"] = run_epochs(ana, hwa_epochs, lr / 5, "hwa", software=to_digital)
        meta["hwa_config"] = cfg.name
        meta["deployment"] = {"hwa_config": cfg.name, "digital_layers": []}
        digital = to_digital(ana)
        assert isinstance(digital, KWSLSTM)  # only the layers inside were converted
        model = digital.to(next(model.parameters()).dtype)  # saved as trained (a float64 config casts)
    calib_idx = torch.randperm(len(tr.features), generator=gen)[:64]
    meta["calibration_features"] = tr.features[calib_idx].half()
    meta["minutes"] = (time.time() - t0) / 60
    arch = {"n_mels": settings.n_mels, "hidden_size": hidden_size, "classes": len(classes)}
    save_checkpoint(out, "kws", arch, model, meta)
    log(
        f"saved {out}: float dev accuracy {float_acc:.4f}"
        + (
            f", after HWA ({meta['hwa_config']}) software {meta['software_dev_accuracy_after_hwa']:.4f}"
            if meta["hwa_config"]
            else ""
        )
    )
    return meta


def load_kws(path: str | Path) -> tuple[KWSLSTM, dict]:
    """Load a KWS checkpoint: (model in eval mode, checkpoint dict)."""
    model, ckpt = load_model(path, "kws", KWSLSTM, "KWS model")
    check_meta(
        path,
        ckpt["meta"],
        {
            "task": str,
            "classes": list,
            "settings": dict,
            "dev_fraction": (float, int),
            "split_seed": int,
            "calibration_features": torch.Tensor,
        },
    )
    if ckpt["meta"]["task"] not in speech.TASK_CLASSES:
        raise CrossbarInputError(
            f"checkpoint {str(path)!r}: meta task {ckpt['meta']['task']!r} is not a speech "
            f"task ({', '.join(speech.TASK_CLASSES)})"
        )
    try:
        speech.FeatureSettings(**ckpt["meta"]["settings"])
    except TypeError as exc:
        raise CrossbarInputError(f"checkpoint {str(path)!r}: meta settings: {exc}") from None
    return model, ckpt


def evaluate_kws(
    checkpoint: str | Path,
    data_dir: str | Path,
    config: str | HardwareConfig,
    mc: int,
    split: str | None = None,
    seed: int | None = None,
    batch: int = 256,
    digital_output: bool | None = None,
    first: int = 0,
    limit: int | None = None,
    measured: str | Path | None = None,
) -> dict:
    """Software and hardware (``mc`` Monte-Carlo instances) accuracy of a checkpoint on a folder.

    ``split``: ``test`` when the folder has GSC's list files, else ``all`` (default), or
    ``train`` / ``dev`` with the checkpoint's split fraction and seed.  ``first``: number of the
    first instance (instance m is the same chip whichever block it is evaluated in); ``limit``:
    score only the first ``limit`` clips of the split (quick checks).  ``digital_output``: keep the
    output layer digital; None = as the checkpoint's deployment says (``meta["deployment"]``).
    ``measured``: a folder in the ``crossbar export`` layout with a chip's measured conductances;
    the ``mc`` instances are then that chip (read noise and periphery drawn per instance) instead
    of programmed ones, and the result gets a ``measured`` entry (see :mod:`rnn_models.export`).
    """
    model, ckpt = load_kws(checkpoint)
    meta = ckpt["meta"]
    task = meta["task"]
    settings = speech.FeatureSettings(**meta["settings"])
    clips = speech.scan(data_dir, task)
    if split is None:
        split = "test" if any(c.official_split for c in clips) else "all"
    chosen = speech.select_split(clips, split, meta["dev_fraction"], meta["split_seed"])
    if not chosen:
        raise CrossbarInputError(f"{data_dir}: the {split!r} split is empty")
    _check_labels(chosen, task, data_dir)
    if limit is not None:
        chosen = chosen[:limit]
    data = speech.load_set(chosen, task, settings)
    _report_rejected(data, data_dir)
    software = accuracy(model, data.features, data.labels)[0]
    cfg = load_config(config)
    seed = cfg.simulation.seed if seed is None else seed
    ana, digital_output, dep_source = analog_kws(model, ckpt, cfg, digital_output)
    chip = None
    if measured is None:
        program(ana, seed, mc, first=first)
    else:  # a measured chip instead of programmed ones (rnn_models.export)
        from rnn_models.export import load_measured

        chip = load_measured(ana, measured, seed=seed, instances=mc, first=first)
    per_instance = accuracy(ana, data.features, data.labels, batch=batch, instances=mc)
    # warns when the DAC clips, linear ADCs saturate or IR drop distorts the weights too much
    health = health_report(ana)
    res = result("kws", "accuracy", len(data.labels), software, per_instance, cfg, checkpoint)
    res["health"] = health
    res["deployment"] = {"digital_layers": [model.OUTPUT_LAYER] if digital_output else [], "from": dep_source}
    res["rejected_clips"] = data.report["rejected"]
    if chip is not None:
        res["measured"] = chip
    return res


def analog_kws(model: KWSLSTM, ckpt: dict, config: HardwareConfig, digital_output: bool | None = None):
    """The analog twin of a loaded KWS checkpoint as :func:`evaluate_kws` simulates it (and
    ``crossbar export`` exports it): converted under ``config`` with the output layer digital as
    ``digital_output`` / the checkpoint's deployment says, DAC and ADC ranges calibrated on the
    checkpoint's calibration features; not programmed.  Returns (model, digital_output, source)."""
    digital_output, dep_source = resolve_digital_output(ckpt, model.OUTPUT_LAYER, digital_output)
    ana = convert_to_analog(model, config, exclude=(model.OUTPUT_LAYER,) if digital_output else ()).eval()
    calibrate(ana, [ckpt["meta"]["calibration_features"].float()])
    return ana, digital_output, dep_source


def _check_labels(clips: list, task: str, data_dir) -> None:
    """Refuse a split whose clips all fall into one class of the model's task (e.g. a GSC model
    scored on spoken digits, which are all 'unknown'): an accuracy there means nothing."""
    labels = {c.label for c in clips}
    if len(labels) < 2 and len(clips) > 1:
        raise CrossbarInputError(
            f"{data_dir}: all {len(clips)} clips fall into the class {labels.pop()!r} of the "
            f"model's task {task!r}; is this a dataset of another task?"
        )


def _report_rejected(data: speech.SpeechSet, data_dir) -> None:
    """Rejected clips (unreadable, empty, too short, bad rate) are listed, never dropped silently."""
    import sys

    rejected = data.report["rejected"]
    if rejected:
        shown = "; ".join(f"{msg}" for msg in list(rejected.values())[:3])
        print(
            f"warning: {len(rejected)} clip(s) of {data_dir} rejected and not scored (the JSON result lists "
            f"all under 'rejected_clips'): {shown}{' ...' if len(rejected) > 3 else ''}",
            file=sys.stderr,
        )
