"""How GGUF providers of a base model are scored and ordered, and the reasons given for it.

score (0..100) = 30 * relation + 30 * downloads + 15 * likes + 15 * recency + 10 * breadth, where

* relation  = 1.0 when both the Hub relation (`base_model:quantized:<id>`) and the card's `base_model`
              name the base model, 0.6 when only one of them does;
* downloads = min(1, log10(1 + downloads) / 6)      (1M downloads in the Hub's 30-day window reach 1);
* likes     = min(1, log10(1 + likes) / 4)          (10k likes reach 1);
* recency   = 0.5 ** (days since last update / 180) (halves every six months);
* breadth   = min(1, number of variants / 8).

A provider the configured HF_TOKEN cannot download (gated, and no token or no access) keeps only
DEMOTED_SHARE (15 %) of that: at most 15 points, below any downloadable provider, which has at least the
18 points of a partial relation. Its first reason says so.

Order: strictly by score; among equal scores a known quantizer goes first (a tie-breaker only, never part
of the score), then more downloads, then the repo id. Only the first provider can be recommended, and
only if it can be downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from model_manager.core.models import GGUFProvider, ProjectorFile, QuantVariant

WEIGHTS = {"relation": 30.0, "downloads": 30.0, "likes": 15.0, "recency": 15.0, "breadth": 10.0}
PARTIAL_RELATION = 0.6
DOWNLOADS_FOR_FULL_MARKS = 1_000_000
LIKES_FOR_FULL_MARKS = 10_000
RECENCY_HALF_LIFE_DAYS = 180.0
VARIANTS_FOR_FULL_MARKS = 8
# What a provider that cannot be downloaded keeps of its score: 100 points become at most 15, fewer than the
# 30 * PARTIAL_RELATION = 18 that every provider (related to the base by definition) earns.
DEMOTED_SHARE = 0.15

# Accounts known for careful, complete GGUF conversions. Used only to order providers whose scores are equal.
KNOWN_QUANTIZERS = frozenset(
    name.casefold()
    for name in (
        "bartowski",
        "unsloth",
        "lmstudio-community",
        "ggml-org",
        "TheBloke",
        "QuantFactory",
        "mradermacher",
        "MaziyarPanahi",
        "second-state",
        "Qwen",
    )
)


@dataclass(frozen=True)
class ProviderCandidate:
    """What the ranking knows about one repo holding GGUF files of the base model."""

    repo_id: str
    author: str
    downloads: int
    likes: int
    last_modified: datetime | None
    variants: list[QuantVariant]
    mmproj_files: list[str]
    hub_relation: bool  # tagged `base_model:quantized:<base>` by the Hub
    card_relation: bool  # the card's `base_model` names the base
    gated: bool
    downloadable: bool  # not gated, or gated and our HF_TOKEN may read its files
    why_not_downloadable: str | None = None  # said first in the reasons of a provider that is not downloadable
    left_out_files: list[str] = field(default_factory=list)  # .gguf files no download could take
    projectors: list[ProjectorFile] = field(default_factory=list)  # the mmproj files, with their sizes

    @property
    def known_quantizer(self) -> bool:
        return self.author.casefold() in KNOWN_QUANTIZERS


def _log_share(value: int, full_marks: int) -> float:
    return min(1.0, math.log10(1 + max(value, 0)) / math.log10(1 + full_marks))


def score_candidate(candidate: ProviderCandidate, base_model: str, now: datetime) -> tuple[float, list[str]]:
    """The provider's score (0..100) and one reason per part of it, with the points that part earned."""
    both = candidate.hub_relation and candidate.card_relation
    relation = 1.0 if both else PARTIAL_RELATION
    downloads = _log_share(candidate.downloads, DOWNLOADS_FOR_FULL_MARKS)
    likes = _log_share(candidate.likes, LIKES_FOR_FULL_MARKS)
    age_days = None
    if candidate.last_modified is not None:
        age_days = max(0.0, (now - candidate.last_modified).total_seconds() / 86400)
    recency = 0.0 if age_days is None else 0.5 ** (age_days / RECENCY_HALF_LIFE_DAYS)
    breadth = min(1.0, len(candidate.variants) / VARIANTS_FOR_FULL_MARKS)
    parts = {"relation": relation, "downloads": downloads, "likes": likes, "recency": recency, "breadth": breadth}
    points = {name: WEIGHTS[name] * share for name, share in parts.items()}

    if both:
        relation_text = "the Hub's base_model:quantized relation and the card's base_model"
    elif candidate.hub_relation:
        relation_text = "the Hub's base_model:quantized relation (the card does not name it)"
    else:
        relation_text = "the card's base_model (no Hub relation)"
    labels = ", ".join(v.quantization for v in candidate.variants)
    reasons = [
        f"quantization of {base_model} per {relation_text}: {points['relation']:.1f}/30",
        f"{candidate.downloads:,} downloads (last 30 days): {points['downloads']:.1f}/30",
        f"{candidate.likes:,} likes: {points['likes']:.1f}/15",
        (
            f"updated {age_days:.0f} days ago: {points['recency']:.1f}/15"
            if age_days is not None
            else "last update unknown: 0.0/15"
        ),
        f"{len(candidate.variants)} variant(s) ({labels}): {points['breadth']:.1f}/10",
    ]
    if candidate.mmproj_files:
        reasons.append(f"also has multimodal projector file(s): {', '.join(candidate.mmproj_files)}")
    if candidate.left_out_files:
        reasons.append(
            f"left out {len(candidate.left_out_files)} .gguf file(s) no download can take (a name the download "
            f"endpoint refuses, or a split set with a part missing): {', '.join(map(repr, candidate.left_out_files))}"
        )
    if candidate.known_quantizer:
        reasons.append(f"known quantizer ({candidate.author}): breaks ties only")
    score = sum(points.values())
    if not candidate.downloadable:
        why = candidate.why_not_downloadable or "gated and no HF_TOKEN is configured"
        demoted = score * DEMOTED_SHARE
        reasons.insert(
            0,
            f"not downloadable: {why}; its score keeps {DEMOTED_SHARE:.0%} of {score:.1f} = {demoted:.1f}, "
            "below every provider you can download; never recommended",
        )
        score = demoted
    elif candidate.gated:
        reasons.append("gated: the configured HF_TOKEN has access")
    return round(score, 2), reasons


def rank_providers(candidates: list[ProviderCandidate], base_model: str, now: datetime) -> list[GGUFProvider]:
    """The providers, best score first, each with its reasons; the first is recommended if downloadable."""
    scored = [(candidate, *score_candidate(candidate, base_model, now)) for candidate in candidates]
    scored.sort(
        key=lambda item: (
            -item[1],
            not item[0].known_quantizer,
            -item[0].downloads,
            item[0].repo_id.casefold(),
        )
    )
    providers: list[GGUFProvider] = []
    for position, (candidate, score, reasons) in enumerate(scored):
        recommended = position == 0 and candidate.downloadable
        if recommended:
            reasons = [*reasons, "recommended: the best score among the providers you can download"]
        providers.append(
            GGUFProvider(
                repo_id=candidate.repo_id,
                provider_name=candidate.author,
                model_variants=[v.quantization for v in candidate.variants],
                is_recommended=recommended,
                total_downloads=candidate.downloads,
                last_updated=candidate.last_modified,
                likes=candidate.likes,
                variants=candidate.variants,
                score=score,
                reasons=reasons,
                gated=candidate.gated,
                downloadable=candidate.downloadable,
                projectors=candidate.projectors,
            )
        )
    return providers
