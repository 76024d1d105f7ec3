"""The real service (`python -m uvicorn model_manager.app.main:app`, as ./start.sh runs it) in a child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import TEST_TOKEN, free_port


class ServiceProcess:
    """The service on 127.0.0.1 with every folder under `workdir` and the Hub at `hub_url`."""

    def __init__(self, workdir: Path, hub_url: str) -> None:
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "MODEL_MANAGER_API_TOKEN": TEST_TOKEN,
            "MODELS_DIR": str(self.workdir / "models"),
            "DOWNLOADS_DIR": str(self.workdir / "downloads"),
            "MODEL_MANAGER_DATA_DIR": str(self.workdir / "data"),
            "IMPORT_ALLOWED_DIRS": str(self.workdir),
            "HF_ENDPOINT": hub_url,
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(self.workdir / "hf_home"),
            "LOG_LEVEL": "WARNING",
        }
        self.env.pop("HF_TOKEN", None)
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> ServiceProcess:
        command = [sys.executable, "-m", "uvicorn", "model_manager.app.main:app", "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning"]
        # Run from the work folder so that no stray .env is read.
        self.process = subprocess.Popen(command, env=self.env, cwd=self.workdir)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {TEST_TOKEN}"}, timeout=30)

    def peak_rss_mb(self) -> float:
        """The process's peak resident memory so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmHWM in /proc")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
