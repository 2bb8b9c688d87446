"""Training records for LoRA SFT: the exact tokens the evaluator scores, with the loss on the answer only.

A record is the rendered prompt (prompts.render_prompt, through the model's own chat template, ending
where the answer begins) followed by the answer the evaluator reads (template.answer(label): the
label word, or the JSON answer). Prompt and answer are tokenised *separately* and concatenated,
exactly as the hf backend scores them (prompt ids + continuation ids, no special tokens added), so
training never sees a token boundary that scoring does not. No EOS follows the answer: the evaluator
never reads one, and Gemma base never learned `<end_of_turn>` (MODELS.md pitfall 6).
"""

import logging
import os

from hatelens.backends import prompts
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
    if not (settings.counterfactual or settings.neutral_per_group or settings.balance_labels):
        return kept
    augmented, counts = augment.augment(kept, counterfactual=settings.counterfactual,
                                        neutral_per_group=settings.neutral_per_group,
                                        balance_labels=settings.balance_labels, seed=settings.seed)
    logger.info("augmentation: %d training examples -> %d (%s)", len(kept), len(augmented),
                ", ".join(f"{name} +{count}" for name, count in counts.items()))
    return augmented


def prompt_ids(template: prompts.PromptTemplate, text: str, tokenizer) -> list[int]:
    """Token ids of the prompt, as HFClassifier.encode makes them in score mode."""
    prompt = prompts.render_prompt(template, text, tokenizer, prefill_answer=True)
    return tokenizer(prompt, add_special_tokens=False).input_ids


def tokenize_example(example: Example, template: prompts.PromptTemplate, tokenizer) -> dict:
    """{"input_ids", "labels"}: prompt + answer ids; labels are IGNORE_INDEX on every prompt token."""
    prompt = prompt_ids(template, example.text, tokenizer)
    answer = tokenizer(template.answer(example.label), add_special_tokens=False).input_ids
    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


def build_dataset(examples: list[Example], template: prompts.PromptTemplate, tokenizer, *,
                  max_length_tokens: int, where: str):
    """A pre-tokenised `datasets.Dataset` (input_ids, labels, length) that SFTTrainer uses as is.

    A record longer than max_length_tokens is an error rather than silently cut: cutting would drop
    either the answer (no loss) or the start of the prompt (a context scoring never shows).
    """
    from datasets import Dataset

    rows = []
    for example in examples:
        row = tokenize_example(example, template, tokenizer)
        if len(row["input_ids"]) > max_length_tokens:
            raise DataError(f"{where}: example {example.id} is {len(row['input_ids'])} tokens with the prompt, over "
                            f"max_length_tokens={max_length_tokens}; raise it or shorten the text")
        rows.append({**row, "length": len(row["input_ids"])})
    if not rows:
        raise DataError(f"{where}: no examples to train on")
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
