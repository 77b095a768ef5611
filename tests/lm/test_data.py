import numpy as np
import pytest

from muonlab.tasks.lm.data import (
    BatchSampler, ByteTokenizer, DataError, eval_batches, load_documents, prepare_data, split_documents,
)

from .conftest import write_corpus


def test_directory_corpus_split_is_deterministic_and_disjoint(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    a = prepare_data(str(root), "byte", val_fraction=0.2)
    docs = load_documents(str(root))
    train1, val1 = split_documents(docs, 0.2)
    train2, val2 = split_documents(list(reversed(docs)), 0.2)   # by name hash, not by order
    assert sorted(val1) == sorted(val2) and sorted(train1) == sorted(train2)
    assert set(val1).isdisjoint(train1) and len(val1) + len(train1) == len(docs)
    assert len(a.train) == sum(len(t) + 1 for t in train1)       # bytes + one end-of-document token each
    assert a.vocab_size == 257 and a.train.max() <= 256


def test_cache_is_reused_and_memory_mapped(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    a = prepare_data(str(root), "byte")
    mtime = (a.cache_path / "train.npy").stat().st_mtime_ns
    b = prepare_data(str(root), "byte")
    assert isinstance(b.train, np.memmap) and np.array_equal(a.train, b.train)
    assert (b.cache_path / "train.npy").stat().st_mtime_ns == mtime
    assert not list(a.cache_path.glob("*.tmp"))


def test_single_file_is_split_by_its_tail(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("hello world " * 500)
    d = prepare_data(str(f), "byte", val_fraction=0.1)
    assert len(d.val) == pytest.approx(0.1 * 6000, abs=3)
    assert ByteTokenizer().decode(d.train[:11]) == "hello world"


def test_bpe_tokenizer_round_trips_and_compresses(tmp_path):
    root = write_corpus(tmp_path / "corpus")
    d = prepare_data(str(root), "bpe", vocab_size=300)
    assert d.vocab_size <= 300
    from muonlab.tasks.lm.data import load_tokenizer

    tok = load_tokenizer(d)
    n_bytes = sum(len(t.encode()) + 1 for t in split_documents(load_documents(str(root)), 0.05)[0])
    assert len(d.train) < 0.6 * n_bytes
    text = tok.decode(d.train[:50])
    assert "alpha" in text or "beta" in text or "muon" in text


def test_batches_are_a_function_of_seed_and_step_and_ranks_split_one_batch(tmp_path):
    tokens = np.arange(10_000, dtype=np.uint16)
    s = BatchSampler(tokens, batch_size=4, block_size=8, seed=3)
    x1, y1 = s.batch(5)
    x2, y2 = BatchSampler(tokens, 4, 8, seed=3).batch(5)
    assert np.array_equal(x1, x2) and np.array_equal(y1[:, :-1], x1[:, 1:])
    assert not np.array_equal(s.batch(6)[0], x1)
    full = BatchSampler(tokens, 8, 8, seed=3, world_size=1)
    # rank r of 2 with batch 4 = rows of the world-size-2 global batch
    r0 = BatchSampler(tokens, 4, 8, seed=3, rank=0, world_size=2).batch(7)[0]
    r1 = BatchSampler(tokens, 4, 8, seed=3, rank=1, world_size=2).batch(7)[0]
    assert np.array_equal(np.concatenate([r0, r1]), full.batch(7)[0])
    v = eval_batches(tokens, 2, 8, 3)
    assert len(v) == 3 and all(np.array_equal(a[0], b[0]) for a, b in zip(v, eval_batches(tokens, 2, 8, 3)))


def test_bad_corpora_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        prepare_data(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no files"):
        prepare_data(str(tmp_path / "empty"))
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(DataError, match="no UTF-8 text"):
        prepare_data(str(tmp_path / "blank.txt"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.bin").write_bytes(b"\x00\x01\x02" * 100)
    with pytest.raises(DataError, match="no UTF-8 text"):
        prepare_data(str(tmp_path / "bin"))
    (tmp_path / "small.txt").write_text("tiny corpus " * 20)
    d = prepare_data(str(tmp_path / "small.txt"))
    with pytest.raises(DataError, match="too small"):
        d.check_fits(batch_size=16, block_size=128)
    with pytest.raises(DataError, match="tokenizer"):
        prepare_data(str(tmp_path / "small.txt"), tokenizer="words")


def test_hf_source_without_datasets_says_how_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *a, **k):
        if name == "datasets":
            raise ImportError("no datasets")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(DataError, match="pip install datasets"):
        load_documents("hf:tiny_shakespeare")
