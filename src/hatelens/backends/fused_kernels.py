"""gpt-oss inference on CUDA with its elementwise work fused into Triton kernels (triton_kernels.py).

Profiled on one H200 (benchmarks/results/gpu_variants.md), about half of a warm evaluation's GPU time went to
small elementwise kernels around the matrix products. Three groups are fused here:
- the experts (`fused_experts_forward`, in place of transformers' `grouped_mm` forward, which gathers every
  routed row's biases into S x 5,760 and S x 2,880 tensors written only to be added, applies the clamped
  SwiGLU gate in seven passes over strided halves, weights, unsorts and sums the rows): the two grouped
  products run without their biases, `bias_gate` adds the first bias and applies the gate in registers, and
  `combine` sums each token's top-k rows, weighted, with the second bias, in float32;
- the RMS norms (`fused_rms_norm`, 49 a forward pass, each seven elementwise kernels in eager): one kernel;
- the attention's rotary embedding (`fused_rotary`): transformers rotates the query and key as strided views
  of the projections (seven elementwise kernels each: four products over strided halves, a sum, a difference,
  a concatenation) and the sink attention then copies the query head-major; one kernel each reads the
  projection once and writes the rotated heads head-major.
Same arithmetic, in float32 registers (transformers rounds to bf16 between its passes).

Inference only: with gradients (training), on a CPU, or for other models, transformers' code runs.
`use_fused_kernels` switches a model (`fast_paths.use_gpu_speedups` calls it; HATELENS_TRITON_KERNELS=0 keeps
transformers' code, so benchmarks compare the two). Triton compiles each kernel on its first call and keeps it in
its disk cache for later processes; `compile_in_background` pays that while the weights load.
"""

import contextlib
import functools
import logging
import os
import threading
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

