"""``gpnas data`` and ``gpnas train``: look at the dataset, train one architecture.

A thin layer over gpnas.train.data and gpnas.train.trainer: options become a TrainConfig,
library errors (ConfigError, DataError) reach the group, which prints one line.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import click

from gpnas.cli.output import Progress, echo
from gpnas.config import check_fits
from gpnas.train.data import cache_dir, load_dataset
from gpnas.train.model import count_params
from gpnas.train.trainer import TrainConfig, default_threads, resolve_device, train

_DEFAULTS = TrainConfig()
_DATA_DIR_HELP = ("folder holding input.txt (default: $GPNAS_DATA_DIR, then the user cache, "
                  "then a verified download)")


@click.command("data")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=_DATA_DIR_HELP)
def data_command(data_dir):
    """Show where the text comes from, its hash status, vocabulary and split sizes."""
    dataset = load_dataset(data_dir)
    status = ("verified: the canonical shakespeare_char text" if dataset.hash_verified
              else "custom text (not the canonical shakespeare_char hash)")
    total = len(dataset.train_ids) + len(dataset.val_ids)
    rows = [
        ("dataset", dataset.name),
        ("source", dataset.source),
        ("path", str(dataset.text_path)),
        ("sha256", f"{dataset.sha256}  {status}"),
        ("vocab", f"{dataset.vocab_size} characters"),
        ("train", f"{len(dataset.train_ids):,} ids ({len(dataset.train_ids) / total:.0%})"),
        ("val", f"{len(dataset.val_ids):,} ids ({len(dataset.val_ids) / total:.0%})"),
        ("prepared", str(cache_dir() / "prepared" / dataset.sha256)),
    ]
    for key, value in rows:
        echo(f"{key:<10}{value}")


@click.command("train")
@click.option("--n-layer", type=int, default=_DEFAULTS.n_layer, show_default=True, help="transformer blocks")
@click.option("--n-head", type=int, default=_DEFAULTS.n_head, show_default=True, help="attention heads")
@click.option("--n-embd", type=int, default=_DEFAULTS.n_embd, show_default=True,
              help="embedding width (a multiple of --n-head)")
@click.option("--dropout", type=float, default=_DEFAULTS.dropout, show_default=True, help="in [0, 1)")
@click.option("--learning-rate", type=float, default=_DEFAULTS.learning_rate, show_default=True,
              help="peak AdamW learning rate (warm-up, then cosine to a tenth)")
@click.option("--block-size", type=int, default=_DEFAULTS.block_size, show_default=True,
              help="context length in characters")
@click.option("--batch-size", type=int, default=_DEFAULTS.batch_size, show_default=True)
@click.option("--max-iters", type=int, default=_DEFAULTS.max_iters, show_default=True,
              help="training steps (the LR schedule spans them)")
@click.option("--eval-interval", type=int, default=_DEFAULTS.eval_interval, show_default=True,
              help="steps between evaluations on the fixed validation batches")
@click.option("--eval-batches", type=int, default=_DEFAULTS.eval_batches, show_default=True,
              help="fixed batches per evaluation")
@click.option("--warmup-iters", type=int, default=_DEFAULTS.warmup_iters, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="initialisation, batches and dropout")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA if present, else CPU), cpu or cuda")
@click.option("--threads", type=int, default=None,
              help="torch CPU threads [default: every core this process may use]")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help=_DATA_DIR_HELP)
@click.option("--sample", type=int, default=0, show_default=True, metavar="N",
              help="print N generated characters at the end")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (metrics and curve) and nothing else")
def train_command(n_layer, n_head, n_embd, dropout, learning_rate, block_size, batch_size, max_iters,
                  eval_interval, eval_batches, warmup_iters, seed, device, threads, data_dir, sample, as_json):
    """Train one architecture on shakespeare_char and report its learning curve and metrics.

    \b
    Eval lines read "step 250  train 2.1234  val 2.2345" (losses on fixed batches);
    the run ends with final train loss, best val loss, train time, train and
    inference tokens/s and the parameter count.
    """
    config = TrainConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, dropout=dropout,
                         learning_rate=learning_rate, block_size=block_size, batch_size=batch_size,
                         max_iters=max_iters, eval_interval=eval_interval, eval_batches=eval_batches,
                         warmup_iters=warmup_iters)
    config.validate()  # bad options fail before the data is touched
    if sample < 0:
        raise click.BadParameter("must be >= 0", param_hint="--sample")
    dev = resolve_device(device)
    # a model that cannot fit is refused before the data is loaded or anything trains
    check_fits({"n_layer": n_layer, "n_head": n_head, "n_embd": n_embd}, config, str(dev), what="this model")
    threads = threads if threads is not None else default_threads()
    dataset = load_dataset(data_dir)

    if not as_json:
        n_params = count_params(config.model_config(dataset.vocab_size))
        hash_status = "verified" if dataset.hash_verified else "custom text"
        echo(f"gpnas train: n_layer {n_layer}, n_head {n_head}, n_embd {n_embd}, dropout {dropout}, "
             f"lr {learning_rate:g}, block {block_size}, batch {batch_size}, {max_iters} steps, seed {seed}")
        echo(f"data {dataset.name} ({dataset.source}, {hash_status}), vocab {dataset.vocab_size}; "
             f"device {dev}, {threads} threads; {n_params:,} parameters")

    with Progress(total=max_iters, label="training", unit="step") as bar:
        def on_step(step, loss):
            bar.update_to(step + 1)

        def on_curve(curve):
            if not as_json:
                bar.line(f"step {curve.eval_steps[-1]}  train {curve.eval_train_loss[-1]:.4f}  "
                         f"val {curve.val_loss[-1]:.4f}")

        result = train(config, dataset, seed=seed, device=str(dev), threads=threads,
                       on_step=on_step, on_curve=on_curve, sample=sample)

    if as_json:
        record = {
            "final_train_loss": result.final_train_loss,
            "best_val_loss": result.best_val_loss,
            "total_train_time_s": result.total_train_time_s,
            "avg_inference_tokens_per_s": result.avg_inference_tokens_per_s,
            "train_tokens_per_s": result.train_tokens_per_s,
            "n_params": result.n_params,
            "curve": result.curve.to_dict(),
            "diverged": result.curve.diverged,
            **{k: v for k, v in result.to_dict().items() if k not in ("curve",)},
            "dataset": {"name": dataset.name, "source": dataset.source, "sha256": dataset.sha256,
                        "hash_verified": dataset.hash_verified},
            "device": str(dev),
            "threads": threads,
        }
        # a run diverged at its first evaluation has no losses: null, not NaN (which is not JSON)
        record = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        echo(json.dumps(record, allow_nan=False))
        return
    _echo_metrics(result)


def _echo_metrics(result) -> None:
    curve = result.curve
    if not curve.val_loss:
        echo("diverged: the loss was NaN or inf at the first evaluation, before any training step")
        return
    best_step = curve.eval_steps[curve.val_loss.index(result.best_val_loss)]
    inference = (f"{result.avg_inference_tokens_per_s:,.1f}" if result.avg_inference_tokens_per_s is not None
                 else "not measured")
    if curve.diverged:
        echo(f"diverged: the loss became NaN or inf after step {curve.steps_done}; the run stopped there")
    rows = [
        ("final train loss", f"{result.final_train_loss:.4f}  (step {curve.eval_steps[-1]})"),
        ("best val loss", f"{result.best_val_loss:.4f}  (step {best_step})"),
        ("total train time", f"{result.total_train_time_s:.1f} s  ({curve.steps_done} steps)"),
        ("train tokens/s", f"{result.train_tokens_per_s:,.0f}"),
        ("inference tokens/s", inference),
        ("parameters", f"{result.n_params:,}"),
    ]
    for key, value in rows:
        echo(f"{key:<20}{value}")
    if result.sample is not None:
        echo("sample:")
        echo(result.sample)

