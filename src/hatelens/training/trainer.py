"""TRL's SFTTrainer, adapted to a classifier whose answer is a few tokens at the end of each record.

The changes, each small:
- the loss reads logits only where answers are, and the prompt opening every record shares runs once
  per batch (answer_loss.py: same loss and gradients, less work);
- each evaluation also scores the validation split exactly as `hatelens evaluate` does (through the
  scoring function the caller hands in, see ValidationScoring) and reports eval_f1 / eval_roc_auc, so the
  best checkpoint can be chosen by F1; where each answer is one token, that same pass gives the validation
  loss too (the log-probability of each record's answer), and the record-by-record loss pass is skipped;
- checkpoints hold safetensors and JSON only (checkpoint_state.py): nothing is ever unpickled;
- an evaluation leaves the random streams as it found them, so it never changes what is trained;
- with `max_batch_tokens`, training batches are bounded by tokens (token_batches.py) instead of rows,
  and every optimizer step is timed (summary.StepClock: the first step, compilation included, apart).

Under several processes (DDP) `model` is the DistributedDataParallel wrapper: attributes are read from
`self.accelerator.unwrap_model(model)`, figures are summed over the processes, and only the main process
writes checkpoint files.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import torch
from trl import SFTTrainer

from hatelens.backends.prompts import PromptTemplate
from hatelens.data.labels import to_int
from hatelens.evaluation.metrics import counts_at_thresholds, rates_from_counts
from hatelens.training import answer_loss, checkpoint_state
from hatelens.training.summary import StepClock
from hatelens.training.token_batches import TokenBudgetBatchSampler

logger = logging.getLogger(__name__)

TRAINING_ARGS_PICKLE = "training_args.bin"  # what Trainer writes with torch.save; replaced by JSON


class TextScorer(Protocol):
    """P(hate) per text from a model in memory, rendered through `template`, and the log-probabilities of the
    two labels' answers (`TextScores`): `backends.text_scores.score_texts`."""

    def __call__(self, model, tokenizer, template: PromptTemplate, texts: Sequence[str], *,
                 batch_size: int, max_length_tokens: int | None = None): ...


# Why the scorer is handed in rather than imported: training must never import an inference backend
# (backends/hf.py brings generation, GGUF loading and prefix caches, and would tie the layers together).
# The CLI and the pipeline pass `backends.text_scores.score_texts`, the very scoring `hatelens evaluate` runs, so
# eval_f1 is the F1 that evaluating the checkpoint would report.
@dataclass
class ValidationScoring:
    """What eval_f1 needs: the validation texts and labels, the template the records were rendered with,
    and the function that scores texts as the evaluator does."""

    texts: list[str]
    labels: list[str]
    template: PromptTemplate
    score_texts: TextScorer
    max_length_tokens: int | None = None  # prompts cut as the validation records are (the answer's room kept)
    # every answer one token, the one score mode reads: the loss is -log P(answer) from the scoring pass itself,
    # each text's answer in column answer_columns[i] of its label_log_probs (template.scored_answers' order)
    answer_columns: list[int] | None = None

    @property
    def loss_from_scores(self) -> bool:
        return self.answer_columns is not None


