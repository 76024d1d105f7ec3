"""Adding files already on this server: an import from an allowed folder, and adopting a finished download."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from model_manager.core.catalogue import ModelRecord
from model_manager.core.errors import (
    CrossFilesystemError,
    FileInUseError,
    InsufficientStorageError,
    InvalidFileError,
    PathNotAllowedError,
    SourceFileNotFoundError,
)
from model_manager.core.gguf_format import GGUFHeader, is_gguf_filename, parse_split_name, split_part_names, summarize_metadata
from model_manager.core.models import LocalModel
from model_manager.core.services.hub.projectors import matching_projector
from model_manager.core.services.library import files
from model_manager.core.services.library.commit import CommitStep, NewModel
from model_manager.core.services.library.records import to_api
from model_manager.core.services.library.ownership import Ownership
from model_manager.core.services.library.staging import STAGING_PREFIX, Incoming

logger = logging.getLogger("model_manager.local_storage")


@dataclass
class Source:
    """An import source that passed every check: its real path, the name it will get, and its header."""

    path: Path
    name: str
    stat: os.stat_result
    header: GGUFHeader | None
    existing: ModelRecord | None = None  # the source is this model's own file: nothing to do


ImportAction = Literal["copy", "move", "link", "register"]


def _library_names(paths: list[str], library_name: str | None) -> list[str | None]:
    """The library's names for the files of one model: `library_name` (a split model's parts follow its
    stem), or None to keep each file's own name."""
    if library_name is None or len(paths) == 1:
        return [library_name] + [None] * (len(paths) - 1)
    split = parse_split_name(library_name)
    stem = split.stem if split is not None else library_name[: -len(".gguf")]
    return list(split_part_names(stem, len(paths)))


