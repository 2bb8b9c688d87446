"""The Triton kernels of fused_kernels.py (imported only when they run: Triton is needed for CUDA inference).

They read bfloat16 or float32, compute in float32 registers and store in the output's dtype; every tensor is
contiguous and row-major. One program handles BLOCK columns of one row (grid: rows x ceil(width / BLOCK)).
The tests run them on the CPU with TRITON_INTERPRET=1 (set by tests/conftest.py before Triton is imported).
"""

import triton
import triton.language as tl


@triton.jit
def bias_gate_kernel(gate_up, bias, experts, out, width, alpha, limit, BLOCK: tl.constexpr):
    """out[r, c] = (up + 1) * gate * sigmoid(alpha * gate), where gate and up are gate_up[r, 2c] and
    gate_up[r, 2c + 1] plus the bias of row r's expert, gate clamped above at `limit`, up within +-limit."""
    row = tl.program_id(0).to(tl.int64)
    columns = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    pairs = 2 * columns[:, None] + tl.arange(0, 2)[None, :]  # (BLOCK, 2): gate and up side by side, contiguous
    inside = pairs < 2 * width
    expert = tl.load(experts + row).to(tl.int64)
    values = (tl.load(gate_up + row * 2 * width + pairs, mask=inside, other=0.0).to(tl.float32)
              + tl.load(bias + expert * 2 * width + pairs, mask=inside, other=0.0).to(tl.float32))
    gate, up = tl.split(values)
    gate = tl.minimum(gate, limit)
    up = tl.minimum(tl.maximum(up, -limit), limit)
    value = (up + 1.0) * (gate * tl.sigmoid(gate * alpha))
    tl.store(out + row * width + columns, value.to(out.dtype.element_ty), mask=columns < width)


@triton.jit
def combine_kernel(down, bias, experts, weights, position, out, width, TOP_K: tl.constexpr, BLOCK: tl.constexpr):
    """out[t, c] = sum over k of weights[t, k] * (down[position[t * TOP_K + k], c] + bias[experts[t, k], c])."""
    token = tl.program_id(0).to(tl.int64)
    columns = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = columns < width
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for choice in tl.static_range(TOP_K):
        slot = token * TOP_K + choice
        row = tl.load(position + slot).to(tl.int64)
        expert = tl.load(experts + slot).to(tl.int64)
        weight = tl.load(weights + slot).to(tl.float32)
        value = tl.load(down + row * width + columns, mask=inside, other=0.0).to(tl.float32) + tl.load(
            bias + expert * width + columns, mask=inside, other=0.0).to(tl.float32)
        total += weight * value
    tl.store(out + token * width + columns, total.to(out.dtype.element_ty), mask=inside)


@triton.jit
def rms_norm_kernel(x, weight, out, width, eps, BLOCK: tl.constexpr):
    """out[r] = weight * x[r] / sqrt(mean(x[r]^2) + eps), in float32 (GptOssRMSNorm): one program a row,
    BLOCK >= width."""
    row = tl.program_id(0).to(tl.int64)
    columns = tl.arange(0, BLOCK)
    inside = columns < width
    values = tl.load(x + row * width + columns, mask=inside, other=0.0).to(tl.float32)
    scale = 1.0 / tl.sqrt(tl.sum(values * values, axis=0) / width + eps)
    factor = tl.load(weight + columns, mask=inside, other=0.0).to(tl.float32)
    tl.store(out + row * width + columns, (factor * (values * scale)).to(out.dtype.element_ty), mask=inside)


@triton.jit(do_not_specialize=["length", "cos_batch_stride", "cos_row_stride"])  # one compilation for any width
def rotary_kernel(x, cos, sin, out, length, heads, row_stride, cos_batch_stride, cos_row_stride,
                  HALF: tl.constexpr, BLOCK_H: tl.constexpr):
    """gpt-oss's rotary embedding of one token's heads, written head-major. x: (batch x length) rows of
    `heads` x 2 HALF values (a projection's output, `row_stride` apart); cos, sin: HALF values a token;
    out: (batch, heads, length, 2 HALF), contiguous. Each head's halves a, b become a cos - b sin, b cos + a sin.
    One program a token (grid: batch x length), BLOCK_H >= heads."""
    token = tl.program_id(0).to(tl.int64)
    batch, position = token // length, token % length
    head = tl.arange(0, BLOCK_H)[:, None]
    column = tl.arange(0, HALF)[None, :]
    inside = head < heads
    source = x + token * row_stride + head * 2 * HALF + column
    first = tl.load(source, mask=inside, other=0.0).to(tl.float32)
    second = tl.load(source + HALF, mask=inside, other=0.0).to(tl.float32)
    angle = batch * cos_batch_stride + position * cos_row_stride + column
    c = tl.load(cos + angle).to(tl.float32)
    s = tl.load(sin + angle).to(tl.float32)
    target = out + ((batch * heads + head) * length + position) * 2 * HALF + column
    tl.store(target, (first * c - second * s).to(out.dtype.element_ty), mask=inside)
    tl.store(target + HALF, (second * c + first * s).to(out.dtype.element_ty), mask=inside)
