"""Pieces shared by the benchmarks: the service in a child process, reference tools, medians, RSS.

Every timing is taken with `time.perf_counter()` around the whole operation; medians of interleaved rounds
(each round runs every tool once, in a rotated order) keep a busy neighbour from favouring one tool.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.downloads.service import ServiceProcess  # noqa: E402 - needs the repo on the path

MIB = 1024 * 1024


class BenchService(ServiceProcess):
    """The service (uvicorn, as ./start.sh runs it) with its memory readable from /proc."""

    def _status_field(self, name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no {name} in /proc")

    def cpu_seconds(self) -> float:
        """User + system CPU time the service has used so far."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        return self._status_field("VmRSS") / 1e6

    def reset_peak_rss(self) -> None:
        """Make VmHWM start again from the current RSS (Linux: write 5 to clear_refs)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss_since_reset_mb(self) -> float:
        return self._status_field("VmHWM") / 1e6


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def children_cpu_seconds() -> float:
    """User + system CPU time of the finished child processes (curl, aria2c...) so far."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def curl_fsync(url: str, target: Path) -> float:
    """`curl -L -o FILE URL`, then fsync FILE: the transfer a careful tool does, and nothing else."""
    started = time.perf_counter()
    subprocess.run(["curl", "-sS", "--fail", "-L", "-o", str(target), url], check=True)
    fsync_path(target)
    return time.perf_counter() - started


def aria2c_fsync(url: str, target: Path) -> float:
    """`aria2c -x8 -s8` into FILE, then fsync FILE."""
    started = time.perf_counter()
    subprocess.run(
        ["aria2c", "-q", "-x8", "-s8", "-k1M", "--file-allocation=none", "--allow-overwrite=true",
         "--auto-file-renaming=false", "--check-certificate=false", "-d", str(target.parent), "-o", target.name, url],
        check=True,
    )
    fsync_path(target)
    return time.perf_counter() - started


def sha256_seconds(path: Path) -> float:
    """hashlib's SHA-256 of `path` (read from the page cache when it is warm), in this process."""
    started = time.perf_counter()
    with open(path, "rb") as file:
        hashlib.file_digest(file, "sha256")
    return time.perf_counter() - started


def warm(path: Path) -> None:
    """Read `path` once so that it is in the page cache."""
    with open(path, "rb", buffering=0) as file:
        while file.read(8 * MIB):
            pass


_HF_SCRIPT = """
import sys, time
from huggingface_hub import hf_hub_download
started = time.perf_counter()
hf_hub_download(sys.argv[1], sys.argv[2], local_dir=sys.argv[3])
print(time.perf_counter() - started)
"""


def hf_hub_download_seconds(hub_url: str, repo: str, filename: str, folder: Path) -> float:
    """`huggingface_hub.hf_hub_download` of the file, timed inside a fresh process (no interpreter start)."""
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_ENABLE_HF_TRANSFER": "0",
           "HF_HOME": str(folder / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop("HF_TOKEN", None)
    out = subprocess.run([sys.executable, "-c", _HF_SCRIPT, repo, filename, str(folder / "hf")], env=env,
                         check=True, capture_output=True, text=True).stdout
    shutil.rmtree(folder / "hf", ignore_errors=True)
    shutil.rmtree(folder / "hf_home", ignore_errors=True)
    return float(out.strip().splitlines()[-1])


def ensure_aria2c() -> bool:
    """Install Debian's aria2 when aria2c is missing (needs root and apt). True when aria2c is there."""
    if shutil.which("aria2c"):
        return True
    if shutil.which("apt-get") and os.geteuid() == 0:
        print("bench: installing aria2 with apt-get ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "aria2"], check=False, capture_output=True)
        if not shutil.which("aria2c"):
            subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
            subprocess.run(["apt-get", "install", "-y", "-q", "aria2"], check=False, capture_output=True)
    return shutil.which("aria2c") is not None


def interleaved(rounds: int, runners: dict[str, Callable[[], float]]) -> dict[str, list[float]]:
    """Run every runner once per round, the order rotated each round; each one's timings."""
    names = list(runners)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(runners[name]())
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def verdict(ratio: float, target: float) -> str:
    return f"target <= {target:.2f}: {'met' if ratio <= target else 'MISSED'}"


def load_note() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min) on {os.cpu_count()} CPUs"
