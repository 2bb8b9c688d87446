"""Tiny random models built from configs, saved as real model folders (safetensors + tokenizer).

Their answers are meaningless; they exercise every code path a real model takes, in milliseconds.
"""

from pathlib import Path

import torch
from transformers import AutoTokenizer, GptOssConfig, GptOssForCausalLM, LlamaConfig, LlamaForCausalLM

ASSETS = Path(__file__).parent / "assets"


def tiny_llama(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer Llama with the ChatML tiny tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny_chatml")
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=None, tie_word_embeddings=False)
    return _save(LlamaForCausalLM(config), tokenizer, folder)


def tiny_gpt_oss(folder: Path, *, seed: int = 0) -> Path:
    """A 2-layer GPT-OSS (4 experts, 2 active, sliding + full attention, sinks), harmony tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tiny_harmony")
    torch.manual_seed(seed)
    config = GptOssConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=4,
                          num_experts_per_tok=2, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                          max_position_embeddings=131072, pad_token_id=tokenizer.pad_token_id,
                          rope_parameters={"rope_type": "yarn", "rope_theta": 150000.0, "factor": 32.0,
                                           "beta_fast": 32.0, "beta_slow": 1.0, "truncation": False,
                                           "original_max_position_embeddings": 4096},
                          eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = GptOssForCausalLM(config)
    return _save(model, tokenizer, folder)


def _save(model, tokenizer, folder: Path) -> Path:
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
