"""Helpers the tests share, in one place: tiny random models, small datasets, a lexicon classifier and
real run folders, a real HTTP server, and an assertion. The pytest fixtures built from them
(tiny_llama_dir, tiny_gpt_oss_dir, tiny_bert_dir, cache_dir) are in conftest.py.

- Tiny models: built from configs, saved as real model folders (safetensors + tokenizer). Their answers
  are meaningless; they exercise every code path a real model takes, in milliseconds. One GPT-OSS is
  written as openai/gpt-oss-20b is published: its experts in MXFP4 (tiny_gpt_oss_mxfp4).
- Run folders for the compare / calibrate / report / suite tests are written by `evaluate()` with two
  classifiers: the tiny random Llama (through the hf backend: a weak "baseline"), and a lexicon
  classifier, a complete if simple Classifier that scores a text by its words (a strong "fine-tuned"
  model whose errors we can place on purpose).
"""

import json
import math
import re
import socket
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    BertTokenizerFast,
    GptOssConfig,
    GptOssForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    TrainerCallback,
)

from hatelens.backends import prompts
from hatelens.backends.base import Output
from hatelens.backends.hf import HFClassifier
from hatelens.config import EvalConfig, ModelConfig, TrainConfig, load_config
from hatelens.errors import DataError
from hatelens.evaluation.evaluate import evaluate
from hatelens.evaluation.thresholds import Thresholds

ASSETS = Path(__file__).parent / "assets"
GROUPS = ("lgbtq", "mexican", "middle_east")


# -- tiny models -----------------------------------------------------------------------------------------
def tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama with the ChatML tiny tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny_chatml")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, tie_word_embeddings=False)
    return _save(LlamaForCausalLM(config), tokenizer, folder)


def tiny_gpt_oss(folder: Path, *, seed: int = 0, hidden_size: int = 32, intermediate_size: int = 32) -> Path:
    """A 2-layer GPT-OSS (4 experts, 2 active, sliding + full attention, sinks), harmony tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny_harmony")
    torch.manual_seed(seed)
    config = GptOssConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                          num_local_experts=4, num_experts_per_tok=2, sliding_window=16,
                          layer_types=["sliding_attention", "full_attention"],
                          max_position_embeddings=131072, pad_token_id=tokenizer.pad_token_id,
                          rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                           "beta_fast": 32.0, "beta_slow": 1.0, "truncation": False,
                                           "original_max_position_embeddings": 4096},
                          eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    return _save(GptOssForCausalLM(config), tokenizer, folder)


# The quantization_config of openai/gpt-oss-20b: experts in MXFP4, everything else in bf16.
MXFP4_QUANTIZATION = {"quant_method": "mxfp4", "modules_to_not_convert": [
    "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}


def eager_and_sink_logits(folder: Path, device: str = "cpu"):
    """(eager logits, sink-attention logits, real-token mask) of one tiny GPT-OSS without gradients, on a batch
    whose first row has 30 left pads: past the 16-token sliding window, so pad queries there see no real key."""
    from hatelens.backends.fast_paths import use_sink_attention

    eager = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    fused = AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    use_sink_attention(fused)
    torch.manual_seed(2)
    input_ids = torch.randint(0, eager.config.vocab_size, (3, 40), device=device)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :30] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    inputs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids)
    with torch.no_grad():
        return eager(**inputs).logits, fused(**inputs).logits, attention_mask.bool()


def fp4_e2m1(codes: torch.Tensor) -> torch.Tensor:
    """FP4 E2M1 codes (0..15) as numbers, from the bits: sign, two exponent bits, one mantissa bit
    (exponent 0 is subnormal: 0 or 0.5; otherwise (1 + m/2) * 2^(e-1)). Max 6."""
    sign = torch.where((codes & 8) > 0, -1.0, 1.0)
    exponent, mantissa = ((codes >> 1) & 3).double(), (codes & 1).double()
    magnitude = torch.where(exponent == 0, mantissa / 2, (1 + mantissa / 2) * 2 ** (exponent - 1))
    return sign * magnitude


def mxfp4_pack(codes: torch.Tensor, exponents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MXFP4 layout of a stored (out, in) matrix per expert. codes (experts, out, in/32, 32) and
    E8M0 exponents (experts, out, in/32): blocks (experts, out, in/32, 16) uint8, two codes a byte, the
    even one in the low nibble; scales (experts, out, in/32) uint8, 2^(scale-127). Returns blocks, scales
    and the dense (experts, out, in) matrix they stand for."""
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).to(torch.uint8)
    dense = fp4_e2m1(codes) * torch.exp2(exponents.double() - 127).unsqueeze(-1)
    return blocks, exponents.to(torch.uint8), dense.flatten(-2)


