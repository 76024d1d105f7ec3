"""Ollama's model store: `manifests/<host>/<namespace>/<model>/<tag>` JSON files naming `blobs/sha256-<hex>`.

The GGUF is the blob of the layer with mediaType `application/vnd.ollama.image.model`; a vision model's
projector is the `...image.projector` layer. A blob's name is its SHA-256, so the library can tell it
holds the same bytes without reading them. Blocking: call from a worker thread.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path

from model_manager.core.services.discovery.found import Candidate, Findings, is_folder, is_folder_path, read_folder

TOOL = "ollama"
MODEL_LAYER = "application/vnd.ollama.image.model"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"
DEFAULT_HOST, DEFAULT_NAMESPACE = "registry.ollama.ai", "library"
HUB_HOSTS = ("hf.co", "huggingface.co")
MAX_MANIFEST_BYTES = 1024 * 1024  # real manifests are under 2 KB
_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")


def store_root(env: Mapping[str, str], home: Path) -> Path:
    """Where Ollama keeps its models: `$OLLAMA_MODELS`, else `~/.ollama/models`."""
    return Path(env["OLLAMA_MODELS"]).expanduser() if env.get("OLLAMA_MODELS") else home / ".ollama" / "models"


def display_name(host: str, namespace: str, model: str, tag: str) -> str:
    """The name `ollama list` shows: `llama3.2:latest`, `user/model:tag`, or `hf.co/user/repo:tag`."""
    if host.lower() != DEFAULT_HOST:
        return f"{host}/{namespace}/{model}:{tag}"
    if namespace.lower() != DEFAULT_NAMESPACE:
        return f"{namespace}/{model}:{tag}"
    return f"{model}:{tag}"


def find(root: Path, findings: Findings) -> None:
    """Add every model whose manifest sits exactly 4 levels below `root/manifests` (as Ollama's lister reads)."""
    manifests = root / "manifests"
    if not is_folder_path(manifests, TOOL, findings):
        return
    for manifest in _manifest_files(manifests, findings):
        _read_manifest(root, manifest, findings)


def _manifest_files(manifests: Path, findings: Findings) -> list[Path]:
    level = [manifests]
    for _depth in range(3):  # host, namespace, model
        folders = []
        for folder in level:
            entries = read_folder(folder, TOOL, findings) or []
            folders.extend(Path(e.path) for e in entries if not e.name.startswith(".") and is_folder(e))
        level = folders
    tags = []
    for folder in level:
        entries = read_folder(folder, TOOL, findings) or []
        found = [Path(e.path) for e in entries if not e.name.startswith(".") and not is_folder(e)]
        # "latest" first: a blob under several tags is listed by the name people use, the others as also_named.
        tags.extend(sorted(found, key=lambda path: (path.name != "latest", path.name)))
    return tags


def _read_manifest(root: Path, path: Path, findings: Findings) -> None:
    try:
        with open(path, "rb") as file:
            raw = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        findings.skip(TOOL, path, f"cannot read this manifest: {error.strerror or error}")
        return
    if len(raw) > MAX_MANIFEST_BYTES:
        findings.skip(TOOL, path, f"not an Ollama manifest: larger than {MAX_MANIFEST_BYTES} bytes")
        return
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        findings.skip(TOOL, path, f"broken manifest: not valid JSON ({error})")
        return
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list):
        findings.skip(TOOL, path, "broken manifest: no list of layers")
        return
    model_digest = _layer_digest(layers, MODEL_LAYER)
    if model_digest is None:
        findings.skip(TOOL, path, f"no GGUF in this manifest: no layer of type {MODEL_LAYER} with a sha256 digest")
        return
    projector_digest = _layer_digest(layers, PROJECTOR_LAYER)
    host, namespace, model, tag = path.relative_to(root / "manifests").parts
    name = display_name(host, namespace, model, tag)
    findings.candidates.append(
        Candidate(
            tool=TOOL,
            name=name,
            paths=[root / "blobs" / f"sha256-{model_digest}"],
            library_name=f"{model}-{tag}.gguf",
            display_name=name,
            repo_id=f"{namespace}/{model}" if host.lower() in HUB_HOSTS else None,
            projector=root / "blobs" / f"sha256-{projector_digest}" if projector_digest else None,
            sha256=model_digest,
            quantization_hint=tag,
        )
    )


def _layer_digest(layers: list, media_type: str) -> str | None:
    """The hex SHA-256 of the first layer of `media_type`, or None."""
    for layer in layers:
        if isinstance(layer, dict) and layer.get("mediaType") == media_type:
            match = _DIGEST.match(str(layer.get("digest", "")))
            if match:
                return match.group(1)
    return None
