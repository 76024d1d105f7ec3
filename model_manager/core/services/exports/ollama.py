"""Ollama: the model as a blob named by its SHA-256 (a link to our file), a config blob and a v2 manifest.

`ollama list` re-reads the manifests on every call and blobs are only opened, so a hard link works as a
blob and the model shows up at once, with no `ollama create` (which would rewrite, so copy, the file).
Layout and config fields: ../shared/OTHER-TOOLS.md ("Ollama's model store").
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path

from model_manager.core.errors import InvalidFileError
from model_manager.core.services import tool_homes
from model_manager.core.services.exports.links import (
    Placed,
    identity_of,
    link_file,
    remove_if_ours,
    remove_projector_link,
    write_new_file,
)
from model_manager.core.services.exports.source import ExportSource, slug

TARGET = "ollama"
REGISTRY = "registry.ollama.ai"
NAMESPACE = "library"
MODEL_LAYER = "application/vnd.ollama.image.model"
PROJECTOR_LAYER = "application/vnd.ollama.image.projector"  # a vision model's mmproj, as `ollama create` names it
CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
_PART = re.compile(r"[a-z0-9][a-z0-9._-]{0,79}")
_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def default_name(source: ExportSource) -> str:
    """`name:tag`: the display name, and the quantization as the tag (as Hub pulls are tagged)."""
    tag = slug(source.metadata.get("quantization") or "latest")
    return f"{slug(source.display_name)}:{tag}"


def _split_name(name: str) -> tuple[str, str]:
    model, _, tag = name.casefold().partition(":")
    tag = tag or "latest"
    if not _PART.fullmatch(model) or not _PART.fullmatch(tag):
        raise InvalidFileError(
            f"{name!r} is not an Ollama model name: use letters, digits, '.', '_' or '-', and ':tag'", {"name": name}
        )
    return model, tag


def config_blob(source: ExportSource) -> bytes:
    """The image config Ollama shows: format, family, size (`model_type`) and quantization (`file_type`)."""
    meta = source.metadata
    family = meta.get("architecture") or "unknown"
    config = {
        "model_format": "gguf",
        "model_family": family,
        "model_families": [family],
        "model_type": meta.get("size_label") or _parameter_size(meta.get("parameter_count")),
        "file_type": meta.get("quantization") or "unknown",
        "architecture": _GOARCH.get(platform.machine().lower(), platform.machine().lower()),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{digest}" for digest, _size in _layers(source)]},
    }
    return json.dumps(config, separators=(",", ":")).encode()


def _parameter_size(count: int | None) -> str:
    if not count:
        return "unknown"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= size:
            return f"{count / size:.1f}{unit}".replace(".0", "")
    return str(count)


def manifest(source: ExportSource, config: bytes) -> bytes:
    document = {
        "schemaVersion": 2,
        "mediaType": MANIFEST_TYPE,
        "config": {"mediaType": CONFIG_TYPE, "digest": f"sha256:{hashlib.sha256(config).hexdigest()}", "size": len(config)},
        "layers": [
            {"mediaType": media_type, "digest": f"sha256:{digest}", "size": size}
            for (digest, size), media_type in zip(_layers(source), (MODEL_LAYER, PROJECTOR_LAYER))
        ],
    }
    return json.dumps(document, indent=2).encode()


def _layers(source: ExportSource) -> list[tuple[str, int]]:
    """(SHA-256, size) of the model layer, then of the projector layer when the model has one."""
    layers = [(source.sha256[0], source.sizes[0])]
    if source.projector is not None:
        layers.append((source.projector_sha256, source.projector_size))
    return layers


def place(source: ExportSource, name: str, placed: Placed) -> dict:
    if source.is_split:
        raise InvalidFileError(
            "Ollama loads single-file models only; merge the parts with llama.cpp's gguf-split --merge first",
            {"parts": len(source.files)},
        )
    model, tag = _split_name(name)
    home = tool_homes.ollama_models()
    config = config_blob(source)
    content = manifest(source, config)
    link_file(source.files[0], home / "blobs" / f"sha256-{source.sha256[0]}", placed)
    projector = None
    if source.projector is not None:
        blob = home / "blobs" / f"sha256-{source.projector_sha256}"
        if blob.is_file() and not blob.is_symlink() and not blob.samefile(source.projector):
            placed.notes.append(f"Ollama already holds the projector's bytes ({blob.name}); used as they are")
        else:  # ours, made now or by the export of another variant: recorded either way (see remove)
            link_file(source.projector, blob, placed)
            projector = {**identity_of(source.projector), "link": str(blob)}
    write_new_file(home / "blobs" / f"sha256-{hashlib.sha256(config).hexdigest()}", config, placed)
    manifest_path = home / "manifests" / REGISTRY / NAMESPACE / model / tag
    write_new_file(manifest_path, content, placed)
    details = {
        "name": f"{model}:{tag}",
        "manifest": str(manifest_path),
        "manifest_sha256": hashlib.sha256(content).hexdigest(),
        "run": f"ollama run {model}:{tag}",
    }
    if projector is not None:
        details["projector"] = projector
    return details


def remove(source: ExportSource, created: list[str], details: dict) -> None:
    """Remove our manifest if unchanged, then our blobs that no other manifest still names."""
    home = tool_homes.ollama_models()
    manifest_path = Path(details.get("manifest", ""))
    if str(manifest_path) in created:
        try:
            if hashlib.sha256(manifest_path.read_bytes()).hexdigest() == details.get("manifest_sha256"):
                manifest_path.unlink()
        except FileNotFoundError:
            pass
    still_named = _digests_in_manifests(home)
    projector_link = (details.get("projector") or {}).get("link")
    if projector_link:  # checked against what we linked: the projector model may be gone
        remove_projector_link(details, still_used=Path(projector_link).name.replace("sha256-", "sha256:", 1) in still_named)
    for path in map(Path, created):
        if path == manifest_path or not path.name.startswith("sha256-") or str(path) == projector_link:
            continue
        if path.name.replace("sha256-", "sha256:", 1) in still_named:
            continue
        if path.name == f"sha256-{source.sha256[0]}":
            remove_if_ours(path, source.files[0])
        else:  # our config blob: removed only while its bytes still hash to its name
            _remove_config_blob(path)


def _remove_config_blob(path: Path) -> None:
    try:
        if path.is_symlink():
            return  # not the file we wrote
        content = path.read_bytes()
    except FileNotFoundError:
        return
    if f"sha256-{hashlib.sha256(content).hexdigest()}" == path.name:
        remove_if_ours(path, content=content)


def _digests_in_manifests(home: Path) -> set[str]:
    """Every blob digest that a manifest (host/namespace/model/tag) names."""
    named: set[str] = set()
    for manifest_file in (home / "manifests").glob("*/*/*/*"):
        try:
            document = json.loads(manifest_file.read_text())
            named.add(document["config"]["digest"])
            named.update(layer["digest"] for layer in document["layers"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return named
