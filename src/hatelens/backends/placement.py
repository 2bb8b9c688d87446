"""Where an evaluated model's weights go: one GPU, or split by decoder layers over the GPUs of one host.

A model that fits one card with room for its batches runs there (`single`). One that does not (gpt-oss-120b:
234 GB of bf16 weights against 141 GB an H200) is split into consecutive blocks of whole decoder layers, one
block a GPU, sized in proportion to each card's free memory (`split`): accelerate's balanced device map,
the same placement `device_map="auto"` makes, planned before loading so it can be logged, checked and
recorded. The GPUs then work in turn, not at once: split placement buys room, not speed.

The embeddings sit on the first GPU with the first layers, so the classifier's inputs and its cached prompt
opening's first layers live there; accelerate's hooks move the hidden states from block to block, and each
layer's part of the key/value cache stays on that layer's GPU.

The size is the parameter count of the model built from its config on the meta device (nothing allocated)
times the bytes of the load dtype. For gpt-oss published in MXFP4 and kept quantised (the `kernels` package)
the weights are about a quarter of that: set `placement: single` there.
"""

import logging
from collections import Counter
from dataclasses import dataclass, field

import torch

from hatelens.errors import ModelError

logger = logging.getLogger(__name__)

PLACEMENTS = ("auto", "single", "split")
# Weights may take this share of a card's free memory; the rest is for batches, the prompt opening's cache
# and the logits (gpt-oss-20b: 42 GB of weights + 32,768-token batches peaked at 60 GB on an H200).
WEIGHT_SHARE = 0.8


@dataclass(frozen=True)
class Placement:
    """The placement chosen for one model, and why."""

    kind: str  # single | split
    why: str
    weights_bytes: int | None = None  # None where it was not needed to decide (no GPU, one GPU, forced single)
    device_map: dict[str, int | str] | None = field(default=None, repr=False)  # module name -> device (split)

    def to_dict(self) -> dict:
        """What metrics.json records under run.timing.placement."""
        record: dict = {"kind": self.kind, "why": self.why}
        if self.weights_bytes is not None:
            record["weights_gb"] = round(self.weights_bytes / 1e9, 2)
        if self.device_map:
            record["modules_per_device"] = {str(device): count for device, count in
                                            Counter(self.device_map.values()).items()}
        return record


def choose_placement(requested: str, weights_bytes: int, free_bytes: list[int], *,
                     weight_share: float = WEIGHT_SHARE) -> tuple[str, str]:
    """(single | split, why) for weights of `weights_bytes` and GPUs with `free_bytes` free each."""
    if requested not in PLACEMENTS:
        raise ModelError(f"unknown placement {requested!r}; choose one of: {', '.join(PLACEMENTS)}")
    fits = weights_bytes <= weight_share * free_bytes[0] if free_bytes else True
    size = f"{weights_bytes / 1e9:.1f} GB of weights"
    if requested == "split":
        if len(free_bytes) < 2:
            raise ModelError(f"placement split needs 2 or more GPUs; {len(free_bytes)} visible. "
                             "Use placement: single (or auto) here")
        return "split", f"asked for (placement: split); {size} over {len(free_bytes)} GPUs"
    if requested == "single":
        return "single", "asked for (placement: single)"
    if fits:
        return "single", f"{size} fit one GPU ({weight_share:.0%} of {free_bytes[0] / 1e9:.1f} GB free)"
    if len(free_bytes) < 2:
        raise ModelError(f"{size} do not fit the one GPU ({weight_share:.0%} of {free_bytes[0] / 1e9:.1f} GB "
                         "free): use a host with several GPUs (placement split), MXFP4 weights with the `kernels` "
                         "package and placement: single, or vLLM behind --backend openai")
    if weights_bytes > weight_share * sum(free_bytes):
        raise ModelError(f"{size} do not fit even split over the {len(free_bytes)} GPUs "
                         f"({weight_share:.0%} of {sum(free_bytes) / 1e9:.1f} GB free in all)")
    return "split", f"{size} do not fit one GPU ({weight_share:.0%} of {free_bytes[0] / 1e9:.1f} GB free): " \
                    f"split over {len(free_bytes)} GPUs"