def tiny_gpt_oss_mxfp4(folder: Path, *, seed: int = 0) -> tuple[Path, dict[str, torch.Tensor]]:
    """tiny_gpt_oss with its experts stored as openai/gpt-oss-20b stores them: `experts.gate_up_proj_blocks`
    (experts, 2 * intermediate, hidden / 32, 16) and `_scales` (experts, 2 * intermediate, hidden / 32),
    likewise `down_proj_*` (experts, hidden, intermediate / 32, ...), the rest in bf16, and the mxfp4
    quantization_config. The experts' weights are random but exact in MXFP4 (FP4 values times a power of
    two a block of 32). Returns the folder and the dense weights each `...experts.gate_up_proj` /
    `...experts.down_proj` parameter must hold once dequantised, in transformers' (experts, in, out)."""
    folder = tiny_gpt_oss(folder, seed=seed, hidden_size=64, intermediate_size=64)  # two blocks a row
    tensors = load_file(folder / "model.safetensors")
    generator = torch.Generator().manual_seed(seed)
    expected = {}
    for name in [name for name in tensors if name.endswith(("experts.gate_up_proj", "experts.down_proj"))]:
        experts, rows, columns = tensors.pop(name).transpose(1, 2).shape  # stored as (experts, out, in)
        codes = torch.randint(0, 16, (experts, rows, columns // 32, 32), generator=generator, dtype=torch.uint8)
        exponents = torch.randint(119, 126, (experts, rows, columns // 32), generator=generator)  # 2^-8 .. 2^-2
        tensors[f"{name}_blocks"], tensors[f"{name}_scales"], dense = mxfp4_pack(codes, exponents)
        expected[name] = dense.transpose(1, 2).float()
    save_file({name: value if value.dtype == torch.uint8 else value.to(torch.bfloat16)
               for name, value in tensors.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config.update(dtype="bfloat16", quantization_config=MXFP4_QUANTIZATION)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder, expected


def tiny_bert(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT encoder (the MiniLM reference's architecture) with a WordPiece vocabulary of letters,
    digits and the words the tests' posts use; any other word is spelt out in letters."""
    characters = [*"abcdefghijklmnopqrstuvwxyz0123456789"]
    words = ["vermin", "out", "lovely", "tacos", "today", "awful", "post", "people", "are", "the", "and"]
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *characters, *(f"##{c}" for c in characters), *words]
    tokenizer = BertTokenizerFast(vocab={token: index for index, token in enumerate(vocabulary)}, do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocabulary), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=128, pad_token_id=0)
    return _save(BertModel(config), tokenizer, folder)  # with a pooler, as MiniLM ships one


def _save(model, tokenizer, folder: Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_llama_classifier(folder: Path) -> HFClassifier:
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFClassifier(model, tokenizer, prompts.load_template("baseline"), batch_size=8, model_version="tiny-llama")


# -- small datasets --------------------------------------------------------------------------------------
def write_file(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_dataset(path: Path, n: int = 60, *, start: int = 0) -> Path:
    """n rows cycling through the groups. Hate rows say "awful" 1-3 times, normal rows "lovely";
    every fifth normal row (and every seventh hate row) carries the other class's word too."""
    rows = []
    for index in range(start, start + n):
        hate = index % 2 == 1
        strength = 1 + index % 3
        words = ["awful" if hate else "lovely"] * strength
        if (not hate and index % 5 == 0) or (hate and index % 7 == 0):
            words += ["lovely" if hate else "awful"] * (strength + 1)
        rows.append({"id": f"row{index}", "text": f"post {index} " + " ".join(words),
                     "label": "hate" if hate else "normal", "group": GROUPS[index % 3]})
    return write_jsonl(path, rows)


def separable_rows(count: int) -> list[dict]:
    """Two kinds of post a tiny model can tell apart from their words alone (training tests)."""
    rows = []
    for index in range(count):
        hate = index % 2 == 0
        text = f"vermin vermin out {index}" if hate else f"lovely tacos today {index}"
        rows.append({"id": f"row{index}", "text": text, "label": "hate" if hate else "normal",
                     "group": GROUPS[index % 3]})
    return rows


# -- a lexicon classifier and run folders -----------------------------------------------------------------
class LexiconClassifier:
    """P(hate) = sigmoid((awful - lovely) * steepness - 0.05), nudged by a hash of the text so that no
    two scores tie; a text with neither word is normal. mode="generate" answers with a label word
    and no score."""

    def __init__(self, *, mode: str = "score", steepness: float = 1.0):
        self.mode = mode
        self.steepness = steepness
        self.model_version = f"lexicon-{mode}-{steepness}"

    def classify(self, texts, groups=None):
        outputs = []
        for text in texts:
            words = text.split()
            nudge = zlib.crc32(text.encode()) / 2**32 * 1e-3
            margin = (words.count("awful") - words.count("lovely")) * self.steepness - 0.05 + nudge
            score = 1 / (1 + math.exp(-margin))
            answer = "hate" if score >= 0.5 else "normal"
            outputs.append(Output(score=score) if self.mode == "score" else Output(answer=answer, raw=answer))
        return outputs


def make_run(data: Path, output_dir: Path, classifier, **fields) -> Path:
    """Evaluate `classifier` on `data` into a run folder under output_dir; return the folder."""
    config = EvalConfig(data=str(data), output_dir=str(output_dir), n_bootstrap=50,
                        model=ModelConfig(model="tiny", batch_size=8), **fields)
    return evaluate(config, classifier=classifier, progress=False).run_dir


# -- a real HTTP server -----------------------------------------------------------------------------------
@contextmanager
def serving(app, *, startup_timeout_s: float = 20.0):
    """Run an ASGI `app` under uvicorn on 127.0.0.1:<free port>, in a thread; yields the base URL and
    stops the server on exit."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    import uvicorn  # here: the GPU machine runs the gpu tests without the serve extra

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# -- assertions -------------------------------------------------------------------------------------------
def raises_data_error(message: str):
    """pytest.raises(DataError) whose message starts with `message` (matched literally)."""
    return pytest.raises(DataError, match="^" + re.escape(message))


# -- a LoRA adapter ---------------------------------------------------------------------------------------
def lora_adapter(base_dir: Path, folder: Path, *, seed: int) -> Path:
    """A LoRA adapter on the model in base_dir with non-zero weights (as if trained), saved to folder."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, config).save_pretrained(folder)
    return folder


# -- the server tests' app --------------------------------------------------------------------------------
SERVE_THRESHOLDS = Thresholds(threshold=0.5, per_group={"lgbtq": 0.25})


def serve_app(classifier, db_path, **kwargs):
    """create_app with the server tests' thresholds and a SQLite log at db_path."""
    from hatelens.serving.app import create_app

    kwargs.setdefault("thresholds", SERVE_THRESHOLDS)
    return create_app(classifier, db_path=str(db_path), **kwargs)


def tiny_train_config(model_dir: Path, work: Path, *overrides: str) -> TrainConfig:
    """A two-epoch LoRA recipe for a tiny model on 8 training and 4 validation rows written into `work`."""
    train_file = write_jsonl(work / "train.jsonl", separable_rows(8))
    val_file = write_jsonl(work / "val.jsonl", separable_rows(4))
    return load_config(TrainConfig, None, [
        f"model={model_dir}", f"train_file={train_file}", f"val_file={val_file}", f"output_dir={work / 'runs'}",
        "template=compact", "epochs=2", "batch_size=4", "grad_accum=1", "learning_rate=0.01", "eval_batch_size=8",
        "lora.r=4", "lora.alpha=8", "lora.dropout=0.1", "logging_steps=1", "eval_on_start=true", *overrides,
    ])


class WeightWatch(TrainerCallback):
    """Snapshots every parameter at the start and the end of training."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {name: value.detach().clone() for name, value in model.named_parameters()}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {name: value.detach().clone() for name, value in model.named_parameters()}
