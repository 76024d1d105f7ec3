"""This machine's hardware, the target settings and overrides, and the fit of a model in the library."""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from model_manager.app.main import create_app
from model_manager.core.fit.hardware import GPU, Hardware, amd_gpus, detect_hardware, nvidia_gpus
from model_manager.core.fit.placement import GIB
from model_manager.core.fit.target import resolve_target
from tests.conftest import make_settings
from tests.llama.models import GEMMA3, write_model

MIB = 1024 * 1024


def write_card(root: Path, name: str, vendor: str, total: int | None = None, used: int | None = None,
               product: str | None = None) -> None:
    device = root / name / "device"
    device.mkdir(parents=True)
    (device / "vendor").write_text(vendor + "\n")
    if total is not None:
        (device / "mem_info_vram_total").write_text(f"{total}\n")
        (device / "mem_info_vram_used").write_text(f"{used}\n")
    if product:
        (device / "product_name").write_text(product + "\n")


def test_amd_gpus_come_from_the_amdgpu_sysfs_files(tmp_path):
    write_card(tmp_path, "card0", "0x1002", 16 * GIB, 1 * GIB, "AMD Radeon RX 7800 XT")
    write_card(tmp_path, "card1", "0x10de")  # an NVIDIA card: NVML's business
    write_card(tmp_path, "card2", "0x1002")  # an AMD card without the memory files (an old driver)
    (tmp_path / "card0-DP-1").mkdir()  # a connector, not a card

    gpus = amd_gpus(tmp_path)

    assert gpus == [GPU("amd", "AMD Radeon RX 7800 XT", 16 * GIB, 15 * GIB, "rocm")]


def test_nvidia_gpus_are_absent_without_the_driver_library():
    if ctypes.util.find_library("nvidia-ml"):
        pytest.skip("this machine has the NVIDIA driver's library")
    assert nvidia_gpus() == []


def test_this_machine_is_detected(tmp_path):
    hardware = detect_hardware(sysfs_drm=tmp_path)

    memory = psutil.virtual_memory()
    assert hardware.ram_total_bytes == memory.total
    assert 0 < hardware.ram_available_bytes <= memory.total
    assert hardware.cpu_threads >= hardware.cpu_cores >= 1
    if Path("/proc/cpuinfo").read_text().count(" avx2"):
        assert "avx2" in hardware.cpu_features


def test_the_request_beats_the_settings_which_beat_detection():
    detected = Hardware("cpu", 2, 4, [], 64 * GIB, 32 * GIB, [GPU("nvidia", "x", 24 * GIB, 20 * GIB, "cuda")] * 2)

    assert resolve_target(detected).gpu_free_bytes == (20 * GIB, 20 * GIB)
    assert resolve_target(detected).ram_bytes == 32 * GIB  # available RAM, not total
    from_settings = resolve_target(detected, settings_ram_gb=16, settings_vram_gb=8)
    assert (from_settings.ram_bytes, from_settings.gpu_free_bytes) == (16 * GIB, (8 * GIB,))
    from_request = resolve_target(detected, ram_gb=4, vram_gb=0, settings_ram_gb=16, settings_vram_gb=8)
    assert (from_request.ram_bytes, from_request.gpu_free_bytes) == (4 * GIB, ())


@pytest.fixture
def app_client(tmp_path, import_dir, auth):
    def build(**overrides: str) -> TestClient:
        client = TestClient(create_app(make_settings(tmp_path, import_dir, **overrides)), raise_server_exceptions=False)
        client.headers.update(auth)
        return client

    return build


def test_system_hardware_reports_the_machine_and_the_fit_target(app_client):
    with app_client() as client:
        body = client.get("/system/hardware").json()
    assert body["ram_total_bytes"] == psutil.virtual_memory().total
    assert body["fit_target"]["gpu_free_bytes"] == [g["memory_free_bytes"] for g in body["gpus"]]
    assert body["unified_memory"] is False

    with app_client(FIT_RAM_GB="32", FIT_VRAM_GB="12") as client:
        body = client.get("/system/hardware").json()
    assert body["fit_target"] == {"ram_bytes": 32 * GIB, "gpu_free_bytes": [12 * GIB], "unified_memory": False}


def test_system_hardware_needs_the_token(app_client):
    with app_client() as client:
        assert client.get("/system/hardware", headers={"Authorization": "Bearer wrong"}).status_code == 401


def test_fit_of_a_library_model(app_client, import_dir):
    path = write_model(import_dir / "gemma3-test.gguf", GEMMA3)
    with app_client(FIT_RAM_GB="8", FIT_VRAM_GB="0") as client:
        model = client.post("/local/import", json={"file_path": str(path), "action": "copy"}).json()

        response = client.get(f"/local/models/{model['model_id']}/fit", params={"context": 4096})
        gpu = client.get(f"/local/models/{model['model_id']}/fit", params={"context": 4096, "vram_gb": 1})
        missing = client.get("/local/models/does-not-exist/fit")
        bad = client.get(f"/local/models/{model['model_id']}/fit", params={"context": -5})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_id"] == model["model_id"] and body["fit"] == "cpu"
    # What llama.cpp allocates for this file at 4096 tokens (tests/fit/test_accuracy_llama.py): 9 MiB of KV.
    assert body["memory"]["kv_cache_bytes"] == 9 * MIB
    assert body["total_layers"] == GEMMA3.n_layer and body["gpu_layers"] == 0
    assert body["target"] == {"ram_bytes": 8 * GIB, "gpu_free_bytes": [], "unified_memory": False}
    assert gpu.json()["fit"] == "full_gpu" and gpu.json()["gpu_layers"] == GEMMA3.n_layer
    assert missing.status_code == 404 and missing.json()["error_code"] == "MODEL_NOT_FOUND"
    assert bad.status_code == 422


def test_a_library_models_header_is_read_once_per_version_of_its_file(app_client, import_dir, monkeypatch):
    """GET /local/models/{id} sizes the run command from the header: read from disk only when the file changed."""
    from model_manager.core.fit import local_headers

    reads = []
    real = local_headers.read_gguf_header
    monkeypatch.setattr(local_headers, "read_gguf_header", lambda path, **kw: reads.append(path) or real(path, **kw))
    path = write_model(import_dir / "gemma3-test.gguf", GEMMA3)
    with app_client(FIT_RAM_GB="8", FIT_VRAM_GB="0") as client:
        model = client.post("/local/import", json={"file_path": str(path), "action": "copy"}).json()
        first = [client.get(f"/local/models/{model['model_id']}").json() for _ in range(3)]
        fits = [client.get(f"/local/models/{model['model_id']}/fit", params={"context": c}).json() for c in (512, 4096)]
        assert reads == [model["file_path"]], "one read for three pages and two fits"
        assert first[0]["run"] == first[1]["run"] == first[2]["run"] and fits[0]["memory"] != fits[1]["memory"]
        library_file = Path(model["file_path"])
        stat = library_file.stat()
        os.utime(library_file, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new version
        assert client.get(f"/local/models/{model['model_id']}").json()["run"] == first[0]["run"]
        assert reads == [model["file_path"]] * 2
