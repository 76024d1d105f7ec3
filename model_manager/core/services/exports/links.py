"""Links into other tools' folders that never copy a byte and never replace a file, and their removal.

A hard link where the filesystem allows it (every tool sees an ordinary file; removing one name leaves
the others), else a symlink (crosses filesystems, dangles when the model goes). Removal takes a path
only while it is still what we made: the same inode as our file, or a symlink to it.
Blocking: call from a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from model_manager.core.errors import FileInUseError


@dataclass
class Placed:
    """What one export put on disk: the paths we created, and how the model's bytes are reached."""

    created: list[str] = field(default_factory=list)
    created_folders: list[str] = field(default_factory=list)  # every folder the export made, outermost first
    methods: set[str] = field(default_factory=set)  # how each model file was reached: see `method`
    notes: list[str] = field(default_factory=list)

    def note_method(self, method: str) -> None:
        self.methods.add(method)

    @property
    def method(self) -> str:
        """symlink if any file needed one (another filesystem), else hardlink if any was linked, else
        existing: the tool already held every file itself."""
        return next((m for m in ("symlink", "hardlink") if m in self.methods), "existing")

    def make_parent(self, path: Path) -> None:
        """Create `path`'s folder, remembering each folder made, so that only those are ever removed."""
        missing = [folder for folder in (path.parent, *path.parent.parents) if not folder.exists()]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.created_folders.extend(str(folder) for folder in reversed(missing))

    def undo(self) -> None:
        """Remove everything this export made so far (it failed half way); call it at once, in the same step."""
        for path in reversed(self.created):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        remove_created_folders(self.created_folders)


def link_file(model_file: Path, target: Path, placed: Placed) -> None:
    """Make `target` a name of `model_file`: a hard link, or a symlink across filesystems.

    An existing `target` that already is our file is kept (not recorded as created); any other existing
    file is never replaced: FileInUseError.
    """
    placed.make_parent(target)
    if is_our_link(target, model_file):
        placed.note_method("existing")
        return
    try:
        os.link(model_file, target, follow_symlinks=True)
        method = "hardlink"
    except FileExistsError:
        raise _taken(target) from None
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        try:
            os.symlink(os.path.realpath(model_file), target)
        except FileExistsError:
            raise _taken(target) from None
        method = "symlink"
        placed.notes.append(f"{target} is a symlink: MODELS_DIR is on another filesystem")
    placed.created.append(str(target))
    placed.note_method(method)


def write_new_file(target: Path, content: bytes, placed: Placed) -> None:
    """Write `content` at `target` atomically, unless a file with exactly that content is already there.

    Never replaces a different file: FileInUseError.
    """
    placed.make_parent(target)
    try:
        if target.read_bytes() == content:
            return
        raise _taken(target)
    except FileNotFoundError:
        pass
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".model-manager-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.link(temporary, target)  # never replaces
    except FileExistsError:
        raise _taken(target) from None
    finally:
        os.unlink(temporary)
    placed.created.append(str(target))


def is_our_link(path: Path, model_file: Path) -> bool:
    """Whether `path` is a hard link to `model_file` or a symlink that resolves to it."""
    try:
        there, ours = os.stat(path), os.stat(model_file)
    except OSError:
        return False
    return (there.st_dev, there.st_ino) == (ours.st_dev, ours.st_ino)


def remove_if_ours(path: Path, model_file: Path | None = None, content: bytes | None = None) -> bool:
    """Remove `path` if it still is what we made: a link to `model_file`, or a file holding `content`.

    Call it while `model_file` still exists. Returns whether it was removed; anything else (changed, or
    replaced by the tool) is left alone.
    """
    try:
        if model_file is not None:
            if path.is_symlink():
                ours = os.path.realpath(path) == os.path.realpath(model_file)
            else:
                ours = is_our_link(path, model_file)
            if not ours:
                return False
        if content is not None and (path.is_symlink() or path.read_bytes() != content):
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False


def identity_of(model_file: Path) -> dict:
    """What a link to `model_file` is checked against when it is removed, even once the file is gone."""
    info = os.stat(model_file)
    return {"path": os.path.realpath(model_file), "device": info.st_dev, "inode": info.st_ino}


def remove_link_to(path: Path, identity: dict) -> bool:
    """Remove `path` if it still is our link to the file `identity` (from `identity_of`) describes: a hard link
    to that inode, or a symlink to that path. Works after the file itself was deleted (a projector model
    deleted first). Returns whether it was removed."""
    try:
        if path.is_symlink():
            ours = os.readlink(path) == identity.get("path")
        else:
            info = os.lstat(path)
            ours = (info.st_dev, info.st_ino) == (identity.get("device"), identity.get("inode"))
        if ours:
            os.unlink(path)
        return ours
    except FileNotFoundError:
        return False


def remove_projector_link(details: dict, still_used: bool = False) -> None:
    """Remove the projector link an export recorded (`details["projector"]`), unless `still_used` by the tool or
    named by another of our exports (`details["projector_links_in_use"]`): one projector link serves every
    variant exported to the same place, and goes with the last of them."""
    projector = details.get("projector")
    if not projector or still_used or projector.get("link") in details.get("projector_links_in_use", ()):
        return
    remove_link_to(Path(projector["link"]), projector)


def remove_created_folders(folders: list[str]) -> None:
    """Remove the folders an export made (listed outermost first), innermost first, each only while empty:
    a folder the tool made, or one that holds anything now, is never touched."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def _taken(target: Path) -> FileInUseError:
    return FileInUseError(
        f"{target} already exists and is not this model; it was left alone: choose another name",
        {"path": str(target)},
    )
