"""Exports: a library model shown to Ollama, LM Studio or the Hugging Face cache through links, and taken back.

The catalogue records what each export created, so removing it (or deleting the model) removes exactly
our links and manifests, and never a file that the other tool made itself. The placing rules live in
`model_manager.core.services.exports`.
"""

from __future__ import annotations

import os
from pathlib import Path

from model_manager.core.catalogue import ExportRecord, ModelRecord, utc_now
from model_manager.core.errors import ModelNotFoundError, NotFoundError, SourceFileNotFoundError
from model_manager.core.models import ModelExport
from model_manager.core.services.exports import EXPORTERS
from model_manager.core.services.exports.links import Placed, remove_created_folders
from model_manager.core.services.exports.source import ExportSource
from model_manager.core.services.library.records import find_projector, to_api_export
from model_manager.core.services.library.state import LibraryState
from model_manager.core.services.threads import in_thread_to_completion


class Exports(LibraryState):
    """Places and removes a model's exports; runs under the library lock so the model cannot go meanwhile."""

    async def export_model(self, model_id: str, target: str, name: str | None = None) -> ModelExport:
        """Make the model appear in `target`'s own layout under `name` (default: from its repo or name).

        Exporting again to the same target with the same name changes nothing; with another name, the old
        export is removed first. Raises `ModelNotFoundError`, `InvalidFileError` (a name the tool refuses,
        a split model for Ollama), `FileInUseError` (the tool already has another file there: left alone).
        """
        async with self._lock:
            return await in_thread_to_completion(self._export, model_id, target, name)

    def _export(self, model_id: str, target: str, name: str | None) -> ModelExport:
        record = self._require_model(model_id)
        exporter = EXPORTERS[target]
        source = ExportSource.of(record, find_projector(self.catalogue, record))
        name = name or exporter.default_name(source)
        current = next((e for e in self.catalogue.list_exports(model_id) if e.target == target), None)
        if current is not None:
            if current.name == name:
                return to_api_export(current)
            self._remove_export(record, current)
        placed = Placed()
        try:
            details = exporter.place(source, name, placed)
        except BaseException:
            placed.undo()  # a name taken half way: nothing of this attempt stays
            raise
        export = ExportRecord(
            model_id=model_id,
            target=target,
            name=details.get("name", name),
            created_paths=placed.created,
            details={**details, "method": placed.method, "notes": placed.notes, "created_folders": placed.created_folders},
            created_at=utc_now(),
        )
        try:
            self.catalogue.save_export(export)
        except BaseException:
            placed.undo()
            raise
        return to_api_export(export)

    async def remove_export(self, model_id: str, target: str) -> None:
        """Remove the model's export to `target`: our links and manifests, nothing the tool made.

        Raises `ModelNotFoundError`, and `NotFoundError` when there is no such export.
        """
        async with self._lock:
            await in_thread_to_completion(self._remove_one, model_id, target)

    def _remove_one(self, model_id: str, target: str) -> None:
        record = self._require_model(model_id)
        export = next((e for e in self.catalogue.list_exports(model_id) if e.target == target), None)
        if export is None:
            raise NotFoundError(f"model {model_id} has no export to {target}", {"model_id": model_id, "target": target})
        self._remove_export(record, export)

    def _remove_export(self, record: ModelRecord, export: ExportRecord) -> None:
        source = ExportSource.of(record, find_projector(self.catalogue, record))
        others = [e for e in self.catalogue.list_exports() if (e.model_id, e.target) != (record.model_id, export.target)]
        # A projector link serves every variant exported to the same place: it stays while another export names it.
        in_use = {(other.details.get("projector") or {}).get("link") for other in others}
        details = {**export.details, "projector_links_in_use": sorted(link for link in in_use if link)}
        EXPORTERS[export.target].remove(source, export.created_paths, details)
        folders = export.details.get("created_folders", [])
        remove_created_folders(folders)
        self._hand_over_folders([folder for folder in folders if os.path.isdir(folder)], others)
        self.catalogue.delete_export(record.model_id, export.target)

    def _hand_over_folders(self, folders: list[str], others: list[ExportRecord]) -> None:
        """Folders this export made that another export's links still fill become that export's to remove."""
        for folder in folders:
            for other in others:
                paths = [*other.created_paths, (other.details.get("projector") or {}).get("link") or ""]
                if any(path.startswith(folder + os.sep) for path in paths):
                    mine = other.details.setdefault("created_folders", [])
                    mine[:] = sorted({*mine, folder}, key=lambda path: path.count(os.sep))  # outermost first
                    self.catalogue.save_export(other)
                    break

    def _remove_all_exports(self, record: ModelRecord) -> None:
        """Before a model's files go: remove every export while the links can still be checked against them."""
        for export in self.catalogue.list_exports(record.model_id):
            self._remove_export(record, export)

    def _require_model(self, model_id: str) -> ModelRecord:
        record = self.catalogue.get_model(model_id)
        if record is None:
            raise ModelNotFoundError(f"no model with id {model_id} in the library", {"model_id": model_id})
        missing = [path for path in record.all_paths if not Path(path).is_file()]
        if missing:
            raise SourceFileNotFoundError(
                f"the model's file {missing[0]} is missing (an unmounted drive?); nothing to export", {"files": missing}
            )
        return record

