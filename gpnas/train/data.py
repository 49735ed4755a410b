"""The shakespeare_char dataset: find the text, verify it, prepare uint16 ids, serve batches.

Lookup order (the first that exists wins):

1. an explicit folder (``--data-dir``) holding ``input.txt``;
2. the folder named by ``$GPNAS_DATA_DIR``;
3. the user cache, ``cache_dir()/shakespeare_char/input.txt``;
4. a download from the canonical char-rnn address, verified against its SHA-256.

A folder given explicitly (1 or 2) may hold any UTF-8 text: it becomes a custom
dataset named after the folder, with ``hash_verified=False``. A file in the cache
is *named* shakespeare_char, so there a wrong hash is an error.

The text is split as nanoGPT does (first 90 % train, last 10 % validation),
characters are numbered in sorted order, and the ids are written once as uint16
under ``cache_dir()/prepared/<sha256>/`` (never into the data folder, which may
be read-only) and read back with ``np.memmap``: opening a dataset costs one hash
of the text, and a batch is one vectorised gather.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from gpnas.errors import DataError

NAME = "shakespeare_char"
URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DOWNLOAD_TIMEOUT_S = 10.0
TRAIN_FRACTION = 0.9
PREPARED_FORMAT = 1  # bump when the prepared files change meaning


def cache_dir() -> Path:
    """$GPNAS_CACHE_DIR, else $XDG_CACHE_HOME/gpnas, else ~/.cache/gpnas (not created here)."""
    if os.environ.get("GPNAS_CACHE_DIR"):
        return Path(os.environ["GPNAS_CACHE_DIR"]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "gpnas"
    return Path.home() / ".cache" / "gpnas"


@dataclass(frozen=True, eq=False)  # eq=False: identity equality, hashable (arrays cannot be compared as values)
class Dataset:
    """A character-level corpus: vocabulary, train/val ids (uint16 memmaps) and batches."""

    name: str  # "shakespeare_char" or the folder name
    source: str  # how it was found: "--data-dir", "GPNAS_DATA_DIR", "cache", "download"
    text_path: Path
    sha256: str  # of input.txt; the evaluation cache keys on it
    hash_verified: bool  # True when it matches the canonical shakespeare hash
    chars: str  # sorted vocabulary
    train_ids: np.ndarray  # uint16 memmap
    val_ids: np.ndarray  # uint16 memmap

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @cached_property
    def _stoi(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, text: str) -> list[int]:
        try:
            return [self._stoi[ch] for ch in text]
        except KeyError as error:
            raise DataError(
                f"character {error.args[0]!r} is not in the {self.name} vocabulary: "
                "use only characters that occur in the training text"
            ) from None

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def get_batch(self, split: str, batch_size: int, block_size: int,
                  generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows of the split: x (batch, block) int64 and y, x shifted by one.

        Offsets come from ``generator`` (a CPU generator), so the same generator
        state always yields the same batch whatever the device.
        """
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', not {split!r}")
        data = self.train_ids if split == "train" else self.val_ids
        if len(data) <= block_size:
            raise DataError(
                f"the {split} split of {self.name} holds {len(data)} ids, too few for block_size "
                f"{block_size}: use a block size below {len(data)} or a longer text"
            )
        offsets = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
        # one fancy-indexed gather from the memmap: (batch, block + 1) uint16
        window = data[offsets.numpy()[:, None] + np.arange(block_size + 1)]
        window = torch.from_numpy(window.astype(np.int64))
        x, y = window[:, :-1], window[:, 1:]
        if torch.device(device).type == "cuda":
            x = x.pin_memory().to(device, non_blocking=True)
            y = y.pin_memory().to(device, non_blocking=True)
        elif str(device) != "cpu":
            x, y = x.to(device), y.to(device)
        return x, y


