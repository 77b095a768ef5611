"""Corpora, tokenizers, a deterministic train/val split and memory-mapped token arrays.

Sources (``--data``):
- a text file, or a directory (every UTF-8 text file below it, in sorted path order; hidden and binary files skipped);
- ``hf:NAME`` or ``hf:NAME:CONFIG`` — a Hugging Face dataset, loaded with ``datasets`` (its ``text`` column);
- nothing: the default corpus, the ``.py`` files of the running Python's standard library (≈30 MB, no download).

Tokenizers: ``byte`` (256 byte values + one end-of-document token) or ``bpe`` (a byte-level BPE trained on the
training split with ``tokenizers`` and cached). Documents are split into train/val by a hash of their name
(≥ 20 documents) or, for fewer documents, by taking the last ``val_fraction`` of each one. The token arrays are
written once under the cache dir (``$MUONLAB_CACHE`` or ``~/.cache/muonlab``) and read back with ``np.memmap``.

Batches are a pure function of (seed, step, rank): resuming at step t draws exactly the batches an
uninterrupted run would, with no RNG state to save, and ``world_size`` ranks split one global batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CACHE_VERSION = 1
TOKENIZERS = ("byte", "bpe")
MIN_DOCS_FOR_DOC_SPLIT = 20


class DataError(ValueError):
    """A corpus that cannot be used (missing, empty, too small); the message says what to change."""


def cache_dir() -> Path:
    return Path(os.environ.get("MUONLAB_CACHE", Path.home() / ".cache" / "muonlab"))


# ---------------------------------------------------------------------------------------------- corpora
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _walk_files(root: Path, suffix: str | None = None, skip_dirs=("site-packages", "dist-packages", "__pycache__")):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or (suffix and not name.endswith(suffix)):
                continue
            yield Path(dirpath) / name


def _read_text(path: Path) -> str | None:
    raw = path.read_bytes()
    if b"\x00" in raw[:8192]:
        return None  # binary
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def describe_source(data: str | None) -> str:
    return "stdlib" if data is None else str(data)


def _local_fingerprint(files: list[Path], root: Path) -> str:
    h = hashlib.sha1()
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root) if f != root else f.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _local_files(data: str | None) -> tuple[Path, list[Path]]:
    if data is None:
        root = stdlib_root()
        files = list(_walk_files(root, ".py"))
    else:
        root = Path(data).expanduser()
        if not root.exists():
            raise DataError(f"--data: {data!r} does not exist (expected a text file, a directory, or hf:NAME)")
        files = [root] if root.is_file() else list(_walk_files(root))
    if not files:
        raise DataError(f"--data: no files found in {describe_source(data)!r}")
    return root, files


def load_documents(data: str | None) -> list[tuple[str, str]]:
    """[(name, text)] for the source; raises DataError for missing or empty corpora."""
    if data is not None and str(data).startswith("hf:"):
        return _load_hf(str(data)[3:])
    root, files = _local_files(data)
    docs = []
    for f in files:
        text = _read_text(f)
        if text:
            docs.append((str(f.relative_to(root)) if f != root else f.name, text))
    if not docs or not any(t.strip() for _, t in docs):
        raise DataError(f"--data: {describe_source(data)!r} holds no UTF-8 text (empty or binary files only)")
    return docs


def _load_hf(spec: str) -> list[tuple[str, str]]:
    try:
        import datasets
    except ImportError as err:
        raise DataError("--data hf:NAME needs the 'datasets' package: pip install datasets") from err
    name, _, config = spec.partition(":")
    if not name:
        raise DataError("--data hf:NAME: the dataset name is empty")
    ds = datasets.load_dataset(name, config or None, split="train", cache_dir=str(cache_dir() / "hf"))
    column = "text" if "text" in ds.column_names else None
    if column is None:
        raise DataError(f"--data hf:{spec}: no 'text' column (columns: {ds.column_names})")
    return [(f"{i}", row[column]) for i, row in enumerate(ds) if row[column]]


def source_fingerprint(data: str | None) -> str:
    if data is not None and str(data).startswith("hf:"):
        return "hf:" + str(data)[3:]
    root, files = _local_files(data)
    return f"{root.resolve()}|{_local_fingerprint(files, root)}"


# ---------------------------------------------------------------------------------------------- split
def split_documents(docs: list[tuple[str, str]], val_fraction: float) -> tuple[list[str], list[str]]:
    """Deterministic: by a hash of each document's name (≥ 20 docs), else the tail of every document."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(docs) >= MIN_DOCS_FOR_DOC_SPLIT:
        train, val = [], []
        for name, text in docs:
            bucket = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
            (val if bucket < val_fraction else train).append(text)
        if train and val:
            return train, val
    train, val = [], []
    for _, text in docs:
        cut = int(len(text) * (1.0 - val_fraction))
        train.append(text[:cut])
        val.append(text[cut:])
    return train, val


# ---------------------------------------------------------------------------------------------- tokenizers
class ByteTokenizer:
    """UTF-8 bytes 0..255, and 256 = end of document."""

    name = "byte"
    vocab_size = 257
    eot = 256

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        parts = []
        for text in texts:
            parts.append(np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16))
            parts.append(np.array([self.eot], dtype=np.uint16))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)

    def decode(self, ids) -> str:
        return bytes(int(i) for i in ids if int(i) < 256).decode("utf-8", errors="replace")


