"""Rebuild the tiny tokenizers the tests use: python tests/assets/make_tiny_tokenizers.py

A byte-level BPE with a few hundred tokens, trained on the prompt templates, so that tiny random
models stay tiny. `tiny_chatml/` carries a ChatML chat template (like SmolLM2); `tiny_harmony/` a
cut-down harmony template with gpt-oss's special tokens (channels, final answer).
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

HERE = Path(__file__).parent
CORPUS = [p.read_text() for p in (HERE.parents[1] / "configs" / "prompts").glob("*.yaml")] + [
    "hate normal Answer: hate Answer: normal the post is about gay mexican arab people",
    '{"classification": "hate"} {"classification": "normal"} analysis final',
]

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HARMONY = (
    "<|start|>system<|message|>You are ChatGPT.\nReasoning: {{ reasoning_effort | default('medium') }}<|end|>"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "<|start|>developer<|message|># Instructions\n\n{{ message['content'] }}<|end|>"
    "{% elif message['role'] == 'assistant' %}<|start|>assistant<|channel|>final<|message|>{{ message['content'] }}<|end|>"
    "{% else %}<|start|>{{ message['role'] }}<|message|>{{ message['content'] }}<|end|>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|start|>assistant{% endif %}"
)


def build(name: str, specials: list[str], chat_template: str, eos: str, pad: str) -> None:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=384, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=eos, pad_token=pad,
                                   additional_special_tokens=[s for s in specials if s not in (eos, pad)])
    fast.chat_template = chat_template
    fast.save_pretrained(HERE / name)


if __name__ == "__main__":
    build("tiny_chatml", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], CHATML, eos="<|im_end|>", pad="<|endoftext|>")
    build("tiny_harmony", ["<|endoftext|>", "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|return|>"],
          HARMONY, eos="<|return|>", pad="<|endoftext|>")
