"""LM Studio's models folder: `<home>/models/<publisher>/<repo>/<file>.gguf`, an `mmproj-*.gguf` beside.

The home is the path in `~/.lmstudio-home-pointer`, else `~/.cache/lm-studio` when it exists (the older
place), else `~/.lmstudio` (as lmstudio-js `findLMStudioHome` decides). Files directly in `models/` or
one level down are not models to LM Studio, so they are not looked at. Blocking: call from a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from model_manager.core.services.discovery.found import Findings, add_folder_models, is_folder, read_folder

TOOL = "lmstudio"
POINTER_FILE = ".lmstudio-home-pointer"


def models_root(env: Mapping[str, str], home: Path) -> Path:
    """LM Studio's `models` folder for the user whose home is `home`."""
    return lmstudio_home(home) / "models"


def lmstudio_home(home: Path) -> Path:
    """The path in `~/.lmstudio-home-pointer`, else `~/.cache/lm-studio` if it is a folder, else `~/.lmstudio`."""
    try:
        pointed = (home / POINTER_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        pointed = ""
    if pointed:
        return Path(pointed).expanduser()
    legacy = home / ".cache" / "lm-studio"
    try:
        return legacy if legacy.is_dir() else home / ".lmstudio"
    except OSError:  # cannot look: LM Studio could not either, and would use the newer place
        return home / ".lmstudio"


def find(root: Path, findings: Findings) -> None:
    """Add the models of every `<publisher>/<repo>` folder below the folder `root` (LM Studio's `models`)."""
    for publisher in read_folder(root, TOOL, findings) or []:
        if publisher.name.startswith(".") or not is_folder(publisher):
            continue
        for repo in read_folder(Path(publisher.path), TOOL, findings) or []:
            if repo.name.startswith(".") or not is_folder(repo):
                continue
            _find_in_repo(Path(repo.path), f"{publisher.name}/{repo.name}", findings)


def _find_in_repo(folder: Path, repo_id: str, findings: Findings) -> None:
    add_folder_models(folder, TOOL, findings, lambda paths: {"name": f"{repo_id}/{paths[0].name}", "repo_id": repo_id})
