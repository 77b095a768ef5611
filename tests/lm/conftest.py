import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test tokenizes into its own cache dir (no ~/.cache writes, no cross-test reuse)."""
    monkeypatch.setenv("MUONLAB_CACHE", str(tmp_path / "cache"))


def write_corpus(root, n_docs=30, words=400, seed=0):
    """A small synthetic corpus of n_docs text files with some structure to learn."""
    import random

    rng = random.Random(seed)
    vocab = ["alpha", "beta", "gamma", "delta", "muon", "adam", "spectral", "matrix", "def", "return", "\n"]
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n_docs):
        text = " ".join(rng.choice(vocab) for _ in range(words))
        (root / f"doc{i:03d}.txt").write_text(text)
    return root
