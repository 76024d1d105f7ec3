"""A look at the storage folders: what is the library's, what is junk we can prove is junk, what is the user's.

People point MODELS_DIR at the folder that already holds their models and DOWNLOADS_DIR at ~/Downloads,
so everything here starts from "not ours" and must be proven ours before anything may remove it:

- MODELS_DIR: a file a catalogue row owns (by identity) is a model. A valid GGUF that no row owns is a
  model too, to be adopted in place, never removed. A stale staging file of ours is junk. A top-level
  file named `.gguf` that is provably not GGUF (wrong magic) or cut short, untouched for a while and open
  in no process, is junk. Anything else is kept and reported.
- DOWNLOADS_DIR: only the folders of our own downloads (named by a download id the catalogue knows, or
  a uuid folder holding nothing but our partial-download files) that no live or resumable download owns.
  Everything else there is the user's: kept and reported.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from model_manager.core.gguf_format import GGUFFormatError, is_gguf_filename, parse_split_name, read_gguf_header
from model_manager.core.services import open_files
from model_manager.core.services.library import files
from model_manager.core.services.library.ownership import Ownership
from model_manager.core.services.library.staging import STAGING_PREFIX, STAGING_SUFFIX

JUNK_GRACE_SECONDS = 600  # a broken .gguf touched more recently may still be being written by someone
ADOPTION_DEPTH = 4  # how deep below MODELS_DIR unregistered models are looked for
_PARTIAL_FILE = re.compile(r"^file-\d{3}\.(part|json)(\.tmp)?$")
_GGUF_MAGIC = b"GGUF"
_READABLE_VERSIONS = (2, 3)


@dataclass
class FoundModel:
    """An unregistered model found in MODELS_DIR: one file, or every part of a split model, in order."""

    paths: list[Path]
    stats: list[os.stat_result]


@dataclass
class Survey:
    """What the storage folders hold besides the library's own registered files."""

    junk: list[tuple[str, int]] = field(default_factory=list)  # removable from MODELS_DIR, with sizes
    stale_partials: list[tuple[str, int]] = field(default_factory=list)  # our download folders no job needs
    unregistered: list[FoundModel] = field(default_factory=list)  # valid GGUF models to adopt in place
    kept_foreign: list[str] = field(default_factory=list)  # the user's, or not provably junk: never removed


@dataclass(frozen=True)
class Places:
    """The folders the survey walks and the paths it must never take."""

    models_dir: Path
    downloads_dir: Path
    data_dir: Path
    protected: frozenset[str]  # the token and catalogue files
    live_staging: frozenset[str]


def survey(places: Places, ownership: Ownership, known_download_ids: set[str], kept_download_ids: set[str]) -> Survey:
    """Sort what lies in MODELS_DIR and DOWNLOADS_DIR (see the module docstring). Removes nothing."""
    result = Survey()
    _survey_models_dir(places, ownership, result)
    _survey_downloads_dir(places, known_download_ids, kept_download_ids, result)
    return result


def _is_special(places: Places, path: str) -> bool:
    """The token and catalogue files, or the data or downloads folder and their contents, unless that
    folder holds MODELS_DIR itself (MODELS_DIR=~/Downloads/models beside DOWNLOADS_DIR=~/Downloads)."""
    if path in places.protected:
        return True
    models = str(places.models_dir)
    return any(
        files.is_within(path, str(folder)) and not files.is_within(models, str(folder))
        for folder in (places.data_dir, places.downloads_dir)
    )


def _survey_models_dir(places: Places, ownership: Ownership, result: Survey) -> None:
    root = places.models_dir
    if not root.is_dir():
        return
    candidates: list[tuple[Path, os.stat_result]] = []
    broken: list[tuple[Path, os.stat_result]] = []  # provably not GGUF, untouched for a while
    for path, info, depth in _walk(root, places):
        key = (info.st_dev, info.st_ino)
        if ownership.owns(key):
            continue
        name = path.name
        if depth == 0 and name.startswith(STAGING_PREFIX) and name.endswith(STAGING_SUFFIX):
            if str(path) not in places.live_staging:
                result.junk.append((str(path), info.st_size))
            continue
        if not stat.S_ISREG(info.st_mode):
            result.kept_foreign.append(str(path))
            continue
        if not is_gguf_filename(name):
            result.kept_foreign.append(str(path))
            continue
        verdict = _check_gguf(path)
        if verdict == "valid":
            candidates.append((path, info))
        elif verdict == "junk" and depth == 0 and time.time() - info.st_mtime >= JUNK_GRACE_SECONDS:
            broken.append((path, info))
        else:
            result.kept_foreign.append(str(path))
    _sort_broken(broken, result)
    _group_models(candidates, result)