def empty_model(path: str, dtype: torch.dtype, *, trust_remote_code: bool = False, revision: str | None = None,
                local_files_only: bool = False):
    """The model's modules and parameter shapes on the meta device: its config read, no weight allocated."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code, revision=revision,
                                        local_files_only=local_files_only)
    with init_empty_weights():
        return AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)


def weights_bytes(model, dtype: torch.dtype) -> int:
    """Bytes of the model's parameters once loaded in `dtype` (a meta model's shapes suffice)."""
    return sum(parameter.numel() for parameter in model.parameters()) * dtype.itemsize


def split_device_map(model, free_bytes: dict[int, int], dtype: torch.dtype, *,
                     weight_share: float = WEIGHT_SHARE) -> dict[str, int]:
    """Module name -> GPU index: whole decoder layers in consecutive blocks, balanced over the GPUs, each
    holding at most `weight_share` of its free memory. ModelError if any module would be left for the CPU."""
    from accelerate import infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = list(model._no_split_modules or [])  # the decoder layer class: a layer never straddles two GPUs
    budget = {gpu: int(weight_share * free) for gpu, free in free_bytes.items()}
    balanced = get_balanced_memory(model, max_memory=budget, no_split_module_classes=no_split, dtype=dtype)
    device_map = infer_auto_device_map(model, max_memory=balanced, no_split_module_classes=no_split, dtype=dtype)
    left_over = sorted(name for name, device in device_map.items() if device not in free_bytes)
    if left_over:
        raise ModelError(f"the weights do not fit the {len(free_bytes)} GPUs ({', '.join(left_over[:3])} would go "
                         f"to {device_map[left_over[0]]}); use more GPUs or a smaller dtype")
    return device_map


def gpu_free_bytes() -> list[int]:
    """Free memory of each visible CUDA device, in bytes."""
    return [torch.cuda.mem_get_info(index)[0] for index in range(torch.cuda.device_count())]


def plan_placement(config, source, dtype: torch.dtype, device: str, *,
                   free_bytes: list[int] | None = None) -> Placement:
    """The placement for `config.placement` (a ModelConfig) of `source` (models.ModelSource) about to be
    loaded on `device` (cpu, cuda or cuda:N). free_bytes: each GPU's free memory (default: the visible CUDA
    devices'; tests pass made-up sizes)."""
    requested = config.placement
    if requested not in PLACEMENTS:
        raise ModelError(f"unknown placement {requested!r}; choose one of: {', '.join(PLACEMENTS)}")
    gpus = device == "cuda" or free_bytes is not None  # cuda:N names one card: the user chose single
    if not gpus:
        if requested == "split":
            raise ModelError(f"placement split needs --device cuda with 2 or more GPUs, not {device}")
        return Placement("single", f"device {device}")
    free_bytes = gpu_free_bytes() if free_bytes is None else free_bytes
    if requested == "single" or (requested == "auto" and (len(free_bytes) < 2 or source.gguf_file)):
        # GGUF files are the small embedded models (at most 270M parameters): they fit any card
        why = {"single": "asked for (placement: single)"}.get(requested, "one GPU visible" if len(free_bytes) < 2
                                                                   else "an embedded GGUF model")
        return Placement("single", why)
    from hatelens.backends.models import local_only

    model = empty_model(source.path, dtype, trust_remote_code=config.trust_remote_code, revision=config.revision,
                        local_files_only=local_only(source))
    size = weights_bytes(model, dtype)
    kind, why = choose_placement(requested, size, free_bytes)
    if kind == "single":
        return Placement(kind, why, size)
    return Placement(kind, why, size, split_device_map(model, dict(enumerate(free_bytes)), dtype))


def describe(placement: Placement) -> str:
    """One log line: which placement and why, and for a split how many modules each GPU holds."""
    line = f"placement {placement.kind}: {placement.why}"
    if placement.device_map:
        counts = Counter(placement.device_map.values())
        line += "; modules per GPU: " + ", ".join(f"cuda:{device} {count}" for device, count in sorted(counts.items()))
    return line
