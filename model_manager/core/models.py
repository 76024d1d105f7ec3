"""The API's request and response schemas (see ../shared/API.md and README's API additions)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer


# API.md: ISO-8601 in UTC with an explicit offset ("+00:00", not pydantic's "Z").
Timestamp = Annotated[datetime, PlainSerializer(lambda value: value.isoformat(), when_used="json")]


class ErrorEnvelope(BaseModel):
    """Every 4xx and 5xx answer of the API."""

    error_code: str = Field(description="What went wrong, for programs: INVALID_TOKEN, MODEL_NOT_FOUND, ...")
    message: str = Field(description="What went wrong and what to do, for people")
    details: dict[str, Any] | None = Field(description="Facts about the error, such as the offending field")
    timestamp: Timestamp
    detail: dict[str, Any] | list[dict[str, Any]] = Field(
        description="For older clients: the envelope again, or for 422 the list of problems (loc, msg, type)"
    )


class HealthResponse(BaseModel):
    status: str = "healthy"
    timestamp: Timestamp
    version: str


# ---------------------------------------------------------------- Hub


class HubSort(str, Enum):
    likes = "likes"
    downloads = "downloads"
    time = "time"
    update = "update"
    trending = "trending"


class SearchFilters(BaseModel):
    """The `filters_json` object of `GET /hub/search`. Unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(default=None, max_length=200)
    license: str | None = Field(default=None, max_length=200)
    min_downloads: int | None = Field(default=None, ge=0)
    min_likes: int | None = Field(default=None, ge=0)
    tags: list[Annotated[str, Field(max_length=200)]] = Field(default_factory=list, max_length=20)
    gguf: bool | None = None
    author: str | None = Field(default=None, max_length=200)


class ModelInfoShort(BaseModel):
    repo_id: str
    model_name: str
    author: str | None
    task: str | None = None
    license: str | None = None
    downloads: int = 0
    likes: int = 0
    last_modified: Timestamp | None = None
    tags: list[str] = Field(default_factory=list)


class HubFile(BaseModel):
    filename: str
    size_bytes: int | None
    sha256: str | None = None


class ModelInfoDetailed(ModelInfoShort):
    description: str | None = None
    readme_content: str | None = None
    model_card: dict[str, Any] | None = None
    file_count: int = 0
    total_size_bytes: int = 0
    files: list[HubFile] = Field(default_factory=list)
    gated: bool = False
    base_model: str | None = None


# A repo file's path as a download request takes it; a variant's label is at most as long (docs/hub.md).
REPO_FILENAME_MAX_LENGTH = 1000
VARIANT_LABEL_MAX_LENGTH = REPO_FILENAME_MAX_LENGTH


# ---------------------------------------------------------------- Fit (+): will it run here? (docs/fit.md)


class FitMemory(BaseModel):
    """Bytes a model needs at one context; `total_bytes` = weights + KV cache + compute + overhead."""

    weights_bytes: int
    kv_cache_bytes: int
    compute_bytes: int
    overhead_bytes: int = Field(description="Runtime margin: the process, and on each GPU used the driver's share")
    total_bytes: int
    gpu_bytes: int = Field(0, description="Of these, what the chosen placement puts on the GPU(s)")
    ram_bytes: int = Field(0, description="Of these, what stays in RAM")


class FitEstimate(BaseModel):
    """Whether a model runs on the target machine, and how."""

    fit: Literal["full_gpu", "partial_gpu", "cpu", "too_large"]
    gpu_layers: int
    total_layers: int
    memory: FitMemory
    context_length: int
    max_context_full_gpu: int | None = None
    max_context_in_ram: int | None = None
    reasons: list[str] = Field(default_factory=list)


class FitTarget(BaseModel):
    """The machine a fit is computed for: detected here, or described by settings or the request."""

    ram_bytes: int
    gpu_free_bytes: list[int] = Field(default_factory=list)
    unified_memory: bool = False


class VariantFit(FitEstimate):
    """`GET /hub/fit` (+): the fit of one variant of a Hub repo, from its header read with Range requests."""

    repo_id: str
    quantization: str
    files: list[str]
    target: FitTarget


class LocalModelFit(FitEstimate):
    """`GET /local/models/{model_id}/fit` (+)."""

    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    target: FitTarget


class GPUInfo(BaseModel):
    vendor: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    backend: str


class HardwareInfo(BaseModel):
    """`GET /system/hardware` (+): this machine, and the target the fit endpoints use by default."""

    cpu_name: str
    cpu_cores: int
    cpu_threads: int
    cpu_features: list[str]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GPUInfo]
    unified_memory: bool
    fit_target: FitTarget


