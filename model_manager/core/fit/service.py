"""The fit answers the API gives: for this machine (or the target the settings and the request describe),
for a model in the library, for one variant on the Hub, and for every variant of a model's providers.

Headers of Hub files come from `hub.remote_header` (Range requests, stored in the catalogue); headers
of library files are read from disk. Blocking work runs in threads.
"""

from __future__ import annotations

import asyncio
import logging

from huggingface_hub.hf_api import ModelInfo

from model_manager.core.catalogue import Catalogue
from model_manager.core.config import Settings
from model_manager.core.errors import InvalidFileError, ModelManagerError, ModelNotFoundError, NotFoundError
from model_manager.core.fit import FitResult, ShapeError, Target, estimate, quality_rank
from model_manager.core.fit.hardware import Hardware, detect_hardware
from model_manager.core.fit.local_headers import LocalHeaders
from model_manager.core.fit.target import resolve_target
from model_manager.core.gguf_format import (
    GGUFFormatError,
    GGUFHeader,
    quantization_from_file_type,
    quantization_from_filename,
)
from model_manager.core.models import (
    FitEstimate,
    FitMemory,
    FitTarget,
    GGUFProvider,
    GPUInfo,
    HardwareInfo,
    LocalModelFit,
    QuantVariant,
    VariantFit,
)
from model_manager.core.services.hub.remote_header import HubFileRef, RemoteHeaderReader
from model_manager.core.services.hub.variants import group_variants
from model_manager.core.services.huggingface_service import HuggingFaceService

logger = logging.getLogger("model_manager.fit")
HEADER_CONCURRENCY = 4
MAX_CONTEXT = 1 << 21


class FitInputError(ModelManagerError):
    """A fit request the service cannot answer as asked (bad context, cache type, or unsizable model)."""

    error_code = "VALIDATION_ERROR"


class ModelNotSizableError(ModelManagerError):
    """The model exists and was read, but its header lacks what its memory depends on (a valid request)."""

    error_code = "MODEL_NOT_SIZABLE"


