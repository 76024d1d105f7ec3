"""The errors services raise. Each carries the API's `error_code`; the HTTP edge maps codes to statuses."""

from __future__ import annotations

from typing import Any


class ModelManagerError(Exception):
    """Base of every error that the API reports to the client with its own code."""

    error_code = "INTERNAL_ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class NotFoundError(ModelManagerError):
    error_code = "NOT_FOUND"


class ModelNotFoundError(NotFoundError):
    error_code = "MODEL_NOT_FOUND"


class DownloadNotFoundError(NotFoundError):
    error_code = "DOWNLOAD_NOT_FOUND"


class SourceFileNotFoundError(NotFoundError):
    """A file named by the client (for example an import source) does not exist."""

    error_code = "FILE_NOT_FOUND"


class InvalidFileError(ModelManagerError):
    """Not a usable model file: bad GGUF, not a regular file, or a name that would escape storage."""

    error_code = "INVALID_FILE"


class InvalidFiltersError(ModelManagerError):
    error_code = "INVALID_FILTERS"


class PathNotAllowedError(ModelManagerError):
    error_code = "PATH_NOT_ALLOWED"


class GatedRepoError(ModelManagerError):
    error_code = "GATED_REPO"


class FileInUseError(ModelManagerError):
    error_code = "FILE_IN_USE"


class AmbiguousVariantError(ModelManagerError):
    """A requested quantization names more than one variant of the repo; `details["candidates"]` lists them."""

    error_code = "AMBIGUOUS_VARIANT"


class CrossFilesystemError(ModelManagerError):
    """A hard link was asked for between two filesystems, or on one that has none."""

    error_code = "CROSS_FILESYSTEM"


class DownloadFinishedError(ModelManagerError):
    error_code = "DOWNLOAD_FINISHED"


class InsufficientStorageError(ModelManagerError):
    error_code = "INSUFFICIENT_STORAGE"


class TooManySubscribersError(ModelManagerError):
    """Every slot for a live download status stream (SSE) is taken."""

    error_code = "TOO_MANY_SUBSCRIBERS"


class RateLimitedError(ModelManagerError):
    error_code = "RATE_LIMITED"

    def __init__(self, message: str, retry_after: int | None = None, details: dict[str, Any] | None = None) -> None:
        super().__init__(message, details={**(details or {}), "retry_after": retry_after})
        self.retry_after = retry_after


class HubUnavailableError(ModelManagerError):
    """The Hub could not be reached, timed out, or answered with a server error."""

    error_code = "SERVICE_UNAVAILABLE"
