"""What the service reads from a repo's tags, model card data and README."""

from __future__ import annotations

import re
from typing import Any

from huggingface_hub.hf_api import ModelInfo

DESCRIPTION_MAX_CHARS = 500
_FRONT_MATTER = re.compile(r"\A\ufeff?---\s*\n.*?\n---\s*(?:\n|\Z)", re.DOTALL)


def card_data(info: ModelInfo) -> dict[str, Any] | None:
    """The card's YAML data as a plain dict, None when the repo has no card data."""
    if info.card_data is None:
        return None
    data = info.card_data.to_dict() if hasattr(info.card_data, "to_dict") else dict(info.card_data)
    return data or None


def license_of(info: ModelInfo) -> str | None:
    """The license: the Hub's `license:<id>` tag, else the card's `license` (the first one of a list)."""
    for tag in info.tags or ():
        if tag.startswith("license:") and len(tag) > len("license:"):
            return tag[len("license:") :]
    value = (card_data(info) or {}).get("license")
    if isinstance(value, list):
        value = value[0] if value else None
    return str(value) if value else None


def base_models_of(info: ModelInfo) -> list[str]:
    """The card's `base_model` as a list (it may be one id or several)."""
    value = (card_data(info) or {}).get("base_model")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(item) for item in value if item]
    return []


def readme_body(text: str | None) -> str | None:
    """The README without its YAML front matter (that part is the card data)."""
    if text is None:
        return None
    return _FRONT_MATTER.sub("", text, count=1).strip() or None


def description_from(body: str | None) -> str | None:
    """The README's first paragraph of prose: not a heading, image, table, HTML, list or quote."""
    if not body:
        return None
    for paragraph in re.split(r"\n\s*\n", body):
        text = " ".join(line.strip() for line in paragraph.strip().splitlines())
        if not text or text[0] in "#!<|>-*`[=" or text.startswith("---"):
            continue
        if len(text) > DESCRIPTION_MAX_CHARS:
            text = text[: DESCRIPTION_MAX_CHARS - 1].rstrip() + "…"
        return text
    return None
