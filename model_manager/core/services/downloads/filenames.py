"""Which repo file names a download may ask for, and the name a downloaded file gets in the library."""

from __future__ import annotations

from pathlib import PurePosixPath

from model_manager.core.errors import InvalidFileError
from model_manager.core.gguf_format import is_gguf_filename
from model_manager.core.models import REPO_FILENAME_MAX_LENGTH


def check_repo_filename(filename: str) -> str:
    """Return `filename` when it is a plain relative path to a `.gguf` file in a repo.

    Raises InvalidFileError for an absolute path, a `..` or `.` segment, a backslash, a NUL or other
    control character, an empty segment, a name longer than a download request takes, or a file that
    is not GGUF: such a name could otherwise leave the storage folders, or would never become a model
    in the library. The Hub's provider listing offers only names this accepts (`filename_problem`).
    """
    problem = filename_problem(filename)
    if problem:
        raise InvalidFileError(
            f"invalid filename {filename!r}: {problem}; give the file's path inside the repo, "
            "for example 'model-Q4_K_M.gguf' or 'Q4_K_M/model-Q4_K_M-00001-of-00002.gguf'",
            details={"filename": filename},
        )
    return filename


def filename_problem(filename: str) -> str | None:
    """Why `check_repo_filename` refuses `filename`, in a few words; None when it accepts it."""
    if len(filename) > REPO_FILENAME_MAX_LENGTH:
        return f"it is longer than {REPO_FILENAME_MAX_LENGTH} characters"
    if any(ord(char) < 32 or ord(char) == 127 for char in filename):
        return "it contains a control character"
    if "\\" in filename:
        return "it contains a backslash"
    if filename.startswith("/"):
        return "it is an absolute path"
    segments = filename.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        return "it contains an empty, '.' or '..' path segment"
    if ":" in segments[0]:
        return "it looks like a drive or URL"
    if not is_gguf_filename(filename):
        return "only .gguf files can be downloaded into the library"
    return None


def library_name(filename: str) -> str:
    """The name a repo file gets in MODELS_DIR: its base name (the repo's folders are dropped)."""
    return PurePosixPath(filename).name
