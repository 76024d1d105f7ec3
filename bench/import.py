"""Import benchmark: `POST /local/import` (copy and move) against cp + fsync and hashlib, on the same disk.

    .venv/bin/python bench/import.py [--rounds 5] [--size-mb 1024]

The service (uvicorn, as `./start.sh` runs it) runs in a child process. "ours" is timed from the request
to its answer: checks, SHA-256, the copy (or rename), fsync, GGUF header, registration. The yardsticks
(issue 9), measured in the same rounds, with the source in the page cache as it is for ours:

    copy: limit = max(cp --reflink=never SRC DST + fsync DST, hashlib.sha256 of SRC)
    move: limit = hashlib.sha256 of SRC (the rename itself costs nothing)

Medians of `--rounds` interleaved rounds. Service memory: peak RSS during our imports minus idle RSS.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402 - the bench folder is not a package
    MIB,
    BenchService,
    fsync_path,
    interleaved,
    load_note,
    median,
    sha256_seconds,
    verdict,
    warm,
)


class ImportService(BenchService):
    def import_file(self, path: Path, action: str) -> float:
        """Seconds for one import (the model is then deleted again)."""
        with self.client() as client:
            started = time.perf_counter()
            response = client.post("/local/import", json={"file_path": str(path), "action": action}, timeout=600)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            client.delete(f"/local/models/{response.json()['model_id']}").raise_for_status()
        return elapsed


def cp_fsync(source: Path, target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["cp", "--reflink=never", str(source), str(target)], check=True)
    fsync_path(target)
    seconds = time.perf_counter() - started
    target.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="the model file, MiB")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are printed")
    args = parser.parse_args()

    from tests.gguf_factory import write_gguf

    workdir = Path(tempfile.mkdtemp(prefix="model-manager-bench-import-"))
    service = None
    try:
        sources = workdir / "sources"
        sources.mkdir()
        original = sources / "original.gguf"
        write_gguf(original, tensors=2, tensor_elements=args.size_mb * MIB // 8, name="bench")
        size = original.stat().st_size
        fsync_path(original)
        os.sync()  # nothing written before (an earlier bench's files) may land in the first timed round
        service = ImportService(workdir, "http://127.0.0.1:9").start()  # no Hub needed
        with service.client() as client:  # the first request builds FastAPI's routes: not a per-import cost
            client.get("/local/models").raise_for_status()
        time.sleep(1.0)
        idle_rss = service.rss_mb()
        print(f"import bench: {load_note()} at start; service idle RSS {idle_rss:.0f} MB", flush=True)
        peaks: dict[str, float] = {}

        def ours(action: str):
            def run() -> float:
                source = original
                if action == "move":
                    source = sources / "to-move.gguf"
                    shutil.copyfile(original, source)  # untimed; the copy leaves it in the page cache
                    fsync_path(source)
                warm(source)
                service.reset_peak_rss()
                seconds = service.import_file(source, action)
                peaks[action] = max(peaks.get(action, 0.0), service.peak_rss_since_reset_mb())
                return seconds
            return run

        def hashing() -> float:
            warm(original)
            return sha256_seconds(original)

        def copying() -> float:
            warm(original)
            return cp_fsync(original, workdir / "cp.out")

        times = interleaved(
            args.rounds, {"copy": ours("copy"), "move": ours("move"), "cp": copying, "sha256": hashing}
        )
        m = {name: median(values) for name, values in times.items()}
        limit = max(m["cp"], m["sha256"])
        print(
            f"import {size / 1e9:.2f} GB by copy: ours {m['copy']:.2f} s | limit {limit:.2f} s (cp+fsync {m['cp']:.2f} s, "
            f"sha256 {m['sha256']:.2f} s) | ours/limit {m['copy'] / limit:.2f} ({verdict(m['copy'] / limit, 1.1)}), "
            f"ours/cp {m['copy'] / m['cp']:.2f} | RSS +{peaks['copy'] - idle_rss:.0f} MB over idle | "
            f"ours runs {_list(times['copy'])}",
            flush=True,
        )
        print(
            f"import {size / 1e9:.2f} GB by move: ours {m['move']:.2f} s | limit {m['sha256']:.2f} s (sha256) | "
            f"ours/limit {m['move'] / m['sha256']:.2f} ({verdict(m['move'] / m['sha256'], 1.1)}) | "
            f"RSS +{peaks['move'] - idle_rss:.0f} MB over idle | ours runs {_list(times['move'])}",
            flush=True,
        )
        print(f"import bench: {load_note()} at the end", flush=True)
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"


if __name__ == "__main__":
    main()
