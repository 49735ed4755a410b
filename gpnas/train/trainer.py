"""Train one architecture and record its learning curve (nanoGPT's recipe, resumable).

A run is defined by (config, seed, data). The LR schedule (linear warm-up, then
cosine decay to ``learning_rate * min_lr_ratio``) is laid out over
``config.max_iters``, the full budget, so a run stopped after ``stop_at`` steps
is exactly the prefix of the full run, and resuming it from its checkpoint
gives the same curve as an uninterrupted run (bit for bit on CPU).

Randomness: model initialisation and dropout draw from torch's global
generators, seeded with the run seed inside ``torch.random.fork_rng`` so the
caller's global state is restored afterwards; batch offsets come from a
separate ``torch.Generator`` seeded with the run seed. Evaluation uses FIXED
batches drawn once from constant seeds (independent of the run seed), so every
run, every step, is measured on the same data.

Host syncs: a training step never moves a value to the host. Per-step losses
are kept on the device and copied to the host every ``CHECK_EVERY`` steps and
at evaluation points; that is when NaN/inf is detected. A diverged run thus
wastes at most ``CHECK_EVERY - 1`` steps, then stops with ``diverged=True``;
its curve keeps only the finite losses before the first non-finite one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from gpnas.config import flops_per_token
from gpnas.errors import ConfigError, FileFormatError
from gpnas.train.data import Dataset
from gpnas.train.model import GPT, GPTConfig

CHECK_EVERY = 25  # steps between host copies of the loss buffer (and NaN/inf checks)
VAL_EVAL_SEED = 20_240_601  # constant seeds of the fixed evaluation batches, independent of the run seed
TRAIN_EVAL_SEED = 20_240_602
INFERENCE_TOKENS = 200  # generation used for the inference-speed metric
INFERENCE_TEMPERATURE = 0.8
INFERENCE_TOP_K = 200
CHECKPOINT_FORMAT = 1

_POSITIVE_INTS = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_iters",
                  "eval_interval", "eval_batches")


@dataclass(frozen=True)
class TrainConfig:
    """One training run's hyperparameters; the defaults are nanoGPT's CPU recipe for shakespeare_char."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    learning_rate: float = 1e-3
    block_size: int = 64
    batch_size: int = 12
    max_iters: int = 2000  # the FULL budget: the LR schedule is laid out over it
    eval_interval: int = 250
    eval_batches: int = 20  # fixed validation (and train) batches per evaluation
    warmup_iters: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 turns clipping off

    def validate(self) -> None:
        """Raise ConfigError (one line, with the fix) unless the config can be trained."""
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value!r} is invalid: it must be a positive integer")
        if isinstance(self.warmup_iters, bool) or not isinstance(self.warmup_iters, int) or self.warmup_iters < 0:
            raise ConfigError(f"warmup_iters={self.warmup_iters!r} is invalid: it must be an integer >= 0")
        if self.n_embd % self.n_head:
            raise ConfigError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                              f"choose n_embd as a multiple of n_head (for example {self.n_head * 32})")
        _check_range("dropout", self.dropout, 0.0, 1.0, "in [0, 1)")
        if not (_is_number(self.learning_rate) and math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise ConfigError(f"learning_rate={self.learning_rate!r} is invalid: it must be a positive number")
        _check_range("min_lr_ratio", self.min_lr_ratio, 0.0, 1.0, "in [0, 1]", inclusive=True)
        _check_range("beta1", self.beta1, 0.0, 1.0, "in [0, 1)")
        _check_range("beta2", self.beta2, 0.0, 1.0, "in [0, 1)")
        for name in ("weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (_is_number(value) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name}={value!r} is invalid: it must be a number >= 0")

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(block_size=self.block_size, vocab_size=vocab_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout, bias=False)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_range(name, value, low, high, words, inclusive=False):
    ok = _is_number(value) and low <= value and (value <= high if inclusive else value < high)
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: it must be {words}")


def learning_rate_at(config: TrainConfig, it: int) -> float:
    """LR of step index it (0-based): nanoGPT's warm-up and cosine with lr_decay_iters = max_iters."""
    top, bottom = config.learning_rate, config.learning_rate * config.min_lr_ratio
    if it < config.warmup_iters:
        return top * (it + 1) / (config.warmup_iters + 1)
    if it >= config.max_iters:
        return bottom
    decay = (it - config.warmup_iters) / (config.max_iters - config.warmup_iters)  # in [0, 1)
    return bottom + 0.5 * (1.0 + math.cos(math.pi * decay)) * (top - bottom)


@dataclass
class LearningCurve:
    """A run's curve as plain data (JSON-able)."""

    train_loss: list[float] = field(default_factory=list)  # one per step, step 1..len
    eval_steps: list[int] = field(default_factory=list)  # 0, eval_interval, ..., and the last step done
    val_loss: list[float] = field(default_factory=list)  # on the fixed validation batches, at eval_steps
    eval_train_loss: list[float] = field(default_factory=list)  # on the fixed train batches, at eval_steps
    step_time_s: list[float] = field(default_factory=list)  # wall time per step (evaluation excluded)
    max_iters: int = 0  # the full budget the schedule uses
    diverged: bool = False  # NaN/inf loss stopped the run

    @property
    def steps_done(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> LearningCurve:
        try:
            return cls(train_loss=[float(v) for v in d["train_loss"]],
                       eval_steps=[int(v) for v in d["eval_steps"]],
                       val_loss=[float(v) for v in d["val_loss"]],
                       eval_train_loss=[float(v) for v in d["eval_train_loss"]],
                       step_time_s=[float(v) for v in d["step_time_s"]],
                       max_iters=int(d["max_iters"]), diverged=bool(d["diverged"]))
        except (KeyError, TypeError, ValueError) as error:
            raise FileFormatError(f"not a learning curve ({type(error).__name__}: {error}): "
                                  "pass a dict made by LearningCurve.to_dict") from None


@dataclass
class TrainResult:
    config: TrainConfig
    seed: int
    curve: LearningCurve
    n_params: int  # nanoGPT's count: position embeddings excluded
    final_train_loss: float  # on the fixed train batches at the last evaluation (the last step done)
    best_val_loss: float  # lowest val_loss over the curve's evaluations
    total_train_time_s: float  # sum of the steps' wall time, over all sessions of a resumed run
    train_tokens_per_s: float
    avg_inference_tokens_per_s: float | None  # None if not measured
    tokens_trained: int
    completed: bool  # steps_done == max_iters
    sample: str | None = None  # generated text when train(..., sample=N) asked for it
    # training FLOPs per token (nanoGPT's estimate_mfu: 6 N + 12 L d T); MFU on a device of
    # peak P FLOP/s is flops_per_token * train_tokens_per_s / P
    flops_per_token: int = 0
    peak_memory_bytes: int | None = None  # CUDA: torch.cuda.max_memory_allocated in this call; None on CPU

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["config"], d["curve"] = asdict(self.config), self.curve.to_dict()
        return d

    @classmethod
    def from_dict(cls, d) -> TrainResult:
        try:
            values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            values["config"] = TrainConfig(**d["config"])
            values["curve"] = LearningCurve.from_dict(d["curve"])
            return cls(**values)
        except (KeyError, TypeError) as error:
            raise FileFormatError(f"not a training result ({type(error).__name__}: {error}): "
                                  "pass a dict made by TrainResult.to_dict") from None


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' is CUDA when present, else CPU; an unavailable or unknown device is a ConfigError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is unknown: use auto, cpu or cuda") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here: use auto or cpu")
    if resolved.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported: use auto, cpu or cuda")
    return resolved


def default_threads() -> int:
    """Torch threads when train() is not told: every core this process may run on.

    Parallel evaluators should pass threads=cores // workers instead.
    """
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def train(config: TrainConfig, dataset: Dataset, *, seed: int, stop_at: int | None = None,
          checkpoint: Path | None = None, device: str = "auto", threads: int | None = None,
          measure_inference: bool = True, on_step=None, on_eval=None, on_curve=None,
          sample: int = 0) -> TrainResult:
    """Train config on dataset for max_iters steps (or the first stop_at) and return its curve and metrics.

    checkpoint: a run that stops before max_iters saves model, optimizer, RNG states
    and curve there; a later call with the same file continues from it. A
    checkpoint already past stop_at is returned as is.
    threads: torch's CPU thread count for this call (default: default_threads()),
    set with torch.set_num_threads and restored afterwards.
    Callbacks: on_step(step, loss) for every step, called in bursts when losses reach
    the host (every CHECK_EVERY steps); on_eval(step, val_loss) and
    on_curve(curve) at every evaluation (step 0, every eval_interval, the last step).
    sample: also generate this many characters after training (TrainResult.sample).
    """
    config.validate()
    if stop_at is not None and (isinstance(stop_at, bool) or not isinstance(stop_at, int) or stop_at < 0):
        raise ConfigError(f"stop_at={stop_at!r} is invalid: it must be an integer >= 0")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0):
        raise ConfigError(f"threads={threads!r} is invalid: it must be a positive integer")
    dev = resolve_device(device)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads or default_threads())
    try:
        cuda_devices = [dev.index if dev.index is not None else torch.cuda.current_device()] \
            if dev.type == "cuda" else []
        if cuda_devices:
            torch.cuda.reset_peak_memory_stats(cuda_devices[0])
        with torch.random.fork_rng(devices=cuda_devices):
            return _Run(config, dataset, seed, dev, checkpoint).run(
                stop_at, measure_inference, on_step, on_eval, on_curve, sample)
    finally:
        torch.set_num_threads(previous_threads)


