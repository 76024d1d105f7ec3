"""Other tools' model folders, written in their documented layouts (../shared/OTHER-TOOLS.md) with real GGUF files.

`build_homes(tmp_path)` makes one home holding Ollama's store, LM Studio's folder, the Hugging Face cache,
llama.cpp's flat cache and a LIBRARY_SCAN_DIRS folder, each with valid models and with what discovery
must skip: a broken manifest, a manifest naming a missing blob, a dangling symlink, a truncated file and a
folder nobody may read (mode 000). `use_homes(monkeypatch, homes)` points HOME and the tools' variables there.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import gguf
import numpy as np

from tests.gguf_factory import sha256_of, write_gguf, write_mmproj, write_split_model

T = TypeVar("T")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TOOL_VARIABLES = ("OLLAMA_MODELS", "HF_HUB_CACHE", "HF_HOME", "LLAMA_CACHE")


# ------------------------------------------------------------------ Ollama


def ollama_blob(store: Path, source: Path) -> str:
    """Move `source` into Ollama's blobs as `sha256-<hex>` (its own digest); returns the hex."""
    digest = sha256_of(source)
    blobs = store / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    shutil.move(source, blobs / f"sha256-{digest}")
    return digest


def ollama_manifest(store: Path, host: str, namespace: str, model: str, tag: str, layers: list[tuple[str, str, int]]) -> Path:
    """Write `manifests/<host>/<namespace>/<model>/<tag>` listing `(media type suffix, hex digest, size)` layers,
    with a config blob as Ollama writes one."""
    config = json.dumps({"model_format": "gguf", "model_family": "llama", "model_type": "1B", "file_type": "Q4_K_M"}).encode()
    config_path = store / "blobs" / "config.json"
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_bytes(config)
    config_digest = ollama_blob(store, config_path)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": f"sha256:{config_digest}", "size": len(config)},
        "layers": [
            {"mediaType": f"application/vnd.ollama.image.{kind}", "digest": f"sha256:{digest}", "size": size}
            for kind, digest, size in layers
        ],
    }
    path = store / "manifests" / host / namespace / model / tag
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest))
    return path


def ollama_model(store: Path, scratch: Path, host: str, namespace: str, model: str, tag: str, *, projector: bool = False, **gguf_kw: Any) -> Path:
    """A pulled model: its GGUF blob (and a projector blob), a template layer and the manifest; returns the blob."""
    scratch.mkdir(parents=True, exist_ok=True)
    source = write_gguf(scratch / f"{model}-{tag}.gguf", name=f"{model} {tag}", **gguf_kw)
    size = source.stat().st_size
    digest = ollama_blob(store, source)
    template = scratch / "template"
    template.write_text("{{ .Prompt }}")
    layers = [("model", digest, size), ("template", ollama_blob(store, template), 13)]
    if projector:
        mmproj = write_mmproj(scratch / f"{model}-mmproj.gguf", name=f"{model} projector")
        mmproj_size = mmproj.stat().st_size
        layers.append(("projector", ollama_blob(store, mmproj), mmproj_size))
    ollama_manifest(store, host, namespace, model, tag, layers)
    return store / "blobs" / f"sha256-{digest}"


# ------------------------------------------------------------------ Hugging Face cache


