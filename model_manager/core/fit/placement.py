"""Where a model goes on a machine: how many layers fit on the GPU(s), what stays in RAM, and the verdict.

llama.cpp offloads the last N repeating layers (`-ngl N`), and the output layer only when every layer
is offloaded; the input embeddings always stay in RAM. Each GPU in use also holds a compute buffer
and keeps a margin free for the runtime (driver context, fragmentation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from model_manager.core.fit.compute import compute_bytes
from model_manager.core.fit.kv_cache import CELL_PADDING, DEFAULT_UBATCH, kv_cache_per_layer, padded_context
from model_manager.core.fit.shape import ModelShape

MIB = 1024 * 1024
GIB = 1024 * MIB
GPU_MARGIN_BYTES = 384 * MIB  # kept free on each GPU in use: driver context, allocator slack
RUNTIME_OVERHEAD_BYTES = 128 * MIB  # on the CPU: the process itself, repacked weights, small buffers
MAX_SEARCHED_CONTEXT = 1 << 20


@dataclass(frozen=True)
class Target:
    """The machine the model will run on: RAM available, free VRAM per GPU, whether memory is unified."""

    ram_bytes: int
    gpu_free_bytes: tuple[int, ...] = ()
    unified_memory: bool = False


@dataclass
class Memory:
    """The memory a model needs at one context, in bytes. `total_bytes` is the sum of the other four."""

    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int
    total_bytes: int
    gpu_bytes: int = 0  # of the total, what goes to the GPU(s) in the placement chosen
    ram_bytes: int = 0  # of the total, what stays in RAM


@dataclass
class FitResult:
    """Whether a model runs on a target: `fit` is full_gpu, partial_gpu, cpu or too_large."""

    fit: str
    gpu_layers: int
    total_layers: int
    memory: Memory
    context_length: int
    max_context_full_gpu: int | None
    max_context_in_ram: int | None
    reasons: list[str] = field(default_factory=list)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass
class _Need:
    layers: list[int]  # weights + KV of each repeating layer
    output: int  # the output layer on a GPU
    input: int  # the input embeddings (always in RAM)
    output_in_ram: int  # the output layer when it stays in RAM
    compute: int
    weights: int
    kv: int

    @property
    def cpu_total(self) -> int:
        return sum(self.layers) + self.input + self.output_in_ram + self.compute + RUNTIME_OVERHEAD_BYTES


def _need(shape: ModelShape, context: int, cache_type: str, ubatch: int) -> _Need:
    kv = kv_cache_per_layer(shape, context, cache_type, ubatch)
    layers = [w + k for w, k in zip(shape.layer_bytes, kv)]
    # The projector runs beside the model on the same device: count it with the output layer.
    return _Need(
        layers=layers,
        output=shape.output_layer_gpu_bytes + shape.projector_bytes,
        input=shape.input_bytes,
        output_in_ram=shape.output_bytes + shape.projector_bytes,
        compute=compute_bytes(shape, context, ubatch),
        weights=shape.weights_bytes,
        kv=sum(kv),
    )


def _fill(layers: list[int], budgets: list[int]) -> tuple[int, int]:
    """(layers placed, GPUs used) filling the GPUs' budgets with the last layers first, the last GPU first."""
    remaining, placed, gpu_index = list(layers), 0, len(budgets) - 1
    free = budgets[gpu_index]
    while remaining:
        size = remaining[-1]
        while size > free and gpu_index > 0:
            gpu_index -= 1
            free = budgets[gpu_index]
        if size > free:
            break
        free -= size
        placed += 1
        remaining.pop()
    return placed, (len(budgets) - gpu_index if placed else 0)


def _offload(need: _Need, target: Target) -> tuple[int, bool, int]:
    """(layers on GPUs, output layer on a GPU, bytes on GPUs) for the largest offload that fits."""
    budgets = [free - GPU_MARGIN_BYTES - need.compute for free in target.gpu_free_bytes]
    budgets = [b for b in budgets if b > 0]
    if not budgets:
        return 0, False, 0
    # Everything: the output layer sits with the last layers, on the last GPU.
    if need.output <= budgets[-1]:
        placed, gpus = _fill(need.layers, [*budgets[:-1], budgets[-1] - need.output])
        if placed == len(need.layers):
            return placed, True, sum(need.layers) + need.output + gpus * (need.compute + GPU_MARGIN_BYTES)
    placed, gpus = _fill(need.layers, budgets)
    if not placed:
        return 0, False, 0
    return placed, False, sum(need.layers[len(need.layers) - placed:]) + gpus * (need.compute + GPU_MARGIN_BYTES)


