"""Shared fixtures: an isolated gpnas cache for every test, and a tiny generated corpus."""

import random

import pytest

TINY_WORDS = ("the", "king", "queen", "lord", "good", "night", "speak", "thou", "my", "of", "and", "to")


def make_corpus(n_chars: int = 20_000, seed: int = 0) -> str:
    """Shakespeare-flavoured lines from a dozen words: structured enough that a tiny model learns fast."""
    rng = random.Random(seed)
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choice(TINY_WORDS) for _ in range(rng.randint(3, 8))).capitalize() + ".\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own GPNAS_CACHE_DIR, so nothing reads or writes the user's cache."""
    path = tmp_path_factory.mktemp("gpnas-cache")
    monkeypatch.setenv("GPNAS_CACHE_DIR", str(path))
    return path


@pytest.fixture
def offline(monkeypatch):
    """No download reaches the network: every attempt fails as it would offline."""
    import urllib.error

    from gpnas.train import data

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("offline in tests")

    monkeypatch.setattr(data.urllib.request, "urlopen", refuse)
    monkeypatch.delenv("GPNAS_DATA_DIR", raising=False)


@pytest.fixture
def tiny_corpus_text():
    """About 20,000 characters of generated text (the same every time)."""
    return make_corpus()


@pytest.fixture
def tiny_corpus_dir(tmp_path, tiny_corpus_text):
    """A folder holding input.txt with tiny_corpus_text."""
    folder = tmp_path / "tiny_corpus"
    folder.mkdir()
    (folder / "input.txt").write_text(tiny_corpus_text, encoding="utf-8")
    return folder


@pytest.fixture
def tiny_dataset(tiny_corpus_dir):
    """The tiny corpus loaded as a gpnas Dataset (imports torch: trainer-side tests only)."""
    from gpnas.train.data import load_dataset

    return load_dataset(tiny_corpus_dir)
