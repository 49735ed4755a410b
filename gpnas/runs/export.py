"""A run's own full-budget curves as a curve file (``docs/curves.md``): the
library behind ``gpnas curves export``.

Only the evaluations the run paid for count: the keys the latest snapshot
lists under ``charged``, in the order they were charged, the same selection
as the engine's ``completed_curves``. An archive shared with other runs
(``--archive``) holds their evaluations too; those are left out, so the file
is what this run computed and nothing else.

One line per full-budget evaluation::

    {"task": "shakespeare_char", "config_id": KEY, "metric": "val_loss", "higher_is_better": false,
     "values": [val loss at each evaluation], "x": [its steps],
     "train_values": [train loss on the fixed batches at the same evaluations],
     "config": {"n_layer", "n_head", "n_embd", "dropout", "learning_rate", "n_params"}}

A run that diverged on its full budget is kept: its values stop at the last
finite evaluation, ``horizon`` says how many evaluations the complete run
would have had and ``"diverged": true`` marks it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from gpnas.config import hyperparameter_features
from gpnas.errors import FileFormatError, GpnasError
from gpnas.predict.curves import curve_from_learning_curve
from gpnas.runs.archive import Archive, EvaluationRecord
from gpnas.runs.folder import RunFolder, read_json

CURVE_LISTS = ("eval_steps", "val_loss", "eval_train_loss")


@dataclass
class ExportCounts:
    """What the run's charged evaluations became."""

    complete: int = 0      # full budget, written
    diverged: int = 0      # full budget, diverged: written, cut where they diverged
    early: int = 0         # early (prefix) evaluations: not curves of a finished run
    failed: int = 0        # failed, or charged but missing from the archive
    not_charged: int = 0   # evaluations in the archive this run did not pay for (the reference aside)
    reference: int = 0     # the preset's reference architecture, trained beside the run, not charged to it
    shared: bool = False   # the archive is shared with other runs (--archive)

    @property
    def written(self) -> int:
        return self.complete + self.diverged


def charged_keys(folder: RunFolder) -> list[str]:
    """Evaluation keys the run paid for, in the order charged (from its latest snapshot)."""
    latest = folder.load_latest()
    if latest is None:
        raise GpnasError(f"{folder.path} has no snapshot yet (no generation finished); "
                         "let the run finish a generation, then export")
    data, where = latest
    charged = data.get("charged") if isinstance(data, dict) else None
    if not isinstance(charged, list) or not all(isinstance(k, str) for k in charged):
        raise FileFormatError(f"{where}: 'charged' must be a list of evaluation keys; the snapshot is damaged")
    return list(dict.fromkeys(charged))


def charged_records(archive: Archive, keys) -> list[EvaluationRecord | None]:
    """The archive's record of each key (None where the archive lacks it)."""
    return [archive.get(key) for key in keys]


def is_full_budget(record: EvaluationRecord) -> bool:
    return record.stop_at >= record.max_iters


def record_curve(record: EvaluationRecord, task: str) -> dict:
    """One full-budget record as a curve-file line (a dict ready for json.dumps)."""
    curve = record.curve
    if not (isinstance(curve, dict) and all(isinstance(curve.get(k), list) for k in CURVE_LISTS)
            and len({len(curve[k]) for k in CURVE_LISTS}) == 1 and curve["val_loss"]
            and all(isinstance(v, (int, float)) and math.isfinite(v)
                    for k in CURVE_LISTS for v in curve[k])
            and isinstance(curve.get("max_iters"), int)):
        raise FileFormatError(f"archive record {record.key}: its learning curve is malformed (needs "
                              f"{', '.join(CURVE_LISTS)} of one length, finite numbers, and max_iters); "
                              "the archive is damaged or not from this gpnas")
    arch = record.arch
    config = {"n_layer": int(arch["n_layer"]), "n_head": int(arch["n_head"]), "n_embd": int(arch["n_embd"]),
              "dropout": float(arch["dropout"]), "learning_rate": float(arch["learning_rate"]),
              "n_params": int(hyperparameter_features(arch)["n_params"])}
    line = {"task": task, "config_id": record.key, "metric": "val_loss", "higher_is_better": False,
            "values": [float(v) for v in curve["val_loss"]],
            "x": [int(s) for s in curve["eval_steps"]],
            "train_values": [float(v) for v in curve["eval_train_loss"]],
            "config": config}
    if record.status == "diverged":
        line["horizon"] = curve_from_learning_curve(curve).n  # the evaluations a complete run has
        line["diverged"] = True
    return line


def reference_key(folder: RunFolder) -> str | None:
    """The evaluation key of the run's reference architecture (summary.json), if the run has finished."""
    path = folder.path / "summary.json"
    try:
        summary = read_json(path) if path.is_file() else None
    except GpnasError:
        return None
    reference = summary.get("reference") if isinstance(summary, dict) else None
    key = reference.get("key") if isinstance(reference, dict) else None
    return key if isinstance(key, str) else None


def export_curves(run_dir, out) -> ExportCounts:
    """Write the run's full-budget curves (its own evaluations only) to ``out`` as JSON Lines.

    Raises GpnasError when ``run_dir`` is not a run folder, has no snapshot,
    its archive is missing, or the run has no full-budget curve yet.
    """
    folder = RunFolder.open(run_dir)
    task = str((folder.meta.get("data") or {}).get("name") or "default")
    keys = charged_keys(folder)
    if not folder.archive_path.is_file():
        raise FileFormatError(f"{folder.archive_path}: the run's archive is missing; "
                              "restore it (run.json names where it lives)")
    counts, lines = ExportCounts(), []
    with Archive(folder.archive_path) as archive:
        for record in charged_records(archive, keys):
            if record is None or record.status == "failed":
                counts.failed += 1
            elif not is_full_budget(record):
                counts.early += 1
            elif record.status in ("complete", "diverged"):
                lines.append(json.dumps(record_curve(record, task), allow_nan=False))
                counts.complete += record.status == "complete"
                counts.diverged += record.status == "diverged"
        reference = reference_key(folder)
        counts.reference = int(reference is not None and reference not in keys and reference in archive)
        counts.not_charged = archive.count() - sum(key in archive for key in keys) - counts.reference
        counts.shared = folder.archive_external
    if not lines:
        raise GpnasError(f"{folder.path} has no full-budget curve yet ({counts.early} early, {counts.failed} "
                         "failed evaluations); continue the run with `gpnas evolve --resume` until one "
                         "architecture is trained to completion")
    Path(out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return counts
