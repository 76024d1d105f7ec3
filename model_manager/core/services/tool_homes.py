"""Where the other model tools on this machine keep their files, found as each tool itself finds them.

Read from the service's environment and home folder, at each call (a test, or a changed variable, is
seen at once). Sources: Ollama's `envconfig`, lmstudio-js `findLMStudioHome.ts`, huggingface_hub
`constants.py`, llama.cpp `common/hf-cache.cpp` (see ../shared/OTHER-TOOLS.md).
"""

from __future__ import annotations

import os
from pathlib import Path


def ollama_models() -> Path:
    """Ollama's model store: `$OLLAMA_MODELS`, else `~/.ollama/models`."""
    return Path(os.environ.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def lmstudio_home() -> Path:
    """LM Studio's home: the folder named in `~/.lmstudio-home-pointer`, else `~/.cache/lm-studio` if it
    exists (the older place), else `~/.lmstudio`. Its models are in `<home>/models/<publisher>/<repo>/`."""
    pointer = Path.home() / ".lmstudio-home-pointer"
    try:
        named = pointer.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        named = ""
    if named:
        return Path(named)
    legacy = Path.home() / ".cache" / "lm-studio"
    return legacy if legacy.is_dir() else Path.home() / ".lmstudio"


def hf_hub_cache() -> Path:
    """The Hugging Face cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def llama_cpp_cache() -> Path:
    """llama.cpp's older flat download cache: `LLAMA_CACHE`, else `~/.cache/llama.cpp`."""
    return Path(os.environ.get("LLAMA_CACHE") or Path.home() / ".cache" / "llama.cpp")
