"""The CUDA path on a real GPU (marker ``gpu``: skipped where torch sees no CUDA device).

The CPU suite checks the CUDA branches with a monkeypatched ``torch.cuda``; these
run them: training under bf16 autocast with fused AdamW, exact resume, the
memory limit read from the device, and ``gpnas train --device cuda --json``.
``experiments/gpu_check.sh`` runs them first.
"""

import json

import pytest

pytestmark = pytest.mark.gpu

SMALL = dict(n_layer=2, n_head=2, n_embd=64, dropout=0.0, learning_rate=3e-3, block_size=32, batch_size=16,
             max_iters=60, eval_interval=20, eval_batches=4, warmup_iters=5)


def test_training_on_cuda_lowers_the_loss_and_reports_its_memory(tiny_dataset):
    from gpnas.train.trainer import TrainConfig, train

    result = train(TrainConfig(**SMALL), tiny_dataset, seed=0, device="cuda")
    assert result.completed and not result.curve.diverged
    assert result.curve.val_loss[-1] < result.curve.val_loss[0] - 0.5  # ln 32 = 3.47 untrained
    assert result.peak_memory_bytes > 0
    assert result.flops_per_token > 6 * result.n_params
    assert result.train_tokens_per_s > 0 and result.avg_inference_tokens_per_s > 0


def test_a_cuda_step_runs_under_bf16_autocast_with_fused_adamw(tiny_dataset, monkeypatch):
    import torch

    from gpnas.train import trainer
    from gpnas.train.model import GPT

    seen = {}
    forward, make_optimizer = GPT.forward, trainer._make_optimizer

    def spy_forward(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if self.training:
            seen.setdefault("logits", (logits.dtype, logits.device.type))
        return logits, loss

    def spy_optimizer(model, config, dev):
        optimizer = make_optimizer(model, config, dev)
        seen["fused"] = optimizer.defaults["fused"]
        seen["params"] = {p.device.type for p in model.parameters()}
        return optimizer

    monkeypatch.setattr(GPT, "forward", spy_forward)
    monkeypatch.setattr(trainer, "_make_optimizer", spy_optimizer)
    trainer.train(trainer.TrainConfig(**{**SMALL, "max_iters": 4, "eval_interval": 2}), tiny_dataset, seed=0,
                  device="cuda", measure_inference=False)
    expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    assert seen["logits"] == (expected, "cuda")
    assert seen["fused"] is True and seen["params"] == {"cuda"}


def test_a_cuda_run_stopped_and_resumed_follows_the_uninterrupted_curve(tiny_dataset, tmp_path):
    """Resume restores model, optimizer and generators: the curves agree to float noise (CUDA
    kernels need not be bit-exact), far closer than a restart from scratch would be."""
    from gpnas.train.trainer import TrainConfig, train

    config = TrainConfig(**SMALL)
    whole = train(config, tiny_dataset, seed=0, device="cuda", measure_inference=False)
    checkpoint = tmp_path / "early.pt"
    early = train(config, tiny_dataset, seed=0, device="cuda", stop_at=20, checkpoint=checkpoint,
                  measure_inference=False)
    assert early.curve.steps_done == 20 and checkpoint.exists()
    resumed = train(config, tiny_dataset, seed=0, device="cuda", checkpoint=checkpoint, measure_inference=False)
    assert resumed.curve.eval_steps == whole.curve.eval_steps
    assert resumed.curve.val_loss == pytest.approx(whole.curve.val_loss, abs=0.02)
    assert resumed.curve.val_loss[-1] < resumed.curve.val_loss[1] - 0.1  # the resumed part trained


def test_the_memory_limit_is_the_gpus_own(tiny_dataset):
    import torch

    from gpnas.config import device_memory_bytes

    limit, name = device_memory_bytes("cuda")
    assert limit == torch.cuda.get_device_properties(0).total_memory
    assert name.endswith("(cuda:0)")


def test_gpnas_train_on_cuda_prints_its_metrics_as_json(tiny_corpus_dir):
    from click.testing import CliRunner

    from gpnas.cli import main

    result = CliRunner().invoke(main, ["train", "--device", "cuda", "--json", "--data-dir", str(tiny_corpus_dir),
                                       "--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--block-size", "32",
                                       "--batch-size", "16", "--max-iters", "40", "--eval-interval", "20",
                                       "--eval-batches", "4", "--warmup-iters", "5"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["device"].startswith("cuda")
    assert record["best_val_loss"] < record["curve"]["val_loss"][0] - 0.3
    assert record["peak_memory_bytes"] > 0 and record["flops_per_token"] > 0
