"""Download benchmark: our engine against curl, aria2c -x8 and hf_hub_download, over loopback from the fake Hub.

    .venv/bin/python bench/download.py [--rounds 5] [--size-mb 1024] [--small-mb 253] [--throttle-mb 50]

The fake Hub (with its CDN redirect) runs in a child process and the service (uvicorn, as `./start.sh`
runs it) in another, so neither shares a CPU or a GIL with this script. "ours" is the whole product path,
timed from `POST /local/download` to the `completed` event on the download's SSE stream: Hub metadata,
transfer, SHA-256 check, fsync, rename into MODELS_DIR and registration. The yardstick (issue 9):

    limit = max(curl -o FILE + fsync, hashlib.sha256 of the same file from the page cache)

Cases: the big file unthrottled; a 253 MB file; the big file capped at `--throttle-mb` MB/s per
connection (its yardstick is aria2c -x8 + fsync). Each figure is the median of `--rounds` interleaved
rounds. Single-stream tools on the throttled case run `--slow-rounds` times (they take ~20 s each and
are not a target). Service memory: peak RSS during our runs minus its idle RSS.
"""

from __future__ import annotations

import argparse
import json
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
    ROOT,
    BenchService,
    aria2c_fsync,
    children_cpu_seconds,
    curl_fsync,
    ensure_aria2c,
    hf_hub_download_seconds,
    interleaved,
    load_note,
    median,
    sha256_seconds,
    verdict,
)

REPO = "bench/Bench-GGUF"
BIG = "Bench-Q8_0.gguf"
SMALL = "Bench-Q4_K_M.gguf"


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


class DownloadService(BenchService):
    def download(self, filename: str) -> float:
        """Seconds from the request to the completed, registered model (which is then deleted again)."""
        with self.client() as client:
            started = time.perf_counter()
            response = client.post("/local/download", json={"repo_id": REPO, "filename": filename})
            response.raise_for_status()
            download_id = response.json()["download_id"]
            status = None
            with client.stream("GET", f"/local/download/status?download_id={download_id}", timeout=600) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        status = json.loads(line[5:])
                        if status["status"] in ("completed", "failed", "cancelled"):
                            break
            elapsed = time.perf_counter() - started
            if status is None or status["status"] != "completed":
                raise RuntimeError(f"download ended as {status}")
            client.delete(f"/local/models/{status['model_id']}").raise_for_status()
        return elapsed


