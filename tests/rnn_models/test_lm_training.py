"""Char-LM training: resumable across invocations, float fine-tuning of an --init checkpoint."""

import pytest
import torch

from crossbar.errors import CrossbarInputError
from rnn_models.checkpoint import load_checkpoint
from rnn_models.tasks.lm import train_lm

TEXT = "".join("the cat sat on the mat\n" for _ in range(120))
QUIET = {"log": lambda *_: None}
SMALL = {"hidden_size": 10, "batch": 4, "bptt": 20, "lr": 1e-2, "weight_drop": 0.2, "ema_decay": 0.9}


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "ptb.train.txt").write_text(TEXT)
    (tmp_path / "ptb.valid.txt").write_text(TEXT[:700])
    return tmp_path


def test_a_stopped_training_continues_to_the_same_weights(corpus):
    whole = train_lm(corpus, corpus / "whole.pt", epochs=2, **SMALL, **QUIET)
    runs = 0
    while True:  # a budget of ~0 minutes stops after every step; each rerun continues
        res = train_lm(corpus, corpus / "parts.pt", epochs=2, max_minutes=1e-9, **SMALL, **QUIET)
        runs += 1
        if res["finished"]:
            break
        assert runs < 500
        assert "train_state" in load_checkpoint(corpus / "parts.pt")["meta"]
    assert runs > 10
    a, b = load_checkpoint(corpus / "whole.pt"), load_checkpoint(corpus / "parts.pt")
    assert "train_state" not in b["meta"]
    assert [h["valid_bpc"] for h in a["meta"]["history"]] == [h["valid_bpc"] for h in b["meta"]["history"]]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k
    assert whole["best_valid_bpc"] == res["best_valid_bpc"]


def test_resuming_with_other_settings_is_refused(corpus):
    train_lm(corpus, corpus / "p.pt", epochs=2, max_minutes=1e-9, **SMALL, **QUIET)
    with pytest.raises(CrossbarInputError, match=r"other settings: float\.lr"):
        train_lm(corpus, corpus / "p.pt", epochs=2, **{**SMALL, "lr": 5e-3}, **QUIET)


def test_finetune_starts_from_init_with_new_regularisation(corpus):
    train_lm(corpus, corpus / "f.pt", epochs=2, **SMALL, **QUIET)
    base = load_checkpoint(corpus / "f.pt")
    res = train_lm(
        corpus,
        corpus / "t.pt",
        init=corpus / "f.pt",
        finetune_epochs=1,
        hidden_size=99,  # ignored: the network is the checkpoint's
        weight_drop=0.0,
        locked_dropout=0.1,
        batch=4,
        bptt=20,
        lr=1e-3,
        **QUIET,
    )
    ck = load_checkpoint(corpus / "t.pt")
    assert ck["arch"]["hidden_size"] == 10
    assert ck["arch"]["weight_drop"] == 0.0 and ck["arch"]["locked_dropout"] == 0.1
    phases = [h["phase"] for h in res["history"]]
    assert phases == ["float", "float", "finetune"]
    # fine-tuning at a small rate starts from the checkpoint: its first epoch is close to it
    assert abs(res["history"][-1]["valid_bpc"] - base["meta"]["valid_bpc"]) < 0.3
    with pytest.raises(CrossbarInputError, match="--finetune-epochs fine-tunes an --init checkpoint"):
        train_lm(corpus, corpus / "u.pt", finetune_epochs=1, **SMALL, **QUIET)


def test_evaluate_takes_the_test_split_when_the_user_has_it(corpus):
    from rnn_models.tasks.lm import evaluate_lm

    train_lm(corpus, corpus / "m.pt", epochs=1, **SMALL, **QUIET)
    with pytest.raises(CrossbarInputError, match="ptb.test.txt"):
        evaluate_lm(corpus / "m.pt", corpus, "ideal", mc=1, split="test", n_streams=2, window=20)
    (corpus / "ptb.test.txt").write_text("the mat sat on the cat\n" * 20)
    test = evaluate_lm(corpus / "m.pt", corpus, "ideal", mc=1, split="test", n_streams=2, window=20)
    valid = evaluate_lm(corpus / "m.pt", corpus, "ideal", mc=1, split="valid", n_streams=2, window=20)
    assert test["n_samples"] != valid["n_samples"] and test["software"] != valid["software"]


def test_cost_workload_of_a_checkpoint_follows_its_deployment(corpus):
    from crossbar.config import load_config
    from rnn_models.checkpoint import save_checkpoint
    from rnn_models.tasks.lm import CharLSTM, load_lm
    from rnn_models.workload import from_checkpoint

    train_lm(corpus, corpus / "m.pt", epochs=1, **SMALL, **QUIET)
    model, ck = load_lm(corpus / "m.pt")
    meta = {**ck["meta"], "deployment": {"hwa_config": "rram_nladc_5b", "digital_layers": ["decoder"]}}
    save_checkpoint(corpus / "d.pt", "lm", ck["arch"], model, meta)
    cfg = load_config("rram_nladc_5b")
    on, off = from_checkpoint(str(corpus / "m.pt"), cfg), from_checkpoint(str(corpus / "d.pt"), cfg)
    assert [m.name for m in on.matrices][-1] == CharLSTM.OUTPUT_LAYER
    assert CharLSTM.OUTPUT_LAYER not in [m.name for m in off.matrices]
    assert off.weights == on.weights - sum(p.numel() for p in model.decoder.parameters())
    assert "decoder digital, off-chip: not costed" in off.description
