"""One evaluation as a pure function: the same result wherever its data comes from."""

from dataclasses import replace

from gpnas.config import load_preset
from gpnas.runs.worker import EvalTask, run_evaluation, run_shipped
from gpnas.search.males import train_config_dict


def micro_task(data_dir, tmp_path, name):
    preset = load_preset("micro")
    arch = {"n_layer": 1, "n_head": 2, "n_embd": 16, "dropout": 0.0, "learning_rate": 3e-3}
    return EvalTask(key=name, train_config=train_config_dict(arch, preset.budget), seed=0,
                    stop_at=preset.budget.early_iters, data_dir=str(data_dir),
                    checkpoint=str(tmp_path / f"{name}.pt"), threads=1)


def test_a_worker_without_the_data_folder_trains_on_the_shipped_text(tmp_path, tiny_corpus_dir):
    local = run_evaluation(micro_task(tiny_corpus_dir, tmp_path, "local"))
    text = (tiny_corpus_dir / "input.txt").read_bytes()
    remote = replace(micro_task(tiny_corpus_dir, tmp_path, "remote"), data_dir=str(tmp_path / "not-on-this-node"))
    shipped = run_shipped((remote, text))
    assert shipped["curve"]["val_loss"] == local["curve"]["val_loss"]
    assert shipped["curve"]["train_loss"] == local["curve"]["train_loss"]


def test_an_early_run_leaves_a_checkpoint_that_the_full_run_resumes(tmp_path, tiny_corpus_dir):
    early_task = micro_task(tiny_corpus_dir, tmp_path, "early")
    early = run_evaluation(early_task)
    full_task = replace(early_task, key="full", stop_at=None, checkpoint=str(tmp_path / "full.pt"),
                        resume_from=early_task.checkpoint)
    resumed = run_evaluation(full_task)
    scratch = run_evaluation(replace(full_task, key="scratch", checkpoint=None, resume_from=None))
    assert resumed["curve"]["val_loss"] == scratch["curve"]["val_loss"]
    assert resumed["curve"]["val_loss"][: len(early["curve"]["val_loss"])] == early["curve"]["val_loss"]
