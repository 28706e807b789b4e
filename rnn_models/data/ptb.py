"""Character-level Penn Treebank, derived from Mikolov's word-level files.

Convention (ours, documented in docs/tasks.md, matching Mikolov's ``ptb.char.*`` files):

* each line of ``ptb.{train,valid,test}.txt`` is stripped and split on whitespace;
* words are joined by the word-boundary symbol ``_`` and spelled out character by character
  (the ``<unk>`` token stays as its five characters ``<``, ``u``, ``n``, ``k``, ``>``);
* every line ends with one end-of-line symbol ``<eos>`` (index 0 of the vocabulary);
* the vocabulary is ``<eos>`` followed by the sorted set of characters of the *training* split.
  A valid/test character outside it is an error (never silently mapped).

Bits per character (BPC) are the mean cross-entropy in bits over every predicted symbol,
``<eos>`` and ``_`` included.
"""

from __future__ import annotations

from pathlib import Path

import torch

from crossbar.errors import CrossbarInputError

EOS = "<eos>"
WORD_BOUNDARY = "_"
SPLITS = ("train", "valid", "test")


def split_path(data_dir: str | Path, split: str) -> Path:
    """Path of ``ptb.<split>.txt`` in ``data_dir``, checked to exist."""
    if split not in SPLITS:
        raise CrossbarInputError(f"PTB split {split!r} is not one of {', '.join(SPLITS)}")
    root = Path(data_dir)
    if not root.is_dir():
        raise CrossbarInputError(f"PTB data folder {str(root)!r} does not exist or is not a folder")
    path = root / f"ptb.{split}.txt"
    if not path.is_file():
        raise CrossbarInputError(
            f"PTB split {split!r} is missing: expected the file {str(path)!r} "
            "(Mikolov's ptb.train.txt / ptb.valid.txt / ptb.test.txt)"
        )
    return path


def read_symbols(path: str | Path) -> list[str]:
    """Read one PTB file as a list of symbols (single characters, ``_`` and ``<eos>``)."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CrossbarInputError(f"{path}: not UTF-8 text (byte {exc.start}); PTB files are plain ASCII") from None
    symbols: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        symbols.extend(WORD_BOUNDARY.join(words))
        symbols.append(EOS)
    if not symbols:
        raise CrossbarInputError(f"{path}: the file is empty (no words on any line)")
    return symbols


def build_vocab(train_symbols: list[str]) -> list[str]:
    """Vocabulary: ``<eos>`` then the sorted distinct characters of the training split."""
    return [EOS] + sorted(set(train_symbols) - {EOS})


def encode(symbols: list[str], vocab: list[str], source: str = "text") -> torch.Tensor:
    """Map symbols to int64 indices; a symbol outside ``vocab`` is a clear error."""
    index = {s: i for i, s in enumerate(vocab)}
    try:
        return torch.tensor([index[s] for s in symbols], dtype=torch.long)
    except KeyError as exc:
        unknown = sorted(set(symbols) - set(index))
        raise CrossbarInputError(
            f"{source}: {len(unknown)} character(s) outside the training vocabulary, "
            f"e.g. {unknown[:5]!r} (first: {exc.args[0]!r}); the vocabulary has {len(vocab)} symbols"
        ) from None


def load_split(data_dir: str | Path, split: str, vocab: list[str] | None = None):
    """Load one split as (indices, vocab); the vocabulary comes from train unless given."""
    if vocab is None:
        vocab = build_vocab(read_symbols(split_path(data_dir, "train")))
    path = split_path(data_dir, split)
    return encode(read_symbols(path), vocab, source=str(path)), vocab


def batchify(ids: torch.Tensor, n_streams: int) -> torch.Tensor:
    """Cut a 1-D index sequence into ``n_streams`` equal contiguous streams: shape (T, n_streams)."""
    if n_streams < 1:
        raise CrossbarInputError(f"n_streams must be >= 1, got {n_streams}")
    length = ids.numel() // n_streams
    if length < 2:
        raise CrossbarInputError(f"a sequence of {ids.numel()} symbols is too short for {n_streams} streams")
    return ids[: length * n_streams].view(n_streams, length).t().contiguous()