class QuantVariant(BaseModel):
    """One model of a repo: a single file or every part of one split set. `quantization` is its label,
    unique in the repo, and what `POST /local/download {"quantization"}` takes."""

    quantization: str
    files: list[str]
    size_bytes: int
    # (+) with `gguf-providers?fit=true`: where it would run on the target machine. Left out of the JSON when
    # None, so that without fit=true the answer is exactly what it was (and when the header could not be read).
    fit: FitEstimate | None = Field(default=None, exclude_if=lambda value: value is None)


class ProjectorFile(BaseModel):
    """(+) A multimodal projector (`mmproj`) file of a repo: what a vision model needs beside its weights."""

    filename: str
    size_bytes: int | None


class GGUFProvider(BaseModel):
    repo_id: str
    provider_name: str
    model_variants: list[str]
    is_recommended: bool = False
    total_downloads: int = 0
    last_updated: Timestamp | None = None
    likes: int = 0
    variants: list[QuantVariant] = Field(default_factory=list)
    score: float = 0.0
    reasons: list[str] = Field(default_factory=list)
    gated: bool = False
    # False when the configured HF_TOKEN cannot download this gated repo (none set, or no access).
    downloadable: bool = True
    # (+) the repo's projector files, by name; a variant download fetches the matching one (docs/hub.md)
    projectors: list[ProjectorFile] = Field(default_factory=list)
    # (+) with `gguf-providers?fit=true`: the best-quality variant that fits entirely on the GPU (in RAM without
    # one); left out when None (no fit asked for, or nothing fits)
    recommended_variant: str | None = Field(default=None, exclude_if=lambda value: value is None)


# ---------------------------------------------------------------- Downloads


class DownloadState(str, Enum):
    pending = "pending"
    downloading = "downloading"
    verifying = "verifying"
    completed = "completed"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (DownloadState.completed, DownloadState.failed, DownloadState.cancelled)


# The repo file names a download takes, as a JSON Schema pattern: exactly what `check_repo_filename` accepts
# (no control character, backslash, leading '/', empty, '.' or '..' segment, nor ':' in the first segment; the
# base name ends in .gguf in any case). Shown in the OpenAPI document; the check itself answers 400 INVALID_FILE.
_NAME_CHAR, _FIRST_CHAR = r"[^\x00-\x1f\x7f\\/]", r"[^\x00-\x1f\x7f\\/:]"
_SEGMENT = rf"(?:\.\.{_NAME_CHAR}+|\.?[^\x00-\x1f\x7f\\/.]{_NAME_CHAR}*)"
_FIRST_SEGMENT = rf"(?:\.\.{_FIRST_CHAR}+|\.?[^\x00-\x1f\x7f\\/.:]{_FIRST_CHAR}*)"
_GGUF = r"\.[gG][gG][uU][fF]"
REPO_FILENAME_PATTERN = rf"^(?:{_FIRST_SEGMENT}/(?:{_SEGMENT}/)*{_NAME_CHAR}+{_GGUF}|{_FIRST_CHAR}+{_GGUF})$"
# (+) What a download's `projector` must also match: "mmproj" in the base name, not next to a letter (as
# `gguf_format.is_mmproj` reads names). The download check uses this very pattern, so the document tells the truth.
PROJECTOR_NAME_PATTERN = r"^(?:[^/]*/)*(?:[^/]*[^/a-zA-Z])?[mM][mM][pP][rR][oO][jJ](?:[^/a-zA-Z][^/]*)?$"


