"""One run, one folder: the resolved config, generation snapshots as data, the
logbook and hall of fame. The archive (SQLite) and checkpoints usually live in
it too, unless the run shares an archive elsewhere.

Layout::

    RUN/run.json            what the run is: mode, seed, resolved preset, data, archive path
    RUN/archive.sqlite      every evaluation (the cache); RUN/checkpoints/ beside it
    RUN/snapshots/gen_0007.json   the state after generation 7 (numbers and tree strings, no pickle)
    RUN/logbook.csv         one row per generation
    RUN/hall_of_fame.json   the best fully trained architectures
    RUN/summary.json, RUN/formulas.md, RUN/predictor.json, RUN/plots/*.png   written by report

Every file is written to a temporary name and renamed into place, so a kill at
any moment leaves either the old file or the new one. Loading parses numbers
and tree strings against the primitive set; nothing in a run folder is ever
executed.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

from gpnas import gp
from gpnas.engine import Compute, State
from gpnas.errors import FileFormatError
from gpnas.individuals import Male

FORMAT = "gpnas-run"
VERSION = 1


def write_atomic(path: Path, text: str) -> None:
    """Write text so that readers see the old or the new file, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path):
    """A JSON file from a run folder, or one line saying what is wrong with it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"{path}: missing; is this a gpnas run folder?") from None
    except UnicodeDecodeError:
        raise FileFormatError(f"{path}: not UTF-8 text; the file is damaged or not from gpnas") from None
    except json.JSONDecodeError as error:
        raise FileFormatError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); "
                              "the file is truncated or not from gpnas") from None


class RunFolder:
    """The files of one run; knows where things go, not what the engine does."""

    def __init__(self, path):
        self.path = Path(path)

    # ------------------------------------------------------------ the run
    @classmethod
    def create(cls, path, meta: dict) -> "RunFolder":
        folder = cls(path)
        if (folder.path / "run.json").exists():
            raise FileFormatError(f"{folder.path} already holds a run; continue it with "
                                  f"`gpnas evolve --resume {folder.path}` or choose another --out")
        (folder.path / "snapshots").mkdir(parents=True, exist_ok=True)
        write_json(folder.path / "run.json", {"format": FORMAT, "version": VERSION, **meta})
        return folder

    @classmethod
    def open(cls, path) -> "RunFolder":
        folder = cls(path)
        if not folder.path.is_dir() or not (folder.path / "run.json").exists():
            raise FileFormatError(f"{folder.path} is not a gpnas run folder (no run.json); "
                                  "give the folder that `gpnas evolve` created")
        meta = folder.meta
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise FileFormatError(f"{folder.path / 'run.json'}: not a gpnas run of format version {VERSION}")
        return folder

    @property
    def meta(self) -> dict:
        return read_json(self.path / "run.json")

    @property
    def archive_path(self) -> Path:
        return Path(self.meta.get("archive") or self.path / "archive.sqlite")

    @property
    def checkpoints_dir(self) -> Path:
        return self.archive_path.parent / "checkpoints"

    # -------------------------------------------------------- snapshots
    def snapshot_paths(self) -> list[Path]:
        return sorted((self.path / "snapshots").glob("gen_*.json"))

    def save(self, state: State) -> None:
        write_json(self.path / "snapshots" / f"gen_{state.generation:04d}.json", state_to_dict(state))
        write_json(self.path / "hall_of_fame.json", state.hall_of_fame)
        write_atomic(self.path / "logbook.csv", logbook_csv(state.logbook))

    def load_latest(self, pset=None) -> State | None:
        paths = self.snapshot_paths()
        if not paths:
            return None
        return state_from_dict(read_json(paths[-1]), pset or gp.make_pset(), paths[-1])


def logbook_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()


def state_to_dict(state: State) -> dict:
    version, internal, gauss = state.rng_state
    return {
        "generation": state.generation,
        "males": [[float(x) for x in g] for g in state.males],
        "females": [str(f) for f in state.females],
        "rng_state": {"version": version, "internal": list(internal), "gauss_next": gauss},
        "compute": vars(state.compute),
        "charged": list(state.charged),
        "hall_of_fame": state.hall_of_fame,
        "logbook": state.logbook,
        "promotions": state.promotions,
        "mating_stats": state.mating_stats,
        "failures": state.failures,
        "exhausted": state.exhausted,
    }


def state_from_dict(data, pset, where) -> State:
    """Rebuild a State from snapshot data, checking every field's type."""
    def fail(problem):
        raise FileFormatError(f"{where}: {problem}; the snapshot is damaged, delete it to resume "
                              "from the one before")

    if not isinstance(data, dict):
        fail("not a snapshot object")
    try:
        rng = data["rng_state"]
        internal = tuple(int(x) for x in rng["internal"])
        gauss = rng["gauss_next"]
        if len(internal) != 625 or not (gauss is None or isinstance(gauss, (int, float))):
            fail("bad random generator state")
        males = []
        for genes in data["males"]:
            if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in genes):
                fail("a male genome holds something other than numbers")
            males.append(Male(float(x) for x in genes))
        females = [gp.parse_tree(text, pset) for text in data["females"]]
        return State(
            generation=int(data["generation"]),
            males=males,
            females=females,
            rng_state=(int(rng["version"]), internal, gauss),
            compute=Compute(**{k: type(v)(data["compute"][k]) for k, v in vars(Compute()).items()}),
            charged=dict.fromkeys(str(k) for k in data["charged"]),
            hall_of_fame=list(data["hall_of_fame"]),
            logbook=list(data["logbook"]),
            promotions=list(data["promotions"]),
            mating_stats={k: int(v) for k, v in data["mating_stats"].items()},
            failures=list(data["failures"]),
            exhausted=bool(data["exhausted"]),
        )
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError) as error:
        fail(f"missing or malformed field ({error})")
