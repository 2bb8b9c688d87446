"""TRL's SFTTrainer, adapted to a classifier whose answer is a few tokens at the end of each record.

Four changes, each small:
- the loss reads logits only where answers are (`logits_to_keep`): on a CPU, TRL's fused head would
  project every prompt position through the vocabulary (262k rows for Gemma), for nothing;
- the prompt opening every record shares (chat header, system prompt: about half of a short record)
  runs once per batch and its key/value cache serves every row, gradients included: same loss, less work;
- each evaluation also scores the validation split exactly as `hatelens evaluate` does (HFClassifier,
  P(hate)) and reports eval_f1 / eval_roc_auc, so the best checkpoint can be chosen by F1;
- checkpoints hold safetensors and JSON only (checkpoint_state.py): nothing is ever unpickled.
"""

import json
import logging
from pathlib import Path

import numpy as np
import torch
from trl import SFTTrainer

from hatelens import checkpoint_state
from hatelens.backends.hf import HFClassifier
from hatelens.labels import to_int
from hatelens.sft_data import IGNORE_INDEX

logger = logging.getLogger(__name__)

TRAINING_ARGS_PICKLE = "training_args.bin"  # what Trainer writes with torch.save; replaced by JSON


class AnswerSFTTrainer(SFTTrainer):
    """SFTTrainer + answer-only logits, validation scoring and pickle-free checkpoints.

    validation: (texts, labels) scored at each evaluation; template: the prompt template the records
    were rendered with (the scorer renders the same prompts).
    """

    def __init__(self, *args, validation=None, template=None, shared_opening=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.validation = validation
        self.template = template
        self.shared_opening = shared_opening or None  # token ids every record starts with (sft_data)

    # -- loss on the answer tokens, logits only there ---------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        input_ids, attention_mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        opening = self._opening(input_ids)
        if opening:
            input_ids, attention_mask, labels, extra = self._after_shared_opening(model, input_ids, attention_mask,
                                                                                  labels, opening)
        else:
            extra = {}
        width = labels.shape[1]
        answer_positions = (labels != IGNORE_INDEX).int()
        first_answer = torch.where(answer_positions.any(dim=1), answer_positions.argmax(dim=1), width).min()
        # Position p predicts token p + 1: keep from one before the earliest answer token to the end.
        keep = int(width - first_answer + 1)
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=keep, **extra)
        logits = outputs.logits[:, :-1, :].float()
        targets = labels[:, width - keep + 1:]
        mask = targets != IGNORE_INDEX
        log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        count = mask.sum() if num_items_in_batch is None else num_items_in_batch
        loss = -(log_probs * mask).sum() / torch.as_tensor(count, device=log_probs.device).clamp(min=1)
        mode = "train" if model.training else "eval"
        correct = ((logits.argmax(dim=-1) == targets) & mask).sum()
        self._metrics[mode]["answer_token_accuracy"].append((correct / mask.sum().clamp(min=1)).item())
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _opening(self, input_ids) -> int:
        """Length of the shared opening if every row of this batch starts with it, else 0."""
        opening = self.shared_opening
        if opening is None or len(input_ids) < 2:
            return 0
        expected = torch.tensor(opening, device=input_ids.device)
        return len(opening) if bool((input_ids[:, :len(opening)] == expected).all()) else 0

    def _after_shared_opening(self, model, input_ids, attention_mask, labels, opening: int):
        """Run the opening once (one row, gradients kept), share its key/value cache with every row, and
        return what is left of the batch plus the forward arguments that attach it at the right positions.
        The tokens, positions and attention are those of the full records: the same loss, less work."""
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        model(input_ids=input_ids[:1, :opening], cache=cache, use_cache=True, logits_to_keep=1)
        cache.batch_repeat_interleave(len(input_ids))
        width = input_ids.shape[1] - opening
        positions = torch.arange(opening, opening + width, device=input_ids.device).expand(len(input_ids), -1)
        extra = {"cache": cache, "use_cache": True, "position_ids": positions}
        full_mask = attention_mask  # the opening's columns are all ones: every row starts with it
        return input_ids[:, opening:], full_mask, labels[:, opening:], extra

    # -- validation F1 with the evaluator's own scoring ---------------------------------------------
    def evaluation_loop(self, *args, **kwargs):
        output = super().evaluation_loop(*args, **kwargs)
        prefix = kwargs.get("metric_key_prefix", "eval")
        if self.validation is not None:
            output.metrics.update({f"{prefix}_{key}": value for key, value in self.score_validation().items()})
        return output

    def score_validation(self) -> dict:
        """F1 at 0.5, the best F1 over thresholds 0.01..0.99, ROC-AUC of P(hate) on the validation split."""
        from sklearn.metrics import roc_auc_score

        texts, labels = self.validation
        classifier = HFClassifier(self.model, self.processing_class, self.template,
                                  batch_size=self.args.per_device_eval_batch_size)
        scores = np.array([output.score for output in classifier.classify(texts)])
        truth = np.array([to_int(label) for label in labels], dtype=bool)
        thresholds = np.arange(1, 100) / 100
        f1s = f1_at_thresholds(truth, scores, thresholds)
        best = int(np.argmax(f1s))
        return {"f1": float(f1_at_thresholds(truth, scores, np.array([0.5]))[0]),
                "best_f1": float(f1s[best]), "best_threshold": float(thresholds[best]),
                "roc_auc": float(roc_auc_score(truth, scores)) if 0 < truth.sum() < len(truth) else float("nan"),
                "predicted_hate_rate": float((scores >= 0.5).mean())}

    # -- checkpoints: safetensors + JSON only ---------------------------------------------------------
    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict)
        folder = Path(output_dir or self.args.output_dir)
        (folder / TRAINING_ARGS_PICKLE).unlink(missing_ok=True)
        (folder / "training_args.json").write_text(self.args.to_json_string())

    def _save_optimizer_and_scheduler(self, output_dir):
        checkpoint_state.save_optimizer(self.optimizer, Path(output_dir))
        checkpoint_state.save_scheduler(self.lr_scheduler, Path(output_dir))

    def _load_optimizer_and_scheduler(self, checkpoint):
        if checkpoint is None:
            return
        checkpoint_state.load_optimizer(self.optimizer, Path(checkpoint))
        checkpoint_state.load_scheduler(self.lr_scheduler, Path(checkpoint))

    def _save_rng_state(self, output_dir):
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
    predicted = scores[None, :] >= thresholds[:, None]
    true_positives = (predicted & truth[None, :]).sum(axis=1)
    denominator = predicted.sum(axis=1) + truth.sum()
    return np.where(denominator > 0, 2 * true_positives / np.maximum(denominator, 1), 0.0)
