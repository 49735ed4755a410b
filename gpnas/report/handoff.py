"""Taking the found architecture further: the ``gpnas train`` command that
trains it as the run did, and the same as a nanoGPT config file.

``best_config.py`` follows nanoGPT's config-file convention
(``python train.py config/best_config.py``: plain ``name = literal`` lines that
nanoGPT's configurator applies over train.py's globals). gpnas itself never
executes it; the tests read it with ``ast.literal_eval``.
"""

from __future__ import annotations

import shlex

# gpnas's TrainConfig fields -> nanoGPT train.py globals of the same meaning
NANOGPT_NAMES = {
    "n_layer": "n_layer", "n_head": "n_head", "n_embd": "n_embd", "dropout": "dropout",
    "learning_rate": "learning_rate", "block_size": "block_size", "batch_size": "batch_size",
    "max_iters": "max_iters", "eval_interval": "eval_interval", "eval_batches": "eval_iters",
    "warmup_iters": "warmup_iters", "weight_decay": "weight_decay", "beta1": "beta1", "beta2": "beta2",
    "grad_clip": "grad_clip",
}
# gpnas train options for the fields of a run's train_config
TRAIN_OPTIONS = ("n_layer", "n_head", "n_embd", "dropout", "learning_rate", "block_size", "batch_size",
                 "max_iters", "eval_interval", "eval_batches", "warmup_iters")


def train_command(train_config: dict, seed: int, data_dir: str | None = None, sample: int = 500) -> str:
    """The ``gpnas train`` line that trains this config as the run trained it (same
    block, batch, budget and seed), printing ``sample`` characters at the end."""
    parts = ["gpnas", "train"]
    for name in TRAIN_OPTIONS:
        value = train_config[name]
        parts += [f"--{name.replace('_', '-')}", format(value, ".6g") if isinstance(value, float) else str(value)]
    parts += ["--seed", str(seed)]
    if data_dir:
        parts += ["--data-dir", data_dir]
    if sample:
        parts += ["--sample", str(sample)]
    return " ".join(shlex.quote(p) for p in parts)


def nanogpt_config(train_config: dict, run_name: str, dataset: str = "shakespeare_char") -> str:
    """The architecture and its training as a nanoGPT config file's text."""
    c = train_config
    lines = [
        f"# The best architecture of the gpnas run {run_name}, as a nanoGPT config:",
        "#   python train.py config/best_config.py   (in a nanoGPT checkout, after",
        f"#   python data/{dataset}/prepare.py)",
        "# The schedule is gpnas's: linear warm-up, cosine decay to a tenth over max_iters.",
        "",
        f"out_dir = {('out-gpnas-' + run_name)!r}",
        f"dataset = {dataset!r}",
        "gradient_accumulation_steps = 1",
        "bias = False",
        "always_save_checkpoint = False",
        "wandb_log = False",
    ]
    for name, nano in NANOGPT_NAMES.items():
        if name in c:
            lines.append(f"{nano} = {c[name]!r}")
    lines += [
        f"lr_decay_iters = {c['max_iters']!r}",
        f"min_lr = {c['learning_rate'] * c.get('min_lr_ratio', 0.1)!r}",
        "decay_lr = True",
    ]
    return "\n".join(lines) + "\n"
