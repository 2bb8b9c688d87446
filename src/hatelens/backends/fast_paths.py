"""Speed-ups for gpt-oss on a CUDA device, switched on by `load_for_inference` and `hatelens train`.

Measured on one H200 with gpt-oss-20b's shape:
- for inference, the experts' biases, gate, routing weights and sum over the choices in two Triton kernels
  around the grouped matrix products, each RMS norm in one and the query's and key's rotary embedding in one each
  (`fused_kernels.py`; HATELENS_TRITON_KERNELS=0 turns them off);
- the experts' gate (clamp, sigmoid and products over every routed token: six passes over a
  (tokens x 4, 2880) tensor in eager mode) compiled by torch.compile into one kernel. Opt-in
  (`compile_expert_gate`): its compilation costs 4-7 s a process for inference and 66 s for training,
  against 1,009 test texts warm in 1.66 vs 1.60 s eager, then 1.48 vs 1.84 s, in two runs
  (benchmarks/results/gpu_run.md), so only a long-lived server may earn it back;
- attention with sinks through PyTorch's fused kernels (`sdpa_with_sinks`) for inference only: the
  long policy_persona template 2.2 -> 1.8 s; in training it was slower than eager (77 vs 165 samples/s).
  Without gradients the kernel attends over the real keys and the sink's share is taken from its
  log-sum-exp (`_attention_then_sink_share`): 0.53 against 0.59-0.61 s a warm evaluation, with the two
  changes to hf.py that came with it (gpu_variants.md, call 20);
- for inference, the experts compute real tokens only (`pack_moe_tokens`): a batch's pads (a quarter of the
  tokens of the 1,009 test texts in batches of 32,768 tokens) skip the router and the experts;
- in training, the experts' gate recomputed in the backward pass (`recompute_expert_gate`, on by default):
  autograd keeps the gate's input, one (tokens x 4, 5,760) tensor a layer, instead of five intermediates of
  the gate's elementwise passes; the recomputation is a few elementwise kernels.
Nothing changes on a CPU, or for other model types.
"""

import contextlib
import contextvars
import logging
import os
import time
import weakref

import torch
from torch.nn.attention import sdpa_kernel

from hatelens.backends import fused_kernels

logger = logging.getLogger(__name__)

# Compilations of the experts' gate in this process, counted by the backend wrapper below: one per graph
# Dynamo builds. More than one or two (a size-1 specialisation) means it recompiles per batch shape.
GATE_COMPILATIONS = {"count": 0}


def use_gpu_speedups(model, *, inference: bool, compile_gate: bool = False, recompute_gate: bool = True) -> dict:
    """Apply what helps this model on its device. Returns what was applied: {"applied": [names],
    "experts": which expert implementation runs, "compile_s": seconds the gate's compilation took
    (paid here, once, on a small warm-up tensor: not by the first batch)}. recompute_gate: training only,
    when the gate is not compiled (a compiled backward already recomputes what it does not keep)."""
    if model.config.model_type != "gpt_oss" or next(model.parameters()).device.type != "cuda":
        return {"applied": []}
    fused = fused_kernels.use_fused_kernels(model) if inference else []  # experts, norms, rotary in Triton
    experts = describe_experts(model)
    report = {"applied": fused, "experts": experts}
    if "fused experts" in fused:
        if compile_gate:
            logger.info("compile_expert_gate is not needed: the fused experts apply the gate in their own kernel")
    elif not compile_gate:
        if not inference and recompute_gate and recompute_expert_gate(model):
            report["applied"].append("expert gate recomputed in backward")
        logger.info("gpt-oss experts run by %s with the eager gate (compile_expert_gate is off)", experts)
    elif compile_expert_gate(model):
        report["compile_s"] = round(warm_up_expert_gate(model, backward=not inference), 2)
        report["applied"].append("compiled expert gate")
    else:
        logger.warning("gpt-oss experts run by %s: no gate to compile, the compiled expert gate does not apply", experts)
    if inference:
        use_sink_attention(model)
        report["applied"].append("fused sink attention")
        if os.environ.get("HATELENS_PACK_MOE") != "0" and pack_moe_tokens(model):
            report["applied"].append("experts skip padding")
    logger.info("gpt-oss on CUDA: experts %s; %s%s", experts, ", ".join(report["applied"]) or "no speed-ups",
                f" (gate compiled in {report['compile_s']} s)" if "compile_s" in report else "")
    return report


def describe_experts(model) -> str:
    """The experts' class and implementation: e.g. "GptOssExperts (grouped_mm)" on bf16 weights;
    MXFP4 weights kept quantised run OpenAI's Triton kernels ("Mxfp4GptOssExperts", from the `kernels`
    package), which fuse the gate themselves."""
    for module in model.modules():
        name = type(module).__name__
        if name.endswith("Experts"):
            implementation = getattr(model.config, "_experts_implementation", None)
            return f"{name} ({implementation})" if implementation else name
    return "none found"


