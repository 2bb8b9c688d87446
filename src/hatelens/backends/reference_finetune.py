"""The second reference: the MiniLM-L6 encoder with every weight fine-tuned to tell hate from normal.

The logistic reference (reference.py) keeps the encoder frozen; this one trains all of it, so a reader sees
what a small encoder reaches when it is fully trained on the same 3,083 rows the LLM is fine-tuned on. A
post's vector is the mean of the encoder's last hidden states over real tokens (the pooling the encoder
was pre-trained with), then dropout and one linear unit: P(hate) = sigmoid(logit), trained with binary
cross-entropy and torch's AdamW (linear warm-up, then linear decay to zero). It is trained on
`ModelConfig.reference_train` each time the backend is built, like the logistic reference, so there is no
saved model that could go stale (docs/quality.md has the wall time).

Determinism: the head's initial weights, dropout and the batch order come from SEED; training runs under
torch.use_deterministic_algorithms. On a CPU the same torch version and thread count give the same scores.
"""

import logging
import math
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

EPOCHS = 2  # measured on validation: 3 epochs gave no better ROC-AUC (0.851 both) for 1.5x the time
LEARNING_RATE = 5e-5  # the usual rate for fine-tuning a BERT-sized encoder
BATCH_SIZE = 32
GROUP_BATCHES = 8  # batches drawn together and sorted by length: 38 padded tokens a post instead of 60
WARMUP_SHARE = 0.1  # of all optimiser steps: the new head starts random, so the encoder is not shaken at once
MAX_GRAD_NORM = 1.0
MAX_LENGTH_TOKENS = 128  # posts are short: 128 tokens hold all but 2 of the 3,083 training posts (median 24)
SCORE_BATCH_SIZE = 64
SEED = 0
RECIPE = f"{EPOCHS}ep-lr{LEARNING_RATE:g}-seed{SEED}"  # named in the model version


class MeanPoolingClassifier(torch.nn.Module):
    """Encoder -> mean over real tokens -> dropout -> one logit per text (P(hate) = sigmoid)."""

    def __init__(self, encoder: torch.nn.Module):
        super().__init__()
        self.encoder = encoder
        self.dropout = torch.nn.Dropout(encoder.config.hidden_dropout_prob)
        self.head = torch.nn.Linear(encoder.config.hidden_size, 1)

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        return self.head(self.dropout(mean_pool(hidden, attention_mask))).squeeze(-1)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The mean of the hidden states over real tokens (sentence-transformers' pooling for MiniLM)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def load_classifier(folder: Path, *, device: str = "cpu", seed: int = SEED):
    """(MeanPoolingClassifier, tokenizer) from an encoder folder (safetensors, no remote code); the head seeded."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    encoder = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True)
    encoder.pooler = None  # a [CLS] layer sentence-transformers never uses: mean pooling replaces it
    with torch.random.fork_rng(devices=[]):  # the caller's random state stays as it was
        torch.manual_seed(seed)
        model = MeanPoolingClassifier(encoder)
    return model.to(device), tokenizer


def fine_tune(model: MeanPoolingClassifier, tokenizer, texts: Sequence[str], labels: Sequence[int], *,
              epochs: int = EPOCHS, learning_rate: float = LEARNING_RATE, batch_size: int = BATCH_SIZE,
              seed: int = SEED, progress: bool | None = None) -> list[float]:
    """Train every weight of `model` on (texts, labels 1 = hate) in place; the mean training loss of each epoch.

    progress: a bar over the steps; None shows it on a terminal only.
    """
    from tqdm import tqdm

    device = next(model.parameters()).device
    steps_per_epoch = math.ceil(len(texts) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(
        warmup_then_decay, warmup_steps=max(1, round(WARMUP_SHARE * epochs * steps_per_epoch)),
        total_steps=epochs * steps_per_epoch))
    targets = torch.tensor(labels, dtype=torch.float32)
    order_generator = torch.Generator().manual_seed(seed)
    lengths = [len(text) for text in texts]
    epoch_losses = []
    model.train()
    bar = tqdm(total=epochs * steps_per_epoch, unit="step", desc="fine-tuning the MiniLM reference",
               disable=None if progress is None else not progress)
    with torch.random.fork_rng(devices=[]), deterministic_algorithms():
        torch.manual_seed(seed)  # dropout
        for epoch in range(epochs):
            started, total = time.perf_counter(), 0.0
            for indices in length_grouped_batches(lengths, batch_size, order_generator):
                batch = tokenize(tokenizer, [texts[index] for index in indices]).to(device)
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(**batch), targets[indices].to(device))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                total += loss.item() * len(indices)
                bar.update()
            epoch_losses.append(total / len(texts))
            logger.info("reference fine-tuning: epoch %d/%d, training loss %.4f, %.1f s", epoch + 1, epochs,
                        epoch_losses[-1], time.perf_counter() - started)
    bar.close()
    model.eval()
    return epoch_losses


def length_grouped_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch's batches of row indices: shuffled, then each run of GROUP_BATCHES batches sorted by length
    (similar lengths pad less) and cut into batches, whose order is shuffled again."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    window = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, len(order), window):
        group = sorted(order[start:start + window], key=lambda index: lengths[index])
        batches += [group[first:first + batch_size] for first in range(0, len(group), batch_size)]
    return [batches[index] for index in torch.randperm(len(batches), generator=generator).tolist()]


def warmup_then_decay(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """The learning rate's factor at `step`: rising linearly to 1 over warm-up, then falling linearly to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


@torch.inference_mode()
def score(model: MeanPoolingClassifier, tokenizer, texts: Sequence[str],
          batch_size: int = SCORE_BATCH_SIZE) -> np.ndarray:
    """P(hate) of each text, in the order given (batches of similar length inside)."""
    device = next(model.parameters()).device
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))  # similar lengths pad less
    probabilities = np.zeros(len(texts), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        logits = model(**tokenize(tokenizer, [texts[index] for index in indices]).to(device))
        probabilities[indices] = torch.sigmoid(logits.float()).cpu().numpy()
    return probabilities


def tokenize(tokenizer, texts: list[str]):
    return tokenizer(texts, padding=True, truncation=True, max_length=MAX_LENGTH_TOKENS, return_tensors="pt")


def fine_tuned_scorer(folder: Path, texts: Sequence[str], labels: Sequence[int], *,
                      device: str = "cpu") -> Callable[[Sequence[str]], np.ndarray]:
    """Load the encoder in `folder`, fine-tune it on (texts, labels); return texts -> P(hate)."""
    model, tokenizer = load_classifier(folder, device=device)
    fine_tune(model, tokenizer, texts, labels)
    return partial(score, model, tokenizer)


@contextmanager
def deterministic_algorithms():
    """torch.use_deterministic_algorithms(True) inside, the caller's setting restored after."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)