class BPETokenizer:
    """Byte-level BPE from ``tokenizers``, trained on the training split; ``<|eot|>`` ends documents."""

    name = "bpe"

    def __init__(self, tokenizer):
        self._tok = tokenizer
        self.vocab_size = tokenizer.get_vocab_size()
        self.eot = tokenizer.token_to_id("<|eot|>")

    @classmethod
    def train(cls, texts: list[str], vocab_size: int) -> "BPETokenizer":
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=["<|eot|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def load(cls, path: Path) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        self._tok.save(str(tmp))
        os.replace(tmp, path)

    def encode_documents(self, texts: list[str]) -> np.ndarray:
        dtype = np.uint16 if self.vocab_size <= 65536 else np.uint32
        out = []
        for enc in self._tok.encode_batch(texts):
            out.append(np.asarray(enc.ids, dtype=dtype))
            out.append(np.array([self.eot], dtype=dtype))
        return np.concatenate(out) if out else np.zeros(0, dtype=dtype)

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids])


# ---------------------------------------------------------------------------------------------- the dataset
@dataclass
class TokenData:
    """Memory-mapped train/val token arrays plus what produced them."""

    train: np.ndarray
    val: np.ndarray
    vocab_size: int
    tokenizer: str
    source: str
    cache_path: Path

    def check_fits(self, batch_size: int, block_size: int) -> None:
        need = batch_size * block_size + 1
        if len(self.train) < need:
            raise DataError(
                f"corpus {self.source!r} is too small: its training split has {len(self.train)} tokens, fewer than one "
                f"batch ({batch_size} x {block_size} + 1 = {need}); use more text or a smaller --batch-size/--block-size")
        if len(self.val) < block_size + 1:
            raise DataError(
                f"corpus {self.source!r}: its validation split has {len(self.val)} tokens, fewer than one sequence "
                f"({block_size} + 1); use more text or a smaller --block-size")


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)


def prepare_data(data: str | None = None, tokenizer: str = "byte", vocab_size: int = 4096,
                 val_fraction: float = 0.05, verbose: bool = False) -> TokenData:
    """Tokenize (once; cached) and memory-map the corpus. See the module docstring for the sources."""
    if tokenizer not in TOKENIZERS:
        raise DataError(f"--tokenizer must be one of {TOKENIZERS}, got {tokenizer!r}")
    if tokenizer == "bpe" and not 257 <= vocab_size <= 1 << 20:
        raise DataError(f"--vocab-size must be in [257, 2^20] for a BPE, got {vocab_size}")
    fingerprint = source_fingerprint(data)
    key = json.dumps([CACHE_VERSION, fingerprint, tokenizer, vocab_size if tokenizer == "bpe" else 0, val_fraction])
    path = cache_dir() / "tokens" / hashlib.sha1(key.encode()).hexdigest()[:16]
    meta_path = path / "meta.json"
    if not meta_path.exists():
        if verbose:
            print(f"muonlab: tokenizing {describe_source(data)} ({tokenizer}) into {path}", flush=True)
        docs = load_documents(data)
        train_texts, val_texts = split_documents(docs, val_fraction)
        if tokenizer == "byte":
            tok = ByteTokenizer()
        else:
            tok = BPETokenizer.train(train_texts, vocab_size)
        path.mkdir(parents=True, exist_ok=True)
        if tokenizer == "bpe":
            tok.save(path / "tokenizer.json")
        _atomic_save_npy(path / "train.npy", tok.encode_documents(train_texts))
        _atomic_save_npy(path / "val.npy", tok.encode_documents(val_texts))
        meta = {"source": describe_source(data), "fingerprint": fingerprint, "tokenizer": tokenizer,
                "vocab_size": tok.vocab_size, "val_fraction": val_fraction,
                "documents": len(docs), "cache_version": CACHE_VERSION}
        tmp = meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, meta_path)  # written last: its presence means the cache is complete
    meta = json.loads(meta_path.read_text())
    train = np.load(path / "train.npy", mmap_mode="r")
    val = np.load(path / "val.npy", mmap_mode="r")
    if len(train) == 0:
        raise DataError(f"corpus {describe_source(data)!r} produced no training tokens")
    return TokenData(train, val, int(meta["vocab_size"]), tokenizer, describe_source(data), path)


def load_tokenizer(token_data: TokenData):
    if token_data.tokenizer == "byte":
        return ByteTokenizer()
    return BPETokenizer.load(token_data.cache_path / "tokenizer.json")


# ---------------------------------------------------------------------------------------------- batches
def _offsets(n_tokens: int, block_size: int, count: int, seed: int, stream: int, step: int) -> np.ndarray:
    rng = np.random.default_rng([seed, stream, step])
    return rng.integers(0, n_tokens - block_size - 1 + 1, size=count)


def _gather(tokens: np.ndarray, offsets: np.ndarray, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([np.asarray(tokens[o:o + block_size + 1], dtype=np.int64) for o in offsets])
    t = torch.from_numpy(rows)
    return t[:, :-1], t[:, 1:]


class BatchSampler:
    """Random contiguous windows; the batch of step t depends only on (seed, t), and rank r of world_size takes
    rows [r·B, (r+1)·B) of one global batch of world_size·B rows."""

    def __init__(self, tokens: np.ndarray, batch_size: int, block_size: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if len(tokens) < block_size + 1:
            raise DataError(f"{len(tokens)} tokens are fewer than one sequence of block_size + 1 = {block_size + 1}")
        self.tokens, self.batch_size, self.block_size = tokens, batch_size, block_size
        self.seed, self.rank, self.world_size = seed, rank, world_size

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = _offsets(len(self.tokens), self.block_size, self.batch_size * self.world_size, self.seed, 0, step)
        mine = offsets[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
        return _gather(self.tokens, mine, self.block_size)


def eval_batches(tokens: np.ndarray, batch_size: int, block_size: int, n_batches: int, seed: int = 1234):
    """A fixed list of validation batches (the same at every evaluation, and across runs with the same seed)."""
    return [_gather(tokens, _offsets(len(tokens), block_size, batch_size, seed, 1, i), block_size)
            for i in range(n_batches)]