IMPLEMENTATION = "hatelens_fused"  # the name registered in transformers' ExpertsInterface
BLOCK = 1024  # columns an experts' kernel program handles (gpt-oss: 2,880 wide, three programs a row)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _runs_here(tensor: torch.Tensor) -> bool:
    """Kernels run on CUDA tensors, and on CPU tensors under Triton's interpreter (TRITON_INTERPRET=1: tests)."""
    return not torch.is_grad_enabled() and (tensor.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1")


def _on_device_of(tensor: torch.Tensor):
    """Triton launches on the current CUDA device: a model split over several GPUs (placement split) has layers
    on the others, so each launch runs with its tensors' device current."""
    return torch.cuda.device(tensor.device) if tensor.is_cuda else contextlib.nullcontext()


def use_fused_kernels(model) -> list[str]:
    """Switch `model` (gpt-oss with bf16 or fp32 `GptOssExperts`) to the fused kernels; the names of what
    applies ([] for other models, without Triton, with HATELENS_TRITON_KERNELS=0, or if the kernels do not
    compile here: logged)."""
    if os.environ.get("HATELENS_TRITON_KERNELS") == "0" or model.config.model_type != "gpt_oss":
        return []
    if not triton_available():
        logger.warning("Triton is not installed: gpt-oss runs transformers' experts and norms")
        return []
    parameter = next(model.parameters())
    if not kernels_compile(str(parameter.device), parameter.dtype, *_dimensions(model.config)):
        return []
    return [name for name, applies in (("fused experts", use_fused_experts(model)),
                                       ("fused RMSNorm", use_fused_norms(model)),
                                       ("fused rotary", use_fused_rotary(model))) if applies]


def unfuse(model) -> None:
    unfuse_experts(model)
    unfuse_norms(model)
    unfuse_rotary(model)


def _patch_forward(model, class_name: str, forward) -> bool:
    """Each module of `class_name` in `model` through `forward` (an instance attribute: `_unpatch` undoes it)."""
    modules = [module for module in model.modules() if type(module).__name__ == class_name]
    for module in modules:
        module.forward = forward.__get__(module)
    return bool(modules)


def _unpatch(model, forward) -> None:
    for module in model.modules():
        if getattr(module.__dict__.get("forward"), "__func__", None) is forward:
            del module.forward


# -- experts ----------------------------------------------------------------------------------------------
def use_fused_experts(model) -> bool:
    """Every `GptOssExperts` of `model` through `fused_experts_forward` (the implementation is read from the
    config). False, changing nothing, where the experts do not run transformers' grouped_mm (MXFP4 kernels)."""
    experts = [module for module in model.modules() if type(module).__name__ == "GptOssExperts"]
    if not experts or getattr(model.config, "_experts_implementation", None) not in ("grouped_mm", IMPLEMENTATION):
        return False
    from transformers.integrations.moe import ALL_EXPERTS_FUNCTIONS

    ALL_EXPERTS_FUNCTIONS.register(IMPLEMENTATION, fused_experts_forward)
    model.set_experts_implementation(IMPLEMENTATION)
    return True


def unfuse_experts(model) -> None:
    """Back to transformers' grouped_mm forward."""
    if getattr(model.config, "_experts_implementation", None) == IMPLEMENTATION:
        model.set_experts_implementation("grouped_mm")


def fused_experts_forward(self, hidden_states: torch.Tensor, top_k_index: torch.Tensor,
                          top_k_weights: torch.Tensor) -> torch.Tensor:
    """The experts' output for (tokens x hidden) `hidden_states` routed to `top_k_index` with `top_k_weights`
    (tokens x top-k each): transformers' `grouped_mm_experts_forward`, same signature and result."""
    from transformers.integrations.moe import _grouped_mm, grouped_mm_experts_forward

    if not (_runs_here(hidden_states) and self.is_transposed):
        return grouped_mm_experts_forward(self, hidden_states, top_k_index, top_k_weights)
    device, top_k = hidden_states.device, top_k_index.shape[-1]
    experts, order = torch.sort(top_k_index.reshape(-1))  # the routed rows, grouped by expert
    rows = hidden_states.index_select(0, order // top_k)
    counts = torch.histc(experts.int() if device.type == "cuda" else experts.float(), bins=self.num_experts,
                         min=0, max=self.num_experts - 1)
    offsets = torch.cumsum(counts, dim=0, dtype=torch.int32)
    gate_up = _grouped_mm(rows, self.gate_up_proj, offs=offsets)
    gated = bias_gate(gate_up, self.gate_up_proj_bias, experts, alpha=self.alpha, limit=self.limit)
    down = _grouped_mm(gated, self.down_proj, offs=offsets)
    position = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel(), device=device))
    return combine(down, self.down_proj_bias, top_k_index, top_k_weights, position)


