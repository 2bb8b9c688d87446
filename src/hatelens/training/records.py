"""Training records for LoRA SFT: the exact tokens the evaluator scores, with the loss on the answer only.

A record is the rendered prompt (prompts.render_prompt, through the model's own chat template, ending
where the answer begins) followed by the answer the evaluator reads (template.answer(label): the
label word, a fine answer's word for a post of that finer label, or the JSON answer). Prompt and answer
are tokenised *separately* and concatenated, exactly as the hf backend scores them (prompt ids +
continuation ids, no special tokens added), so training never sees a token boundary that scoring does not.
No EOS follows the answer: the evaluator never reads one, and Gemma base never learned `<end_of_turn>`
(MODELS.md pitfall 6).
A record longer than max_length_tokens has its post cut (its start kept) so prompt and answer fit, the
instructions and the answer whole: the same cut the hf backend makes (backends/truncation.py).
"""

import logging
import os

from hatelens.backends import prompts
from hatelens.backends.truncation import fit_prompts
from hatelens.config import AugmentConfig
from hatelens.data import Example, augment, normalize_text
from hatelens.errors import DataError
from hatelens.training.answer_loss import IGNORE_INDEX

logger = logging.getLogger(__name__)


def training_examples(examples: list[Example], template: prompts.PromptTemplate,
                      settings: AugmentConfig) -> list[Example]:
    """The examples to train on: without the template's few-shot posts (a record would show its own
    answer in its prompt), plus the augmentation the recipe asks for (data/augment.py)."""
    shown = {normalize_text(shot.text) for shot in template.few_shot}
    kept = [example for example in examples if normalize_text(example.text) not in shown]
    if len(kept) < len(examples):
        logger.info("%d training example(s) left out: the template shows them as few-shot examples",
                    len(examples) - len(kept))
    augmented, counts = augment.augment(kept, counterfactual=settings.counterfactual,
                                        neutral_per_group=settings.neutral_per_group,
                                        balance_labels=settings.balance_labels, seed=settings.seed,
                                        counter_speech_per_group=settings.counter_speech_per_group,
                                        negation_per_group=settings.negation_per_group,
                                        fine_repeats=settings.fine_label_repeats)
    if counts:  # something was asked for
        logger.info("augmentation: %d training examples -> %d (%s)", len(kept), len(augmented),
                    ", ".join(f"{name} +{count}" for name, count in counts.items()))
    return augmented


def tokenize_example(example: Example, template: prompts.PromptTemplate, tokenizer, *,
                     max_length_tokens: int | None = None) -> dict:
    """{"input_ids", "labels", "truncated"}: prompt + answer ids, at most max_length_tokens (the post cut to fit);
    labels are IGNORE_INDEX on every prompt token."""
    answer = tokenizer(template.answer(example.label, example.extra.get("fine_label")),
                       add_special_tokens=False).input_ids
    ids, cut = fit_prompts(template, [example.text], tokenizer, prefill_answer=True,
                           max_length_tokens=max_length_tokens, reserve_tokens=len(answer))
    prompt = ids[0]
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer, "truncated": cut[0]}


def build_dataset(examples: list[Example], template: prompts.PromptTemplate, tokenizer, *,
                  max_length_tokens: int, where: str):
    """A pre-tokenised `datasets.Dataset` (input_ids, labels, length) that SFTTrainer uses as is.

    A record longer than max_length_tokens has its post cut (the start kept): never the instructions
    (a context scoring never shows) nor the answer (no loss). The cut records are counted in the log.
    """
    from datasets import Dataset

    rows, cut = [], []
    for example in examples:
        row = tokenize_example(example, template, tokenizer, max_length_tokens=max_length_tokens)
        rows.append({"input_ids": row["input_ids"], "labels": row["labels"], "length": len(row["input_ids"])})
        if row["truncated"]:
            cut.append(example.id)
    if not rows:
        raise DataError(f"{where}: no examples to train on")
    if cut:
        logger.warning("%s: %d example(s) over max_length_tokens=%d had their post cut to fit (%s)", where,
                       len(cut), max_length_tokens, ", ".join(cut[:5]) + (", ..." if len(cut) > 5 else ""))
    return Dataset.from_list(rows)


def shared_opening(datasets) -> list[int]:
    """The token ids every record of every dataset starts with (chat header, system prompt, ...),
    stopping at least one token before the shortest prompt ends: the last prompt token must stay
    with each record, since its logits predict the answer."""
    records = [row for dataset in datasets for row in dataset]
    prompt_lengths = [next(index for index, label in enumerate(row["labels"]) if label != IGNORE_INDEX)
                      for row in records]
    common = os.path.commonprefix([row["input_ids"] for row in records])
    return list(common[:max(0, min(prompt_lengths) - 1)])
