"""Uploads: a client's bytes streamed into a staging file, checked, then added to the library."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from model_manager.core.gguf_format import summarize_metadata
from model_manager.core.models import LocalModel
from model_manager.core.services.library import files
from model_manager.core.services.library.commit import CommitStep, NewModel
from model_manager.core.services.library.records import to_api
from model_manager.core.services.library.staging import Incoming


@dataclass
class StagedUpload:
    """An uploaded file, written to a staging file in MODELS_DIR and checked, that `register_upload` adds."""

    incoming: Incoming
    metadata: dict[str, Any]


class Uploads(CommitStep):
    """Adds an upload: `stage_upload` then `register_upload`, or `import_upload` for both at once."""

    async def stage_upload(
        self, chunks: AsyncIterator[bytes], filename: str, *, expected_size: int | None = None
    ) -> StagedUpload:
        """Write `chunks` to a staging file in MODELS_DIR while hashing them, then check its GGUF header.

        The staging file is removed when anything fails, including `chunks` raising (a cut-off upload).
        Pass the result to `register_upload`. Raises `InvalidFileError` (a name not ending `.gguf`, not
        GGUF) and `InsufficientStorageError` (`expected_size` over the free space, or the disk filled up).
        """
        name = files.safe_name(filename)
        await asyncio.to_thread(self._require_free_space, expected_size or 0)
        # Whether or not a length was declared, the body may fill the disk only up to the margin.
        budget = await asyncio.to_thread(self._free_space_budget)
        staging = await self._new_staging()
        try:
            batch: list[bytes] = []
            batched = 0
            async for chunk in chunks:
                batch.append(chunk)
                batched += len(chunk)
                if staging.size_bytes + batched > budget:
                    self._raise_over_budget(staging.size_bytes + batched, budget)
                if batched >= files.CHUNK_SIZE:
                    await asyncio.to_thread(staging.write, batch)
                    batch, batched = [], 0
            await asyncio.to_thread(staging.write, batch)
            digest = await asyncio.to_thread(staging.finish)
            header = await asyncio.to_thread(files.read_gguf_header, staging.path)
        except BaseException:
            await self._discard(staging)
            raise
        incoming = Incoming(staging.path, name, digest, staging.size_bytes, staging=staging)
        return StagedUpload(incoming, summarize_metadata(header, name))

    async def register_upload(self, staged: StagedUpload, display_name: str | None = None) -> tuple[LocalModel, bool]:
        """Add a staged upload to the library: `(model, True)`, or `(existing model, False)` for known bytes.

        The staging file is used up either way. `display_name` is trimmed to 200 characters.
        """
        try:
            new_model = NewModel(files.choose_display_name(display_name, staged.incoming.name), staged.metadata)
            record, created = await self._register([staged.incoming], new_model)
        except BaseException:
            await self._discard(staged.incoming.staging)
            raise
        return to_api(record), created

    async def import_upload(
        self, chunks: AsyncIterator[bytes], filename: str, display_name: str | None = None
    ) -> tuple[LocalModel, bool]:
        """`stage_upload` then `register_upload`, for a caller that knows the display name up front."""
        staged = await self.stage_upload(chunks, filename)
        return await self.register_upload(staged, display_name)