class DownloadRequest(BaseModel):
    """Either `filename` (one file) or `quantization` (every file of that variant, split parts included)."""

    model_config = ConfigDict(
        extra="forbid",
        # Exactly one of the two, as a string (the code answers 400 INVALID_FILE otherwise).
        json_schema_extra={
            "oneOf": [
                {"properties": {"filename": {"type": "string"}}, "required": ["filename"]},
                {"properties": {"quantization": {"type": "string"}}, "required": ["quantization"]},
            ],
            # (+) `projector` goes with `quantization`, and not with include_projector=false (else 400 INVALID_FILE).
            "if": {"properties": {"projector": {"type": "string"}}, "required": ["projector"]},
            "then": {
                "properties": {"quantization": {"type": "string"}, "include_projector": {"const": True}},
                "required": ["quantization"],
            },
        },
    )

    repo_id: str = Field(min_length=3, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*/[A-Za-z0-9_.\-]+$")
    filename: str | None = Field(
        default=None,
        min_length=1,
        max_length=REPO_FILENAME_MAX_LENGTH,
        json_schema_extra={"pattern": REPO_FILENAME_PATTERN},
        description="The file's path in the repo, such as `Q4_K_M/model-Q4_K_M.gguf`",
    )
    quantization: str | None = Field(default=None, min_length=1, max_length=VARIANT_LABEL_MAX_LENGTH)
    # A branch, tag, commit or `refs/pr/N`, as the Hub names them (ASCII only).
    revision: str = Field(default="main", min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._/\-]*$")
    include_projector: bool = Field(
        default=True,
        description="(+) With `quantization`: also fetch the variant's multimodal projector (mmproj), as its own model",
    )
    projector: str | None = Field(
        default=None,
        min_length=1,
        max_length=REPO_FILENAME_MAX_LENGTH,
        json_schema_extra={"allOf": [{"pattern": REPO_FILENAME_PATTERN}, {"pattern": PROJECTOR_NAME_PATTERN}]},
        description="(+) With `quantization`: this projector file of the repo rather than the matching one",
    )


class DownloadAccepted(BaseModel):
    download_id: str
    message: str
    projector: str | None = Field(default=None, description="(+) The projector file that comes with the variant")
    projector_download_id: str | None = Field(
        default=None, description="(+) The projector's own download; null when none, or when the library has it"
    )
    projector_model_id: str | None = Field(default=None, description="(+) Set when the library already holds it")


class DownloadStatus(BaseModel):
    download_id: str
    repo_id: str
    filename: str
    status: DownloadState
    progress_percent: float = 0.0
    bytes_downloaded: int = 0
    total_bytes: int | None = None
    download_speed_mbps: float | None = None
    eta_seconds: float | None = None
    error_message: str | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    local_file_path: str | None = None
    model_id: str | None = None
    sha256: str | None = None
    revision: str = "main"
    quantization: str | None = None
    files: list[str] = Field(default_factory=list)
    created_at: Timestamp | None = None


class MessageResponse(BaseModel):
    message: str


# ---------------------------------------------------------------- Local library


class LocalModel(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    model_id: str
    original_repo_id: str | None = None
    display_name: str
    file_path: str
    file_size_bytes: int
    file_hash: str
    imported_at: Timestamp
    last_accessed: Timestamp | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    is_downloaded: bool = False
    external: bool = Field(
        default=False, description="(+) Registered where it lies outside MODELS_DIR: deleting the model keeps its files"
    )
    projector_model_id: str | None = Field(
        default=None, description="(+) The library model holding this vision model's multimodal projector (mmproj)"
    )
    exports: list[ModelExport] = Field(default_factory=list, description="(+) Where other tools see this model")
    run: dict[str, str] = Field(
        default_factory=dict, description="(+) Ready-to-paste commands per tool: llama.cpp, and each export's"
    )


ExportTarget = Literal["ollama", "lmstudio", "hf-cache"]


class ModelExport(BaseModel):
    """(+) A model made visible to another tool, by links only."""

    target: ExportTarget
    name: str = Field(description="The model's name in that tool: name:tag, publisher/repo, or org/name")
    method: Literal["hardlink", "symlink", "existing"] = Field(
        description="How the tool reaches the bytes: hard links, symlinks (MODELS_DIR on another filesystem), or "
        "its own copy that was already there"
    )
    created_paths: list[str] = Field(description="The links and small files this export made; only these are removed")
    details: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    created_at: Timestamp


# The names each export target takes, as the document shows them (the exporters check them: 400 INVALID_FILE).
_OLLAMA_PART = r"[a-zA-Z0-9][a-zA-Z0-9._\-]{0,79}"
_PATH_PART = r"(?:\.\.[^/]+|\.?[^/.][^/]*)"  # not empty, '.' or '..'
_EXPORT_NAME_PATTERNS = {
    "ollama": rf"^{_OLLAMA_PART}(?::{_OLLAMA_PART})?$",
    "lmstudio": rf"^{_PATH_PART}/{_PATH_PART}$",
    "hf-cache": rf"^{_PATH_PART}/{_PATH_PART}$",
}


class ExportRequest(BaseModel):
    """(+) Body of `POST /local/models/{model_id}/exports`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "allOf": [
                {
                    "if": {"properties": {"target": {"const": target}}, "required": ["target"]},
                    "then": {"properties": {"name": {"pattern": pattern}}},
                }
                for target, pattern in _EXPORT_NAME_PATTERNS.items()
            ]
        },
    )

    target: ExportTarget
    name: str | None = Field(default=None, min_length=1, max_length=200, description="Default: from the repo or name")


class ImportRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Absolute (a relative path is 403 PATH_NOT_ALLOWED, as is one outside IMPORT_ALLOWED_DIRS).
    file_path: str = Field(min_length=1, max_length=4096, json_schema_extra={"pattern": "^/"})
    action: Literal["copy", "move", "link", "register"] = Field(
        default="copy",
        description="copy; move (a rename on the same filesystem); link (+, a hard link into MODELS_DIR, no "
        "byte copied, same filesystem only: else 409 CROSS_FILESYSTEM); register (+, the file stays where it "
        "is and the library never removes it)",
    )
    display_name: str | None = Field(default=None, min_length=1, max_length=200)


class LocalModelSort(str, Enum):
    imported = "imported"
    name = "name"
    size = "size"
    last_accessed = "last_accessed"


class StorageStats(BaseModel):
    total_models: int
    total_count: int
    total_size_bytes: int
    total_size_gb: float
    disk_free_bytes: int
    available_bytes: int
    disk_free_gb: float
    disk_total_gb: float
    usage_percent: float
    storage_directory: str
    partial_downloads_bytes: int = 0
    orphaned_files: int = 0
    # Ready models whose file (or a part) is not on disk: an unmounted drive, or a file removed by hand.
    models_with_missing_files: int = 0
    # Valid GGUF models in MODELS_DIR that no row owns yet; a rescan (or cleanup) registers them in place.
    unregistered_models: int = 0


class CleanupResult(BaseModel):
    message: str
    removed_files: list[str]
    removed_count: int
    freed_bytes: int = 0
    dry_run: bool = False
    # Files found in MODELS_DIR and registered in place (dry run: that would be), never removed.
    adopted: list[str] = Field(default_factory=list)
    # Paths in the storage folders that are not the service's and were left alone.
    kept_foreign: list[str] = Field(default_factory=list)


class RescanResult(BaseModel):
    """What `POST /local/storage/rescan` found in MODELS_DIR and registered in place."""

    message: str
    adopted: list[LocalModel]
    already_registered: int = Field(description="Unregistered files whose bytes the library already has (left alone)")
    kept_foreign: list[str] = Field(description="Files left alone: not GGUF, unreadable, or incomplete split sets")
    dry_run: bool = False
    would_adopt: list[str] = Field(default_factory=list, description="Dry run: the files that would be registered")


# ---------------------------------------------------------------- Discover (+): models other tools hold (docs/discovery.md)

DiscoveredTool = Literal["ollama", "lmstudio", "hf-cache", "llama.cpp", "folder"]


class DiscoveredModel(BaseModel):
    """A GGUF model another tool keeps on this machine, with a valid header."""

    tool: DiscoveredTool
    name: str = Field(description="Its name in that tool: `llama3.2:latest`, `publisher/repo/file.gguf`, ...")
    path: str = Field(description="The file, or a split model's first part, as the tool spells it")
    part_paths: list[str] = Field(description="Every file of the model in order (one for an unsplit model)")
    size_bytes: int
    repo_id: str | None = None
    quantization: str | None = None
    architecture: str | None = None
    projector_path: str | None = Field(default=None, description="The vision projector that goes with it")
    sha256: str | None = Field(default=None, description="Set when the layout names it (Ollama and HF LFS blobs)")
    in_library: bool = Field(description="The library holds this file (same inode) or these bytes (same SHA-256)")
    library_model_id: str | None = None
    zero_copy: bool = Field(description="Same filesystem as MODELS_DIR: `link` imports it without a copy")
    import_blocked: str | None = Field(default=None, description="Why POST /local/discover/import would refuse it")
    also_named: list[str] = Field(default_factory=list, description="The same file under other names: `<tool> <name>`")


class DiscoverySkip(BaseModel):
    tool: DiscoveredTool
    path: str
    reason: str


class DiscoveryLocation(BaseModel):
    """A place discover looked in."""

    tool: DiscoveredTool
    path: str
    exists: bool


class DiscoverResult(BaseModel):
    """`GET /local/discover` (+)."""

    models: list[DiscoveredModel]
    skipped: list[DiscoverySkip] = Field(description="What could not be used (broken manifests, dangling links, unreadable folders), and why")
    searched: list[DiscoveryLocation]


class DiscoverImportRequest(BaseModel):
    """`POST /local/discover/import` (+): models that `GET /local/discover` lists, by their `path`."""

    model_config = ConfigDict(extra="forbid")

    paths: list[Annotated[str, Field(min_length=1, max_length=4096)]] = Field(min_length=1, max_length=200)
    action: Literal["link", "register", "copy"] = "link"


class DiscoverImportItem(BaseModel):
    path: str
    status: Literal["imported", "already_in_library", "failed"]
    model: LocalModel | None = None
    error_code: str | None = None
    message: str | None = None


class DiscoverImportResult(BaseModel):
    results: list[DiscoverImportItem]
    imported: int
    already_in_library: int
    failed: int
