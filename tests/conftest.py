import os

# Tests never reach a hub: everything they load is built here or installed by `make setup`.
# Set before transformers / huggingface_hub are imported: they read these once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402
from fixtures import tiny_gpt_oss, tiny_llama  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def tiny_gpt_oss_dir(tmp_path_factory):
    return tiny_gpt_oss(tmp_path_factory.mktemp("tiny_gpt_oss"))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """An empty hatelens cache, so no test depends on what an earlier run converted."""
    monkeypatch.setenv("HATELENS_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
