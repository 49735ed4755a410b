import dataclasses
import json
import math
import os

import pytest
import torch

from gpnas.errors import ConfigError, FileFormatError
from gpnas.train import trainer as training
from gpnas.train.data import load_dataset
from gpnas.train.model import count_params
from gpnas.train.trainer import LearningCurve, TrainConfig, TrainResult, learning_rate_at, train

TINY = TrainConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=8, max_iters=60,
                   eval_interval=20, eval_batches=4, warmup_iters=5, learning_rate=3e-3)


def run(dataset, config=TINY, seed=0, **kwargs):
    kwargs.setdefault("measure_inference", False)
    return train(config, dataset, seed=seed, device="cpu", threads=1, **kwargs)


def same_curve(a: LearningCurve, b: LearningCurve) -> bool:
    keep = ("train_loss", "eval_steps", "val_loss", "eval_train_loss", "max_iters", "diverged")
    return all(getattr(a, k) == getattr(b, k) for k in keep) and len(a.step_time_s) == len(b.step_time_s)


@pytest.mark.parametrize("change, words", [
    (dict(n_embd=30, n_head=4), "divisible"), (dict(n_layer=0), "positive"), (dict(batch_size=-1), "positive"),
    (dict(dropout=1.0), r"\[0, 1\)"), (dict(dropout=-0.1), r"\[0, 1\)"), (dict(learning_rate=0.0), "positive"),
    (dict(learning_rate=float("nan")), "positive"), (dict(max_iters=2.5), "integer"), (dict(warmup_iters=-1), ">= 0"),
    (dict(beta2=1.0), r"\[0, 1\)"), (dict(grad_clip=-1.0), ">= 0"), (dict(min_lr_ratio=2.0), r"\[0, 1\]"),
])
def test_invalid_configs_are_config_errors(change, words):
    with pytest.raises(ConfigError, match=words):
        dataclasses.replace(TINY, **change).validate()


def test_the_schedule_warms_up_then_decays_to_a_tenth_over_the_full_budget():
    config = TrainConfig(learning_rate=1e-3, max_iters=2000, warmup_iters=100)
    lrs = [learning_rate_at(config, it) for it in range(config.max_iters)]
    assert lrs[0] == pytest.approx(1e-3 / 101) and lrs[99] == pytest.approx(1e-3 * 100 / 101)
    assert lrs[100] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=1e-3)
    assert learning_rate_at(config, 5000) == pytest.approx(1e-4)


def test_loss_falls_and_metrics_are_reported(tiny_dataset):
    result = run(tiny_dataset, measure_inference=True, sample=30)
    curve = result.curve
    assert curve.eval_steps == [0, 20, 40, 60]
    assert curve.val_loss[-1] < curve.val_loss[0] - 0.8
    assert curve.steps_done == len(curve.step_time_s) == 60 and result.completed and not curve.diverged
    assert result.best_val_loss == min(curve.val_loss)
    assert result.final_train_loss == curve.eval_train_loss[-1]
    assert result.n_params == count_params(TINY.model_config(tiny_dataset.vocab_size))
    assert result.tokens_trained == 60 * 8 * 16
    assert result.total_train_time_s == pytest.approx(sum(curve.step_time_s))
    assert result.train_tokens_per_s > 0 and result.avg_inference_tokens_per_s > 0
    assert len(result.sample) == 30 and set(result.sample) <= set(tiny_dataset.chars)
    # nanoGPT's MFU numerator: 6 N + 12 L d T FLOPs per token; peak memory is measured on CUDA only
    assert result.flops_per_token == 6 * result.n_params + 12 * TINY.n_layer * TINY.n_embd * TINY.block_size
    assert result.peak_memory_bytes is None


def test_adamw_is_fused_on_cpu_too(tiny_dataset):
    """torch >= 2.4 (pyproject's floor) has a fused CPU AdamW: one kernel per step."""
    from gpnas.train.model import GPT

    model = GPT(TINY.model_config(tiny_dataset.vocab_size))
    optimizer = training._make_optimizer(model, TINY, torch.device("cpu"))
    assert optimizer.defaults["fused"] is True
    assert [g["weight_decay"] for g in optimizer.param_groups] == [TINY.weight_decay, 0.0]


def test_an_odd_budget_is_evaluated_at_its_last_step(tiny_dataset):
    curve = run(tiny_dataset, dataclasses.replace(TINY, max_iters=45)).curve
    assert curve.eval_steps == [0, 20, 40, 45]


def test_same_seed_same_curve_and_another_seed_another(tiny_dataset):
    config = dataclasses.replace(TINY, max_iters=30, dropout=0.1)
    a, b, c = run(tiny_dataset, config, seed=1), run(tiny_dataset, config, seed=1), run(tiny_dataset, config, seed=2)
    assert same_curve(a.curve, b.curve)
    assert a.curve.train_loss != c.curve.train_loss


def test_evaluation_batches_do_not_depend_on_the_run_seed(tiny_dataset):
    runs = [training._Run(TINY, tiny_dataset, seed, torch.device("cpu"), None) for seed in (0, 1)]
    for split in ("val_batches", "train_batches"):
        for (x0, y0), (x1, y1) in zip(getattr(runs[0], split), getattr(runs[1], split)):
            assert torch.equal(x0, x1) and torch.equal(y0, y1)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