def write_model(path: Path, size: int) -> None:
    from tests.gguf_factory import write_gguf

    write_gguf(path, tensors=2, tensor_elements=size // 8, name=path.stem)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="the big file, MiB")
    parser.add_argument("--small-mb", type=int, default=253, help="the smaller file, MB (10^6 bytes)")
    parser.add_argument("--throttle-mb", type=int, default=50, help="per-connection cap of the throttled case, MB/s")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are printed")
    parser.add_argument("--slow-rounds", type=int, default=1, help="rounds of curl/hf_hub_download when throttled")
    parser.add_argument("--cases", default="big,small,throttled", help="comma-separated subset of the cases")
    parser.add_argument("--serve-hub", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_hub:
        serve_hub(args.serve_hub)
        return
    if shutil.which("curl") is None:
        sys.exit("curl is needed for this benchmark")
    has_aria2c = ensure_aria2c()
    cases = set(args.cases.split(","))

    workdir = Path(tempfile.mkdtemp(prefix="model-manager-bench-"))
    hub = service = None
    try:
        files = workdir / "hub"
        files.mkdir()
        write_model(files / BIG, args.size_mb * MIB)
        write_model(files / SMALL, args.small_mb * 1_000_000)
        sizes = {name: (files / name).stat().st_size for name in (BIG, SMALL)}
        hub = HubProcess(files)
        shutil.rmtree(files)  # the Hub holds them in memory now
        os.sync()  # the set-up's own writes must not land in the first timed round
        service = DownloadService(workdir, hub.url).start()
        with service.client() as client:  # the first request builds FastAPI's routes: not a per-download cost
            client.get("/local/downloads").raise_for_status()
            client.get("/local/models").raise_for_status()
        time.sleep(1.0)
        idle_rss = service.rss_mb()
        out = workdir / "downloads"
        out.mkdir(exist_ok=True)
        print(f"download bench: {load_note()} at start; service idle RSS {idle_rss:.0f} MB", flush=True)

        peaks: dict[str, float] = {}

        cpu: dict[str, list[float]] = {}  # CPU seconds per run, ours and aria2c, by case

        def ours(name: str, case: str):
            def run() -> float:
                service.reset_peak_rss()
                before = service.cpu_seconds()
                seconds = service.download(name)
                cpu.setdefault(f"ours {case}", []).append(service.cpu_seconds() - before)
                peaks[case] = max(peaks.get(case, 0.0), service.peak_rss_since_reset_mb())
                return seconds
            return run

        hashed: dict[str, list[float]] = {}

        def curl_then_hash(name: str):
            def run() -> float:
                target = out / "curl.out"
                seconds = curl_fsync(hub.resolve_url(name), target)
                hashed.setdefault(name, []).append(sha256_seconds(target))  # from the page cache curl filled
                target.unlink()
                return seconds
            return run

        def aria(name: str, case: str):
            def run() -> float:
                before = children_cpu_seconds()
                seconds = aria2c_fsync(hub.resolve_url(name), out / "aria.out")
                cpu.setdefault(f"aria2c {case}", []).append(children_cpu_seconds() - before)
                (out / "aria.out").unlink()
                return seconds
            return run

        def cpu_text(case: str) -> str:
            text = f"CPU ours {median(cpu[f'ours {case}']):.2f} s"
            if f"aria2c {case}" in cpu:
                text += f", aria2c {median(cpu[f'aria2c {case}']):.2f} s"
            return text

        def hf(name: str):
            return lambda: hf_hub_download_seconds(hub.url, REPO, name, workdir)

        for case, name in (("big", BIG), ("small", SMALL)):
            if case not in cases:
                continue
            hashed.clear()
            runners = {"ours": ours(name, case), "curl": curl_then_hash(name), "hf_hub_download": hf(name)}
            if has_aria2c:
                runners["aria2c"] = aria(name, case)
            times = interleaved(args.rounds, runners)
            m = {tool: median(values) for tool, values in times.items()}
            sha = median(hashed[name])
            limit = max(m["curl"], sha)
            target = 1.1 if case == "big" else 1.3
            label = f"{sizes[name] / 1e9:.2f} GB unthrottled" if case == "big" else f"{sizes[name] / 1e6:.0f} MB"
            aria_text = f"aria2c -x8+fsync {m['aria2c']:.2f} s, " if has_aria2c else "aria2c missing, "
            print(
                f"download {label}: ours {m['ours']:.2f} s | limit {limit:.2f} s (curl -o+fsync {m['curl']:.2f} s, "
                f"sha256 {sha:.2f} s) | {aria_text}hf_hub_download {m['hf_hub_download']:.2f} s | "
                f"ours/limit {m['ours'] / limit:.2f} ({verdict(m['ours'] / limit, target)}), "
                f"ours/curl {m['ours'] / m['curl']:.2f}, ours/hf {m['ours'] / m['hf_hub_download']:.2f} | "
                f"RSS +{peaks[case] - idle_rss:.0f} MB over idle | {cpu_text(case)} | ours runs {_list(times['ours'])}",
                flush=True,
            )

        if "throttled" in cases:
            cap = args.throttle_mb * 1_000_000

            def throttled(run):
                def wrapped() -> float:
                    hub.command(f"throttle {cap}")
                    try:
                        return run()
                    finally:
                        hub.command("throttle 0")
                return wrapped

            def ours_counting() -> float:
                hub.command("reset")
                seconds = ours(BIG, "throttled")()
                connections.append(json.loads(hub.command("stats"))["max_transfers"])
                return seconds

            connections: list[int] = []
            runners = {"ours": throttled(ours_counting)}
            if has_aria2c:
                runners["aria2c"] = throttled(aria(BIG, "throttled"))
            times = interleaved(args.rounds, runners)
            slow = interleaved(args.slow_rounds, {"curl": throttled(curl_then_hash(BIG)), "hf_hub_download": throttled(hf(BIG))})
            m = {tool: median(values) if values else float("nan") for tool, values in {**times, **slow}.items()}
            ratio_text = f"ours/aria2c {m['ours'] / m['aria2c']:.2f} ({verdict(m['ours'] / m['aria2c'], 1.0)})" if has_aria2c else "aria2c missing"
            aria_text = f"aria2c -x8+fsync {m['aria2c']:.2f} s" if has_aria2c else "aria2c missing"
            print(
                f"download {sizes[BIG] / 1e9:.2f} GB at {args.throttle_mb} MB/s per connection: ours {m['ours']:.2f} s "
                f"(up to {max(connections)} connections) | {aria_text} | curl+fsync {m['curl']:.2f} s, "
                f"hf_hub_download {m['hf_hub_download']:.2f} s (1 stream, {args.slow_rounds} run(s)) | {ratio_text} | "
                f"RSS +{peaks['throttled'] - idle_rss:.0f} MB over idle | {cpu_text('throttled')} | ours runs {_list(times['ours'])}",
                flush=True,
            )
        print(f"download bench: {load_note()} at the end", flush=True)
    finally:
        if service is not None:
            service.stop()
        if hub is not None:
            hub.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in values) + "]"


if __name__ == "__main__":
    main()