class AnswerSFTTrainer(SFTTrainer):
    """SFTTrainer + answer-only logits, validation scoring and pickle-free checkpoints.

    validation: scored at each evaluation (None: validation loss only, no eval_f1). max_batch_tokens: padded
    tokens per training batch after the shared opening (None: batches of per_device_train_batch_size rows,
    length-grouped).
    """

    def __init__(self, *args, validation: ValidationScoring | None = None, shared_opening=None,
                 max_batch_tokens=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.validation = validation
        self.shared_opening = shared_opening or None  # token ids every record starts with (sft_data)
        self.max_batch_tokens = max_batch_tokens or None
        self.token_batches: TokenBudgetBatchSampler | None = None  # the sampler of the last training dataloader
        self.clock = StepClock()
        self.add_callback(self.clock)

    # -- batches bounded by tokens (token_batches.py) ------------------------------------------------
    def get_train_dataloader(self):
        if not self.max_batch_tokens:
            return super().get_train_dataloader()
        from torch.utils.data import DataLoader

        self.token_batches = TokenBudgetBatchSampler(
            self.train_dataset[self.args.length_column_name], max_batch_tokens=self.max_batch_tokens,
            max_rows=self._train_batch_size, seed=self.args.data_seed or self.args.seed,
            skipped=len(self.shared_opening or ()))
        dataset = self._remove_unused_columns(self.train_dataset, description="Training")
        loader = DataLoader(dataset, batch_sampler=self.token_batches, collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def training_step(self, model, inputs, num_items_in_batch=None):
        self.clock.rows += len(inputs["input_ids"])
        return super().training_step(model, inputs, num_items_in_batch)

    # -- loss on the answer tokens, logits only there (answer_loss.py) --------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids = inputs["input_ids"]
        result = answer_loss.answer_loss(model, input_ids, inputs["attention_mask"], inputs["labels"],
                                         opening=answer_loss.opening_length(input_ids, self.shared_opening),
                                         num_items=num_items_in_batch, base=self.accelerator.unwrap_model(model))
        mode = "train" if model.training else "eval"
        correct, counted = self.accelerator.reduce(torch.stack([result.correct, result.counted]), reduction="sum")
        self._metrics[mode]["answer_token_accuracy"].append((correct / counted.clamp(min=1)).item())
        loss = result.loss
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, result.outputs) if return_outputs else loss

    # -- validation F1 with the evaluator's own scoring ---------------------------------------------
    def evaluate(self, *args, **kwargs):
        """An evaluation (before training, or at an epoch's end) draws nothing from the training's random
        streams: a run with or without `eval_on_start`, or with more evaluations, trains the same weights."""
        with checkpoint_state.unchanged_rng():
            return super().evaluate(*args, **kwargs)

    def evaluation_loop(self, *args, **kwargs):
        prefix = kwargs.get("metric_key_prefix", "eval")
        if self.validation is not None and self.validation.loss_from_scores:  # one pass: scores and loss
            from transformers.trainer_utils import EvalLoopOutput

            metrics = {f"{prefix}_{key}": value for key, value in self.score_validation().items()}
            return EvalLoopOutput(predictions=None, label_ids=None, metrics=metrics,
                                  num_samples=len(self.validation.texts))
        output = super().evaluation_loop(*args, **kwargs)
        if self.validation is not None:
            output.metrics.update({f"{prefix}_{key}": value for key, value in self.score_validation().items()})
        return output

    def score_validation(self) -> dict:
        """F1 at 0.5, the best F1 over thresholds 0.01..0.99, ROC-AUC of P(hate) on the validation split;
        with `loss_from_scores`, also the loss: the mean of -log P(answer) over the records, which is what the
        loss pass computes when every answer is one token. Several processes each score the whole split, in step
        (FSDP's forward passes are collective): the same figures everywhere, so they agree on the best checkpoint
        and on early stopping."""
        from sklearn.metrics import roc_auc_score

        validation = self.validation
        scored = validation.score_texts(self.model, self.processing_class, validation.template, validation.texts,
                                        batch_size=self.args.per_device_eval_batch_size,
                                        max_length_tokens=validation.max_length_tokens)
        scores = np.asarray(scored.scores)
        truth = np.array([to_int(label) for label in validation.labels], dtype=bool)
        thresholds = np.arange(1, 100) / 100
        f1s = f1_at_thresholds(truth, scores, thresholds)
        best = int(np.argmax(f1s))
        figures = {"f1": float(f1_at_thresholds(truth, scores, np.array([0.5]))[0]),
                   "best_f1": float(f1s[best]), "best_threshold": float(thresholds[best]),
                   "roc_auc": float(roc_auc_score(truth, scores)) if 0 < truth.sum() < len(truth) else float("nan"),
                   "predicted_hate_rate": float((scores >= 0.5).mean())}
        if validation.loss_from_scores:
            answer_log_probs = scored.label_log_probs[np.arange(len(truth)), validation.answer_columns]
            figures = {"loss": float(-answer_log_probs.mean()), **figures}
        return figures

    # -- checkpoints: safetensors + JSON only ---------------------------------------------------------
    # Every process calls these; only the main one writes (DDP keeps the processes' weights and optimizer
    # states identical). On resume, each process reads the main process's RNG state.
    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        if not self.args.should_save:
            return
        folder = Path(output_dir or self.args.output_dir)
        (folder / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
        (folder / "training_args.json").write_text(self.args.to_json_string())

    def _save_optimizer_and_scheduler(self, output_dir):
        if self.args.should_save:
            checkpoint_state.save_optimizer(self.optimizer, Path(output_dir))
            checkpoint_state.save_scheduler(self.lr_scheduler, Path(output_dir))

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None:
            return
        checkpoint_state.load_optimizer(self.optimizer, Path(checkpoint))
        checkpoint_state.load_scheduler(self.lr_scheduler, Path(checkpoint))

    def _save_rng_state(self, output_dir):
        if self.args.should_save:
            checkpoint_state.save_rng(Path(output_dir))

    def _load_rng_state(self, checkpoint):
        if checkpoint is not None and not checkpoint_state.load_rng(Path(checkpoint)):
            logger.info("%s has no RNG state: the resumed run will not be bit-identical", checkpoint)

    def _save_scaler(self, output_dir):
        pass  # no fp16 loss scaler: training runs in fp32 or bf16 (config.py refuses float16)

    def _load_scaler(self, checkpoint):
        pass

    def create_model_card(self, *args, **kwargs):
        pass  # a hub model card per checkpoint says nothing training_summary.json does not


def read_trainer_state(checkpoint: Path) -> dict:
    """trainer_state.json of a checkpoint (Trainer writes it as JSON)."""
    return json.loads((Path(checkpoint) / "trainer_state.json").read_text())


def last_checkpoint(folder: Path) -> Path | None:
    """The checkpoint-N folder with the highest N that holds a complete save, or None."""
    if not Path(folder).is_dir():
        return None
    complete = [path for path in Path(folder).glob("checkpoint-*")
                if (path / "trainer_state.json").is_file() and path.name.split("-")[-1].isdigit()]
    return max(complete, key=lambda path: int(path.name.split("-")[-1]), default=None)


def f1_at_thresholds(truth: np.ndarray, scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """F1 of "hate when score >= t" for each threshold t (0 where nothing is predicted or true)."""
    return np.nan_to_num(rates_from_counts(**counts_at_thresholds(truth, scores, thresholds))["f1"], nan=0.0)