class FitService:
    """One per app. Methods raise the Hub's errors (NotFoundError, GatedRepoError...), ModelNotFoundError,
    InvalidFileError for unreadable headers and FitInputError for a bad context."""

    def __init__(self, settings: Settings, catalogue: Catalogue, hub: HuggingFaceService) -> None:
        self.settings = settings
        self.catalogue = catalogue
        self.hub = hub
        self.headers = RemoteHeaderReader(catalogue, hub.hub_auth_headers(), settings.hub_timeout_seconds)
        self.local_headers = LocalHeaders()

    # ------------------------------------------------------------------ the machine

    async def detect(self) -> Hardware:
        return await asyncio.to_thread(detect_hardware)

    async def target(self, ram_gb: float | None = None, vram_gb: float | None = None) -> Target:
        """The machine to fit for: the request's sizes, else the settings', else this machine's."""
        if ram_gb is not None and vram_gb is not None:
            hardware = Hardware("", 0, 0, [], 0, 0)  # nothing left to detect
        else:
            hardware = await self.detect()
        return resolve_target(
            hardware, ram_gb=ram_gb, vram_gb=vram_gb,
            settings_ram_gb=self.settings.fit_ram_gb, settings_vram_gb=self.settings.fit_vram_gb,
        )

    async def hardware(self) -> HardwareInfo:
        """`GET /system/hardware`: what was detected, and the target the fit endpoints use by default."""
        hardware = await self.detect()
        target = resolve_target(
            hardware, settings_ram_gb=self.settings.fit_ram_gb, settings_vram_gb=self.settings.fit_vram_gb
        )
        return HardwareInfo(
            cpu_name=hardware.cpu_name,
            cpu_cores=hardware.cpu_cores,
            cpu_threads=hardware.cpu_threads,
            cpu_features=hardware.cpu_features,
            ram_total_bytes=hardware.ram_total_bytes,
            ram_available_bytes=hardware.ram_available_bytes,
            gpus=[GPUInfo(**vars(gpu)) for gpu in hardware.gpus],
            unified_memory=hardware.unified_memory,
            fit_target=_target_schema(target),
        )

    # ------------------------------------------------------------------ fits

    async def fit_local(
        self, model_id: str, context: int | None, ram_gb: float | None = None, vram_gb: float | None = None
    ) -> LocalModelFit:
        """The fit of a model in the library, from its files' headers on disk."""
        record = await asyncio.to_thread(self.catalogue.get_model, model_id)
        if record is None:
            raise ModelNotFoundError(f"no model {model_id!r} in the library", {"model_id": model_id})
        try:
            headers = await asyncio.to_thread(self.local_headers.read, record.all_paths)
        except OSError as error:
            raise InvalidFileError(f"cannot read the model's file: {error.strerror or error}") from error
        target = await self.target(ram_gb, vram_gb)
        result = _estimate(headers, target, context)
        return LocalModelFit(**_estimate_fields(result), model_id=model_id, target=_target_schema(target))

    async def fitting_context(self, model_id: str, cap: int) -> int | None:
        """The largest context, at most `cap`, at which the library model runs entirely on the target's GPU,
        or else in its RAM; None when it does not run there, or its headers cannot be read."""
        try:
            result = await self.fit_local(model_id, None)
        except ModelManagerError:
            return None
        fitting = result.max_context_full_gpu or result.max_context_in_ram
        return min(fitting, cap) if fitting else None

    async def fit_hub(
        self,
        repo_id: str,
        *,
        quantization: str | None = None,
        filename: str | None = None,
        context: int | None = None,
        ram_gb: float | None = None,
        vram_gb: float | None = None,
        projector: str | None = None,
    ) -> VariantFit:
        """The fit of one variant of a Hub repo (by label, or by the name of one of its files).

        `projector` names a multimodal projector (mmproj) file of the repo to count beside the model."""
        info = await self.hub.client.model_info(repo_id)
        repo_files = group_variants((s.rfilename, s.size) for s in info.siblings or ())
        if filename is not None:
            variant = next((v for v in repo_files.variants if filename in v.files), None)
            if variant is None:
                raise NotFoundError(f"{repo_id} has no GGUF model file {filename!r}")
        elif quantization is not None:
            found = repo_files.matching(quantization)  # as downloads read a label
            if len(found) > 1:
                labels = [v.quantization for v in found]
                raise FitInputError(f"{quantization!r} matches several variants of {repo_id}: {', '.join(labels)}; "
                                    "ask for one by its label", {"candidates": labels})
            if not found:
                raise NotFoundError(f"{repo_id} has no GGUF variant {quantization!r}")
            variant = found[0]
        else:
            raise FitInputError("give quantization or filename")
        target = await self.target(ram_gb, vram_gb)
        projector_header = None
        if projector is not None:
            if projector not in repo_files.mmproj_files:
                raise NotFoundError(f"{repo_id} has no projector (mmproj) file {projector!r}")
            projector_header = await self.headers.header(self._file_ref(info, projector))
        headers = await self._variant_headers(info, variant)
        result = _estimate(headers, target, context, projector_header)
        if projector is not None:
            result.reasons.append(f"Counts the projector {projector} with the model.")
        return VariantFit(
            **_estimate_fields(result), repo_id=info.id, quantization=variant.quantization, files=variant.files,
            target=_target_schema(target),
        )

    async def annotate_providers(
        self, providers: list[GGUFProvider], context: int | None, ram_gb: float | None, vram_gb: float | None
    ) -> list[GGUFProvider]:
        """Providers with `fit` on each variant and each provider's `recommended_variant`.

        A variant whose header cannot be read (gated, not GGUF, unknown architecture) gets no `fit` and
        a reason on its provider; the other variants are unaffected.
        """
        target = await self.target(ram_gb, vram_gb)
        limit = asyncio.Semaphore(HEADER_CONCURRENCY)
        # Quantizations of one base model share its vocabulary, so their headers are about the same size:
        # the first header read tells the others how much to ask for, making one request enough for each.
        hint: list[int | None] = [None]
        priming = asyncio.Lock()

        async def headers_of(info: ModelInfo, variant: QuantVariant) -> list[GGUFHeader]:
            if hint[0] is None:
                async with priming:
                    if hint[0] is None:
                        headers = await self._variant_headers(info, variant)
                        hint[0] = headers[0].header_size
                        return headers
            return await self._variant_headers(info, variant, hint[0])

        async def one_provider(provider: GGUFProvider) -> GGUFProvider:
            provider = provider.model_copy(deep=True)
            if not provider.downloadable:  # a gated repo our token cannot read: its headers cannot be read either
                provider.reasons.append("fit unknown: the repo is gated and HF_TOKEN has no access to its files")
                return provider
            try:
                info = await self.hub.client.model_info(provider.repo_id)
            except ModelManagerError as error:
                provider.reasons.append(f"fit unknown: {error.message}")
                return provider

            async def one_variant(variant: QuantVariant) -> None:
                async with limit:
                    try:
                        headers = await headers_of(info, variant)
                        result = _estimate(headers, target, context)
                    except (ModelManagerError, ShapeError) as error:
                        message = getattr(error, "message", str(error))
                        provider.reasons.append(f"fit of {variant.quantization} unknown: {message}")
                        return
                variant.fit = FitEstimate(**_estimate_fields(result))

            await asyncio.gather(*(one_variant(v) for v in provider.variants))
            provider.recommended_variant = recommend(provider.variants, target)
            return provider

        return list(await asyncio.gather(*(one_provider(p) for p in providers)))

    def _file_ref(self, info: ModelInfo, name: str) -> HubFileRef:
        """The file at the commit the repo's (cached) model_info names, identified by its LFS sha256."""
        sibling = next(s for s in info.siblings or () if s.rfilename == name)
        commit = info.sha or "main"
        etag = (sibling.lfs.sha256 if sibling.lfs else None) or sibling.blob_id or commit
        return HubFileRef(info.id, commit, name, etag, self.hub.client.file_url(info.id, name, commit))

    async def _variant_headers(
        self, info: ModelInfo, variant: QuantVariant, size_hint: int | None = None
    ) -> list[GGUFHeader]:
        refs = [self._file_ref(info, name) for name in variant.files]
        # Only the first part holds the vocabulary: the hint is for it, later parts start small.
        hints = [size_hint] + [None] * (len(refs) - 1)
        return list(await asyncio.gather(*(self.headers.header(ref, hint) for ref, hint in zip(refs, hints))))