def load_dataset(data_dir: str | Path | None = None, *, download: bool = True) -> Dataset:
    """Find, verify and prepare the text (see the module docstring for the order)."""
    if data_dir is not None:
        text_path, source = _explicit_text(Path(data_dir), "--data-dir"), "--data-dir"
    elif os.environ.get("GPNAS_DATA_DIR"):
        text_path = _explicit_text(Path(os.environ["GPNAS_DATA_DIR"]), "GPNAS_DATA_DIR")
        source = "GPNAS_DATA_DIR"
    else:
        text_path = cache_dir() / NAME / "input.txt"
        source = "cache"
        if not text_path.is_file():
            if not download:
                raise DataError(
                    f"no copy of {NAME} found: put input.txt in {text_path.parent}, "
                    "set GPNAS_DATA_DIR or pass --data-dir"
                )
            _download(URL, text_path)
            source = "download"

    raw = text_path.read_bytes()
    sha256 = hashlib.sha256(raw).hexdigest()
    verified = sha256 == SHA256
    if source in ("cache", "download") and not verified:
        raise DataError(
            f"{text_path} has SHA-256 {sha256[:12]}..., not the canonical {NAME} text: "
            "delete it to download again, or pass the text's folder with --data-dir"
        )
    name = NAME if verified else (text_path.parent.name or "custom")
    chars, train_ids, val_ids = _prepared(raw, sha256, text_path)
    return Dataset(name=name, source=source, text_path=text_path, sha256=sha256,
                   hash_verified=verified, chars=chars, train_ids=train_ids, val_ids=val_ids)


def _explicit_text(folder: Path, given_by: str) -> Path:
    folder = folder.expanduser()
    if folder.is_file():  # a path to the text itself is accepted too
        return folder
    text_path = folder / "input.txt"
    if not text_path.is_file():
        raise DataError(f"{given_by} names {folder}, which holds no input.txt: put the text there as input.txt")
    return text_path


def _download(url: str, dest: Path) -> None:
    """Fetch url into dest, verified against SHA256; only a verified file is ever written there."""
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            raw = response.read()
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise DataError(
            f"cannot download {NAME} ({reason}): put input.txt in {dest.parent}, "
            "set GPNAS_DATA_DIR or pass --data-dir"
        ) from None
    got = hashlib.sha256(raw).hexdigest()
    if got != SHA256:
        raise DataError(
            f"the download from {url} has SHA-256 {got[:12]}..., not {SHA256[:12]}...: "
            f"put a verified input.txt in {dest.parent} or pass --data-dir"
        )
    _write_atomic(dest, raw)


def _write_atomic(path: Path, payload: bytes) -> None:
    """Write to a temporary file beside path, then rename: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.name + ".", suffix=".tmp",
                                     delete=False) as handle:
        handle.write(payload)
    os.replace(handle.name, path)


def _prepared(raw: bytes, sha256: str, text_path: Path) -> tuple[str, np.ndarray, np.ndarray]:
    """Vocabulary and memmapped train/val ids, prepared once per text under the cache."""
    folder = cache_dir() / "prepared" / sha256
    meta_path = folder / "meta.json"
    meta = _read_meta(meta_path)
    if meta is None:
        text = _decode_text(raw, text_path)
        chars = "".join(sorted(set(text)))
        if len(chars) > np.iinfo(np.uint16).max + 1:
            raise DataError(f"{text_path} uses {len(chars)} distinct characters, more than uint16 ids hold: "
                            "use a text with at most 65,536 distinct characters")
        stoi = {ch: i for i, ch in enumerate(chars)}
        ids = np.fromiter((stoi[ch] for ch in text), dtype=np.uint16, count=len(text))
        n_train = int(len(ids) * TRAIN_FRACTION)
        _write_atomic(folder / "train.bin", ids[:n_train].tobytes())
        _write_atomic(folder / "val.bin", ids[n_train:].tobytes())
        meta = {"format": PREPARED_FORMAT, "chars": chars, "n_train": n_train, "n_val": len(ids) - n_train}
        # meta last: its presence means both id files are complete
        _write_atomic(meta_path, json.dumps(meta).encode())
    return meta["chars"], _memmap(folder / "train.bin"), _memmap(folder / "val.bin")


def _read_meta(meta_path: Path) -> dict | None:
    """The prepared files' description, or None when they are missing, stale or incomplete."""
    try:
        meta = json.loads(meta_path.read_text())
        complete = (meta.get("format") == PREPARED_FORMAT
                    and (meta_path.parent / "train.bin").stat().st_size == 2 * meta["n_train"]
                    and (meta_path.parent / "val.bin").stat().st_size == 2 * meta["n_val"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return meta if complete else None


def _decode_text(raw: bytes, text_path: Path) -> str:
    if not raw.strip():
        raise DataError(f"{text_path} is empty: put a UTF-8 text there (at least a few thousand characters)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{text_path} is not UTF-8 text: convert it to UTF-8 or point at a text file") from None
    if "\x00" in text:
        raise DataError(f"{text_path} holds NUL bytes, so it is binary, not text: point at a UTF-8 text file")
    return text


def _memmap(path: Path) -> np.ndarray:
    if path.stat().st_size == 0:  # np.memmap refuses empty files
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype=np.uint16, mode="r")
