"""This machine's CPU, RAM and GPUs, as far as the fit estimate cares.

RAM comes from psutil; NVIDIA GPUs from NVML (nvidia-ml-py, which needs only the driver's library and
finds nothing without it); AMD GPUs from the amdgpu driver's sysfs files; Apple Silicon has unified
memory, of which Metal lets a process use about two thirds by default. Detection never raises: what
cannot be read is left out.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import psutil

logger = logging.getLogger(__name__)

AMD_VENDOR_ID = "0x1002"
METAL_WORKING_SET_SHARE = 2 / 3  # Metal's default recommendedMaxWorkingSetSize is about 2/3 of RAM
_CPU_FEATURES = ("avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "f16c", "fma", "sha_ni")
_ARM_FEATURES = ("asimd", "asimddp", "sve", "sve2", "i8mm", "bf16")


@dataclass
class GPU:
    """One GPU: memory in bytes; backend is the llama.cpp backend that drives it (cuda, rocm, metal)."""

    vendor: str
    name: str
    memory_total_bytes: int
    memory_free_bytes: int
    backend: str


@dataclass
class Hardware:
    """What `detect_hardware` found."""

    cpu_name: str
    cpu_cores: int
    cpu_threads: int
    cpu_features: list[str]
    ram_total_bytes: int
    ram_available_bytes: int
    gpus: list[GPU] = field(default_factory=list)
    unified_memory: bool = False


def detect_hardware(sysfs_drm: str | os.PathLike[str] = "/sys/class/drm") -> Hardware:
    """This machine's hardware. Blocking (reads /proc, sysfs, NVML): call it from a thread."""
    memory = psutil.virtual_memory()
    name, features = _cpu_name_and_features()
    hardware = Hardware(
        cpu_name=name,
        cpu_cores=psutil.cpu_count(logical=False) or os.cpu_count() or 1,
        cpu_threads=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        cpu_features=features,
        ram_total_bytes=memory.total,
        ram_available_bytes=memory.available,
    )
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        hardware.unified_memory = True
        budget = int(memory.total * METAL_WORKING_SET_SHARE)
        hardware.gpus.append(GPU("apple", name or "Apple Silicon", budget, budget, "metal"))
        return hardware
    hardware.gpus.extend(nvidia_gpus())
    hardware.gpus.extend(amd_gpus(sysfs_drm))
    return hardware


def _cpu_name_and_features() -> tuple[str, list[str]]:
    name, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            for line in file:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model") and value.strip():
                    name = value.strip()
                elif key in ("flags", "Features"):
                    flags.update(value.split())
                if key == "" and flags:  # the first processor block is enough
                    break
    except OSError:
        pass
    if platform.system() == "Darwin" and platform.machine() == "arm64":
        flags.add("neon")
    if "asimd" in flags:
        flags.add("neon")  # Linux on ARM calls NEON asimd
    wanted = (*_CPU_FEATURES, *_ARM_FEATURES, "neon")
    return name, sorted(flag.replace("avx512f", "avx512") for flag in flags if flag in wanted)


def nvidia_gpus() -> list[GPU]:
    """NVIDIA GPUs through NVML; empty when the driver's library is absent or answers an error."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound and friends: no driver here
        return []
    gpus = []
    try:
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            gpus.append(GPU("nvidia", name.decode() if isinstance(name, bytes) else name,
                            int(info.total), int(info.free), "cuda"))
    except Exception as error:
        logger.warning("NVML answered an error while listing GPUs: %s", error)
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass
    return gpus


def amd_gpus(sysfs_drm: str | os.PathLike[str] = "/sys/class/drm") -> list[GPU]:
    """AMD GPUs from the amdgpu driver's `mem_info_vram_total` and `mem_info_vram_used` files."""
    gpus = []
    for card in sorted(Path(sysfs_drm).glob("card[0-9]*")):
        device = card / "device"
        if "-" in card.name:  # card0-DP-1 and other connectors
            continue
        try:
            if (device / "vendor").read_text().strip().lower() != AMD_VENDOR_ID:
                continue
            total = int((device / "mem_info_vram_total").read_text().strip())
            used = int((device / "mem_info_vram_used").read_text().strip())
        except (OSError, ValueError):
            continue
        name = _read(device / "product_name") or f"AMD GPU ({card.name})"
        gpus.append(GPU("amd", name, total, max(total - used, 0), "rocm"))
    return gpus


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
