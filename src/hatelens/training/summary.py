"""training_summary.json: what a training run did, read from the trainer's own log history and clock."""

import math
import statistics
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

from hatelens.config import TrainConfig, to_dict

BEST_METRICS = {"loss": ("eval_loss", False), "f1": ("eval_f1", True)}  # name -> (metric, greater is better)
EVAL_KEYS = ("eval_loss", "eval_f1", "eval_best_f1", "eval_best_threshold", "eval_roc_auc",
             "eval_predicted_hate_rate", "eval_answer_token_accuracy")


def build_summary(config: TrainConfig, trainer, output, *, wall_s: float, n_train: int, batch_size: int,
                  grad_accum: int, backoffs: list, resumed_from: str | None, adapter_dir: Path) -> dict:
    state = trainer.state
    metric, greater_is_better = BEST_METRICS[config.best_metric]
    evaluations = [_evaluation(entry) for entry in state.log_history if "eval_loss" in entry]
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    processes = trainer.args.world_size  # data-parallel processes, each with its own batches
    summary = {
        "model": config.model,
        "template": config.template,
        "adapter_dir": str(adapter_dir),
        "wall_s": round(wall_s, 1),
        "train_runtime_s": round(output.metrics.get("train_runtime", float("nan")), 1),
        "train_samples_per_s": round(output.metrics.get("train_samples_per_second", float("nan")), 3),
        "n_train": n_train,
        "epochs_planned": config.epochs,
        "epochs_done": round(state.epoch or 0.0, 3),
        "steps": state.global_step,
        "max_steps": state.max_steps,
        "early_stopped": state.global_step < state.max_steps,
        "per_device_batch_size": batch_size,
        "grad_accum": grad_accum,
        "effective_batch_size": batch_size * grad_accum * processes,
        "out_of_memory_backoffs": backoffs,
        "resumed_from": resumed_from,
        "trainable_parameters": trainable,
        "total_parameters": total,
        "trainable_share": round(trainable / total, 6) if total else None,
        "train_loss": round(output.metrics.get("train_loss", float("nan")), 6),
        "epochs": per_epoch(state.log_history),
        "evaluations": evaluations,
        "best": {
            "checkpoint": Path(state.best_model_checkpoint).name if state.best_model_checkpoint else None,
            "step": state.best_global_step,
            "metric": metric,
            "value": state.best_metric,
            "why": (f"{'highest' if greater_is_better else 'lowest'} {metric} of {len(evaluations)} evaluation(s) "
                    "on the validation split; the adapter is this checkpoint"),
        },
        "config": to_dict(config),
    }
    summary["speed"] = trainer.clock.speed()
    summary["batches"] = _batches(trainer)
    if processes > 1:
        summary["processes"] = processes
    summary["validation_loss_improved"], summary["warnings"] = _loss_verdict(evaluations)
    return summary


def per_epoch(history: list[dict]) -> list[dict]:
    """Mean logged training loss and the validation figures of each epoch (epoch 0: before training)."""
    epochs: dict[int, dict] = {}
    for entry in history:
        epoch = math.ceil(round(entry.get("epoch", 0.0), 6))
        row = epochs.setdefault(epoch, {"epoch": epoch, "train_losses": []})
        if "loss" in entry:
            row["train_losses"].append(entry["loss"])
        if "eval_loss" in entry:
            row.update({key: value for key, value in _evaluation(entry).items() if key != "epoch"})
    rows = []
    for epoch in sorted(epochs):
        row = epochs[epoch]
        losses = row.pop("train_losses")
        row["train_loss"] = round(sum(losses) / len(losses), 6) if losses else None
        rows.append(row)
    return rows


def _evaluation(entry: dict) -> dict:
    values = {key: round(entry[key], 6) for key in EVAL_KEYS if key in entry}
    return {"step": entry.get("step"), "epoch": round(entry.get("epoch", 0.0), 3), **values}


def _loss_verdict(evaluations: list[dict]) -> tuple[bool | None, list[str]]:
    """Did validation loss ever go below its first value? A run where it never did is flagged."""
    losses = [evaluation["eval_loss"] for evaluation in evaluations]
    if len(losses) < 2:
        return None, ["only one validation loss was measured: cannot tell whether training improved it"]
    if min(losses[1:]) < losses[0]:
        return True, []
    later = ", ".join(f"{loss:.4f}" for loss in losses[1:])
    warning = (f"validation loss never improved on its first value {losses[0]:.4f} (later: {later}); the adapter "
               "is probably no better than the base model: lower the learning rate, train longer or check the data")
    return False, [warning]


class StepClock(TrainerCallback):
    """Wall time and rows of every optimizer step (evaluations and checkpoints excluded), and the peak
    GPU memory of training. The first step stands apart: it pays for torch.compile and for warming up
    the kernels and the allocator, which the steady rate of an epoch should not be charged with."""

    def __init__(self):
        self.rows = 0  # rows of the step in progress (the trainer adds each micro-batch's)
        self.steps: list[tuple[float, int]] = []  # (seconds, rows) per optimizer step
        self._started = 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_step_begin(self, args, state, control, **kwargs):
        _synchronize()
        self.rows, self._started = 0, time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        _synchronize()
        self.steps.append((time.perf_counter() - self._started, self.rows))

    def speed(self) -> dict:
        """first_step_s (compilation included), steady_step_s (median of the others), steady_samples_per_s
        (rows over the time of every step but the first, per process), peak_memory_gib of training."""
        result: dict = {"steps_timed": len(self.steps), "rows": sum(rows for _, rows in self.steps)}
        if self.steps:
            result["first_step_s"] = round(self.steps[0][0], 3)
        later = self.steps[1:]
        if later:
            seconds = sum(step for step, _ in later)
            result["steady_step_s"] = round(statistics.median(step for step, _ in later), 4)
            result["steady_samples_per_s"] = round(sum(rows for _, rows in later) / seconds, 3) if seconds else None
            result["first_step_extra_s"] = round(self.steps[0][0] - result["steady_step_s"], 3)
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated()
            result.update(peak_memory_gib=round(peak / 2**30, 2), peak_memory_gb=round(peak / 1e9, 2))
        return result


def _synchronize() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _batches(trainer) -> dict:
    """How training batches were formed: rows (fixed) or a token budget (rows vary per batch)."""
    sampler = trainer.token_batches
    if sampler is None:
        return {"by": "rows", "rows": trainer.args.per_device_train_batch_size}
    return {"by": "tokens", "max_batch_tokens": sampler.max_batch_tokens, "max_rows": sampler.max_rows,
            "batches_per_epoch": len(sampler), "mean_rows": round(len(sampler.lengths) / len(sampler), 2),
            "skipped_opening_tokens": sampler.skipped, "padded_tokens_per_epoch": sampler.padded_tokens(),
            "real_tokens_per_epoch": sum(length - sampler.skipped for length in sampler.lengths)}
