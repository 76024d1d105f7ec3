"""The headers of library files, read from disk once per version of each file.

A model's page and run command need its header (`GET /local/models/{id}` asks for the largest context
that fits), and reading one means walking its whole vocabulary: about 120 ms for a 150k-token model.
A header is kept while the file is the same one (device, inode, size, modification time), for the
`CAPACITY` files read last.

Blocking: call from a worker thread.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

from model_manager.core.gguf_format import GGUFHeader, read_gguf_header

CAPACITY = 64


class LocalHeaders:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._kept: OrderedDict[tuple, GGUFHeader] = OrderedDict()
        self._lock = threading.Lock()

    def read(self, paths: list[str]) -> list[GGUFHeader]:
        """The headers (tensor infos kept) of the files at `paths`. Raises OSError, GGUFFormatError."""
        return [self._read_one(path) for path in paths]

    def _read_one(self, path: str) -> GGUFHeader:
        info = os.stat(path)
        key = (path, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
        with self._lock:
            header = self._kept.get(key)
            if header is not None:
                self._kept.move_to_end(key)
                return header
        header = read_gguf_header(path, keep_tensors=True)
        with self._lock:
            self._kept[key] = header
            while len(self._kept) > self._capacity:
                self._kept.popitem(last=False)
        return header
