"""Where an import by copy spends its time: the kernel copy and SHA-256, alone and together, on one file.

Issue 9's import-by-copy target compares us with max(cp + fsync, hashlib). This prints each part of our
one-pass copy (`library/fast_copy.py`) on its own and together, so a miss can be told apart: the two
not overlapping on this machine's cores, or our own overhead. "sha256 of mapped pages" is how the copy
is hashed (`page_hash.py`: the pages in place, no buffer copy). Run: .venv/bin/python bench/copy_profile.py
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from model_manager.core.services import page_hash  # noqa: E402
from model_manager.core.services.library import fast_copy  # noqa: E402

SIZE = 1024**3
CHUNK = 64 * 1024 * 1024


def kernel_copy(source: int, target: int) -> None:
    done = 0
    while done < SIZE:
        count = os.copy_file_range(source, target, min(CHUNK, SIZE - done), done, done)
        os.posix_fadvise(target, done, count, os.POSIX_FADV_DONTNEED)
        done += count


def hash_only(source: int, _target: int) -> None:
    fast_copy._hash_range(source, SIZE, hashlib.sha256(), threading.Event())


def hash_mapped(source: int, _target: int) -> None:
    digest = hashlib.sha256()
    for offset in range(0, SIZE, page_hash.BLOCK):
        page_hash.hash_pages(source, offset, min(page_hash.BLOCK, SIZE - offset), digest)


def ours(source: int, target: int) -> None:
    fast_copy.copy_hashing(source, target, 0, SIZE, hashlib.sha256())


def timed(folder: Path, source_path: Path, work) -> float:
    target_path = folder / "target.bin"
    target_path.unlink(missing_ok=True)
    source = os.open(source_path, os.O_RDONLY)
    target = os.open(target_path, os.O_RDWR | os.O_CREAT, 0o644)
    start = time.perf_counter()
    work(source, target)
    os.fsync(target)
    elapsed = time.perf_counter() - start
    os.close(source)
    os.close(target)
    target_path.unlink()
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parents[1]) as folder:
        folder = Path(folder)
        source_path = folder / "source.bin"
        with open(source_path, "wb") as file:
            for _ in range(SIZE // (8 << 20)):
                file.write(os.urandom(8 << 20))
        os.sync()
        cases = {
            "copy_file_range + fsync": kernel_copy,
            "sha256 from page cache": hash_only,
            "sha256 of mapped pages": hash_mapped,
            "ours (both at once)": ours,
        }
        runs = {name: [] for name in cases}
        for _ in range(3):  # interleaved rounds
            for name, work in cases.items():
                runs[name].append(timed(folder, source_path, work))
        medians = {name: sorted(times)[1] for name, times in runs.items()}
        limit = max(medians["copy_file_range + fsync"], medians["sha256 from page cache"])  # what bench/import.py uses
        for name, median in medians.items():
            print(f"copy profile: {name}: median {median:.2f} s (runs {', '.join(f'{t:.2f}' for t in runs[name])})")
        print(f"copy profile: ours / max(copy, hash) = {medians['ours (both at once)'] / limit:.2f}; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