@pytest.mark.parametrize("stops", [(23,), (20,), (7, 41)])
def test_a_stopped_and_resumed_run_equals_an_uninterrupted_one(tiny_dataset, tmp_path, dropout, stops):
    config = dataclasses.replace(TINY, dropout=dropout)
    full = run(tiny_dataset, config, seed=3)
    checkpoint = tmp_path / "run.pt"
    for stop in stops:
        part = run(tiny_dataset, config, seed=3, stop_at=stop, checkpoint=checkpoint)
        assert part.curve.steps_done == stop and not part.completed
        assert part.curve.train_loss == full.curve.train_loss[:stop]
        assert part.curve.eval_steps[-1] == stop  # the prefix is measured where it ends
    resumed = run(tiny_dataset, config, seed=3, checkpoint=checkpoint)
    assert resumed.completed
    assert same_curve(resumed.curve, full.curve)
    assert resumed.best_val_loss == full.best_val_loss


def test_a_checkpoint_past_stop_at_is_returned_as_is(tiny_dataset, tmp_path):
    checkpoint = tmp_path / "run.pt"
    run(tiny_dataset, stop_at=30, checkpoint=checkpoint)
    again = run(tiny_dataset, stop_at=10, checkpoint=checkpoint)
    assert again.curve.steps_done == 30


def test_a_checkpoint_of_another_run_or_a_damaged_one_is_refused(tiny_dataset, tmp_path):
    checkpoint = tmp_path / "run.pt"
    run(tiny_dataset, stop_at=10, checkpoint=checkpoint)
    with pytest.raises(ConfigError, match="another run"):
        run(tiny_dataset, seed=1, checkpoint=checkpoint)
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(FileFormatError, match="delete it"):
        run(tiny_dataset, checkpoint=checkpoint)


def test_an_absurd_learning_rate_diverges_without_an_exception(tiny_dataset):
    config = dataclasses.replace(TINY, learning_rate=1e4, warmup_iters=0, grad_clip=0.0)
    result = run(tiny_dataset, config, measure_inference=True)
    assert result.curve.diverged and not result.completed
    assert result.curve.steps_done < config.max_iters
    assert all(math.isfinite(v) for v in result.curve.train_loss)
    assert result.avg_inference_tokens_per_s is None
    json.dumps(result.to_dict(), allow_nan=False)  # still plain, strict JSON


def test_the_callers_random_state_and_thread_count_are_left_alone(tiny_dataset):
    torch.manual_seed(123)
    state, threads = torch.get_rng_state(), torch.get_num_threads()
    run(tiny_dataset, dataclasses.replace(TINY, max_iters=5, dropout=0.1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == threads


def test_callbacks_see_every_step_and_every_evaluation(tiny_dataset):
    steps, evals, curves = [], [], []
    result = run(tiny_dataset, on_step=lambda s, loss: steps.append((s, loss)),
                 on_eval=lambda s, v: evals.append((s, v)), on_curve=lambda c: curves.append(c.eval_steps[-1]))
    assert [s for s, _ in steps] == list(range(1, 61))
    assert [loss for _, loss in steps] == result.curve.train_loss
    assert evals == list(zip(result.curve.eval_steps, result.curve.val_loss))
    assert curves == [0, 20, 40, 60]


def test_results_round_trip_through_json(tiny_dataset):
    result = run(tiny_dataset, dataclasses.replace(TINY, max_iters=10))
    again = TrainResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert again == result
    with pytest.raises(FileFormatError):
        LearningCurve.from_dict({"train_loss": []})


def test_bad_devices_and_arguments_are_config_errors(tiny_dataset):
    with pytest.raises(ConfigError, match="device"):
        train(TINY, tiny_dataset, seed=0, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            train(TINY, tiny_dataset, seed=0, device="cuda")
    with pytest.raises(ConfigError, match="stop_at"):
        train(TINY, tiny_dataset, seed=0, stop_at=-1)
    with pytest.raises(ConfigError, match="threads"):
        train(TINY, tiny_dataset, seed=0, threads=0)


@pytest.mark.skipif(not os.environ.get("GPNAS_DATA_DIR"),
                    reason="GPNAS_DATA_DIR is not set: no real shakespeare_char text to train on")
def test_real_shakespeare_trains():
    dataset = load_dataset()
    assert (dataset.source, dataset.name, dataset.hash_verified) == ("GPNAS_DATA_DIR", "shakespeare_char", True)
    assert (dataset.vocab_size, len(dataset.train_ids), len(dataset.val_ids)) == (65, 1_003_854, 111_540)
    config = TrainConfig(max_iters=120, eval_interval=60, eval_batches=10)  # nanoGPT's CPU model, briefly
    result = train(config, dataset, seed=0, device="cpu", threads=1, measure_inference=False)
    assert result.n_params == 795_904
    assert result.curve.val_loss[0] == pytest.approx(math.log(65), abs=0.15)
    assert result.curve.val_loss[-1] < 2.75


def test_the_speed_benchmark_runs_in_a_tiny_mode(tiny_corpus_dir, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "experiments" / "bench_train.py"
    spec = importlib.util.spec_from_file_location("bench_train", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
                "--iters", "3", "--warmup", "1", "--threads", "1", "--device", "cpu",
                "--data-dir", str(tiny_corpus_dir)])
    out = capsys.readouterr().out
    rows = [line.split()[0] for line in out.splitlines() if line.split()[1:2] and line.split()[1][0].isdigit()]
    assert rows == ["gpnas", "nanogpt"] and "gpnas / nanoGPT" in out