def hf_cache_file(cache: Path, repo_id: str, filename: str, source: Path, commit: str = COMMIT) -> Path:
    """Put `source` in the cache as huggingface_hub does: `blobs/<sha256>`, a relative snapshot symlink, `refs/main`."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    blob = repo / "blobs" / sha256_of(source)
    blob.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, blob)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return link


# ------------------------------------------------------------------ the whole machine


@dataclass
class Homes:
    """The fake machine: where each tool keeps models, the models discovery must list and what it must skip."""

    home: Path
    scan_dir: Path
    expected: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (tool, name) -> facts
    expected_skips: dict[str, str] = field(default_factory=dict)  # path -> part of the reason
    unreadable: Path | None = None

    @property
    def ollama(self) -> Path:
        return self.home / ".ollama" / "models"


def build_homes(tmp_path: Path) -> Homes:
    """Every tool's folder in its default place under `tmp_path/home`, plus `tmp_path/my-models` to scan."""
    home = tmp_path / "home"
    scratch = tmp_path / "scratch"
    homes = Homes(home=home, scan_dir=tmp_path / "my-models")

    # Ollama: a library model under two tags, a Hub pull with a projector, a broken manifest, a missing blob.
    store = homes.ollama
    blob = ollama_model(store, scratch, "registry.ollama.ai", "library", "llama3.2", "latest", architecture="llama", file_type=15)
    ollama_manifest(store, "registry.ollama.ai", "library", "llama3.2", "3b", [("model", blob.name[7:], blob.stat().st_size)])
    homes.expected[("ollama", "llama3.2:latest")] = {
        "path": str(blob), "quantization": "Q4_K_M", "sha256": blob.name[7:], "also_named": ["ollama llama3.2:3b"]
    }
    vision = ollama_model(
        store, scratch, "hf.co", "bartowski", "Vision-GGUF", "Q8_0", projector=True, architecture="gemma3", file_type=7
    )
    homes.expected[("ollama", "hf.co/bartowski/Vision-GGUF:Q8_0")] = {
        "path": str(vision), "repo_id": "bartowski/Vision-GGUF", "quantization": "Q8_0", "sha256": vision.name[7:]
    }
    broken = store / "manifests" / "registry.ollama.ai" / "library" / "broken" / "latest"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"schemaVersion": 2, "layers": [')
    homes.expected_skips[str(broken)] = "not valid JSON"
    gone = ollama_manifest(store, "registry.ollama.ai", "library", "gone", "latest", [("model", "ab" * 32, 1000)])
    homes.expected_skips[str(store / "blobs" / f"sha256-{'ab' * 32}")] = "missing"
    too_deep = store / "manifests" / "registry.ollama.ai" / "library" / "deep" / "er" / "latest"
    too_deep.parent.mkdir(parents=True)
    too_deep.write_text(gone.read_text())  # five levels: Ollama never reads it, neither do we

    # LM Studio (~/.lmstudio): a model with its projector, a split model, a stray file, an unreadable publisher.
    lms = home / ".lmstudio" / "models"
    qwen = lms / "lmstudio-community" / "Qwen-GGUF"
    qwen.mkdir(parents=True)
    write_gguf(qwen / "qwen-Q8_0.gguf", architecture="qwen2", name="Qwen", file_type=7)
    write_mmproj(qwen / "mmproj-qwen-F16.gguf")
    homes.expected[("lmstudio", "lmstudio-community/Qwen-GGUF/qwen-Q8_0.gguf")] = {
        "path": str(qwen / "qwen-Q8_0.gguf"), "repo_id": "lmstudio-community/Qwen-GGUF", "quantization": "Q8_0",
        "projector": str(qwen / "mmproj-qwen-F16.gguf"),
    }
    big = lms / "someone" / "Big-GGUF"
    big.mkdir(parents=True)
    parts = write_split_model(big, "big-Q4_K_M", 2, name="Big", architecture="llama")
    homes.expected[("lmstudio", f"someone/Big-GGUF/{parts[0].name}")] = {
        "path": str(parts[0]), "part_paths": [str(p) for p in parts], "quantization": "Q4_K_M"
    }
    write_gguf(lms / "stray-Q4_0.gguf", name="Stray")  # directly in models/: LM Studio does not see it
    locked = lms / "locked-publisher"
    (locked / "Secret-GGUF").mkdir(parents=True)
    write_gguf(locked / "Secret-GGUF" / "secret-Q4_0.gguf", name="Secret")
    locked.chmod(0)
    homes.unreadable = locked
    homes.expected_skips[str(locked)] = "Permission denied"

    # The Hugging Face cache: an LFS file, and a snapshot link whose blob is gone.
    cache = home / ".cache" / "huggingface" / "hub"
    phi = hf_cache_file(cache, "org/Phi-GGUF", "phi-Q5_K_M.gguf", write_gguf(scratch / "phi.gguf", architecture="phi3", name="Phi", file_type=17))
    homes.expected[("hf-cache", "org/Phi-GGUF/phi-Q5_K_M.gguf")] = {
        "path": str(phi), "repo_id": "org/Phi-GGUF", "quantization": "Q5_K_M", "sha256": Path(os.path.realpath(phi)).name
    }
    dangling = hf_cache_file(cache, "org/Gone-GGUF", "gone-Q4_0.gguf", write_gguf(scratch / "gone.gguf", name="Gone"))
    Path(os.path.realpath(dangling)).unlink()
    homes.expected_skips[str(dangling)] = "dangling symbolic link"

    # llama.cpp's flat cache: a file pulled with -hf (manifest and .etag beside it).
    flat = home / ".cache" / "llama.cpp"
    flat.mkdir(parents=True)
    tiny = write_gguf(flat / "bartowski_Tiny-GGUF_tiny-Q4_0.gguf", name="Tiny", file_type=2)
    (flat / "bartowski_Tiny-GGUF_tiny-Q4_0.gguf.etag").write_text('"abc"')
    (flat / "manifest=bartowski=Tiny-GGUF=Q4_0.json").write_text(json.dumps({"ggufFile": {"rfilename": "tiny-Q4_0.gguf"}}))
    homes.expected[("llama.cpp", "bartowski/Tiny-GGUF:Q4_0")] = {"path": str(tiny), "repo_id": "bartowski/Tiny-GGUF", "quantization": "Q4_0"}

    # A folder of LIBRARY_SCAN_DIRS: a model two levels down, and a truncated file.
    (homes.scan_dir / "mistral").mkdir(parents=True)
    mine = write_gguf(homes.scan_dir / "mistral" / "mistral-IQ4_XS.gguf", architecture="mistral", name="Mistral", file_type=30)
    homes.expected[("folder", "mistral/mistral-IQ4_XS.gguf")] = {"path": str(mine), "quantization": "IQ4_XS"}
    cut = write_gguf(homes.scan_dir / "cut-Q4_0.gguf", name="Cut", tensor_elements=4096)
    os.truncate(cut, cut.stat().st_size - 1000)
    homes.expected_skips[str(cut)] = "truncated"

    shutil.rmtree(scratch)
    return homes


def use_homes(monkeypatch, homes: Homes) -> None:
    """Point HOME at the fake home and clear the tools' own variables, so every tool's default place is used."""
    monkeypatch.setenv("HOME", str(homes.home))
    for name in TOOL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def restore_permissions(homes: Homes) -> None:
    if homes.unreadable is not None and homes.unreadable.exists():
        homes.unreadable.chmod(stat.S_IRWXU)


# ------------------------------------------------------------------ snapshots and blocks


def file_states(root: Path) -> dict[str, tuple]:
    """Every entry below `root` (links not followed): bytes' SHA-256, inode, size, mode and mtime, or a link's target."""
    states: dict[str, tuple] = {}
    for folder, dirs, names in os.walk(root):
        for name in dirs + names:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISLNK(info.st_mode):
                states[str(path)] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                states[str(path)] = (sha256_of(path), info.st_ino, info.st_size, info.st_mode, info.st_mtime_ns)
            else:
                states[str(path)] = ("dir", info.st_mode)
    return states


def allocated_bytes(*roots: Path) -> int:
    """Disk blocks taken by the files below `roots`, each inode counted once: a hard link adds no blocks, and
    summing per path would count the same blocks twice (statvfs would count every other process's writes)."""
    seen: dict[tuple[int, int], int] = {}
    for root in roots:
        for folder, _dirs, names in os.walk(root):
            for name in names:
                info = os.lstat(Path(folder) / name)
                seen[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return sum(seen.values())


def write_large_gguf(path: Path, size_bytes: int) -> str:
    """Write a valid GGUF of about `size_bytes` whose data is really written (not a hole), without holding it
    in memory; returns its SHA-256, computed while writing (reading 1 GiB back would double the time)."""
    elements = size_bytes // 4
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("Large")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tensor_info("token_embd.weight", (1, elements), np.dtype(np.float32), elements * 4)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    header_end = writer.fout[0].tell()
    writer.close()
    pad = gguf.GGUFWriter.ggml_pad(header_end, gguf.GGUF_DEFAULT_ALIGNMENT) - header_end
    digest = hashlib.sha256(path.read_bytes() + b"\0" * pad)
    chunk = np.arange(2 * 1024 * 1024, dtype=np.float32).tobytes()  # 8 MiB of non-zero floats
    with open(path, "ab") as file:
        file.write(b"\0" * pad)
        left = elements * 4
        while left:
            piece = chunk[: min(left, len(chunk))]
            left -= file.write(piece)
            digest.update(piece)
    return digest.hexdigest()


# ------------------------------------------------------------------ root that obeys file modes


_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2
_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_read_override_of_this_thread() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    header, data = _CapHeader(_CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    if libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget failed")
    data[0].effective &= ~((1 << _CAP_DAC_OVERRIDE) | (1 << _CAP_DAC_READ_SEARCH))
    if libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset failed")


def as_user_bound_by_modes(func: Callable[[], T]) -> T:
    """Run `func` in a new thread that file modes bind even when the tests run as root.

    Root reads a mode-000 folder through the capabilities CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH. On Linux
    capabilities belong to each thread, and threads started from this one inherit its set: the thread drops
    the two from its effective set, so it (and the worker threads `asyncio.to_thread` starts from it) meets
    EACCES like any user, while the rest of the test process keeps them.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            if os.geteuid() == 0:
                _drop_read_override_of_this_thread()
            outcome["value"] = func()
        except BaseException as error:  # re-raised in the caller's thread
            outcome["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