class FileImports(CommitStep):
    """Imports a file from a folder of IMPORT_ALLOWED_DIRS, and adopts the verified files of a download."""

    async def import_file(
        self,
        file_path: str,
        action: ImportAction = "copy",
        display_name: str | None = None,
        *,
        library_name: str | None = None,
        part_paths: list[str] | None = None,
        original_repo_id: str | None = None,
    ) -> tuple[LocalModel, bool]:
        """Add the GGUF file at `file_path` (absolute, on this server) to the library.

        Returns `(model, created)`: when a model with the same SHA-256 is already there, that model and
        False, and nothing is copied or moved. `move` renames the file on the same filesystem and removes
        the source only after the model is registered otherwise; the source is never removed on failure.
        `link` adds a hard link in MODELS_DIR (no byte copied; same filesystem only). `register` keeps the
        file where it is: the library then never removes it. `library_name` is the `.gguf` name to use in
        the library (an Ollama blob has none); `part_paths` are the other parts of a split model, in order
        (not with `move`). `original_repo_id` is the Hub repo the file came from, when its layout says so.

        Raises `PathNotAllowedError` for a relative path, `..`, or a real path (symlinks resolved) outside
        IMPORT_ALLOWED_DIRS — checked before existence, so nothing is revealed about other folders;
        `SourceFileNotFoundError` when it does not exist; `InvalidFileError` when it is not a regular file,
        not named `.gguf`, not a readable GGUF file, or changes while imported; `FileInUseError` for a
        file of the library's own; `CrossFilesystemError` for `link` across filesystems;
        `InsufficientStorageError`.
        """
        if part_paths or action in ("link", "register"):
            return await self._import_set(
                [file_path, *(part_paths or [])], action, display_name, library_name, original_repo_id
            )
        source = await asyncio.to_thread(self._inspect_source, file_path, action, library_name)
        if source.existing is not None:
            return to_api(source.existing), False
        display_name = files.choose_display_name(display_name, source.name)
        if action == "move" and await asyncio.to_thread(files.same_filesystem, source.path.parent, self.models_dir):
            digest = await asyncio.to_thread(files.hash_file, source.path, source.stat)
            existing = await asyncio.to_thread(self._ready_model_with_files, [digest])
            if existing is not None:
                return to_api(existing), False
            incoming = Incoming(source.path, source.name, digest, source.stat.st_size, unchanged_since=source.stat)
            try:
                new_model = NewModel(display_name, summarize_metadata(source.header, source.name))
                record, created = await self._register([incoming], new_model)
                return to_api(record), created
            except PermissionError as error:
                raise PathNotAllowedError(f"the service may not move {file_path}; use action copy") from error
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
                # Same device but another mount point (a bind mount): copy instead.
        try:
            await asyncio.to_thread(self._require_free_space, source.stat.st_size)
        except InsufficientStorageError:
            # No room for a copy; the library may hold these bytes already, which needs none.
            digest = await asyncio.to_thread(files.hash_file, source.path, source.stat)
            existing = await asyncio.to_thread(self._ready_model_with_files, [digest])
            if existing is not None:
                return to_api(existing), False
            raise
        # One pass: the copy is hashed as it is made, and the commit step drops it when the bytes are known.
        incoming, header = await self._stage_copy(source.path, source.stat, None, source.name)
        record, created = await self._register([incoming], NewModel(display_name, summarize_metadata(header, source.name)))
        if created and action == "move":
            try:
                await asyncio.to_thread(files.remove_files, [source.path])
            except OSError:
                logger.warning("imported %s but could not remove the source", source.path, exc_info=True)
        return to_api(record), created

    async def _import_set(
        self,
        paths: list[str],
        action: ImportAction,
        display_name: str | None,
        library_name: str | None,
        original_repo_id: str | None = None,
    ) -> tuple[LocalModel, bool]:
        """Import one model made of `paths` (one file, or every part of a split model) by copy, link or register."""
        if action == "move":
            raise InvalidFileError("a split model is imported by copy, link or register, not move")
        names = _library_names(paths, library_name)
        whole = await asyncio.to_thread(self._model_made_of, paths)
        if whole is not None:
            return to_api(whole), False
        sources = [
            await asyncio.to_thread(self._inspect_source, path, action, name, display_name)
            for path, name in zip(paths, names)
        ]
        if sources[0].existing is not None:
            return to_api(sources[0].existing), False
        if any(source.existing is not None for source in sources):
            raise FileInUseError("a part of this model is already another model of the library", {"file_path": paths[0]})
        digests = [await asyncio.to_thread(files.hash_file, s.path, s.stat) for s in sources]
        existing = await asyncio.to_thread(self._ready_model_with_files, digests)
        if existing is not None:
            return to_api(existing), False
        if action == "link":
            for source in sources:
                if not await asyncio.to_thread(files.same_filesystem, source.path.parent, self.models_dir):
                    raise CrossFilesystemError(
                        f"{source.path} is on another filesystem than MODELS_DIR, so it cannot be linked; "
                        "use action copy (or register, to keep it where it is)",
                        {"file_path": str(source.path), "models_dir": str(self.models_dir)},
                    )
        new_model = NewModel(
            files.choose_display_name(display_name, sources[0].name),
            summarize_metadata(sources[0].header, sources[0].name),
            original_repo_id=original_repo_id,
            external=action == "register",
        )
        if action == "copy":
            items = []
            try:
                for source, digest in zip(sources, digests):
                    items.append((await self._stage_copy(source.path, source.stat, digest, source.name))[0])
            except BaseException:
                for item in items:
                    await self._discard(item.staging)
                raise
        else:
            items = [
                Incoming(s.path, s.name, digest, s.stat.st_size, unchanged_since=s.stat,
                         in_place=action == "register", link=action == "link")
                for s, digest in zip(sources, digests)
            ]
        try:
            record, created = await self._register(items, new_model)
        except OSError as error:
            if error.errno in (errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP) and action == "link":
                raise CrossFilesystemError(
                    f"the filesystem of MODELS_DIR refuses a hard link to {paths[0]} ({error.strerror}); "
                    "use action copy or register", {"file_path": paths[0]},
                ) from error
            raise
        if action in ("link", "register"):  # the library file is the source itself: its neighbours are known by identity
            projector = await asyncio.to_thread(self._link_projector_beside, record, Path(paths[0]))
            return to_api(record, projector=projector), created
        return to_api(record), created

    def _link_projector_beside(self, record: ModelRecord, source: Path) -> ModelRecord | None:
        """Link a model imported from another tool's folder (LM Studio keeps `mmproj-*.gguf` beside the model)
        to the projector there, when the library already holds it (same file); or, for an imported projector,
        link the models beside it that have none yet. Returns the model's projector, if it has one now."""
        try:
            beside = sorted(name for name in os.listdir(source.parent) if is_gguf_filename(name) and name != source.name)
        except OSError:
            return None
        ownership = Ownership(self.catalogue.list_models())
        owners = {name: ownership.owner_of(str(source.parent / name)) for name in beside}
        whole = {name: owner.record for name, owner in owners.items() if owner is not None and owner.is_whole_model}
        if record.metadata.get("is_mmproj"):
            for model in whole.values():
                if not model.metadata.get("is_mmproj") and not model.metadata.get("projector_sha256"):
                    self.catalogue.update_model_metadata(model.model_id, {"projector_sha256": record.file_hash})
            return None
        if record.metadata.get("projector_sha256"):
            return None
        projectors = [name for name, model in whole.items() if model.metadata.get("is_mmproj")]
        chosen = matching_projector(projectors, [source.name])
        if chosen is None:
            return None
        self.catalogue.update_model_metadata(record.model_id, {"projector_sha256": whole[chosen].file_hash})
        record.metadata = {**record.metadata, "projector_sha256": whole[chosen].file_hash}
        return whole[chosen]

    def _inspect_source(
        self, file_path: str, action: str, library_name: str | None = None, display_name: str | None = None
    ) -> Source:
        if "\x00" in file_path or not os.path.isabs(file_path):
            raise PathNotAllowedError(
                "file_path must be an absolute path on the server, such as /home/me/models/model.gguf",
                {"file_path": file_path},
            )
        if ".." in Path(file_path).parts:
            raise PathNotAllowedError("file_path must not contain '..'; give the plain absolute path", {"file_path": file_path})
        real = os.path.realpath(file_path)
        allowed = [os.path.realpath(folder) for folder in self.settings.import_allowed_dirs]
        if not any(files.is_within(real, folder) for folder in allowed):
            raise PathNotAllowedError(
                f"{file_path} is outside the folders imports may read from; put the file in one of them "
                "or add its folder to IMPORT_ALLOWED_DIRS",
                {"file_path": file_path, "allowed_dirs": allowed},
            )
        try:
            info = os.stat(real)
        except (FileNotFoundError, NotADirectoryError):
            raise SourceFileNotFoundError(f"there is no file at {file_path}", {"file_path": file_path}) from None
        except PermissionError:
            raise PathNotAllowedError(f"the service may not read {file_path}", {"file_path": file_path}) from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidFileError(f"{file_path} is not a regular file", {"file_path": file_path})
        existing = self._library_file(file_path, real, info)
        if existing is not None:
            return Source(Path(real), Path(real).name, info, None, existing=existing)
        name = library_name or Path(file_path).name
        if action in ("link", "register") and not is_gguf_filename(name):
            # Another tool's file without a .gguf name (an Ollama blob): named after the display name.
            name = f"{(display_name or name)[:150]}.gguf"
        name = files.safe_name(name)
        if action == "move":
            if os.path.islink(file_path):
                raise InvalidFileError(
                    f"{file_path} is a symbolic link; move the file it points to, or use action copy",
                    {"file_path": file_path},
                )
            if not os.access(os.path.dirname(real), os.W_OK):
                raise PathNotAllowedError(f"the service may not remove files from the folder of {file_path}; use action copy")
        try:
            header = files.read_gguf_header(real)
        except PermissionError:
            raise PathNotAllowedError(f"the service may not read {file_path}", {"file_path": file_path}) from None
        return Source(Path(real), name, info, header)

    def _model_made_of(self, paths: list[str]) -> ModelRecord | None:
        """The ready model whose files are exactly these, in this order (any spelling, hard links too), or None."""
        ownership = Ownership(self.catalogue.list_models())
        owners = [ownership.owner_of(os.path.realpath(path)) if os.path.isabs(path) else None for path in paths]
        if any(owner is None for owner in owners):
            return None
        record = owners[0].record
        same = all(o.record.model_id == record.model_id and o.part_index == i for i, o in enumerate(owners))
        return record if same and len(record.all_paths) == len(paths) else None

    def _library_file(self, file_path: str, real: str, info: os.stat_result) -> ModelRecord | None:
        """The model whose only file `real` is (any spelling, hard links too), or None for a file the library
        does not hold. Raises `FileInUseError` for any other file of the service's: a part of a split
        model, a file in MODELS_DIR no row owns yet, a partial download, the data folder."""
        details = {"file_path": file_path}
        owned = Ownership(self.catalogue.list_models(include_pending=True)).by_identity.get((info.st_dev, info.st_ino))
        if owned is not None:
            if owned.is_whole_model and owned.record.state == "ready":
                return owned.record
            raise FileInUseError(
                f"{file_path} is part {owned.part_index + 1} of the model {owned.record.display_name!r} "
                f"({owned.record.model_id}) in the library; it cannot be imported on its own",
                {**details, "model_id": owned.record.model_id},
            )
        if files.is_within(real, str(files.real_path(self._data_dir))):
            raise FileInUseError(f"{file_path} is in the service's data folder", details)
        if files.is_within(real, str(files.real_path(self.models_dir))):
            raise FileInUseError(
                f"{file_path} is already in MODELS_DIR but not registered: POST /local/storage/rescan "
                "registers the models found there, where they are",
                details,
            )
        downloads = str(files.real_path(self.downloads_dir))
        if files.is_within(real, downloads) and real != downloads:
            first = Path(os.path.relpath(real, downloads)).parts[0]
            known = {job.download_id for job in self.catalogue.list_downloads()}
            if first in known or first.startswith(STAGING_PREFIX):
                raise FileInUseError(f"{file_path} belongs to a download of the service", details)
        return None

    async def _stage_copy(
        self, source: Path, expected: os.stat_result, sha256: str | None, name: str
    ) -> tuple[Incoming, GGUFHeader]:
        """Copy `source` into a staging file, hashing it on the way (and checking the hash is `sha256`, when
        one is known); returns it with its header."""
        await asyncio.to_thread(self._require_free_space, expected.st_size)
        staging = await self._new_staging()
        try:
            await asyncio.to_thread(staging.copy_from, source, expected)
            digest = await asyncio.to_thread(staging.finish)
            if sha256 is not None and digest != sha256:
                raise files.changed_error(name)
            sha256 = digest
            header = await asyncio.to_thread(files.read_gguf_header, staging.path)  # of the very bytes we keep
        except BaseException:
            await self._discard(staging)
            raise
        return Incoming(staging.path, name, sha256, staging.size_bytes, staging=staging), header

    async def adopt_download(
        self,
        parts: list[Path],
        final_names: list[str],
        part_sha256: list[str],
        *,
        repo_id: str,
        display_name: str | None = None,
    ) -> LocalModel:
        """Move verified downloaded files into MODELS_DIR and register them as one model.

        `parts` are complete files (their hashes `part_sha256` already checked), in order; `final_names`
        their base names in the library (made unique on collision, split parts keeping a common stem).
        A split model's `file_path` is its first part and `metadata["parts"]` lists every part.
        When these files already are a model (`Ownership.model_with_files`) it is returned and the parts deleted.
        Across filesystems the parts are copied (hash checked again) and deleted once the model is ready.
        Raises `InvalidFileError` (including `GGUFFormatError`) for a bad name or header, or hash mismatch;
        `InsufficientStorageError`; `ValueError` when the three lists differ in length.
        """
        if not parts or not len(parts) == len(final_names) == len(part_sha256):
            raise ValueError("parts, final_names and part_sha256 must be non-empty lists of the same length")
        parts = [Path(part) for part in parts]
        names = [files.safe_name(name) for name in final_names]
        stats, headers = await asyncio.to_thread(self._inspect_parts, parts)
        existing = await asyncio.to_thread(self._ready_model_with_files, list(part_sha256))
        if existing is not None:
            await asyncio.to_thread(files.remove_files, parts)
            return to_api(existing)
        new_model = NewModel(
            files.choose_display_name(display_name, names[0]), summarize_metadata(headers[0], names[0]), repo_id, is_downloaded=True
        )
        if await asyncio.to_thread(files.same_filesystem, parts[0].parent, self.models_dir):
            await asyncio.to_thread(files.fsync_files, parts)  # their bytes must be durable before their name is
            items = [
                Incoming(part, name, digest, info.st_size, unchanged_since=info)
                for part, name, digest, info in zip(parts, names, part_sha256, stats)
            ]
            try:
                record, created = await self._register(items, new_model)
                if not created:
                    await asyncio.to_thread(files.remove_files, parts)
                return to_api(record)
            except OSError as error:
                if error.errno != errno.EXDEV:
                    raise
        await asyncio.to_thread(self._require_free_space, sum(info.st_size for info in stats))
        items = []
        try:
            for part, name, digest, info in zip(parts, names, part_sha256, stats):
                items.append((await self._stage_copy(part, info, digest, name))[0])
        except BaseException:
            for item in items:
                await self._discard(item.staging)
            raise
        record, _created = await self._register(items, new_model)
        await asyncio.to_thread(files.remove_files, parts)
        return to_api(record)

    async def link_projector(self, model_id: str, projector_sha256: str) -> None:
        """Record that the model's multimodal projector is the file with this SHA-256 (`metadata["projector_sha256"]`).

        The projector need not be in the library yet: `projector_model_id` shows it once it is. A model gone
        meanwhile is left alone.
        """
        async with self._lock:
            await asyncio.to_thread(self.catalogue.update_model_metadata, model_id, {"projector_sha256": projector_sha256})

    @staticmethod
    def _inspect_parts(parts: list[Path]) -> tuple[list[os.stat_result], list[GGUFHeader]]:
        stats = []
        for part in parts:
            info = os.stat(part)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidFileError(f"{part} is not a regular file", {"file_path": str(part)})
            stats.append(info)
        return stats, [files.read_gguf_header(part, read_tensor_info=index == 0) for index, part in enumerate(parts)]
