"""`Discovery`: find the GGUF models other tools keep on this machine, and bring chosen ones into the library."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

from model_manager.core.config import Settings
from model_manager.core.errors import ModelManagerError, PathNotAllowedError
from model_manager.core.models import (
    DiscoveredModel,
    DiscoverImportItem,
    DiscoverImportResult,
    DiscoverResult,
    DiscoveryLocation,
    DiscoverySkip,
    LocalModel,
)
from model_manager.core.services.discovery import hf_cache, llama_cpp, lmstudio, ollama, scan_dirs
from model_manager.core.services.discovery.check import LibraryView, check
from model_manager.core.services.discovery.found import Candidate, Findings, Skipped
from model_manager.core.services.library.ownership import Ownership
from model_manager.core.services.library.records import to_api
from model_manager.core.services.local_storage import LocalStorage

logger = logging.getLogger("model_manager.discovery")

Finder = Callable[[Path, Findings], None]


@dataclass(frozen=True)
class Place:
    """A folder one tool keeps models in, and the finder that reads its layout."""

    tool: str
    root: Path
    find: Finder


@dataclass
class _Listing:
    result: DiscoverResult
    candidates: dict[str, Candidate] = field(default_factory=dict)  # by the listed path
    models: dict[str, DiscoveredModel] = field(default_factory=dict)  # by the listed path


class Discovery:
    """Finds models in Ollama's store, LM Studio's folder, the HF cache, llama.cpp's cache and LIBRARY_SCAN_DIRS.

    Homes are the service process's own: `Path.home()` and its environment, read on every call.
    """

    def __init__(self, settings: Settings, storage: LocalStorage) -> None:
        self.settings = settings
        self.storage = storage

    async def discover(self) -> DiscoverResult:
        """Every valid GGUF model found (one entry per file, other names under `also_named`), what was skipped
        and why, and the folders searched. Raises nothing for a folder it cannot read: that is skipped."""
        return (await asyncio.to_thread(self._list)).result

    async def import_found(self, paths: list[str], action: Literal["link", "register", "copy"]) -> DiscoverImportResult:
        """Import the listed models named by their `path`, one after the other, each once.

        A path that discover does not list now fails with PATH_NOT_ALLOWED (this is no way to import any
        file); every other failure is the library's own error code and message for that model.
        """
        listing = await asyncio.to_thread(self._list)
        results = []
        for path in dict.fromkeys(paths):
            candidate = listing.candidates.get(path)
            if candidate is None:
                message = f"{path} is not a model that GET /local/discover lists; import other files with POST /local/import"
                code = PathNotAllowedError.error_code
                results.append(DiscoverImportItem(path=path, status="failed", error_code=code, message=message))
                continue
            known = listing.models[path].library_model_id
            record = await asyncio.to_thread(self.storage.catalogue.get_model, known) if known else None
            if record is not None:  # the very file or the same bytes: nothing to read or hash again
                results.append(DiscoverImportItem(path=path, status="already_in_library", model=to_api(record)))
                continue
            results.append(await self._import_one(candidate, action))
        return DiscoverImportResult(
            results=results,
            imported=sum(item.status == "imported" for item in results),
            already_in_library=sum(item.status == "already_in_library" for item in results),
            failed=sum(item.status == "failed" for item in results),
        )

    async def _import_one(self, candidate: Candidate, action: str) -> DiscoverImportItem:
        path = str(candidate.paths[0])
        try:
            model, created = await self.storage.import_file(
                path,
                action,
                candidate.display_name,
                library_name=candidate.library_name,
                part_paths=[str(part) for part in candidate.paths[1:]] or None,
                original_repo_id=candidate.repo_id,
            )
        except ModelManagerError as error:
            return DiscoverImportItem(path=path, status="failed", error_code=error.error_code, message=error.message)
        if candidate.projector is not None:
            model = await self._bring_projector(candidate, action, model)
        return DiscoverImportItem(path=path, status="imported" if created else "already_in_library", model=model)

    async def _bring_projector(self, candidate: Candidate, action: str, model: LocalModel) -> LocalModel:
        """Import the model's projector the same way and link the two (an Ollama projector blob is neither
        named mmproj nor beside the model, so the library cannot pair them by itself). A projector that
        cannot be imported leaves the model as it is: it still runs, without vision."""
        try:
            own_name = candidate.projector.name.lower().endswith(".gguf")  # an Ollama blob has none
            projector, _ = await self.storage.import_file(
                str(candidate.projector), action, f"{candidate.display_name or candidate.name} projector",
                library_name=None if own_name else f"mmproj-{candidate.library_name}",
            )
            await self.storage.link_projector(model.model_id, projector.file_hash)
            return await self.storage.get_model(model.model_id)
        except ModelManagerError as error:
            logger.warning("could not import the projector %s: %s", candidate.projector, error.message)
            return model

    def places(self, env: Mapping[str, str] | None = None, home: Path | None = None) -> list[Place]:
        """Where discover looks, in this order (a file found twice is listed under the first)."""
        env = os.environ if env is None else env
        home = Path.home() if home is None else home
        own = {os.path.realpath(f) for f in (self.settings.models_dir, self.settings.downloads_dir, self.settings.data_dir)}
        return [
            Place(ollama.TOOL, ollama.store_root(env, home), ollama.find),
            Place(lmstudio.TOOL, lmstudio.models_root(env, home), lmstudio.find),
            Place(hf_cache.TOOL, hf_cache.cache_root(env, home), hf_cache.find),
            Place(llama_cpp.TOOL, llama_cpp.cache_root(env, home), llama_cpp.find),
            *(
                Place(scan_dirs.TOOL, folder, partial(scan_dirs.find, excluded=own))
                for folder in self.settings.library_scan_dirs
            ),
        ]

    def _list(self) -> _Listing:
        findings = Findings()
        searched = []
        for place in self.places():
            exists = _root_is_folder(place, findings)
            searched.append(DiscoveryLocation(tool=place.tool, path=str(place.root), exists=exists))
            if exists:
                try:
                    place.find(place.root, findings)
                except OSError as error:  # a folder vanished or turned unreadable while walked
                    findings.skip(place.tool, place.root, f"stopped reading here: {error.strerror or error}")
        view = LibraryView(
            ownership=Ownership(self.storage.catalogue.list_models()),
            models_dir=self.storage.models_dir,
            import_allowed_dirs=tuple(os.path.realpath(f) for f in self.settings.import_allowed_dirs),
        )
        listing = _Listing(DiscoverResult(models=[], skipped=[], searched=searched))
        by_identity: dict[tuple[int, int], DiscoveredModel] = {}
        for candidate in findings.candidates:
            outcome = check(candidate, view)
            if isinstance(outcome, Skipped):
                findings.skipped.append(outcome)
                continue
            try:
                info = os.stat(outcome.path)
            except OSError as error:  # gone since it was checked
                findings.skip(candidate.tool, outcome.path, f"cannot reach it: {error.strerror or error}")
                continue
            earlier = by_identity.get((info.st_dev, info.st_ino))
            if earlier is not None:
                also = f"{outcome.tool} {outcome.name}"
                if also not in earlier.also_named and (earlier.tool, earlier.name) != (outcome.tool, outcome.name):
                    earlier.also_named.append(also)
                continue
            by_identity[(info.st_dev, info.st_ino)] = outcome
            listing.result.models.append(outcome)
            listing.candidates[outcome.path] = candidate
            listing.models[outcome.path] = outcome
        listing.result.skipped = [DiscoverySkip(tool=s.tool, path=s.path, reason=s.reason) for s in findings.skipped]
        return listing


def _root_is_folder(place: Place, findings: Findings) -> bool:
    """Whether the place's folder is there; one that is there but unusable is skipped with the reason."""
    try:
        info = os.stat(place.root)
    except FileNotFoundError:
        return False  # the tool is not installed, or has no models yet
    except NotADirectoryError:
        findings.skip(place.tool, place.root, "not a folder: a part of this path is a file")
        return False
    except OSError as error:
        findings.skip(place.tool, place.root, f"cannot reach this folder: {error.strerror or error}")
        return False
    if not stat.S_ISDIR(info.st_mode):
        findings.skip(place.tool, place.root, "not a folder")
        return False
    return True
