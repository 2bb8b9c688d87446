import os

# Tests never reach a hub: everything they load is built here or installed by `make setup`.
# Set before transformers / huggingface_hub are imported: they read these once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

# Without a CUDA device, Triton's interpreter runs gpt-oss's Triton kernels on the CPU (test_fused_kernels.py).
# Set before Triton is imported: its own helpers (tl.sigmoid, tl.sum) are compiled as it is imported.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from fixtures import WeightWatch, tiny_bert, tiny_gpt_oss, tiny_llama, tiny_train_config  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from hatelens.backends import prompts  # noqa: E402
from hatelens.backends.hf import HFClassifier  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="session")
def tiny_gpt_oss_dir(tmp_path_factory):
    return tiny_gpt_oss(tmp_path_factory.mktemp("tiny_gpt_oss"))


@pytest.fixture(scope="session")
def llama_run(tiny_llama_dir, tmp_path_factory):
    """A tiny Llama trained once with the evaluator's scorer: (TrainResult, its WeightWatch, the work folder)."""
    from hatelens.backends.text_scores import score_texts
    from hatelens.training.train import train

    work = tmp_path_factory.mktemp("llama_train")
    watch = WeightWatch()
    result = train(tiny_train_config(tiny_llama_dir, work), score_texts=score_texts, progress=False, callbacks=(watch,))
    return result, watch, work


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty hatelens cache, so no test depends on what an earlier run converted."""
    monkeypatch.setenv("HATELENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def classifier(tiny_llama_dir):
    """The server tests' model: a tiny random Llama behind the baseline template (a file's own `classifier`
    fixture overrides it)."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    return HFClassifier(model, tokenizer, prompts.load_template("baseline"), batch_size=8, model_version="tiny-llama")


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "predictions.sqlite"