class _Run:
    """The state of one run inside train(): model, optimizer, generators, curve."""

    def __init__(self, config: TrainConfig, dataset: Dataset, seed: int, dev: torch.device, checkpoint):
        self.config, self.dataset, self.seed, self.dev = config, dataset, seed, dev
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        bf16 = dev.type == "cuda" and torch.cuda.is_bf16_supported()
        self.autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
        # fixed evaluation batches first: a text too short for block_size fails before any work
        self.val_batches = self._fixed_batches("val", VAL_EVAL_SEED)
        self.train_batches = self._fixed_batches("train", TRAIN_EVAL_SEED)

        torch.default_generator.manual_seed(seed)  # inside fork_rng: init and dropout, caller's state untouched
        if dev.type == "cuda":
            torch.cuda.manual_seed(seed)
        self.model = GPT(config.model_config(dataset.vocab_size)).to(dev)  # built on CPU: same init everywhere
        self.optimizer = _make_optimizer(self.model, config, dev)
        self.batch_generator = torch.Generator().manual_seed(seed)
        self.curve = LearningCurve(max_iters=config.max_iters)
        if self.checkpoint is not None and self.checkpoint.exists():
            self._load()

    def run(self, stop_at, measure_inference, on_step, on_eval, on_curve, sample) -> TrainResult:
        config, curve = self.config, self.curve
        end = config.max_iters if stop_at is None else min(stop_at, config.max_iters)
        step = curve.steps_done
        if not curve.eval_steps:
            if not self._evaluate(0, on_eval, on_curve):  # NaN or inf before any step: nothing to train
                return self._result(None, None)
        elif step < end and curve.eval_steps[-1] % config.eval_interval:
            self._drop_last_eval()  # an early stop's extra evaluation is not part of the full run

        first_step = step
        model, optimizer = self.model, self.optimizer
        losses = torch.empty(CHECK_EVERY, device=self.dev)  # per-step losses wait here, on the device
        pending, times = 0, []
        model.train()
        t_last = time.perf_counter()
        while step < end:
            lr = learning_rate_at(config, step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = self.dataset.get_batch("train", config.batch_size, config.block_size,
                                          self.batch_generator, self.dev)
            with self.autocast():
                _, loss = model(x, y)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[pending] = loss.detach()  # device-side copy: no sync
            pending += 1
            step += 1
            now = time.perf_counter()
            times.append(now - t_last)
            t_last = now

            at_eval = step % config.eval_interval == 0 or step == end
            if at_eval or step % CHECK_EVERY == 0:
                values = losses[:pending].tolist()  # the one host sync of this chunk
                now = time.perf_counter()
                times[-1] += now - t_last  # the sync finishes queued work: charge it to the steps
                first_bad = next((i for i, v in enumerate(values) if not math.isfinite(v)), None)
                if first_bad is not None:
                    values, times = values[:first_bad], times[:first_bad]
                    curve.diverged = True
                chunk_start = curve.steps_done + 1
                curve.train_loss.extend(values)
                curve.step_time_s.extend(times)
                if on_step is not None:
                    for i, value in enumerate(values):
                        on_step(chunk_start + i, value)
                if curve.diverged:
                    break
                pending, times = 0, []
                if at_eval and not self._evaluate(step, on_eval, on_curve):
                    break
                t_last = time.perf_counter()  # evaluation time is not training time

        if self.checkpoint is not None and not curve.diverged and first_step < step < config.max_iters:
            self._save()
        inference_speed, text = None, None
        if not curve.diverged:
            if measure_inference:
                inference_speed, _ = self._generate(INFERENCE_TOKENS)
            if sample:
                _, text = self._generate(sample)
        return self._result(inference_speed, text)

    def _fixed_batches(self, split: str, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        return [self.dataset.get_batch(split, self.config.batch_size, self.config.block_size, generator, self.dev)
                for _ in range(self.config.eval_batches)]

    @torch.no_grad()
    def _mean_loss(self, batches) -> torch.Tensor:
        total = torch.zeros((), device=self.dev)
        for x, y in batches:
            with self.autocast():
                _, loss = self.model(x, y)
            total += loss.float()
        return total / len(batches)

    def _evaluate(self, step: int, on_eval, on_curve) -> bool:
        """Measure the fixed batches at step; False (and diverged) when a loss is not finite."""
        self.model.eval()
        val, train = torch.stack([self._mean_loss(self.val_batches), self._mean_loss(self.train_batches)]).tolist()
        self.model.train()
        if not (math.isfinite(val) and math.isfinite(train)):
            self.curve.diverged = True
            return False
        self.curve.eval_steps.append(step)
        self.curve.val_loss.append(val)
        self.curve.eval_train_loss.append(train)
        if on_eval is not None:
            on_eval(step, val)
        if on_curve is not None:
            on_curve(self.curve)
        return True

    def _drop_last_eval(self) -> None:
        for values in (self.curve.eval_steps, self.curve.val_loss, self.curve.eval_train_loss):
            values.pop()

    @torch.no_grad()
    def _generate(self, n_tokens: int) -> tuple[float, str]:
        """Sample n_tokens after a newline (temperature 0.8, top-k 200): (tokens per second, text)."""
        self.model.eval()
        start = self.dataset.encode("\n") if "\n" in self.dataset.chars else [0]
        idx = torch.tensor([start], dtype=torch.long, device=self.dev)
        generator = torch.Generator(device=self.dev).manual_seed(self.seed)
        t0 = time.perf_counter()
        with self.autocast():
            out = self.model.generate(idx, n_tokens, temperature=INFERENCE_TEMPERATURE,
                                      top_k=INFERENCE_TOP_K, generator=generator)
        ids = out[0, len(start):].tolist()  # the host copy waits for the device
        elapsed = time.perf_counter() - t0
        self.model.train()
        return n_tokens / max(elapsed, 1e-9), self.dataset.decode(ids)

    def _result(self, inference_speed, text) -> TrainResult:
        curve, config = self.curve, self.config
        total_time = float(sum(curve.step_time_s))
        tokens = curve.steps_done * config.batch_size * config.block_size
        return TrainResult(
            config=config, seed=self.seed, curve=curve, n_params=self.model.num_params(),
            # NaN when the very first evaluation diverged (the curve holds no evaluation)
            final_train_loss=curve.eval_train_loss[-1] if curve.eval_train_loss else math.nan,
            best_val_loss=min(curve.val_loss) if curve.val_loss else math.nan,
            total_train_time_s=total_time, train_tokens_per_s=tokens / total_time if total_time > 0 else 0.0,
            avg_inference_tokens_per_s=inference_speed, tokens_trained=tokens,
            completed=curve.steps_done == config.max_iters and not curve.diverged, sample=text,
            flops_per_token=flops_per_token(asdict(config), config.block_size, self.dataset.vocab_size),
            peak_memory_bytes=int(torch.cuda.max_memory_allocated(self.dev)) if self.dev.type == "cuda" else None)

    def _save(self) -> None:
        state = {
            "format": CHECKPOINT_FORMAT, "config": asdict(self.config), "seed": self.seed,
            "data_sha256": self.dataset.sha256, "curve": self.curve.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "batch_rng": self.batch_generator.get_state(), "cpu_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.dev) if self.dev.type == "cuda" else None,
        }
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.checkpoint.with_name(self.checkpoint.name + f".{os.getpid()}.tmp")
        torch.save(state, temporary)
        os.replace(temporary, self.checkpoint)  # a crash mid-save never leaves a torn checkpoint

    def _load(self) -> None:
        try:
            state = torch.load(self.checkpoint, map_location=self.dev, weights_only=True)
        except Exception as error:  # torch raises many kinds for a damaged or foreign file
            raise FileFormatError(f"cannot read checkpoint {self.checkpoint} ({type(error).__name__}): "
                                  "delete it to start the run afresh") from None
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise FileFormatError(f"{self.checkpoint} is not a gpnas checkpoint: delete it or pass another path")
        if (state["config"], state["seed"], state["data_sha256"]) != (asdict(self.config), self.seed,
                                                                      self.dataset.sha256):
            raise ConfigError(f"checkpoint {self.checkpoint} belongs to another run (config, seed or data "
                              "differ): pass a checkpoint path of its own")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.batch_generator.set_state(state["batch_rng"].cpu())
        torch.set_rng_state(state["cpu_rng"].cpu())
        if self.dev.type == "cuda" and state["cuda_rng"] is not None:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.dev)
        self.curve = LearningCurve.from_dict(state["curve"])


def _make_optimizer(model: GPT, config: TrainConfig, dev: torch.device) -> torch.optim.AdamW:
    """AdamW as nanoGPT: weight decay on 2-D tensors (matmul weights, embeddings) only."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    # fused kernels exist for CUDA and, since torch 2.4 (the floor in pyproject.toml), for CPU:
    # one kernel launch per step instead of many
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), fused=True)