def bias_gate(gate_up: torch.Tensor, bias: torch.Tensor, experts: torch.Tensor, *, alpha: float,
              limit: float) -> torch.Tensor:
    """(rows x width) clamped SwiGLU of `gate_up` (rows x 2 width, gate and up interleaved) plus row i's
    expert's `bias` (experts x 2 width), `experts[i]` being row i's expert."""
    from hatelens.backends import triton_kernels

    rows, width = gate_up.shape[0], gate_up.shape[1] // 2
    out = gate_up.new_empty(rows, width)
    if rows:
        with _on_device_of(gate_up):
            triton_kernels.bias_gate_kernel[(rows, -(-width // BLOCK))](
                gate_up.contiguous(), bias.contiguous(), experts.contiguous(), out, width, float(alpha), float(limit),
                BLOCK=BLOCK)
    return out


def combine(down: torch.Tensor, bias: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor,
            position: torch.Tensor) -> torch.Tensor:
    """(tokens x hidden): for each token, the sum over its choices k of top_k_weights[t, k] x (down row
    position[t x top_k + k] + bias of expert top_k_index[t, k])."""
    from hatelens.backends import triton_kernels

    tokens, top_k = top_k_index.shape
    width = down.shape[1]
    out = down.new_empty(tokens, width)
    if tokens:
        with _on_device_of(down):
            triton_kernels.combine_kernel[(tokens, -(-width // BLOCK))](
                down.contiguous(), bias.contiguous(), top_k_index.contiguous(), top_k_weights.contiguous(),
                position.contiguous(), out, width, TOP_K=top_k, BLOCK=BLOCK)
    return out


# -- RMS norms ----------------------------------------------------------------------------------------------
def use_fused_norms(model) -> bool:
    """Every `GptOssRMSNorm` of `model` through `fused_rms_norm` (`unfuse_norms` undoes it)."""
    return _patch_forward(model, "GptOssRMSNorm", _fused_norm_forward)


def unfuse_norms(model) -> None:
    _unpatch(model, _fused_norm_forward)


def _fused_norm_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    if not _runs_here(hidden_states):
        return type(self).forward(self, hidden_states)
    return fused_rms_norm(hidden_states, self.weight, self.variance_epsilon)


def fused_rms_norm(hidden_states: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """GptOssRMSNorm: weight x (x / sqrt(mean(x^2) + eps)) over the last dimension, in float32, in x's dtype."""
    from hatelens.backends import triton_kernels

    width = hidden_states.shape[-1]
    flat = hidden_states.reshape(-1, width).contiguous()
    out = torch.empty_like(flat)
    if len(flat):
        with _on_device_of(flat):
            triton_kernels.rms_norm_kernel[(len(flat),)](flat, weight.contiguous(), out, width, float(eps),
                                                         BLOCK=max(16, 1 << (width - 1).bit_length()))
    return out.view(hidden_states.shape)


# -- rotary embedding ---------------------------------------------------------------------------------------
def use_fused_rotary(model) -> bool:
    """Every `GptOssAttention` of `model` through `_fused_attention_forward` (`unfuse_rotary` undoes it).
    False, changing nothing, where half the head width is not a power of two (the kernel's block)."""
    if not _rotary_fits(getattr(model.config, "head_dim", 0)):
        return False
    return _patch_forward(model, "GptOssAttention", _fused_attention_forward)


def _rotary_fits(head_dim: int) -> bool:
    """The kernel's block is half a head: a power of two."""
    half = head_dim // 2
    return half >= 1 and not half & (half - 1)


def unfuse_rotary(model) -> None:
    _unpatch(model, _fused_attention_forward)


def _fused_attention_forward(self, hidden_states, position_embeddings, attention_mask, cache=None, **kwargs):
    """GptOssAttention.forward (transformers 5.24) with the query and key rotated by `fused_rotary`."""
    from transformers.models.gpt_oss import modeling_gpt_oss as gpt_oss

    if not _runs_here(hidden_states):
        return type(self).forward(self, hidden_states, position_embeddings, attention_mask, cache=cache, **kwargs)
    batch, length = hidden_states.shape[:2]
    cos, sin = position_embeddings
    query = fused_rotary(self.q_proj(hidden_states), cos, sin, self.head_dim)
    key = fused_rotary(self.k_proj(hidden_states), cos, sin, self.head_dim)
    value = self.v_proj(hidden_states).view(batch, length, -1, self.head_dim).transpose(1, 2)
    if cache is not None:
        key, value = cache.update(key, value, self.layer_idx, kwargs=kwargs)
    attention = gpt_oss.ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation,
                                                              gpt_oss.eager_attention_forward)
    output, weights = attention(self, query, key, value, attention_mask, dropout=0.0, scaling=self.scaling,
                                sliding_window=self.sliding_window, s_aux=self.sinks, **kwargs)
    return self.o_proj(output.reshape(batch, length, -1).contiguous()), weights


def fused_rotary(projected: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(batch, heads, length, head_dim), contiguous: the heads of `projected` (batch, length, heads x head_dim)
    rotated by `cos` and `sin` ((batch or 1, length, head_dim / 2)), as gpt-oss's `_apply_rotary_emb`."""
    from hatelens.backends import triton_kernels

    batch, length, width = projected.shape
    heads, half = width // head_dim, head_dim // 2
    projected = projected.contiguous()
    cos, sin = (angles.expand(batch, length, half) for angles in (cos, sin))
    if cos.stride(-1) != 1 or sin.stride() != cos.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    out = projected.new_empty(batch, heads, length, head_dim)
    if batch * length:
        with _on_device_of(projected):
            triton_kernels.rotary_kernel[(batch * length,)](
                projected, cos, sin, out, length, heads, width, cos.stride(0), cos.stride(1),
                HALF=half, BLOCK_H=max(1, 1 << (heads - 1).bit_length()))
    return out


# -- compiling ----------------------------------------------------------------------------------------------
def _dimensions(config) -> tuple[int, ...]:
    return (config.hidden_size, config.intermediate_size, config.num_local_experts, config.num_experts_per_tok,
            config.num_attention_heads, config.num_key_value_heads, config.head_dim)


@functools.cache
def kernels_compile(device: str, dtype: torch.dtype, hidden: int, intermediate: int, experts: int,
                    top_k: int, heads: int, kv_heads: int, head_dim: int) -> bool:
    """Run each kernel once on small tensors of the model's widths, dtype and device (so Triton compiles the
    variants the model will call): True if they ran; False, logged, if Triton failed here."""
    try:
        generator = torch.Generator().manual_seed(0)
        rows = torch.randn(3, hidden, generator=generator).to(device, dtype)
        fused_rms_norm(rows, torch.ones(hidden, dtype=dtype).to(device), 1e-5)
        gate_up = torch.randn(3, 2 * intermediate, generator=generator).to(device, dtype)
        bias_gate(gate_up, torch.zeros(experts, 2 * intermediate, dtype=dtype, device=device),
                  torch.zeros(3, dtype=torch.long, device=device), alpha=1.0, limit=1.0)
        choices = torch.zeros(3, top_k, dtype=torch.long, device=device)
        combine(torch.randn(3 * top_k, hidden, generator=generator).to(device, dtype),
                torch.zeros(experts, hidden, dtype=dtype, device=device), choices,
                torch.ones(3, top_k, dtype=dtype, device=device), torch.arange(3 * top_k, device=device))
        if _rotary_fits(head_dim):  # the query's and the key's head counts: two compilations
            angles = torch.randn(1, 3, head_dim // 2, generator=generator).to(device, dtype)
            for count in (heads, kv_heads):
                fused_rotary(torch.randn(1, 3, count * head_dim, generator=generator).to(device, dtype), angles,
                             angles, head_dim)
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)
    except Exception as error:  # a compiler or driver problem: the model keeps transformers' code
        logger.warning("gpt-oss's Triton kernels do not run here (%s: %s): transformers' experts and norms are "
                       "used", type(error).__name__, str(error).splitlines()[0] if str(error) else "")
        return False
    return True


def compile_in_background(model_path: str, device: str, dtype: torch.dtype, *,
                          revision: str | None = None) -> threading.Thread | None:
    """Start compiling the kernels for the gpt-oss model at `model_path` (a folder, or a hub id already in the
    local cache: nothing is fetched) while its weights load; join the thread before the model runs. None
    (nothing started) for other models, other devices, or a config not on disk yet (use_fused_kernels then
    compiles on the spot)."""
    if not device.startswith("cuda") or os.environ.get("HATELENS_TRITON_KERNELS") == "0" or not triton_available():
        return None
    config_file = Path(model_path) / "config.json"
    if not config_file.is_file():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_path, "config.json", revision=revision)
        if not isinstance(cached, str):
            return None
        config_file = Path(cached)
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(config_file.parent, local_files_only=True)
    except (OSError, ValueError):  # loading the model reports what is wrong with it
        return None
    if config.model_type != "gpt_oss":
        return None
    index = torch.cuda.current_device() if device == "cuda" else int(device.split(":")[1])
    thread = threading.Thread(target=kernels_compile, args=(f"cuda:{index}", dtype, *_dimensions(config)),
                              name="hatelens-triton-compile", daemon=True)
    thread.start()
    return thread
