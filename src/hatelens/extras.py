"""Optional parts of hatelens and the packages each needs (pyproject's extras).

Core installs evaluate models; training, serving and GGUF models need their extra. The edge that
needs one calls `require`, so a missing package is one line naming the pip command, not a traceback.
"""

from importlib import import_module

from hatelens.errors import ConfigError

EXTRAS = {
    "train": ("peft", "trl", "datasets", "tensorboard"),
    "serve": ("fastapi", "uvicorn", "prometheus_client"),
    "gguf": ("gguf", "sentencepiece"),
    "mlflow": ("mlflow",),
}


def missing(extra: str) -> list[str]:
    """The modules of an extra that cannot be imported here."""
    absent = []
    for module in EXTRAS[extra]:
        try:
            import_module(module)
        except ImportError:
            absent.append(module)
    return absent


def require(extra: str, purpose: str) -> None:
    """ConfigError naming the install command when `purpose` needs an extra that is not installed."""
    absent = missing(extra)
    if absent:
        raise ConfigError(f"{purpose} needs the {extra} extra ({', '.join(absent)} not installed): "
                          f"pip install 'hatelens[{extra}]'")
