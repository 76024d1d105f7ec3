"""Which processes on this machine hold a file open or mapped (llama-server running a model, a writer still busy).

Linux only: read from /proc, where this service sees its own user's processes (all of them as root).
Elsewhere nothing is found, so callers must treat "no user" as "none seen", not as a proof.
Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FileIdentity = tuple[int, int]  # (st_dev, st_ino)

_PROC = Path("/proc")


@dataclass(frozen=True)
class FileUser:
    """A process holding a file open or mapped into memory."""

    pid: int
    command: str


def processes_using(identities: Iterable[FileIdentity]) -> dict[FileIdentity, list[FileUser]]:
    """For each file identity, the other processes that have it open or memory-mapped; identities no one uses are absent."""
    wanted = set(identities)
    found: dict[FileIdentity, list[FileUser]] = {}
    if not wanted or not _PROC.is_dir():
        return found
    me = os.getpid()
    for entry in _PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        held = _open_identities(entry, wanted) | _mapped_identities(entry, wanted)
        if held:
            user = FileUser(int(entry.name), _command(entry))
            for key in held:
                found.setdefault(key, []).append(user)
    return found


def _open_identities(process: Path, wanted: set[FileIdentity]) -> set[FileIdentity]:
    held = set()
    try:
        descriptors = list((process / "fd").iterdir())
    except OSError:  # gone, or another user's process
        return held
    for descriptor in descriptors:
        try:
            info = os.stat(descriptor)
        except OSError:
            continue
        key = (info.st_dev, info.st_ino)
        if key in wanted:
            held.add(key)
    return held


def _mapped_identities(process: Path, wanted: set[FileIdentity]) -> set[FileIdentity]:
    """Files mapped into memory (llama.cpp mmaps its model and may close the descriptor).

    Matched by inode alone: overlay filesystems show another device number in `maps` than `stat` does,
    and a false match only makes the caller more careful.
    """
    by_inode = {inode: (dev, inode) for dev, inode in wanted}
    held = set()
    try:
        with open(process / "maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                fields = line.split(maxsplit=5)
                if len(fields) >= 5 and fields[4].isdigit() and int(fields[4]) in by_inode:
                    held.add(by_inode[int(fields[4])])
    except OSError:
        pass
    return held


def _command(process: Path) -> str:
    try:
        return (process / "comm").read_text().strip()
    except OSError:
        return "?"
