"""Download benchmark: our engine against `curl`, over loopback from the fake Hub.

    .venv/bin/python bench/download.py [--size-mb 1024] [--throttled-size-mb 256] [--throttle-mb 20]

The fake Hub runs in a child process and the service (uvicorn, as `./start.sh` runs it) in another, so
neither shares a CPU budget or a GIL with this script. "Ours" is the whole product path, timed from
`POST /local/download` to the `completed` state: Hub metadata, transfer, SHA-256 check, fsync, rename
into MODELS_DIR and registration. "curl" is `curl -L -o FILE URL` on the same disk: transfer only.
Prints:

    download: 1.07 GB unthrottled, ours A s, curl B s, ratio A/B, peak RSS N MB
    download: same work with curl (curl, then sha256sum, then sync): C s, ratio A/C
    download: throttled 20 MB/s per connection, ours (up to 8 connections) X s, curl (1 stream) Y s, speed-up Y/Xx

Each unthrottled timing is the best of `--rounds` runs (the machine is shared). Peak RSS is the
service's VmHWM over every download it ran.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.downloads.service import ServiceProcess  # noqa: E402 - needs the repo on the path

REPO = "bench/Bench-GGUF"
BIG = "Bench-Q8_0.gguf"
THROTTLED = "Bench-Q4_K_M.gguf"


# ------------------------------------------------------------------ the fake Hub, in its own process


def serve_hub(folder: str) -> None:
    """Child process: serve every .gguf of `folder` from one repo; obey 'throttle N' and 'stats' on stdin."""
    from tests.fake_hub.server import FakeHub, FakeRepo

    files = {path.name: path.read_bytes() for path in Path(folder).glob("*.gguf")}
    hub = FakeHub().start()
    hub.add_repo(FakeRepo(REPO, files=files, tags=["gguf"]))
    for name in files:
        hub.file_meta(REPO, name)  # hash now, not during the first timed request
    print(hub.url, flush=True)
    for line in sys.stdin:
        command, *rest = line.split()
        if command == "throttle":
            hub.throttle_bytes_per_second = int(rest[0]) or None
        elif command == "reset":
            hub.reset_requests()
        if command == "stats":
            print(json.dumps({"max_transfers": hub.max_concurrent_file_transfers}), flush=True)
        else:
            print("ok", flush=True)


class HubProcess:
    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve-hub", str(folder)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.url = self.process.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the fake Hub did not start")

    def command(self, line: str) -> str:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return self.process.stdout.readline().strip()

    def resolve_url(self, filename: str) -> str:
        return f"{self.url}/{REPO}/resolve/main/{filename}"

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


# ------------------------------------------------------------------ the service, in its own process


class BenchService(ServiceProcess):
    def download(self, filename: str) -> float:
        """Seconds from the request to the completed, registered model (which is then deleted again)."""
        with self.client() as client:
            started = time.perf_counter()
            response = client.post("/local/download", json={"repo_id": REPO, "filename": filename})
            response.raise_for_status()
            download_id = response.json()["download_id"]
            while True:
                status = client.get(f"/local/downloads/{download_id}").json()
                if status["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            if status["status"] != "completed":
                raise RuntimeError(f"download {status['status']}: {status['error_message']}")
            client.delete(f"/local/models/{status['model_id']}").raise_for_status()
        return elapsed


# ------------------------------------------------------------------ curl


def curl(url: str, target: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-L", "-o", str(target), url], check=True)
    return time.perf_counter() - started


def curl_then_verify(url: str, target: Path) -> float:
    """curl, then what we do on top: hash the file and make it durable."""
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-L", "-o", str(target), url], check=True)
    subprocess.run(["sha256sum", str(target)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync", str(target)], check=True)
    return time.perf_counter() - started


# ------------------------------------------------------------------ main


def write_model(path: Path, size: int) -> None:
    from tests.gguf_factory import write_gguf

    write_gguf(path, tensors=2, tensor_elements=size // 8, name=path.stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="size of the unthrottled file, MiB")
    parser.add_argument("--throttled-size-mb", type=int, default=256, help="size of the throttled file, MiB")
    parser.add_argument("--throttle-mb", type=int, default=20, help="per-connection limit, MB/s")
    parser.add_argument("--rounds", type=int, default=2, help="unthrottled runs of each; the best counts")
    parser.add_argument("--serve-hub", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hub:
        serve_hub(args.serve_hub)
        return
    if shutil.which("curl") is None:
        sys.exit("curl is needed for this benchmark")

    workdir = Path(tempfile.mkdtemp(prefix="model-manager-bench-"))
    hub = service = None
    try:
        files = workdir / "hub"
        files.mkdir()
        write_model(files / BIG, args.size_mb * 1024 * 1024)
        write_model(files / THROTTLED, args.throttled_size_mb * 1024 * 1024)
        big_size = (files / BIG).stat().st_size
        throttled_size = (files / THROTTLED).stat().st_size
        hub = HubProcess(files)
        shutil.rmtree(files)  # the Hub holds them in memory now
        service = BenchService(workdir, hub.url).start()
        curl_target = workdir / "downloads" / "curl.out"

        ours, theirs, verified = [], [], []
        for _ in range(args.rounds):
            theirs.append(curl(hub.resolve_url(BIG), curl_target))
            curl_target.unlink()
            ours.append(service.download(BIG))
            verified.append(curl_then_verify(hub.resolve_url(BIG), curl_target))
            curl_target.unlink()
        best_ours, best_curl, best_verified = min(ours), min(theirs), min(verified)
        print(
            f"download: {big_size / 1e9:.2f} GB unthrottled, ours {best_ours:.2f} s, curl {best_curl:.2f} s, "
            f"ratio {best_ours / best_curl:.2f}, peak RSS {service.peak_rss_mb():.0f} MB",
            flush=True,
        )
        print(
            f"download: same work with curl (curl, then sha256sum, then sync): {best_verified:.2f} s, "
            f"ratio {best_ours / best_verified:.2f}",
            flush=True,
        )

        limit = args.throttle_mb * 1_000_000
        hub.command(f"throttle {limit}")
        curl_seconds = curl(hub.resolve_url(THROTTLED), curl_target)
        curl_target.unlink()
        hub.command("reset")
        ours_seconds = service.download(THROTTLED)
        connections = json.loads(hub.command("stats"))["max_transfers"]
        print(
            f"download: throttled {args.throttle_mb} MB/s per connection, {throttled_size / 1e6:.0f} MB, "
            f"ours ({connections} connections) {ours_seconds:.2f} s, curl (1 stream) {curl_seconds:.2f} s, "
            f"speed-up {curl_seconds / ours_seconds:.1f}x, peak RSS {service.peak_rss_mb():.0f} MB",
            flush=True,
        )
    finally:
        if service is not None:
            service.stop()
        if hub is not None:
            hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
