"""Local Hugging Face causal LMs (transformers, optional PEFT adapter).

score mode: one forward pass per prompt (left padding, batches of similar length), the summed
log-probability of every token of each label word, normalised over the two labels: P(hate).
Prompts rendered from one template open with the same tokens (chat header, system prompt, policy,
few-shot examples): that shared opening is run once per call and its key/value cache reused for every
text, so each text pays only for its own tokens (prefix reuse; same scores as the plain path).
Batches hold texts of similar length (sorted) and are bounded by `batch_size` rows and, when
`max_batch_tokens` is set, by padded tokens of the part the model computes (rows x the longest text after
the shared opening): long prompts come in small batches, short ones in large, and peak memory stays flat.
Each prompt is at most `max_length_tokens`: a longer post is cut (its start kept) and the prompt rendered
again, the instructions whole (truncation.py); its Output says `truncated`.
generate mode: batched greedy decoding; the answer is parsed by `parsing.parse_answer` and is
*invalid* when it cannot be, never guessed.
"""

import contextlib
import copy
import dataclasses
import logging
import os
import time
from typing import Sequence

import torch

from hatelens import extras
from hatelens.backends import adapters, fast_paths, fused_kernels, models, prompts
from hatelens.backends.base import Output
from hatelens.backends.batch_plan import BATCH_COST_SHARE, batch_ends, padded
from hatelens.backends.models import cache_argument, pick_device, pick_dtype
from hatelens.backends.parsing import parse_answer
from hatelens.backends.placement import describe, plan_placement
from hatelens.backends.truncation import fit_prompts
from hatelens.data.labels import HATE
from hatelens.errors import ModelError

logger = logging.getLogger(__name__)

# Architectures whose causal-LM head is exactly lm_head(decoder(x)), which prefix reuse computes itself;
# others (Gemma's optional logit soft-capping, say) take the plain path.
# gemma3_text: only without soft-capping (checked on gemma3-270m: policy_persona scores equal to 1e-6,
# its 573-token prompts reaching past the 512-token sliding window).
PREFIX_REUSE_MODEL_TYPES = frozenset({"llama", "gpt_oss", "mistral", "qwen2", "qwen3", "gemma3_text"})
MIN_SHARED_PREFIX_TOKENS = 16  # a shorter shared opening is not worth its own forward pass
WARM_UP_TEXTS = ("first warm-up post", "second warm-up post, a little longer")  # never written anywhere
# A classifier's seconds: the first batch (kernels warming up, any compilation) apart from the others, prompt
# rendering + tokenizing (encode_s), the shared opening (prefix_s); rows are counted beside.
FRESH_TIMING = {"first_batch_s": None, "first_batch_rows": 0, "later_batches": 0, "later_batches_s": 0.0,
                "later_rows": 0, "encode_s": 0.0, "prefix_s": 0.0}


