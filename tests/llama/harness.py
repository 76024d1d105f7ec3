"""llama.cpp itself, as a measuring instrument for tests: what it allocates for a model and a context.

It runs node-llama-cpp's prebuilt CPU build of llama.cpp (installed by ./test.sh into
tests/llama/node_modules) through the small Node script measure.mjs, and reads llama.cpp's own log
lines: `model buffer size`, `KV buffer size`, `output buffer size` and `compute buffer size`.
Nothing here estimates anything: the numbers are llama.cpp's.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "measure.mjs"
MIB = 1024 * 1024
DEFAULT_UBATCH = 512

_BUFFER = re.compile(r"^(?P<stage>\w+):\s+(?P<device>\S+)\s+(?P<kind>model|KV|RS|output|compute) buffer size =\s+(?P<mib>[\d.]+) MiB")
_CONTEXT = re.compile(r"^@@context (\d+)")
_N_CTX = re.compile(r"n_ctx\s+=\s+(\d+)")
_N_UBATCH = re.compile(r"n_ubatch\s+=\s+(\d+)")


class LlamaUnavailable(RuntimeError):
    """node or the node-llama-cpp package is missing: ./test.sh installs them."""


@dataclass
class ContextMeasurement:
    """What llama.cpp allocated for one model and one context, in bytes (from its MiB log lines)."""

    n_ctx: int
    n_ubatch: int = 0
    model_bytes: int = 0  # the weights as loaded from the file (mapped or read buffers)
    repack_bytes: int = 0  # extra CPU-only copies (REPACK, AMX) some CPUs make of some weights
    kv_bytes: int = 0  # every KV buffer (a sliding-window model has two caches)
    output_bytes: int = 0  # the logits/embeddings output buffer
    compute_bytes: int = 0  # the scheduler's compute buffers
    log: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        """Everything llama.cpp holds for this model and context."""
        return self.model_bytes + self.repack_bytes + self.kv_bytes + self.output_bytes + self.compute_bytes


def available() -> bool:
    """Whether node and node-llama-cpp are installed (so measurements can run)."""
    return shutil.which("node") is not None and (HERE / "node_modules" / "node-llama-cpp").is_dir()


def measure_contexts(path: str | os.PathLike[str], contexts: list[int], ubatch: int = DEFAULT_UBATCH,
                     timeout: float = 120, flash_attention: bool | None = None,
                     cache_type: str | None = None) -> list[ContextMeasurement]:
    """Load the GGUF at `path` once in llama.cpp (CPU, mmap) and create one context per size in `contexts`.

    Returns one `ContextMeasurement` per context, in order; the model buffers are the same in each.
    `flash_attention` forces flash attention on or off; None lets llama.cpp decide, as it does by default.
    `cache_type` ("q8_0", "q4_0"...) sets the KV cache's type; None keeps llama.cpp's f16.
    Raises `LlamaUnavailable` when node-llama-cpp is not installed, `RuntimeError` (with llama.cpp's
    output) when the model or a context fails to load.
    """
    settings = {}
    if cache_type is not None:
        settings["MEASURE_CACHE_TYPE"] = cache_type.upper()
    if flash_attention is not None:
        settings["MEASURE_FLASH_ATTENTION"] = "on" if flash_attention else "off"
    result = _run_node([str(SCRIPT), os.fspath(path), str(ubatch), *map(str, contexts)], settings, timeout)
    if result.returncode != 0 or "@@done" not in result.stdout:
        raise RuntimeError(f"llama.cpp could not load {path}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return _parse(result.stdout)


def load_and_measure(path: str | os.PathLike[str], n_ctx: int, ubatch: int = DEFAULT_UBATCH) -> ContextMeasurement:
    """Load the GGUF at `path` in llama.cpp with one context of `n_ctx` tokens; what it allocated."""
    return measure_contexts(path, [n_ctx], ubatch)[0]


def _parse(stdout: str) -> list[ContextMeasurement]:
    model = repack = 0
    current: ContextMeasurement | None = None
    found: list[ContextMeasurement] = []
    for line in stdout.splitlines():
        if match := _CONTEXT.match(line):
            current = ContextMeasurement(n_ctx=int(match[1]))
            found.append(current)
            continue
        if current is not None:
            current.log.append(line)
        buffer = _BUFFER.match(line)
        if buffer is None:
            if current is not None and "llama_context" in line:
                if match := _N_UBATCH.search(line):
                    current.n_ubatch = int(match[1])
            continue
        size = round(float(buffer["mib"]) * MIB)
        kind, device = buffer["kind"], buffer["device"]
        if kind == "model":
            if "REPACK" in device or "AMX" in device:
                repack += size
            else:
                model += size
        elif current is not None:
            # RS: a recurrent model's state, which it holds instead of a KV cache
            attribute = {"KV": "kv_bytes", "RS": "kv_bytes", "output": "output_bytes", "compute": "compute_bytes"}[kind]
            setattr(current, attribute, getattr(current, attribute) + size)
    for measurement in found:  # the model's buffers are allocated once, whichever context they were logged near
        measurement.model_bytes, measurement.repack_bytes = model, repack
    return found


EVALUATE_SCRIPT = HERE / "evaluate.mjs"


def _run_node(arguments: list[str], settings: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """Run one of the Node scripts here with `settings` as its MEASURE_* environment (and no other)."""
    if not available():
        raise LlamaUnavailable("node-llama-cpp is not installed; run ./test.sh (npm ci in tests/llama)")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MEASURE_")}
    env.update(NODE_LLAMA_CPP_SKIP_DOWNLOAD="true", **settings)
    return subprocess.run(["node", *arguments], capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE)


def generate_tokens(paths: list[str | os.PathLike[str]], count: int = 4, timeout: float = 180) -> list[list[int]]:
    """Load each GGUF in `paths` in llama.cpp exactly as found there (the loader follows links itself)
    and generate `count` tokens greedily after "Hello"; the token ids per model, in order. Raises
    `LlamaUnavailable`, and `RuntimeError` with llama.cpp's output when a model cannot be loaded or run."""
    result = _run_node([str(EVALUATE_SCRIPT), str(count), *map(os.fspath, paths)], {}, timeout)
    found = {int(m[1]): [int(t) for t in m[3].split(",") if t]
             for m in re.finditer(r"^@@tokens (\d+) (\d+) ([\d,]*)$", result.stdout, re.MULTILINE)}
    if result.returncode != 0 or len(found) != len(paths):
        raise RuntimeError(f"llama.cpp could not evaluate {paths}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return [found[index] for index in range(len(paths))]
