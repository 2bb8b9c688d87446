"""What a person watching a training run sees: a progress bar, and the same facts as log lines; and
the guard that stops a run whose loss has gone wrong.

The bar (step, loss, samples/s, ETA) is for a terminal; the log lines go to the run's train.log, so
a run can be followed with `tail -f runs/<run>/train.log` (or TensorBoard) from anywhere.
"""

import logging
import math
import time
from collections import deque

from transformers import TrainerCallback

from hatelens.errors import ModelError

logger = logging.getLogger(__name__)


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


class TrainingProgress(TrainerCallback):
    """tqdm bar + one log line per logging step and per evaluation."""

    WINDOW = 20  # rates are measured over the last WINDOW optimizer steps: the first batch (the longest) and
    # evaluations would otherwise distort them for the rest of the run

    def __init__(self, *, show_bar: bool = True):
        self.show_bar = show_bar
        self.bar = None
        self.recent = deque(maxlen=self.WINDOW + 1)  # (time, global step) after recent steps
        self.loss = float("nan")

    def _steps_per_s(self) -> float:
        if len(self.recent) < 2:
            return float("nan")
        (start, first), (end, last) = self.recent[0], self.recent[-1]
        return (last - first) / (end - start) if end > start else float("nan")

    def _samples_per_s(self, args) -> float:
        return self._steps_per_s() * args.per_device_train_batch_size * args.gradient_accumulation_steps \
            * args.world_size

    def _eta_s(self, state) -> float:
        return (state.max_steps - state.global_step) / self._steps_per_s()

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm import tqdm

        self.recent.append((time.perf_counter(), state.global_step))
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, unit="step", desc="training",
                        dynamic_ncols=True, disable=not self.show_bar)
        logger.info("training: %d optimizer steps, %s epochs, effective batch %d", state.max_steps,
                    args.num_train_epochs, args.per_device_train_batch_size * args.gradient_accumulation_steps
                    * args.world_size)

    def on_step_end(self, args, state, control, **kwargs):
        self.recent.append((time.perf_counter(), state.global_step))
        self.bar.update(state.global_step - self.bar.n)
        self.bar.set_postfix(loss=f"{self.loss:.4f}", samples_s=f"{self._samples_per_s(args):.2f}", refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.loss = logs["loss"]
            logger.info("step %d/%d epoch %.2f loss %.4f lr %.2e %.2f samples/s ETA %s", state.global_step,
                        state.max_steps, state.epoch or 0.0, logs["loss"], logs.get("learning_rate", float("nan")),
                        self._samples_per_s(args), format_duration(self._eta_s(state)))
        if "eval_loss" in logs:
            logger.info("evaluation at step %d (epoch %.2f): validation loss %.4f, F1 %.4f (best %.4f at %.2f), "
                        "ROC-AUC %.4f", state.global_step, state.epoch or 0.0, logs["eval_loss"],
                        logs.get("eval_f1", float("nan")), logs.get("eval_best_f1", float("nan")),
                        logs.get("eval_best_threshold", float("nan")), logs.get("eval_roc_auc", float("nan")))

    def on_evaluate(self, args, state, control, **kwargs):
        self.recent.clear()  # an evaluation is not training time
        self.recent.append((time.perf_counter(), state.global_step))

    def on_save(self, args, state, control, **kwargs):
        logger.info("checkpoint saved at step %d", state.global_step)
        self.recent.clear()
        self.recent.append((time.perf_counter(), state.global_step))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


FLAT_LOSS_LOGS = 5  # this many logged losses in a row ...
FLAT_LOSS_TOLERANCE = 1e-6  # ... within this of each other: nothing is being learned
CONVERGED_LOSS = 1e-3  # a loss this small may stop moving because the task is learned, not because training is stuck


class LossGuard(TrainerCallback):
    """Stops training with a ModelError when the logged loss is NaN or infinite, or flat: unchanged (to
    `tolerance`) over `flat_logs` logged steps while still above CONVERGED_LOSS.

    Needs the loss logged as it is: TrainingArguments(logging_nan_inf_filter=False); with the filter
    on, transformers logs the average of earlier steps in place of a NaN.
    """

    def __init__(self, *, learning_rate: float, flat_logs: int = FLAT_LOSS_LOGS, tolerance: float = FLAT_LOSS_TOLERANCE):
        self.learning_rate = learning_rate
        self.flat_logs = flat_logs
        self.tolerance = tolerance
        self.recent = deque(maxlen=flat_logs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        step = f"step {state.global_step}/{state.max_steps}"
        if not math.isfinite(loss):
            raise ModelError(f"training stopped at {step}: the loss is {loss}; lower learning_rate (now "
                             f"{self.learning_rate:g}), set max_grad_norm, or train in float32 instead of "
                             "bfloat16/float16")
        self.recent.append(loss)
        if (len(self.recent) == self.flat_logs and max(self.recent) - min(self.recent) <= self.tolerance
                and min(self.recent) > CONVERGED_LOSS):
            raise ModelError(f"training stopped at {step}: the loss stayed at {loss:.6f} over the last "
                             f"{self.flat_logs} logged steps, so nothing is being learned; raise learning_rate "
                             f"(now {self.learning_rate:g}), check that lora.target_modules match the model and "
                             "that the records hold answers")