class HFClassifier:
    """A causal LM asked through a prompt template. Build with `create(config)` or directly."""

    def __init__(self, model, tokenizer, template: prompts.PromptTemplate, *, mode: str = "score",
                 batch_size: int = 16, max_new_tokens: int = 16, model_version: str = "model",
                 reuse_prefix: bool = True, max_batch_tokens: int | None = None,
                 max_length_tokens: int | None = None):
        if mode not in ("score", "generate"):
            raise ModelError(f"unknown mode {mode!r}; choose score or generate")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.template = template
        self.mode = mode
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens or None  # 0 / None: batches of batch_size rows
        self.max_new_tokens = max_new_tokens
        self.max_length_tokens = max_length_tokens  # None: prompts are never cut
        self.model_version = model_version
        self.device = model.get_input_embeddings().weight.device  # the first GPU when layers are split
        # planned batch cuts (batch_plan.py) where they were measured, a GPU; None: batches filled in turn, as the
        # CPU figures (the server's latencies among them) were measured. Benchmarks set it to compare.
        self.batch_cost_share = BATCH_COST_SHARE if self.device.type == "cuda" else None
        self.reuse_prefix = (reuse_prefix and mode == "score" and model.config.model_type in PREFIX_REUSE_MODEL_TYPES
                             and model.config.to_dict().get("final_logit_softcapping") is None)
        self._prefix: tuple[tuple[int, ...], object] | None = None  # (shared opening ids, its key/value cache)
        self._packs_moe = fast_paths.packs_moe_tokens(model)  # MoE layers skip pads (use_gpu_speedups)
        self.timing = dict(FRESH_TIMING)
        self._clock = 0.0  # when the last batch of the current call was read (`_finish`)
        # (label, token ids) of each answer scored: the two label words, then any fine answers (prompts.FineAnswer)
        self._answers = [(label, tokenizer(text, add_special_tokens=False).input_ids)
                         for label, text in template.scored_answers()]
        self._hate_columns = [index for index, (label, _) in enumerate(self._answers) if label == HATE]

    # -- public ---------------------------------------------------------------------------------
    def warm_up(self) -> float:
        """Classify two short made-up posts once, so that what a process pays on its first forward pass (CUDA
        kernels loaded on first use, cuBLAS handles, the template's shared opening cached) is paid here, when
        the model is loaded, not by the first texts scored: a server's first request, an evaluation's first
        batch. Returns the seconds; `timing` starts afresh, with them as warmup_s."""
        started = time.perf_counter()
        self.classify(list(WARM_UP_TEXTS))
        seconds = round(time.perf_counter() - started, 3)
        self.timing.update(FRESH_TIMING, warmup_s=seconds)
        return seconds

    def classify(self, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> list[Output]:
        """One Output per text, in order. Batches are formed by prompt length inside this call."""
        started = time.perf_counter()
        prompt_ids, cut = self.encode_fitted(texts)
        encoded = time.perf_counter()
        if self.reuse_prefix:
            self._prepare_prefix(prompt_ids)
        self.timing["encode_s"] = round(self.timing["encode_s"] + encoded - started, 4)
        self.timing["prefix_s"] = round(self.timing["prefix_s"] + time.perf_counter() - encoded, 4)
        order = sorted(range(len(texts)), key=lambda i: len(prompt_ids[i]))
        widths = self._computed_widths([prompt_ids[i] for i in order])
        outputs: list[Output | None] = [None] * len(texts)
        start, pending = 0, None  # pending: (indices, read) of the batch launched last, read after the next launch
        max_rows, max_tokens = self.batch_size, self.max_batch_tokens
        ends: list[int] = []
        self._clock = time.perf_counter()
        while start < len(order):
            ends = ends or batch_ends(widths, start, max_rows=max_rows, max_tokens=max_tokens,
                                      cost_share=self.batch_cost_share)
            indices = order[start:ends.pop(0)]
            try:
                read = self._start_batch([prompt_ids[i] for i in indices])
            except torch.OutOfMemoryError:
                if len(indices) == 1:
                    raise ModelError("out of memory at batch size 1; use a smaller model, a shorter template "
                                     "or --max-length-tokens") from None
                max_rows = (min(max_rows, len(indices)) + 1) // 2  # half the batch that failed, rounded up
                max_tokens = max_tokens // 2 if max_tokens else None
                logger.warning("out of memory: batch size halved to %d%s", max_rows,
                               f", token budget to {max_tokens}" if max_tokens else "")
                torch.cuda.empty_cache() if torch.cuda.is_available() else None
                ends = []  # planned again within the new limits
                continue
            if pending:
                self._finish(*pending, outputs)
            pending, start = (indices, read), start + len(indices)
        if pending:
            self._finish(*pending, outputs)
        return [dataclasses.replace(output, truncated=True) if was_cut else output
                for output, was_cut in zip(outputs, cut)]

    def _start_batch(self, prompt_ids: list[list[int]]):
        """Launch one batch; returns a function that waits for it and gives its Outputs. Scoring on CUDA
        returns as soon as the kernels and an asynchronous copy of the scores are queued: the host then
        plans and launches the next batch while the GPU works on this one (every host-to-device copy of a
        batch is non-blocking, so nothing waits for the batch before). Elsewhere the batch runs here."""
        if self.mode != "score" or self.device.type != "cuda":
            results = self._run_batch(prompt_ids)
            return lambda: results
        scores = self._label_scores(prompt_ids)
        on_host = scores.to("cpu", non_blocking=True)
        copied = torch.cuda.Event()
        copied.record(torch.cuda.current_stream(scores.device))

        def read() -> list[Output]:
            copied.synchronize()
            return score_outputs(on_host)
        return read

    def _finish(self, indices: list[int], read, outputs: list) -> None:
        """Wait for a launched batch, put its Outputs in place and time it: the seconds since the batch
        before it was read (or since scoring began), so the batches' seconds add up to the scoring wall."""
        for index, result in zip(indices, read()):
            outputs[index] = result
        now = time.perf_counter()
        seconds, self._clock = now - self._clock, now
        if self.timing["first_batch_s"] is None:
            self.timing.update(first_batch_s=round(seconds, 4), first_batch_rows=len(indices))
        else:
            self.timing["later_batches"] += 1
            self.timing["later_batches_s"] = round(self.timing["later_batches_s"] + seconds, 4)
            self.timing["later_rows"] += len(indices)

    def _computed_widths(self, sorted_ids: list[list[int]]) -> list[int]:
        """Tokens each prompt makes the model compute: after the cached opening (when every prompt of this
        call starts with it), plus the label word's tokens when they are scored one by one."""
        skipped = self._cached_prefix_length(sorted_ids) if self.mode == "score" else 0
        extra = 0
        if self.mode == "score" and max(len(ids) for _, ids in self._answers) > 1:
            extra = max(len(ids) for _, ids in self._answers)
        return [len(ids) - skipped + extra for ids in sorted_ids]

    def encode(self, text: str) -> list[int]:
        """Token ids of the rendered prompt (the chat template already holds BOS: add none)."""
        return self.encode_many([text])[0]

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` of each text, in one tokenizer call (the fast tokenizers encode a list in parallel:
        per-text calls cost 0.3 s for the 1,009 test prompts, a fifth of gpt-oss-20b's scoring time on a GPU)."""
        return self.encode_fitted(texts)[0]

    def encode_fitted(self, texts: Sequence[str]) -> tuple[list[list[int]], list[bool]]:
        """(`encode` of each text, whether its post was cut to fit max_length_tokens)."""
        return fit_prompts(self.template, texts, self.tokenizer, prefill_answer=self.mode == "score",
                           max_length_tokens=self.max_length_tokens)

    # -- batches ----------------------------------------------------------------------------------
    def _run_batch(self, prompt_ids: list[list[int]]) -> list[Output]:
        if self.mode == "score":
            return score_outputs(self._label_scores(prompt_ids))
        return self._generate(prompt_ids)

    def _left_pad(self, sequences: list[list[int]]):
        input_ids, attention_mask = padded(sequences, self.tokenizer.pad_token_id, left=True)
        # Left padding shifts every token; positions must count real tokens only.
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return tuple(tensor.to(self.device, non_blocking=True) for tensor in (input_ids, attention_mask, position_ids))

    def score_ids(self, prompt_ids: list[list[int]]) -> list[float]:
        """P(hate) per prompt: softmax over the summed log-probs of each label's tokens."""
        return self._label_scores(prompt_ids)[:, 0].tolist()

    @torch.inference_mode()
    def _label_scores(self, prompt_ids: list[list[int]]) -> torch.Tensor:
        """(rows, 1 + answers) float32 on the model's device (nothing waits for it): P(hate), then the
        log-probability of each answer's tokens (hate's, normal's, any fine answers': template.scored_answers);
        P(hate) is the share of the hate-labelled answers' probability in all of theirs."""
        if all(len(ids) == 1 for _, ids in self._answers):
            # Every answer is a single token: one forward pass, the next-token distribution.
            log_probs = self._end_log_probs(prompt_ids, 1)[:, -1]
            columns = log_probs[:, [ids[0] for _, ids in self._answers]]
        else:
            columns = torch.stack([self._continuation_log_prob(prompt_ids, ids) for _, ids in self._answers], dim=1)
        columns = columns.float()
        hate = torch.softmax(columns, dim=1)[:, self._hate_columns].sum(dim=1, keepdim=True)
        return torch.cat([hate, columns], dim=1)

    def _continuation_log_prob(self, prompt_ids, continuation: list[int]):
        """Sum of log P(continuation token t | prompt, earlier tokens), every token counted."""
        sequences = [ids + continuation for ids in prompt_ids]
        # the last len+1 positions, minus the final one: position p predicts token p+1.
        log_probs = self._end_log_probs(sequences, len(continuation) + 1)[:, :-1]
        targets = torch.tensor(continuation).to(log_probs.device, non_blocking=True).expand(len(sequences), -1)
        return log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1).sum(dim=1)

    def _end_log_probs(self, sequences: list[list[int]], count: int):
        """Log-probabilities of the next token at each sequence's last `count` positions: (rows, count, vocab)."""
        prefix_length = self._cached_prefix_length(sequences)
        if prefix_length:
            return self._end_log_probs_after_prefix(sequences, count, prefix_length)
        input_ids, attention_mask, position_ids = self._left_pad(sequences)
        with self._packing(attention_mask):
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                logits_to_keep=count, use_cache=False).logits
        return torch.log_softmax(logits.float(), dim=-1)

    # -- prefix reuse -----------------------------------------------------------------------------
    def _prepare_prefix(self, prompt_ids: list[list[int]]) -> None:
        """Keep the cached opening if every prompt starts with it, else cache this call's shared opening."""
        if self._cached_prefix_length(prompt_ids) or len(prompt_ids) < 2:
            return
        # Each prompt keeps at least one token of its own: the one whose output we read.
        limit = min(len(ids) for ids in prompt_ids) - 1
        length = min(len(os.path.commonprefix(prompt_ids)), limit)  # works on any sequences, in C
        first = prompt_ids[0]
        if length < MIN_SHARED_PREFIX_TOKENS:
            return
        with torch.inference_mode():
            from transformers import DynamicCache

            cache = DynamicCache(config=self.model.config)
            self._decoder(input_ids=torch.tensor([first[:length]], device=self.device), cache=cache)
        self._prefix = (tuple(first[:length]), cache)

    def _packing(self, attention_mask):
        """fast_paths.real_tokens when the model's MoE layers skip pads (gpt-oss on a GPU), else nothing."""
        if not self._packs_moe:
            return contextlib.nullcontext()
        return fast_paths.real_tokens(attention_mask, self.device)

    def _decoder(self, *, cache, **inputs):
        """The model without its head, extending `cache`."""
        return self.model.get_decoder()(**inputs, **{cache_argument(self.model): cache}, use_cache=True)

    def _cached_prefix_length(self, sequences: list[list[int]]) -> int:
        """Tokens of the cached opening, if every sequence starts with it and goes on past it; else 0."""
        if self._prefix is None:
            return 0
        prefix = self._prefix[0]
        length = len(prefix)
        if all(len(ids) > length and tuple(ids[:length]) == prefix for ids in sequences):
            return length
        return 0

    def _end_log_probs_after_prefix(self, sequences, count: int, prefix_length: int):
        """`_end_log_probs` with the first `prefix_length` tokens read from the cached opening."""
        cache = copy.deepcopy(self._prefix[1])  # update() replaces a layer's tensors: the stored opening stays
        models.share_cache_rows(cache, len(sequences))
        suffixes = [ids[prefix_length:] for ids in sequences]
        # Right padding: each text's tokens follow the opening directly, so sliding-window layers see what
        # they see unbatched; the pads come last, where no real token attends to them.
        input_ids, real = padded(suffixes, self.tokenizer.pad_token_id)
        width = input_ids.shape[1]
        attention_mask = torch.cat([torch.ones((len(suffixes), prefix_length), dtype=torch.long), real], dim=1)
        position_ids = torch.arange(prefix_length, prefix_length + width).expand(len(suffixes), -1)
        with self._packing(attention_mask[:, prefix_length:]):
            hidden = self._decoder(input_ids=input_ids.to(self.device, non_blocking=True),
                                   attention_mask=attention_mask.to(self.device, non_blocking=True),
                                   position_ids=position_ids.to(self.device, non_blocking=True), cache=cache).last_hidden_state
        if cache.get_seq_length() != prefix_length + width:
            raise ModelError("the model ignored the cached prompt opening; score with reuse_prefix=False "
                             "or a transformers version hatelens is tested with (5.17, 5.24)")
        # hidden is on the last layer's device: with layers split over GPUs (placement.py) not self.device
        ends = torch.tensor([[len(ids) - count + k for k in range(count)] for ids in suffixes]).to(hidden.device,
                                                                                            non_blocking=True)
        picked = hidden.gather(1, ends.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        head = self.model.get_output_embeddings()
        logits = head(picked.to(head.weight.device))
        return torch.log_softmax(logits.float(), dim=-1)

    @torch.inference_mode()
    def _generate(self, prompt_ids) -> list[Output]:
        input_ids, attention_mask, _ = self._left_pad(prompt_ids)
        generated = self.model.generate(
            input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=self.max_new_tokens,
            do_sample=False, pad_token_id=self.tokenizer.pad_token_id,
        )[:, input_ids.shape[1]:]
        outputs = []
        for row in generated:
            raw = self._decode_answer(row)
            outputs.append(Output(answer=parse_answer(raw, self.template.label_words, self.template.fine_words), raw=raw))
        return outputs

    def _decode_answer(self, token_ids) -> str:
        """Generated text up to the end of the turn, special tokens kept where they carry structure."""
        text = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        if prompts.is_harmony(self.tokenizer):
            return text.replace(self.tokenizer.pad_token or "", "")
        for marker in {self.tokenizer.eos_token, self.tokenizer.pad_token, "<end_of_turn>", "<|im_end|>"}:
            if marker and marker in text:
                text = text.split(marker, 1)[0]
        return text


def score_outputs(table: torch.Tensor) -> list[Output]:
    """Outputs from `_label_scores` rows: P(hate) and the answers' log-probabilities it normalises."""
    return [Output(score=row[0], label_log_probs=tuple(row[1:])) for row in table.tolist()]


def load_for_inference(config, *, template: prompts.PromptTemplate | None = None, report: dict | None = None):
    """(model, tokenizer, model_version) for a ModelConfig, adapter merged in memory or attached.
    report: filled with what the GPU speed-ups applied (fast_paths.use_gpu_speedups) and the load time."""
    started = time.perf_counter()
    name, adapter = models.base_and_adapter(config.model, config.adapter)
    device = pick_device(config.device)
    dtype = pick_dtype(config.dtype, device)
    source = models.resolve_model(name)
    tokenizer = models.load_tokenizer(source, trust_remote_code=config.trust_remote_code,
                                      revision=config.revision)
    placement = plan_placement(config, source, dtype, device)
    logger.info("%s: %s", source.model_id, describe(placement))
    split = {"device_map": placement.device_map} if placement.device_map else {}
    # gpt-oss on CUDA: Triton compiles (or reads from its disk cache) the fused kernels while the weights load
    compiling = None if source.gguf_file else fused_kernels.compile_in_background(
        source.path, str(device), dtype, revision=config.revision)
    model = models.load_model(source, dtype=dtype, device=device, trust_remote_code=config.trust_remote_code,
                              revision=config.revision, tokenizer=tokenizer, **split)
    if compiling is not None:
        compiling.join()
    speedups = fast_paths.use_gpu_speedups(model, inference=True, compile_gate=config.compile_expert_gate)
    if adapter:
        extras.require("train", "evaluating a LoRA adapter")

        model = attach_adapter(model, adapter)
    version = models.model_version(source.model_id, adapter)
    if report is not None:
        report.update(speedups, load_s=round(time.perf_counter() - started, 2), placement=placement.to_dict())
    return model, tokenizer, version


def attach_adapter(model, adapter: str):
    """Base + PEFT adapter for inference. A bf16/fp16 base gets the adapter merged into its weights in
    place (no copy): the model then runs at the base model's speed, prefix reuse and fast paths
    included (an unmerged LoRA adds small matrix products to every projection: 43 s against 15 s on
    gpt-oss-20b). A float32 base keeps the adapter attached, so CPU figures stay bit-identical."""
    from peft import PeftModel

    wrapped = PeftModel.from_pretrained(model, adapter)
    if model.dtype == torch.float32:
        return wrapped
    logger.info("adapter %s merged into the %s weights in memory", adapter, model.dtype)
    return wrapped.merge_and_unload()


def create(config) -> HFClassifier:
    config = adapters.resolve(config)[0]  # the model and template an adapter records (idempotent)
    template = prompts.load_template(config.template)
    report: dict = {}
    model, tokenizer, version = load_for_inference(config, report=report)
    classifier = HFClassifier(model, tokenizer, template, mode=config.mode, batch_size=config.batch_size,
                              max_new_tokens=config.max_new_tokens, model_version=version,
                              max_batch_tokens=config.max_batch_tokens, max_length_tokens=config.max_length_tokens)
    if classifier.device.type == "cuda":
        classifier.warm_up()  # timing's warmup_s: part of loading, as for a server, and reported apart
    classifier.timing.update(load_s=report["load_s"], compile_s=report.get("compile_s"),
                             speedups=report["applied"], experts=report.get("experts"), placement=report["placement"])
    return classifier
