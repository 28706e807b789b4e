"""Character-level PTB derivation, BPC, checkpoints."""

import pytest
import torch

from crossbar.errors import CrossbarInputError
from rnn_models.checkpoint import load_checkpoint, save_checkpoint
from rnn_models.data import ptb
from rnn_models.tasks.lm import CharLSTM, evaluate_bpc
from tests.conftest import EVALUATE_RESULT_KEYS


def _write(tmp_path, train="a b\nb a\n", valid="a b\n"):
    (tmp_path / "ptb.train.txt").write_text(train)
    (tmp_path / "ptb.valid.txt").write_text(valid)
    return tmp_path


def test_character_convention(tmp_path):
    _write(tmp_path, train=" the <unk> cat \n\n dog \n")
    syms = ptb.read_symbols(tmp_path / "ptb.train.txt")
    assert syms == list("the_<unk>_cat") + ["<eos>"] + list("dog") + ["<eos>"]
    vocab = ptb.build_vocab(syms)
    assert vocab[0] == "<eos>" and "_" in vocab and "<" in vocab


def test_errors_are_clear(tmp_path):
    _write(tmp_path, valid="a z\n")
    with pytest.raises(CrossbarInputError, match="outside the training vocabulary.*'z'"):
        ptb.load_split(tmp_path, "valid")
    with pytest.raises(CrossbarInputError, match="ptb.test.txt"):
        ptb.load_split(tmp_path, "test")
    (tmp_path / "ptb.valid.txt").write_text("\n \n")
    with pytest.raises(CrossbarInputError, match="empty"):
        ptb.load_split(tmp_path, "valid")
    (tmp_path / "ptb.valid.txt").write_bytes(b"a \xff\xfe b\n")
    with pytest.raises(CrossbarInputError, match="not UTF-8"):
        ptb.load_split(tmp_path, "valid")
    with pytest.raises(CrossbarInputError, match="does not exist"):
        ptb.load_split(tmp_path / "nope", "train")


def test_bpc_matches_hand_computation():
    """A model that always predicts uniform over V symbols has BPC = log2(V)."""
    model = CharLSTM(vocab_size=4, hidden_size=3)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    ids = torch.tensor([0, 1, 2, 3] * 50)
    assert evaluate_bpc(model, ids, n_streams=2, window=7) == pytest.approx(2.0, abs=1e-6)


def test_tiny_corpus_trains_below_unigram_entropy(tmp_path):
    from rnn_models.tasks.lm import train_lm

    text = "".join("abcabd abcabd\n" for _ in range(200))
    _write(tmp_path, train=text, valid=text[:700])
    ids, vocab = ptb.load_split(tmp_path, "valid")
    counts = torch.bincount(ids, minlength=len(vocab)).double()
    p = counts[counts > 0] / counts.sum()
    unigram = float(-(p * p.log2()).sum())
    res = train_lm(
        tmp_path, tmp_path / "m.pt", hidden_size=16, epochs=3, batch=4, bptt=20, lr=1e-2, log=lambda *_: None
    )
    assert res["best_valid_bpc"] < unigram - 0.3


def test_checkpoint_roundtrip_and_rejections(tmp_path):
    model = CharLSTM(5, 4)
    path = save_checkpoint(
        tmp_path / "c.pt", "lm", {"vocab_size": 5, "hidden_size": 4}, model, {"vocab": list("abcde")}
    )
    ck = load_checkpoint(path, task="lm")
    assert torch.equal(ck["state_dict"]["decoder.weight"], model.decoder.weight)
    with pytest.raises(CrossbarInputError, match="for task 'lm', not 'kws'"):
        load_checkpoint(path, task="kws")
    trunc = tmp_path / "t.pt"
    trunc.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CrossbarInputError, match="cannot be read"):
        load_checkpoint(trunc)

    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    evil = tmp_path / "e.pt"
    torch.save({"format": "crossbar.rnn_checkpoint", "x": Evil()}, evil)
    with pytest.raises(CrossbarInputError, match="cannot be read"):
        load_checkpoint(evil)


def test_hwa_finetune_from_init_and_hardware_evaluation(tmp_path):
    from rnn_models.tasks.lm import evaluate_lm, train_lm

    text = "".join("the cat sat on the mat\n" for _ in range(150))
    _write(tmp_path, train=text, valid=text[:900])
    train_lm(tmp_path, tmp_path / "f.pt", hidden_size=12, epochs=2, batch=4, bptt=20, lr=1e-2, log=lambda *_: None)
    res = train_lm(
        tmp_path,
        tmp_path / "h.pt",
        init=tmp_path / "f.pt",
        config="rram_nladc_5b",
        hwa_epochs=1,
        batch=4,
        bptt=20,
        log=lambda *_: None,
    )
    assert res["history"][-1]["phase"] == "hwa"
    r = evaluate_lm(tmp_path / "h.pt", tmp_path, "rram_nladc_5b", mc=2, n_streams=4, window=50)
    assert set(r) == EVALUATE_RESULT_KEYS
    assert r["metric"] == "bpc" and len(r["hardware"]["per_instance"]) == 2 and r["n_samples"] > 0