def _verdict(need: _Need, n_layer: int, target: Target) -> tuple[str, int, int, int]:
    """(fit, gpu_layers, gpu bytes, ram bytes) for one context."""
    placed, output_on_gpu, gpu_bytes = _offload(need, target)
    if placed:
        ram = need.input + sum(need.layers[: n_layer - placed]) + RUNTIME_OVERHEAD_BYTES
        if not output_on_gpu:
            ram += need.output_in_ram + need.compute  # the CPU computes the rest, logits included
        fits_ram = ram + (gpu_bytes if target.unified_memory else 0) <= target.ram_bytes
        if fits_ram:
            return ("full_gpu" if output_on_gpu else "partial_gpu"), placed, gpu_bytes, ram
    ram = need.cpu_total
    if ram <= target.ram_bytes:
        return "cpu", 0, 0, ram
    return "too_large", placed, gpu_bytes, ram


def _largest_context(shape: ModelShape, cache_type: str, ubatch: int, limit: int, ok) -> int | None:
    """The largest multiple of 256 up to `limit` for which `ok(need)` holds, or None."""
    low, high = 0, max(limit // CELL_PADDING, 1)
    if not ok(_need(shape, CELL_PADDING, cache_type, ubatch)):
        return None
    low = 1
    while low < high:  # memory only grows with the context, so the answer is found by bisection
        middle = (low + high + 1) // 2
        if ok(_need(shape, middle * CELL_PADDING, cache_type, ubatch)):
            low = middle
        else:
            high = middle - 1
    return low * CELL_PADDING


def place(
    shape: ModelShape, context: int, target: Target, cache_type: str = "f16", ubatch: int = DEFAULT_UBATCH
) -> FitResult:
    """How the model of `shape` runs on `target` with a context of `context` tokens.

    Raises `ValueError` for an unknown cache type or a context below 1.
    """
    if context < 1:
        raise ValueError("the context must be at least 1 token")
    need = _need(shape, context, cache_type, ubatch)
    fit, gpu_layers, gpu_bytes, ram_bytes = _verdict(need, shape.n_layer, target)
    # The margin of the device that holds the most: the GPU's when layers go there, else the process's own.
    overhead = GPU_MARGIN_BYTES if gpu_bytes else RUNTIME_OVERHEAD_BYTES
    memory = Memory(
        weights_bytes=need.weights,
        kv_cache_bytes=need.kv,
        compute_bytes=need.compute,
        overhead_bytes=overhead,
        total_bytes=need.weights + need.kv + need.compute + overhead,
        gpu_bytes=gpu_bytes,
        ram_bytes=ram_bytes,
    )
    limit = min(shape.context_length or MAX_SEARCHED_CONTEXT, MAX_SEARCHED_CONTEXT)
    has_gpu = any(target.gpu_free_bytes)
    max_gpu = (
        _largest_context(shape, cache_type, ubatch, limit,
                         lambda n: _verdict(n, shape.n_layer, target)[0] == "full_gpu")
        if has_gpu else None
    )
    max_ram = _largest_context(shape, cache_type, ubatch, limit, lambda n: n.cpu_total <= target.ram_bytes)
    result = FitResult(fit, gpu_layers, shape.n_layer, memory, padded_context(context), max_gpu, max_ram)
    result.reasons = _reasons(result, shape, target, need, context)
    return result


def _reasons(result: FitResult, shape: ModelShape, target: Target, need: _Need, context: int) -> list[str]:
    reasons = []
    vram = sum(target.gpu_free_bytes)
    memory = result.memory
    if result.fit == "full_gpu":
        reasons.append(f"All {shape.n_layer} layers and the output layer fit in {_gib(vram)} of free VRAM "
                       f"({_gib(memory.gpu_bytes)} needed).")
    elif result.fit == "partial_gpu" and result.gpu_layers == shape.n_layer:
        reasons.append(f"All {shape.n_layer} layers fit in {_gib(vram)} of free VRAM but not the output layer, "
                       "which then runs on the CPU.")
    elif result.fit == "partial_gpu":
        reasons.append(f"{result.gpu_layers} of {shape.n_layer} layers fit in {_gib(vram)} of free VRAM; "
                       "the rest runs on the CPU, much slower.")
    elif result.fit == "cpu":
        reasons.append("No GPU memory to use: runs on the CPU from RAM." if not vram else
                       f"Not even one layer fits in {_gib(vram)} of free VRAM: runs on the CPU from RAM.")
    else:
        reasons.append(f"Needs {_gib(need.cpu_total)} but only {_gib(target.ram_bytes)} of RAM"
                       + (f" and {_gib(vram)} of VRAM are" if vram else " is") + " available.")
    if memory.kv_cache_bytes > memory.weights_bytes:
        reasons.append(f"The KV cache for {result.context_length} tokens ({_gib(memory.kv_cache_bytes)}) "
                       f"is larger than the weights ({_gib(memory.weights_bytes)}).")
    if shape.context_length and context > shape.context_length:
        reasons.append(f"The context {context} is longer than the {shape.context_length} tokens the model was "
                       "trained for.")
    if result.fit != "full_gpu" and result.max_context_full_gpu:
        reasons.append(f"With a context of {result.max_context_full_gpu} tokens or less it fits entirely on the GPU.")
    return reasons
