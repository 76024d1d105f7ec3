"""The local library service, `LocalStorage`, and the names its callers use; the code lives in `library/`.

`model_manager.core.services.library` describes how the library stays crash safe.
"""

from model_manager.core.services.library.cleanup import RESUMABLE_DOWNLOAD_STATES
from model_manager.core.services.library.files import CHUNK_SIZE, FREE_SPACE_MARGIN_BYTES, MAX_DISPLAY_NAME, MAX_NAME_BYTES
from model_manager.core.services.library.service import LocalStorage
from model_manager.core.services.library.staging import STAGING_PREFIX, STAGING_SUFFIX
from model_manager.core.services.library.uploads import StagedUpload

__all__ = [
    "CHUNK_SIZE",
    "FREE_SPACE_MARGIN_BYTES",
    "MAX_DISPLAY_NAME",
    "MAX_NAME_BYTES",
    "RESUMABLE_DOWNLOAD_STATES",
    "STAGING_PREFIX",
    "STAGING_SUFFIX",
    "LocalStorage",
    "StagedUpload",
]