def gate(gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
    """GptOssExperts._apply_gate as a pure function (no module argument, so Dynamo guards on two floats,
    not on each layer's module): clamped SwiGLU over interleaved gate/up columns."""
    gate_part, up = gate_up[..., ::2], gate_up[..., 1::2]
    gate_part = gate_part.clamp(min=None, max=limit)
    up = up.clamp(min=-limit, max=limit)
    return (up + 1) * (gate_part * torch.sigmoid(gate_part * alpha))


def _counting_backend(name: str):
    from torch._dynamo.backends.registry import lookup_backend

    inner = lookup_backend(name)

    def backend(graph, example_inputs):
        GATE_COMPILATIONS["count"] += 1
        return inner(graph, example_inputs)

    return backend


def compile_expert_gate(model, *, backend: str = "inductor") -> bool:
    """Route the experts' gate through torch.compile with every dimension dynamic: one compilation
    serves every batch shape. The patch is on the experts class, so every model of that class in this
    process shares it; `restore_expert_gate` undoes it. False when the model has no such gate (MXFP4
    kernels). backend: "inductor" (fused kernels); tests count compilations with "eager"."""
    experts = _experts_class(model)
    if experts is None:
        return False
    if "_eager_gate" not in experts.__dict__:
        experts._eager_gate = experts._apply_gate
        compiled = torch.compile(gate, dynamic=True, backend=_counting_backend(backend))
        experts._apply_gate = lambda self, gate_up: compiled(gate_up, self.alpha, self.limit)
    return True


class RecomputedGate(torch.autograd.Function):
    """`gate` whose backward pass recomputes it from its input: autograd keeps `gate_up` alone."""

    @staticmethod
    def forward(ctx, gate_up: torch.Tensor, alpha: float, limit: float) -> torch.Tensor:
        ctx.save_for_backward(gate_up)
        ctx.alpha, ctx.limit = alpha, limit
        return gate(gate_up, alpha, limit)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (gate_up,) = ctx.saved_tensors
        with torch.enable_grad():
            again = gate_up.detach().requires_grad_()
            (grad_input,) = torch.autograd.grad(gate(again, ctx.alpha, ctx.limit), again, grad_output)
        return grad_input, None, None


def recompute_expert_gate(model) -> bool:
    """Route the experts' gate through `RecomputedGate` whenever a gradient will flow through it (training);
    inference runs the eager gate. The patch is on the experts class (undone by `restore_expert_gate`);
    False when the model has no such gate (MXFP4 kernels) or the gate is already patched (compiled)."""
    experts = _experts_class(model)
    if experts is None or "_eager_gate" in experts.__dict__:
        return experts is not None and "_recomputed" in experts.__dict__
    eager = experts._eager_gate = experts._apply_gate
    experts._recomputed = True

    def apply_gate(self, gate_up):
        if torch.is_grad_enabled() and gate_up.requires_grad:
            return RecomputedGate.apply(gate_up, self.alpha, self.limit)
        return eager(self, gate_up)

    experts._apply_gate = apply_gate
    return True


def warm_up_expert_gate(model, *, backward: bool) -> float:
    """Compile the gate now, on a small tensor of the model's width, dtype and device (forward, and
    backward for training): the seconds it took. Later batches of any shape reuse the compilation."""
    module = next(module for module in model.modules() if type(module) is _experts_class(model))
    width = module.gate_up_proj.shape[-1]
    started = time.perf_counter()
    for rows in (3, 5):  # the second call checks that a new shape is served without a recompilation
        sample = torch.randn(rows, width, device=module.gate_up_proj.device, dtype=module.gate_up_proj.dtype,
                             requires_grad=backward)
        output = module._apply_gate(sample)
        if backward:
            output.sum().backward()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def restore_expert_gate(model) -> None:
    experts = _experts_class(model)
    if experts is not None and "_eager_gate" in experts.__dict__:
        experts._apply_gate = experts.__dict__["_eager_gate"]
        del experts._eager_gate
        if "_recomputed" in experts.__dict__:
            del experts._recomputed


def _experts_class(model):
    for module in model.modules():
        if hasattr(type(module), "_apply_gate") and hasattr(module, "gate_up_proj"):
            return type(module)
    return None


SINK_ATTENTION = "hatelens_fused_sinks"  # no "sdpa" in the name: transformers would refuse it for GPT-OSS


def sink_backends():
    """The fused kernels `sdpa_with_sinks` may use with gradients (inference calls the memory-efficient kernel
    itself): PyTorch's own choice minus cuDNN, which builds an execution plan for every new (rows, width) shape
    (hundreds of ms each; batches sorted by length all differ in width), so a fresh process paid seconds on its
    first batches. The memory-efficient kernel takes the additive mask with no plan. HATELENS_CUDNN_ATTENTION=1
    gives cuDNN back."""
    from torch.nn.attention import SDPBackend

    if os.environ.get("HATELENS_CUDNN_ATTENTION") == "1":
        return None
    return [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def sdpa_with_sinks(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """GPT-OSS attention (a learned sink logit per head) through PyTorch's fused attention kernels.

    Inference (`_attention_then_sink_share`): the kernel attends over the real keys and returns each query's
    log-sum-exp, and the sink's share of the softmax is taken out afterwards. With gradients the sink is one
    extra key whose value vector is zero and whose logit is the learned number (put in the additive mask): it
    takes its share of the softmax and adds nothing, exactly like the column that eager attention appends.
    Either way the query heads that share a key/value head are folded into the query length, so keys and
    values are never repeated. `attention_mask` is the additive (batch, 1, q, kv) mask.
    """
    if not torch.is_grad_enabled() and attention_mask is not None and not dropout:
        return _attention_then_sink_share(query, key, value, attention_mask, kwargs["s_aux"], scaling)
    batch, heads, q_length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    zeros = key.new_zeros(batch, kv_heads, 1, dim)
    key, value = torch.cat([key, zeros], dim=2), torch.cat([value, zeros], dim=2)
    mask = _mask_with_sinks(attention_mask, kwargs["s_aux"], kv_heads, group, q_length, kv_length)
    backends = sink_backends()
    with sdpa_kernel(backends) if backends else contextlib.nullcontext():
        output = torch.nn.functional.scaled_dot_product_attention(
            query.reshape(batch, kv_heads, group * q_length, dim), key, value, attn_mask=mask.to(query.dtype),
            dropout_p=dropout, scale=scaling,
        )
    # reshape, not view: the kernel's output layout depends on the dtype and the backend chosen
    return output.reshape(batch, heads, q_length, dim).transpose(1, 2).contiguous(), None


def _mask_with_sinks(attention_mask, sinks, kv_heads: int, group: int, q_length: int, kv_length: int):
    """The (batch, kv heads, group x q, kv + 1) additive mask of the training path: the layer's mask for every
    query head, and the layer's sink logits as the last column."""
    batch = attention_mask.shape[0]
    sinks = sinks.view(1, kv_heads, group, 1, 1).to(attention_mask.dtype)
    allowed = attention_mask[:, :, None, :, :kv_length].expand(batch, kv_heads, group, q_length, kv_length)
    return torch.cat([allowed, sinks.expand(batch, -1, -1, q_length, 1)], dim=-1).view(
        batch, kv_heads, group * q_length, -1)


def _attention_then_sink_share(query, key, value, attention_mask, sinks, scaling):
    """Sink attention for inference, (batch, q, heads, head_dim) like `sdpa_with_sinks`.

    With Z = exp(log-sum-exp of a query's scores over the real keys) and s its head's sink logit, softmax over
    the keys plus the sink gives each real key e^score / (Z + e^s): the kernel's output scaled by
    Z / (Z + e^s) = sigmoid(log-sum-exp - s). So no zero key and value are appended a layer, the mask has no
    per-head sink column (one (batch, 1, group x q, kv) mask serves every head, built once a forward pass:
    `_folded_mask`), and the scaling writes the (batch, q, heads, head_dim) layout o_proj reads, in one pass.
    Masked keys hold the dtype's minimum, not -inf: a query with no key to see gets a finite log-sum-exp far
    below s, a share of 0 and an output of 0, as the sink column gives it."""
    batch, heads, q_length, dim = query.shape
    kv_heads, kv_length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    folded = query.reshape(batch, kv_heads, group * q_length, dim)
    bias = _folded_mask(attention_mask, group, q_length, kv_length, query.dtype).expand(batch, kv_heads, -1, -1)
    if query.is_cuda:
        output, log_sum_exp = torch.ops.aten._scaled_dot_product_efficient_attention(
            folded, key, value, bias, True, scale=scaling)[:2]
    else:
        output, log_sum_exp = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            folded, key, value, attn_mask=bias, scale=scaling)
    log_sum_exp = log_sum_exp[..., :group * q_length].view(batch, kv_heads, group, q_length)
    share = torch.sigmoid(log_sum_exp - sinks.view(1, kv_heads, group, 1).float())
    result = query.new_empty(batch, q_length, kv_heads, group, dim)
    torch.mul(output.unflatten(2, (group, q_length)), share.unsqueeze(-1), out=result.permute(0, 2, 3, 1, 4))
    return result.view(batch, q_length, heads, dim), None


# id(a layer's additive attention mask) -> ((shape, device, dtype), (batch, group, q, padded kv) mask buffer): a
# forward pass hands every layer of one attention type the same mask tensor, so the buffer is built once per
# forward and type; each entry goes with its mask tensor (weakref.finalize), at the end of the forward pass.
_SINK_MASKS: dict[int, tuple] = {}

# The memory-efficient kernel reads the mask's rows at addresses aligned to 16 elements (PyTorch's own
# scaled_dot_product_attention pads and copies an unaligned mask on every call).
MASK_ALIGNMENT = 16


def _folded_mask(attention_mask, group: int, q_length: int, kv_length: int, dtype):
    """(batch, 1, group x q, kv) view of the layer's mask repeated for the `group` query heads folded into the
    query length, rows padded to MASK_ALIGNMENT; built once per mask tensor (once a forward pass and type)."""
    batch = attention_mask.shape[0]
    padded = -(-kv_length // MASK_ALIGNMENT) * MASK_ALIGNMENT
    key = ((batch, group, q_length, kv_length), attention_mask.device, dtype)
    entry = _SINK_MASKS.get(id(attention_mask))
    if entry is None or entry[0] != key:
        buffer = torch.empty(batch, group, q_length, padded, dtype=dtype, device=attention_mask.device)
        buffer[..., :kv_length] = attention_mask[:, :, :, :kv_length]
        buffer[..., kv_length:] = 0  # never read as a key; kept finite all the same
        if entry is None:
            weakref.finalize(attention_mask, _SINK_MASKS.pop, id(attention_mask), None)
        entry = _SINK_MASKS[id(attention_mask)] = (key, buffer)
    return entry[1].view(batch, 1, group * q_length, padded)[..., :kv_length]


def use_sink_attention(model) -> None:
    """Switch a GPT-OSS model from eager attention to `sdpa_with_sinks` (same outputs, fused kernels)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(SINK_ATTENTION, sdpa_with_sinks)
    AttentionMaskInterface.register(SINK_ATTENTION, eager_mask)  # additive float masks, never skipped
    model.set_attn_implementation(SINK_ATTENTION)


# The rows of a flattened (rows x width) batch that hold real tokens, set by the classifier around a forward
# pass (`real_tokens`): (index tensor on the model's device, rows x width of the batch it describes).
_REAL_TOKENS: contextvars.ContextVar = contextvars.ContextVar("hatelens_real_tokens", default=None)


@contextlib.contextmanager
def real_tokens(attention_mask: torch.Tensor, device):
    """Within: the MoE layers of a model switched by `pack_moe_tokens` run the router and the experts on
    the tokens `attention_mask` (rows x width of the batch's input ids; on the CPU, else finding them waits for
    the device) marks, and give the pads
    zeros. Pads come after every real token a row holds (right padding) or before them (left padding):
    no real token attends to them, so what they hold changes no score."""
    flat = attention_mask.reshape(-1).bool()
    index = torch.nonzero(flat).squeeze(1).to(device, non_blocking=True)
    token = _REAL_TOKENS.set((index, flat.numel()))
    try:
        yield
    finally:
        _REAL_TOKENS.reset(token)


def pack_moe_tokens(model) -> bool:
    """Route each MoE layer of `model` (a module with a `router` and `experts`) through `_packed_moe`:
    inside `real_tokens`, pads are left out of the routing and the experts' matrix products. Inference only
    (a module in training mode runs as before); `unpack_moe_tokens` undoes it. False when none was found."""
    layers = [module for module in model.modules() if hasattr(module, "router") and hasattr(module, "experts")]
    for layer in layers:
        if "forward" not in layer.__dict__:
            layer.forward = _packed_moe.__get__(layer)
    return bool(layers)


def unpack_moe_tokens(model) -> None:
    for module in model.modules():
        if module.__dict__.get("forward") is not None and getattr(module.forward, "__func__", None) is _packed_moe:
            del module.forward


def packs_moe_tokens(model) -> bool:
    return any(getattr(module.__dict__.get("forward"), "__func__", None) is _packed_moe for module in model.modules())


def _packed_moe(self, hidden_states: torch.Tensor):
    forward = type(self).forward
    packing = _REAL_TOKENS.get()
    rows, width, hidden = hidden_states.shape
    if packing is None or self.training or packing[1] != rows * width or packing[0].numel() == rows * width:
        return forward(self, hidden_states)
    index = packing[0].to(hidden_states.device)  # layers split over GPUs (placement.py): each on its own
    flat = hidden_states.reshape(-1, hidden)
    packed, router_scores = forward(self, flat.index_select(0, index).unsqueeze(0))
    output = flat.new_zeros(flat.shape).index_copy_(0, index, packed.reshape(-1, hidden).to(flat.dtype))
    return output.view(rows, width, hidden), router_scores
