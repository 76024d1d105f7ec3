"""What the memory model needs to know about a GGUF model, read from its header's keys and tensor infos.

Keys other than `general.*` and `tokenizer.*` carry the architecture as a prefix (`llama.block_count`).
Names follow llama.cpp's `llama-arch.cpp` and `llama-hparams.cpp`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from model_manager.core.gguf_format import GGUFHeader, TensorInfo

_LAYER = re.compile(r"^blk\.(\d+)\.")

# Sliding-window layout per architecture, as llama-model.cpp sets it: with pattern n, layer il uses the
# window when il % n < n - 1 (gemma3: 5 sliding layers, then a global one). 0 marks every layer.
SWA_PATTERNS: dict[str, int] = {
    "gemma2": 2,
    "gemma3": 6,
    "gemma3n": 5,
    "cohere2": 4,
    "gpt-oss": 2,
    "exaone4": 4,
    "olmo2": 4,
    "smallthinker": 4,
    "mistral": 0,  # Mistral v0.1 slides on every layer
}


@dataclass
class ModelShape:
    """The hyper-parameters of one model and the bytes of its tensors, grouped as llama.cpp places them."""

    architecture: str
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: list[int]  # per layer; 0 marks a recurrent (or attention-free) layer
    key_length: int
    value_length: int
    n_vocab: int
    n_ff: list[int]  # per layer
    context_length: int | None
    swa_layers: list[bool]  # per layer: holds only a sliding window of cells
    sliding_window: int | None
    n_expert: int = 0
    n_expert_used: int = 0
    expert_ff: int = 0
    shared_expert_ff: int = 0
    recurrent_state_bytes: int = 0  # per recurrent layer, one sequence
    mla: bool = False  # the cache holds MLA's latent in K only, no V
    layer_bytes: list[int] = field(default_factory=list)  # weights of blk.N.*, per layer
    input_bytes: int = 0  # token_embd and friends: llama.cpp keeps the input embeddings on the CPU
    output_bytes: int = 0  # output, output_norm: the "output layer", offloaded with the last layers
    tied_output: bool = False  # no output.weight: the output layer uses a copy of token_embd
    projector_bytes: int = 0

    @property
    def weights_bytes(self) -> int:
        """Every weight as the file holds it (what llama.cpp maps on a CPU), plus the projector."""
        return sum(self.layer_bytes) + self.input_bytes + self.output_bytes + self.projector_bytes

    @property
    def output_layer_gpu_bytes(self) -> int:
        """What the output layer takes on a GPU: its own tensors, or a copy of the embeddings when tied."""
        return self.output_bytes + (self.input_bytes if self.tied_output else 0)


class ShapeError(ValueError):
    """The header lacks a key the memory model cannot do without (block count, embedding length...)."""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _per_layer(value: Any, n_layer: int, default: int | None) -> list[int] | None:
    """A key that is a number or an array with one entry per layer, as a per-layer list."""
    if isinstance(value, list) and value and all(_int(v) is not None for v in value):
        return [int(v) for v in value[:n_layer]] + [int(value[-1])] * max(0, n_layer - len(value))
    number = _int(value)
    if number is None:
        number = default
    return None if number is None else [number] * n_layer


def model_shape(headers: list[GGUFHeader], projector: GGUFHeader | None = None) -> ModelShape:
    """The `ModelShape` of a model whose file (or split parts, first part first) has these headers.

    Every header must have been read with its tensor infos kept. Raises `ShapeError` when the first
    header lacks the architecture, block count or embedding length.
    """
    meta = headers[0].metadata
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ShapeError("the header does not name its architecture (general.architecture)")

    def key(name: str) -> Any:
        return meta.get(f"{arch}.{name}")

    n_layer, n_embd = _int(key("block_count")), _int(key("embedding_length"))
    if not n_layer or not n_embd:
        raise ShapeError(f"the header lacks {arch}.block_count or {arch}.embedding_length")
    heads = _per_layer(key("attention.head_count"), n_layer, 0) or [0] * n_layer
    n_head = max(heads) or 1
    heads_kv = _per_layer(key("attention.head_count_kv"), n_layer, None) or list(heads)
    head_dim = n_embd // n_head
    key_length = _int(key("attention.key_length")) or head_dim
    value_length = _int(key("attention.value_length")) or head_dim
    # MLA (deepseek2 and kin): converters that write key_length_mla store the latent cache's sizes in
    # key_length (kv_lora_rank + rope dims) and value_length (kv_lora_rank) with one KV head. llama.cpp
    # then keeps only K (V is a view of its first kv_lora_rank values). Older files without
    # key_length_mla get the full per-head cache, which the generic formula gives.
    mla = bool(_int(key("attention.key_length_mla")) and _int(key("attention.kv_lora_rank")))

    tensors = [t for header in headers for t in (header.tensors or ())]
    n_vocab = _vocab_size(meta, tensors, key("vocab_size"))
    n_ff = _per_layer(key("feed_forward_length"), n_layer, 0) or [0] * n_layer
    window = _int(key("attention.sliding_window"))
    shape = ModelShape(
        architecture=arch,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=heads_kv,
        key_length=key_length,
        value_length=value_length,
        n_vocab=n_vocab,
        n_ff=n_ff,
        context_length=_int(key("context_length")),
        swa_layers=_swa_layers(arch, n_layer, window, key("attention.sliding_window_pattern")),
        sliding_window=window,
        n_expert=_int(key("expert_count")) or 0,
        n_expert_used=_int(key("expert_used_count")) or 0,
        expert_ff=_int(key("expert_feed_forward_length")) or 0,
        shared_expert_ff=_int(key("expert_shared_feed_forward_length")) or 0,
        recurrent_state_bytes=_recurrent_state_bytes(arch, meta, n_embd),
        mla=mla,
    )
    _group_tensors(shape, tensors)
    if projector is not None:
        shape.projector_bytes = sum(t.n_bytes for t in projector.tensors or ())
    return shape


def _vocab_size(meta: dict[str, Any], tensors: list[TensorInfo], declared: Any) -> int:
    tokens = meta.get("tokenizer.ggml.tokens")
    if isinstance(tokens, dict) and _int(tokens.get("length")):
        return tokens["length"]
    if isinstance(tokens, list) and tokens:
        return len(tokens)
    if _int(declared):
        return declared
    for tensor in tensors:  # token_embd is {n_embd, n_vocab}
        if tensor.name == "token_embd.weight" and len(tensor.shape) >= 2:
            return tensor.shape[1]
    return 0


def _swa_layers(arch: str, n_layer: int, window: int | None, pattern_key: Any) -> list[bool]:
    if not window:
        return [False] * n_layer
    if isinstance(pattern_key, list) and pattern_key:  # one flag per layer, when the converter wrote them
        flags = [bool(v) for v in pattern_key[:n_layer]]
        return flags + [False] * (n_layer - len(flags))
    pattern = _int(pattern_key)
    if pattern is None:
        pattern = SWA_PATTERNS.get(arch)
    if pattern is None:  # a window with no known layout: treat every layer as global (the larger cache)
        return [False] * n_layer
    if pattern == 0:
        return [True] * n_layer
    return [il % pattern < pattern - 1 for il in range(n_layer)]


def _recurrent_state_bytes(arch: str, meta: dict[str, Any], n_embd: int) -> int:
    """One sequence's state of one recurrent layer, in f32 (llama-hparams.cpp n_embd_r + n_embd_s)."""

    def key(name: str) -> int:
        return _int(meta.get(f"{arch}.{name}")) or 0

    d_conv, d_inner, d_state, n_group = key("ssm.conv_kernel"), key("ssm.inner_size"), key("ssm.state_size"), key("ssm.group_count")
    if d_inner:
        conv = max(d_conv - 1, 0) * (d_inner + 2 * n_group * d_state)
        ssm = d_state * d_inner
        return 4 * (conv + ssm)
    head_size = key("wkv.head_size")
    if head_size:  # RWKV: token shifts plus the wkv state
        shifts = key("token_shift_count") or 2
        return 4 * (shifts * n_embd + n_embd * head_size)
    cache = key("shortconv.l_cache")
    if cache:  # LFM2's short convolutions
        return 4 * n_embd * max(cache - 1, 0)
    return 0


def _group_tensors(shape: ModelShape, tensors: list[TensorInfo]) -> None:
    shape.layer_bytes = [0] * shape.n_layer
    has_output = False
    for tensor in tensors:
        match = _LAYER.match(tensor.name)
        if match and int(match[1]) < shape.n_layer:
            shape.layer_bytes[int(match[1])] += tensor.n_bytes
        elif tensor.name.startswith(("output", "lm_head")) or match:
            # output, output_norm, and extra layers past block_count (MTP heads) sit with the output
            shape.output_bytes += tensor.n_bytes
            has_output = has_output or tensor.name == "output.weight"
        else:
            shape.input_bytes += tensor.n_bytes
    shape.tied_output = not has_output
