"""The machine a fit is computed for: this one as detected, or the one the settings or a request describe.

The service often runs beside the machine that will run the model, so `FIT_RAM_GB` / `FIT_VRAM_GB`
(and a request's `ram_gb` / `vram_gb`) replace what is detected here. Sizes in GB are GiB (2^30 bytes),
as GPU makers count memory.
"""

from __future__ import annotations

from model_manager.core.fit.hardware import Hardware
from model_manager.core.fit.placement import GIB, Target


def resolve_target(
    hardware: Hardware,
    *,
    ram_gb: float | None = None,
    vram_gb: float | None = None,
    settings_ram_gb: float | None = None,
    settings_vram_gb: float | None = None,
) -> Target:
    """The `Target`: a request's values first, then the settings', then what was detected.

    A VRAM size replaces every detected GPU by one GPU with that much free memory; 0 means no GPU.
    """
    ram = ram_gb if ram_gb is not None else settings_ram_gb
    vram = vram_gb if vram_gb is not None else settings_vram_gb
    ram_bytes = int(ram * GIB) if ram is not None else hardware.ram_available_bytes
    if vram is not None:
        gpus = (int(vram * GIB),) if vram > 0 else ()
        unified = hardware.unified_memory and ram is None
    else:
        gpus = tuple(gpu.memory_free_bytes for gpu in hardware.gpus)
        unified = hardware.unified_memory
    return Target(ram_bytes=ram_bytes, gpu_free_bytes=gpus, unified_memory=unified)
