"""gpt-oss's sink attention, as inference runs it, against a float64 reference of eager attention's formula.

    PYTHONPATH=src python benchmarks/sink_precision.py     # on a CUDA machine (on a CPU: the CPU kernels)

Random tensors of gpt-oss-20b's attention shape (8 KV heads, 8 query heads each, head width 64; 32 rows x 32 queries
over 300 keys, a fifth of them masked). Prints the max abs error of the log-sum-exp path
(`fast_paths._attention_then_sink_share`) and of the sink column (the gradient path of `sdpa_with_sinks`) through
each SDPA backend, in float32 and bf16. Output of call 20: results/raw/sink_precision_call20.txt.
"""

import contextlib
import os

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from hatelens.backends import fast_paths

BATCH, KV_HEADS, GROUP, QUERIES, KEYS, WIDTH = 32, 8, 8, 32, 300, 64


def reference(query, key, value, allowed, sinks, scale):
    """Eager attention with a sink column, in float64."""
    query, key, value = (tensor.double() for tensor in (query, key, value))
    key, value = key.repeat_interleave(GROUP, 1), value.repeat_interleave(GROUP, 1)
    bias = torch.zeros(allowed.shape, dtype=torch.float64, device=allowed.device)
    scores = query @ key.transpose(-1, -2) * scale + bias.masked_fill(~allowed, torch.finfo(torch.float64).min)
    scores = torch.cat([scores, sinks.double().view(1, -1, 1, 1).expand(BATCH, -1, QUERIES, 1)], -1)
    return (scores.softmax(-1)[..., :-1] @ value).transpose(1, 2)


def main() -> None:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    query = torch.randn(BATCH, KV_HEADS * GROUP, QUERIES, WIDTH, device=device)
    key, value = (torch.randn(BATCH, KV_HEADS, KEYS, WIDTH, device=device) for _ in range(2))
    sinks = torch.randn(KV_HEADS * GROUP, device=device)
    allowed = torch.rand(BATCH, 1, QUERIES, KEYS, device=device) > 0.2
    scale = WIDTH ** -0.5
    expected = reference(query, key, value, allowed, sinks, scale)
    for dtype in (torch.float32, torch.bfloat16):
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, torch.finfo(dtype).min)
        args = (query.to(dtype), key.to(dtype), value.to(dtype), mask)
        with torch.no_grad():
            got = fast_paths._attention_then_sink_share(*args, sinks.to(dtype), scale)[0]
        print(dtype, "log-sum-exp path max abs err", (got.double() - expected).abs().max().item())
        os.environ["HATELENS_CUDNN_ATTENTION"] = "1"  # no backend list inside sdpa_with_sinks: ours applies
        for backend in (SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH, None):
            if backend is None:
                del os.environ["HATELENS_CUDNN_ATTENTION"]  # as shipped: flash, efficient, math
            with torch.enable_grad(), (sdpa_kernel([backend]) if backend else contextlib.nullcontext()):
                try:
                    got = fast_paths.sdpa_with_sinks(None, *args, scale, s_aux=sinks.to(dtype))[0]
                except RuntimeError as error:  # a backend this device lacks
                    print(dtype, backend, "failed", str(error)[:100])
                    continue
            print(dtype, "sink column", backend, "max abs err", (got.double() - expected).abs().max().item())
    print("tf32 matmul", torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())


if __name__ == "__main__":
    main()