def recommend(variants: list[QuantVariant], target: Target) -> str | None:
    """The best-quality variant that fits entirely on the GPU, or in RAM when the target has no GPU."""
    wanted = "full_gpu" if any(target.gpu_free_bytes) else "cpu"
    fitting = [v for v in variants if v.fit is not None and v.fit.fit == wanted]
    if not fitting:
        return None
    return min(fitting, key=lambda v: (quality_rank(_label(v)), -v.size_bytes)).quantization


def _label(variant: QuantVariant) -> str | None:
    return quantization_from_filename(variant.files[0]) or quantization_from_filename(variant.quantization)


def _estimate(
    headers: list[GGUFHeader], target: Target, context: int | None, projector: GGUFHeader | None = None
) -> FitResult:
    if context is not None and not 1 <= context <= MAX_CONTEXT:
        raise FitInputError(f"context must be between 1 and {MAX_CONTEXT} tokens", {"context": context})
    try:
        return estimate(headers, target, context, projector=projector)
    except ShapeError as error:
        raise ModelNotSizableError(
            f"cannot size this model: {error}; llama.cpp needs these keys too, so it would not load it either"
        ) from error
    except GGUFFormatError:
        raise


def _estimate_fields(result: FitResult) -> dict:
    return {
        "fit": result.fit,
        "gpu_layers": result.gpu_layers,
        "total_layers": result.total_layers,
        "memory": FitMemory(**vars(result.memory)),
        "context_length": result.context_length,
        "max_context_full_gpu": result.max_context_full_gpu,
        "max_context_in_ram": result.max_context_in_ram,
        "reasons": result.reasons,
    }


def _target_schema(target: Target) -> FitTarget:
    return FitTarget(
        ram_bytes=target.ram_bytes, gpu_free_bytes=list(target.gpu_free_bytes), unified_memory=target.unified_memory
    )


__all__ = ["FitInputError", "FitService", "recommend", "quantization_from_file_type"]