def _sort_broken(broken: list[tuple[Path, os.stat_result]], result: Survey) -> None:
    """Broken files that no process holds open are junk; the rest may still be being written: kept.
    One look through /proc for all of them."""
    in_use = open_files.processes_using((info.st_dev, info.st_ino) for _path, info in broken)
    for path, info in broken:
        if (info.st_dev, info.st_ino) in in_use:
            result.kept_foreign.append(str(path))
        else:
            result.junk.append((str(path), info.st_size))


def _walk(root: Path, places: Places):
    """Yield `(path, lstat, depth)` for every non-directory entry below `root`, never following a link."""
    stack = [(root, 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if _is_special(places, entry.path):
                continue
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if depth < ADOPTION_DEPTH and not entry.name.startswith("."):
                    stack.append((Path(entry.path), depth + 1))
                continue
            yield Path(entry.path), info, depth


def _check_gguf(path: Path) -> str:
    """'valid' (a GGUF we read, data complete), 'junk' (provably not one: wrong magic, an absurd version, or
    cut short), or 'unknown' (unreadable, or a GGUF version we do not know yet: someone's model)."""
    try:
        with open(path, "rb") as file:
            start = file.read(8)
    except OSError:
        return "unknown"
    if start[:4] != _GGUF_MAGIC or len(start) < 8:
        return "junk"
    version = int.from_bytes(start[4:], "little")
    if version not in _READABLE_VERSIONS:
        newer_or_big_endian = version < 256 or int.from_bytes(start[4:], "big") in _READABLE_VERSIONS
        return "unknown" if newer_or_big_endian else "junk"
    try:
        read_gguf_header(path)
    except GGUFFormatError:
        return "junk"
    except OSError:
        return "unknown"
    return "valid"


def _group_models(candidates: list[tuple[Path, os.stat_result]], result: Survey) -> None:
    """One model per file, or per complete set of split parts (same folder, stem and count); incomplete sets are kept."""
    sets: dict[tuple[Path, str, int], dict[int, tuple[Path, os.stat_result]]] = {}
    for path, info in candidates:
        split = parse_split_name(path.name)
        if split is None:
            result.unregistered.append(FoundModel([path], [info]))
        else:
            sets.setdefault((path.parent, split.stem, split.count), {})[split.index] = (path, info)
    for (_folder, _stem, count), parts in sets.items():
        if sorted(parts) == list(range(1, count + 1)):
            ordered = [parts[index] for index in range(1, count + 1)]
            result.unregistered.append(FoundModel([p for p, _ in ordered], [i for _, i in ordered]))
        else:
            result.kept_foreign.extend(str(path) for path, _ in parts.values())


def _survey_downloads_dir(places: Places, known_ids: set[str], kept_ids: set[str], result: Survey) -> None:
    root = places.downloads_dir
    if not root.is_dir() or files.is_within(str(root), str(places.models_dir)):
        return  # DOWNLOADS_DIR inside MODELS_DIR: its entries were looked at as MODELS_DIR's
    with os.scandir(root) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.path in places.protected or files.is_within(entry.path, str(places.data_dir)):
                continue
            if files.is_within(str(places.models_dir), entry.path):
                continue  # MODELS_DIR inside DOWNLOADS_DIR
            if entry.name in kept_ids:
                continue
            if _is_our_download_folder(entry, known_ids):
                result.stale_partials.append((entry.path, files.tree_size(entry.path)))
            else:
                result.kept_foreign.append(entry.path)


def _is_our_download_folder(entry: os.DirEntry, known_ids: set[str]) -> bool:
    """A real folder named by a download id we know, or a uuid folder holding only our partial-download files."""
    if not entry.is_dir(follow_symlinks=False):
        return False
    if entry.name in known_ids:
        return True
    try:
        if str(uuid.UUID(entry.name)) != entry.name:
            return False
        with os.scandir(entry.path) as inside:
            return all(item.is_file(follow_symlinks=False) and _PARTIAL_FILE.match(item.name) for item in inside)
    except (ValueError, OSError):
        return False
