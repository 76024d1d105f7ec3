"""Adoption: valid GGUF models already in MODELS_DIR that no row owns are registered where they are.

They are the files a person had in the folder before pointing the service at it (or a row a crash lost):
models, never orphans. Nothing is moved or copied; each file is hashed and its header read, split parts
are grouped into one model. Runs at start (in the background), on `POST /local/storage/rescan`, and
as part of a cleanup.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from model_manager.core.catalogue import ModelRecord
from model_manager.core.errors import ModelManagerError
from model_manager.core.gguf_format import summarize_metadata
from model_manager.core.models import RescanResult
from model_manager.core.services.library import files
from model_manager.core.services.library.commit import CommitStep, NewModel
from model_manager.core.services.library.ownership import Ownership
from model_manager.core.services.library.records import to_api
from model_manager.core.services.library.staging import Incoming
from model_manager.core.services.library.state import RESUMABLE_DOWNLOAD_STATES
from model_manager.core.services.library.survey import FoundModel, Places, Survey, survey

logger = logging.getLogger("model_manager.local_storage")


@dataclass
class AdoptionOutcome:
    adopted: list[ModelRecord] = field(default_factory=list)
    already_registered: list[FoundModel] = field(default_factory=list)  # bytes the library already has
    failed: list[FoundModel] = field(default_factory=list)  # changed or unreadable while hashed


class Adoption(CommitStep):
    """Finds and registers, in place, the models in MODELS_DIR that no catalogue row owns."""

    def _places(self) -> Places:
        return Places(
            models_dir=files.real_path(self.models_dir),
            downloads_dir=files.real_path(self.downloads_dir),
            data_dir=files.real_path(self._data_dir),
            protected=frozenset(files.real_path(path).as_posix() for path in self._protected),
            live_staging=frozenset(files.real_path(path).as_posix() for path in self._staging),
        )

    def _survey(self, kept_download_ids: set[str] = frozenset()) -> Survey:
        """Sort the storage folders (blocking): see `library.survey`."""
        records = self.catalogue.list_models(include_pending=True)
        downloads = self.catalogue.list_downloads()
        kept = set(kept_download_ids) | {job.download_id for job in downloads if job.status in RESUMABLE_DOWNLOAD_STATES}
        return survey(self._places(), Ownership(records), {job.download_id for job in downloads}, kept)

    async def rescan(self, dry_run: bool = False) -> RescanResult:
        """Register every valid GGUF model in MODELS_DIR that no row owns, where it lies.

        `dry_run` lists them and registers nothing. Never moves, changes or removes a file.
        """
        found = await asyncio.to_thread(self._survey)
        if dry_run:
            paths = [str(path) for model in found.unregistered for path in model.paths]
            return RescanResult(
                message=f"Would register {len(found.unregistered)} model(s) found in {self.models_dir}.",
                adopted=[], already_registered=0, kept_foreign=found.kept_foreign, dry_run=True, would_adopt=paths,
            )
        outcome = await self._adopt(found.unregistered)
        message = f"Registered {len(outcome.adopted)} model(s) found in {self.models_dir}."
        if outcome.already_registered:
            message += f" {len(outcome.already_registered)} file(s) hold bytes the library already has: left alone."
        if outcome.failed:
            message += f" {len(outcome.failed)} could not be read or changed while read: left alone, try again later."
        return RescanResult(
            message=message,
            adopted=[to_api(record) for record in outcome.adopted],
            already_registered=len(outcome.already_registered),
            kept_foreign=found.kept_foreign + [str(p) for model in outcome.failed for p in model.paths],
        )

    async def _adopt(self, models: list[FoundModel]) -> AdoptionOutcome:
        """Hash each found model outside the lock, then register it in place under the lock."""
        outcome = AdoptionOutcome()
        for model in models:
            try:
                items, new_model = await asyncio.to_thread(self._inspect_found, model)
                record, created = await self._register(items, new_model)
            except (ModelManagerError, OSError) as error:
                logger.warning("could not adopt %s: %s", model.paths[0], error)
                outcome.failed.append(model)
                continue
            if created:
                logger.info("adopted %s found in MODELS_DIR", record.file_path)
                outcome.adopted.append(record)
            else:
                outcome.already_registered.append(model)
        return outcome

    @staticmethod
    def _inspect_found(model: FoundModel) -> tuple[list[Incoming], NewModel]:
        items = []
        for path, info in zip(model.paths, model.stats):
            digest = files.hash_file(path, info)
            items.append(Incoming(path, path.name, digest, info.st_size, unchanged_since=info, in_place=True))
        header = files.read_gguf_header(model.paths[0])
        name = model.paths[0].name
        return items, NewModel(files.choose_display_name(None, name), summarize_metadata(header, name))

    def start_rescan(self) -> asyncio.Task:
        """Start the rescan run at start, in the background; `rescan_done` waits for it."""
        self._rescan_task = asyncio.create_task(self._rescan_at_start(), name="library-rescan")
        return self._rescan_task

    async def rescan_done(self) -> None:
        task = getattr(self, "_rescan_task", None)
        if task is not None:
            await asyncio.shield(task)

    async def stop_rescan(self) -> None:
        """Stop the rescan at start if it still runs; a model it was registering is finished or rolled back."""
        task = getattr(self, "_rescan_task", None)
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _rescan_at_start(self) -> None:
        """Logs what it did, never raises: the service must run regardless."""
        try:
            result = await self.rescan()
        except Exception:
            logger.exception("the rescan of MODELS_DIR at start failed")
            return
        if result.adopted or result.already_registered:
            logger.info("rescan at start: %s", result.message)
