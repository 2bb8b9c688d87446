"""The training loss of a classifier whose answer is a few tokens at the end of each record.

Two savings, neither of which changes the loss or its gradients (tests/test_train.py checks both):
- logits only where answers are (`logits_to_keep` with the answer positions): the prompt positions are
  never projected through the vocabulary (201k rows for gpt-oss, 262k for Gemma);
- the prompt opening that every record shares (chat header, system prompt, few-shot examples) runs once
  per batch, one row with gradients kept, and its key/value cache serves every row.

On CUDA in training the opening's forward and backward passes are replayed as CUDA graphs
(graphed_opening.py): the same kernels in two launches instead of thousands.

Gradient checkpointing re-runs each layer in the backward pass: transformers then drops any cache
given to the layer, PyTorch's checkpoint wrapper (FSDP's activation checkpointing) would extend it a
second time. Under either the opening is run with every row instead: correct, without the saving.

Used by `sft_trainer.AnswerSFTTrainer` and by `benchmarks/gpu_gpt_oss.py`, so the benchmark times the
trainer's own arithmetic.
"""

from typing import NamedTuple

import torch

from hatelens.backends.models import cache_argument
from hatelens.training import graphed_opening

IGNORE_INDEX = -100  # the label of a token the loss skips (PyTorch's and transformers' convention)


class AnswerLoss(NamedTuple):
    loss: torch.Tensor  # summed answer-token NLL over `num_items` (or over the answer tokens of this batch)
    correct: torch.Tensor  # answer tokens whose most likely token is the right one
    counted: torch.Tensor  # answer tokens in this batch
    outputs: object  # the model's output (logits of the kept positions)


def answer_loss(model, input_ids, attention_mask, labels, *, opening: int = 0, num_items=None,
                base=None) -> AnswerLoss:
    """Mean negative log-likelihood of the answer tokens (labels != IGNORE_INDEX).

    opening: number of leading tokens every row shares (0: none); num_items: the token count to divide by
    (the trainer's count over gradient-accumulation steps), else this batch's answer tokens; base: the
    unwrapped model when `model` is a DistributedDataParallel wrapper.
    """
    base = base if base is not None else model
    extra = {"use_cache": False}  # a loss needs no cache (and a checkpointed layer must not extend one)
    if opening and len(input_ids) > 1 and not _checkpointing(base):
        input_ids, labels, extra = _after_shared_opening(model, base, input_ids, labels, opening)
    # Position p predicts token p + 1: the logits needed are those of the positions (in any row) before
    # an answer token; right-padded rows of different lengths have their answers in different columns.
    positions = (labels[:, 1:] != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    if not len(positions):  # no answer token in this batch: one position, masked out below
        positions = torch.tensor([labels.shape[1] - 2], device=labels.device)
    outputs = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=positions, **extra)
    logits = outputs.logits.float()
    targets = labels[:, positions + 1]
    mask = targets != IGNORE_INDEX
    log_probs = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    count = mask.sum() if num_items is None else num_items
    loss = -(log_probs * mask).sum() / torch.as_tensor(count, device=log_probs.device).clamp(min=1)
    correct = ((logits.argmax(dim=-1) == targets) & mask).sum()
    return AnswerLoss(loss, correct, mask.sum(), outputs)


def opening_length(input_ids, opening: list[int] | None) -> int:
    """len(opening) if every row of this batch starts with those token ids, else 0."""
    if not opening or len(input_ids) < 2 or input_ids.shape[1] <= len(opening):
        return 0
    expected = torch.tensor(opening, device=input_ids.device)
    return len(opening) if bool((input_ids[:, :len(opening)] == expected).all()) else 0


def _checkpointing(model) -> bool:
    """Whether a layer would drop the cache: gradient checkpointing on, in training, with gradients."""
    if not (model.training and torch.is_grad_enabled()):
        return False
    # transformers' own checkpointing, or PyTorch's checkpoint wrapper (accelerate's FSDP
    # activation_checkpointing): the latter would re-run a layer with its cache already extended.
    return any(getattr(module, "gradient_checkpointing", False) or hasattr(module, "_checkpoint_wrapped_module")
               for module in model.modules())


def _after_shared_opening(model, base, input_ids, labels, opening: int):
    """Run the opening once (one row, gradients kept), share its key/value cache with every row, and
    return what is left of the batch plus the forward arguments that attach it at the right positions.
    The tokens, positions and attention are those of the full records: the same loss, less work.
    The attention mask stays whole: the opening's columns are ones in every row."""
    from transformers import DynamicCache

    name = cache_argument(base)
    cache = None
    if model is base and graphed_opening.enabled(model):  # CUDA training: replayed as a graph (graphed_opening.py)
        cache = graphed_opening.opening_cache(model, base, input_ids[:1, :opening], name)
    if cache is None:
        cache = DynamicCache(config=base.config)
        model(input_ids=input_ids[:1, :opening], use_cache=True, logits_to_keep=1, **{name: cache})
    cache.batch_repeat_interleave(len(input_ids))
    width = input_ids.shape[1] - opening
    positions = torch.arange(opening, opening + width, device=input_ids.device).expand(len(input_ids), -1)
    return input_ids[:, opening:], labels[:, opening:], {name: cache, "use_cache": True, "position_ids": positions}
