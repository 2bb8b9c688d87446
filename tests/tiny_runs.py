"""Real run folders for the compare / calibrate / report tests, written by `evaluate()`.

Two classifiers answer: the tiny random Llama (through the hf backend: a weak "baseline"), and a
lexicon classifier, a complete if simple Classifier that scores a text by its words (a strong
"fine-tuned" model whose errors we can place on purpose).
"""

import json
import math
import zlib
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from hatelens.backends import prompts
from hatelens.backends.base import Output
from hatelens.backends.hf import HFClassifier
from hatelens.config import EvalConfig, ModelConfig
from hatelens.evaluation.evaluate import evaluate

GROUPS = ("lgbtq", "mexican", "middle_east")


def write_dataset(path: Path, n: int = 60, *, start: int = 0) -> Path:
    """n rows cycling through the groups. Hate rows say "awful" 1-3 times, normal rows "lovely";
    every fifth normal row (and every seventh hate row) carries the other class's word too."""
    with open(path, "w") as file:
        for index in range(start, start + n):
            hate = index % 2 == 1
            strength = 1 + index % 3
            words = ["awful" if hate else "lovely"] * strength
            if (not hate and index % 5 == 0) or (hate and index % 7 == 0):
                words += ["lovely" if hate else "awful"] * (strength + 1)
            file.write(json.dumps({"id": f"row{index}", "text": f"post {index} " + " ".join(words),
                                   "label": "hate" if hate else "normal", "group": GROUPS[index % 3]}) + "\n")
    return path


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
            outputs.append(Output(score=score) if self.mode == "score"
                           else Output(answer="hate" if score >= 0.5 else "normal", raw="hate" if score >= 0.5 else "normal"))
        return outputs


def tiny_llama_classifier(folder: Path) -> HFClassifier:
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return HFClassifier(model, tokenizer, prompts.load_template("baseline"), batch_size=8, model_version="tiny-llama")


def make_run(data: Path, output_dir: Path, classifier, **fields) -> Path:
    """Evaluate `classifier` on `data` into a run folder under output_dir; return the folder."""
    config = EvalConfig(data=str(data), output_dir=str(output_dir), n_bootstrap=50,
                        model=ModelConfig(model="tiny", batch_size=8), **fields)
    return evaluate(config, classifier=classifier, progress=False).run_dir
