import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gpnas.errors import DataError
from gpnas.train import data
from gpnas.train.data import cache_dir, load_dataset

pytestmark = pytest.mark.usefixtures("offline")  # see conftest.py


@pytest.fixture
def canonical(monkeypatch, tiny_corpus_text):
    """Make the tiny corpus 'the canonical text' by pointing the expected hash at it."""
    text = tiny_corpus_text.encode()
    monkeypatch.setattr(data, "SHA256", hashlib.sha256(text).hexdigest())
    return text


def write_text(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.txt").write_bytes(payload)
    return folder


def test_split_and_vocabulary_follow_nanogpt(tiny_dataset, tiny_corpus_dir):
    text = (tiny_corpus_dir / "input.txt").read_text()
    assert tiny_dataset.chars == "".join(sorted(set(text)))
    assert tiny_dataset.vocab_size == len(set(text))
    assert len(tiny_dataset.train_ids) == int(len(text) * 0.9)
    assert len(tiny_dataset.train_ids) + len(tiny_dataset.val_ids) == len(text)
    assert tiny_dataset.train_ids.dtype == np.uint16 and isinstance(tiny_dataset.train_ids, np.memmap)
    assert tiny_dataset.decode(tiny_dataset.train_ids) + tiny_dataset.decode(tiny_dataset.val_ids) == text
    assert tiny_dataset.decode(tiny_dataset.encode("Good night.\n")) == "Good night.\n"


def test_prepared_ids_live_in_the_cache_not_the_data_folder(tiny_dataset, tiny_corpus_dir):
    prepared = cache_dir() / "prepared" / tiny_dataset.sha256
    assert sorted(p.name for p in prepared.iterdir()) == ["meta.json", "train.bin", "val.bin"]
    assert [p.name for p in tiny_corpus_dir.iterdir()] == ["input.txt"]
    before = (prepared / "train.bin").stat().st_mtime_ns
    again = load_dataset(tiny_corpus_dir)  # reuses the prepared files
    assert (prepared / "train.bin").stat().st_mtime_ns == before
    assert np.array_equal(again.val_ids, tiny_dataset.val_ids)


def test_custom_text_given_explicitly_is_a_named_unverified_dataset(tiny_dataset, tiny_corpus_dir):
    assert tiny_dataset.name == "tiny_corpus"
    assert tiny_dataset.source == "--data-dir"
    assert not tiny_dataset.hash_verified
    assert tiny_dataset.sha256 == hashlib.sha256((tiny_corpus_dir / "input.txt").read_bytes()).hexdigest()


def test_batches_are_shifted_windows_drawn_from_the_generator(tiny_dataset):
    x, y = tiny_dataset.get_batch("train", 8, 16, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    x2, _ = tiny_dataset.get_batch("train", 8, 16, torch.Generator().manual_seed(3))
    x3, _ = tiny_dataset.get_batch("train", 8, 16, torch.Generator().manual_seed(4))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    row = tiny_dataset.decode(x[0].tolist())
    assert row in tiny_dataset.decode(tiny_dataset.train_ids)


def test_a_split_too_short_for_the_block_is_a_data_error(tiny_dataset):
    with pytest.raises(DataError, match="block size"):
        tiny_dataset.get_batch("val", 2, len(tiny_dataset.val_ids), torch.Generator())


def test_lookup_order_explicit_then_environment_then_cache(tmp_path, monkeypatch, canonical):
    explicit = write_text(tmp_path / "explicit", b"explicit text, first in line\n")
    env = write_text(tmp_path / "env", b"environment text, second\n")
    write_text(cache_dir() / "shakespeare_char", canonical)
    monkeypatch.setenv("GPNAS_DATA_DIR", str(env))
    assert load_dataset(explicit).source == "--data-dir"
    found = load_dataset()
    assert (found.source, found.name, found.hash_verified) == ("GPNAS_DATA_DIR", "env", False)
    monkeypatch.delenv("GPNAS_DATA_DIR")
    found = load_dataset()
    assert (found.source, found.name, found.hash_verified) == ("cache", "shakespeare_char", True)


def test_download_is_verified_and_lands_in_the_cache(monkeypatch, canonical):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(canonical))
    found = load_dataset()
    assert (found.source, found.name, found.hash_verified) == ("download", "shakespeare_char", True)
    assert (cache_dir() / "shakespeare_char" / "input.txt").read_bytes() == canonical
    assert load_dataset().source == "cache"


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(monkeypatch, canonical):
    monkeypatch.setattr(data.urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"tampered"))
    with pytest.raises(DataError, match="SHA-256"):
        load_dataset()
    assert not (cache_dir() / "shakespeare_char" / "input.txt").exists()


def test_offline_without_a_copy_says_where_to_put_the_file():
    with pytest.raises(DataError) as error:
        load_dataset()
    message = str(error.value)
    assert "cannot download" in message and str(cache_dir() / "shakespeare_char") in message
    assert "\n" not in message
    with pytest.raises(DataError, match="no copy"):
        load_dataset(download=False)


def test_a_cached_shakespeare_with_the_wrong_hash_is_an_error():
    write_text(cache_dir() / "shakespeare_char", b"not the real text\n")
    with pytest.raises(DataError, match="not the canonical"):
        load_dataset()


@pytest.mark.parametrize("payload, words", [(b"", "empty"), (b"  \n", "empty"),
                                            (b"\xff\xfe\xfa binary", "UTF-8"), (b"a\x00b", "binary")])
def test_empty_or_binary_text_is_a_data_error(tmp_path, payload, words):
    with pytest.raises(DataError, match=words):
        load_dataset(write_text(tmp_path / "bad", payload))


def test_a_folder_without_input_txt_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="no input.txt"):
        load_dataset(tmp_path)


def test_unknown_characters_cannot_be_encoded(tiny_dataset):
    with pytest.raises(DataError, match="vocabulary"):
        tiny_dataset.encode("§")


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    assert cache_dir() == Path(os.environ["GPNAS_CACHE_DIR"])
    monkeypatch.delenv("GPNAS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "gpnas"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "gpnas"
