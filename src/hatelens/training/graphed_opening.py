"""The shared prompt opening's forward and backward passes in training, replayed as two CUDA graphs.

Every training batch first runs the prompt opening that all its records share (one row, gradients kept:
answer_loss.py). That pass is the same shape every step, and on gpt-oss it is half of a step's ~15,200
kernel launches while its kernels are tiny: a step on one H200 took 0.42 s with the GPU busy 0.21 s of it,
the host launching kernels the rest (benchmarks/results/train_profile.md). Captured once as CUDA graphs
(forward, and backward into the LoRA weights' gradients; about 1 s), each step replays them in two launches:
one epoch 140-164 samples/s against 117 eager on the same machine.

The arithmetic is the same kernels on the same weights: the opening's keys and values, and the gradients
that flow back through them, equal those of the eager pass (tests/test_gpu.py). Only on CUDA, in training
(the model in train mode, gradients on), without gradient checkpointing; HATELENS_GRAPH_OPENING=0 turns it
off. A capture that fails logs why and leaves the eager pass in place.
"""

import copy
import logging
import os
import time
import warnings
import weakref

import torch

logger = logging.getLogger(__name__)

WARM_UP_PASSES = 2  # eager passes on a side stream before the capture (lazy initialisations, cuBLAS workspaces)
_GRAPHS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # base model -> {opening ids: graph or None}


def enabled(model) -> bool:
    """Whether the opening may be replayed as a graph: a CUDA model training with gradients."""
    return (os.environ.get("HATELENS_GRAPH_OPENING") != "0" and model.training and torch.is_grad_enabled()
            and next(model.parameters()).device.type == "cuda")


def opening_cache(model, base, opening_ids: torch.Tensor, cache_name: str):
    """The one-row key/value cache of `opening_ids` (shape (1, n)), its gradients connected to the model's
    trainable weights, from the graph captured for this model and opening (captured on first use). None
    where no graph could be captured: the caller runs the opening eagerly."""
    graphs = _GRAPHS.setdefault(base, {})
    key = tuple(opening_ids[0].tolist())
    if key not in graphs:
        started = time.perf_counter()
        try:
            with warnings.catch_warnings():  # the weights' gradient nodes date from eager steps on the main stream;
                warnings.filterwarnings("ignore", message="The AccumulateGrad node's stream")  # harmless here
                graphs[key] = GraphedOpening(model, base, opening_ids, cache_name)
            logger.info("shared opening (%d tokens) captured as CUDA graphs in %.2f s: its forward and backward "
                        "passes replayed each training step", len(key), time.perf_counter() - started)
        except Exception as error:  # any failure to capture leaves the eager opening, which is always right
            logger.warning("the shared opening could not be captured as a CUDA graph (%s: %s); it runs eagerly",
                           type(error).__name__, str(error).splitlines()[0][:200] if str(error) else "")
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            graphs[key] = None
    graph = graphs[key]
    return graph() if graph is not None else None


class GraphedOpening:
    """Forward and backward CUDA graphs of one opening through one model (in train mode)."""

    def __init__(self, model, base, opening_ids: torch.Tensor, cache_name: str):
        from transformers import DynamicCache

        self.params = tuple(p for p in base.parameters() if p.requires_grad)
        self.input_ids = opening_ids.clone()

        dtype = next(base.parameters()).dtype

        def fresh_cache():
            cache = DynamicCache(config=base.config)
            for layer in cache.layers:  # set up outside the capture: their lazy set-up copies from the host
                if not layer.is_initialized:
                    empty = torch.empty(0, dtype=dtype, device=self.input_ids.device)
                    layer.lazy_initialization(empty, empty)
            return cache

        def run(cache):
            model(input_ids=self.input_ids, use_cache=True, logits_to_keep=1, **{cache_name: cache})
            return cache

        torch.cuda.synchronize()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_PASSES):
                outputs = _tensors(run(fresh_cache()))
                torch.autograd.grad(outputs, self.params, [torch.ones_like(o) for o in outputs], allow_unused=True)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()

        self.pool = torch.cuda.graph_pool_handle()
        self.forward_graph, self.backward_graph = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        cache = fresh_cache()
        with torch.cuda.graph(self.forward_graph, pool=self.pool):
            run(cache)  # the cache's layers hold the static outputs, rewritten by each replay
        self.cache = cache
        self.outputs = _tensors(self.cache)
        self.grad_outputs = [torch.empty_like(o) for o in self.outputs]
        with torch.cuda.graph(self.backward_graph, pool=self.pool):
            grads = torch.autograd.grad(self.outputs, self.params, self.grad_outputs, allow_unused=True)
        self.grads = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, self.params)]
        torch.cuda.synchronize()

    def __call__(self):
        """A fresh cache object whose layers hold this step's keys and values (autograd-connected)."""
        tensors = _Replay.apply(self, *self.params)
        cache = copy.copy(self.cache)
        cache.layers = [copy.copy(layer) for layer in self.cache.layers]
        for index, layer in enumerate(cache.layers):
            layer.keys, layer.values = tensors[2 * index], tensors[2 * index + 1]
        return cache


class _Replay(torch.autograd.Function):
    """Forward: replay the forward graph. Backward: copy the incoming gradients into the backward graph's
    inputs, replay it, hand back the trainable weights' gradients (copies: the graph's buffers are rewritten
    by the next replay, while a gradient accumulated into .grad must stay)."""

    @staticmethod
    def forward(ctx, graph: GraphedOpening, *params):
        ctx.graph = graph
        graph.forward_graph.replay()
        return tuple(output.detach() for output in graph.outputs)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, *grads):
        graph = ctx.graph
        for static, grad in zip(graph.grad_outputs, grads):
            if grad is None:
                static.zero_()
            else:
                static.copy_(grad)
        graph.backward_graph.replay()
        return (None, *(grad.clone() for grad in graph.grads))


def _tensors(cache) -> list:
    """Each layer's keys and values, in order: the opening's outputs."""
    return [tensor for layer in cache.layers for tensor in (layer.keys, layer.values)]
