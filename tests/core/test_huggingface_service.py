"""HuggingFaceService and its parts (cache, variants, ranking, cards) against the fake Hub."""

from __future__ import annotations

import asyncio
import math
from datetime import datetime, timedelta, timezone

import pytest
from huggingface_hub import constants
from huggingface_hub.hf_api import ModelInfo

from model_manager.core.errors import (
    AmbiguousVariantError,
    GatedRepoError,
    HubUnavailableError,
    InvalidFileError,
    NotFoundError,
    RateLimitedError,
)
from model_manager.core.models import DownloadRequest, HubSort, QuantVariant, SearchFilters
from model_manager.core.services.downloads.filenames import check_repo_filename
from model_manager.core.services.hub import cards
from model_manager.core.services.hub.cache import TTLCache
from model_manager.core.services.hub.ranking import DEMOTED_SHARE, ProviderCandidate, rank_providers, score_candidate
from model_manager.core.services.hub.variants import group_variants
from model_manager.core.services.huggingface_service import HuggingFaceService
from tests.conftest import free_port
from tests.fake_hub.server import FakeRepo
from tests.hub_fixtures import *  # noqa: F403 - fixtures
from tests.hub_fixtures import DEFAULT_VALID_TOKEN, hub_settings

SPLIT_REPO = "quant/Split-GGUF"


@pytest.fixture
def split_repo(hub_env) -> FakeRepo:
    return hub_env.add_repo(
        FakeRepo(
            SPLIT_REPO,
            files={
                "M-Q8_0-00003-of-00003.gguf": b"c" * 30,
                "M-Q8_0-00001-of-00003.gguf": b"a" * 10,
                "M-Q8_0-00002-of-00003.gguf": b"b" * 20,
                "mmproj-M-Q8_0.gguf": b"p" * 5,
                "M-Q4_K_M.gguf": b"q" * 40,
                "sub dir/M-F16 (final)+#1.gguf": b"f" * 60,
                "README.md": b"# M\n",
            },
        )
    )


# ---------------------------------------------------------------- resolve_file / resolve_variant


async def test_resolve_file_gives_the_commit_pinned_url_size_and_sha256(hub_env, hub_service_factory, split_repo):
    remote = await hub_service_factory().resolve_file(SPLIT_REPO, "M-Q4_K_M.gguf")
    meta = hub_env.file_meta(SPLIT_REPO, "M-Q4_K_M.gguf")
    assert remote.commit == split_repo.sha
    assert remote.url == hub_env.resolve_url(SPLIT_REPO, "M-Q4_K_M.gguf", revision=split_repo.sha)
    assert (remote.repo_id, remote.revision, remote.filename) == (SPLIT_REPO, "main", "M-Q4_K_M.gguf")
    assert (remote.size, remote.sha256, remote.etag) == (40, meta.sha256, meta.sha256)


async def test_resolve_file_encodes_the_path_in_the_url(hub_env, hub_service_factory, split_repo):
    name = "sub dir/M-F16 (final)+#1.gguf"
    remote = await hub_service_factory().resolve_file(SPLIT_REPO, name, revision=split_repo.sha)
    assert "sub%20dir/M-F16%20%28final%29%2B%231.gguf" in remote.url
    assert remote.url == hub_env.resolve_url(SPLIT_REPO, name, revision=split_repo.sha)
    assert hub_env.requests_to("hub")[-1].path.endswith(f"/resolve/{split_repo.sha}/{name}")


async def test_resolve_file_of_a_small_git_file_has_no_sha256(hub_service_factory, split_repo):
    remote = await hub_service_factory().resolve_file(SPLIT_REPO, "README.md")
    assert remote.sha256 is None and remote.etag and remote.size == 4


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision"),
    [("nobody/nothing", "a.gguf", "main"), (SPLIT_REPO, "missing.gguf", "main"), (SPLIT_REPO, "M-Q4_K_M.gguf", "v9")],
)
async def test_resolve_file_of_unknown_repo_file_or_revision_is_not_found(
    hub_service_factory, split_repo, repo_id, filename, revision
):
    with pytest.raises(NotFoundError):
        await hub_service_factory().resolve_file(repo_id, filename, revision)


async def test_resolve_file_of_a_private_repo_without_token_is_not_found(hub_env, hub_service_factory):
    hub_env.add_repo(FakeRepo("secret/model", files={"a.gguf": b"a"}, private=True))
    with pytest.raises(NotFoundError):
        await hub_service_factory().resolve_file("secret/model", "a.gguf")
    remote = await hub_service_factory(HF_TOKEN=DEFAULT_VALID_TOKEN).resolve_file("secret/model", "a.gguf")
    assert remote.size == 1


async def test_resolve_file_of_a_gated_repo_needs_a_token(hub_env, hub_service_factory):
    hub_env.add_repo(FakeRepo("gated/model", files={"a.gguf": b"abc"}, gated="auto"))
    with pytest.raises(GatedRepoError):
        await hub_service_factory().resolve_file("gated/model", "a.gguf")
    with pytest.raises(GatedRepoError):
        await hub_service_factory(HF_TOKEN="hf_refused").resolve_file("gated/model", "a.gguf")
    remote = await hub_service_factory(HF_TOKEN=DEFAULT_VALID_TOKEN).resolve_file("gated/model", "a.gguf")
    assert remote.size == 3


async def test_resolve_is_never_cached(hub_env, hub_service_factory, split_repo):
    service = hub_service_factory()
    await service.resolve_file(SPLIT_REPO, "M-Q4_K_M.gguf")
    hub_env.reset_requests()
    await service.resolve_file(SPLIT_REPO, "M-Q4_K_M.gguf")
    assert [r.method for r in hub_env.requests_to("hub")] == ["GET", "HEAD"]


async def test_resolve_variant_gives_split_parts_in_order_without_projectors(hub_service_factory, split_repo):
    parts = await hub_service_factory().resolve_variant(SPLIT_REPO, "q8_0")
    assert [p.filename for p in parts] == [f"M-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)]
    assert [p.size for p in parts] == [10, 20, 30]
    assert len({p.commit for p in parts}) == 1


async def test_resolve_variant_of_an_unknown_quantization_is_not_found(hub_service_factory, split_repo):
    with pytest.raises(NotFoundError):
        await hub_service_factory().resolve_variant(SPLIT_REPO, "Q3_K_S")


async def test_resolve_variant_of_a_quantization_that_names_several_variants_is_ambiguous(hub_env, hub_service_factory):
    hub_env.add_repo(FakeRepo("mixed/m", files={"a.Q4_K_M.gguf": b"a", "b.Q4_K_M.gguf": b"bb", "c-Q8_0.gguf": b"c"}))
    service = hub_service_factory()
    with pytest.raises(AmbiguousVariantError) as caught:
        await service.resolve_variant("mixed/m", "Q4_K_M")
    candidates = caught.value.details["candidates"]
    assert [(c["quantization"], c["files"]) for c in candidates] == [
        ("Q4_K_M (a)", ["a.Q4_K_M.gguf"]),
        ("Q4_K_M (b)", ["b.Q4_K_M.gguf"]),
    ]
    assert [f.filename for f in await service.resolve_variant("mixed/m", "Q4_K_M (b)")] == ["b.Q4_K_M.gguf"]
    assert [f.filename for f in await service.resolve_variant("mixed/m", "q8_0")] == ["c-Q8_0.gguf"]


async def test_resolve_maps_rate_limits_and_outages(hub_env, hub_service_factory, tmp_path, split_repo):
    hub_env.api_status, hub_env.retry_after = 429, 11
    with pytest.raises(RateLimitedError) as caught:
        await hub_service_factory().resolve_file(SPLIT_REPO, "M-Q4_K_M.gguf")
    assert caught.value.retry_after == 11
    down = HuggingFaceService(hub_settings(tmp_path, hub_env, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}"))
    with pytest.raises(HubUnavailableError):
        await down.resolve_file(SPLIT_REPO, "M-Q4_K_M.gguf")


def test_hub_auth_headers(hub_service_factory):
    assert hub_service_factory().hub_auth_headers() == {}
    assert hub_service_factory(HF_TOKEN="hf_x").hub_auth_headers() == {"authorization": "Bearer hf_x"}


# ---------------------------------------------------------------- settings, not the process environment


async def test_endpoint_comes_from_settings_not_from_huggingface_hub_constants(fake_hub, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGINGFACE_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    assert not constants.ENDPOINT.startswith(fake_hub.url)
    fake_hub.add_repo(FakeRepo("org/model", files={"a.gguf": b"a"}))
    service = HuggingFaceService(hub_settings(tmp_path, fake_hub))
    assert (await service.resolve_file("org/model", "a.gguf")).url.startswith(fake_hub.url)
    assert (await service.get_model_details("org/model")).file_count == 1


async def test_a_token_saved_on_the_machine_is_never_sent(hub_env, hub_service_factory, tmp_path, monkeypatch):
    token_file = tmp_path / "saved_token"
    token_file.write_text("hf_saved_by_cli")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(token_file))
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    hub_env.add_repo(FakeRepo("org/model", files={"a.gguf": b"a"}))
    service = hub_service_factory()
    await service.resolve_file("org/model", "a.gguf")
    await service.search_models("model")
    assert all(r.authorization is None for r in hub_env.requests)


# ---------------------------------------------------------------- service-level caching


async def test_concurrent_identical_calls_share_one_hub_request(hub_env, hub_service_factory, split_repo):
    service = hub_service_factory()
    hub_env.reset_requests()
    await asyncio.gather(*(service.get_gguf_providers(SPLIT_REPO) for _ in range(5)))
    assert [r.path for r in hub_env.requests_to("hub")].count(f"/api/models/{SPLIT_REPO}") == 1
    assert [r.path for r in hub_env.requests_to("hub")].count("/api/models") == 1


async def test_search_pages_are_served_from_the_same_hub_page(hub_env, hub_service_factory):
    for i in range(10):
        hub_env.add_repo(FakeRepo(f"org/m{i}", likes=i))
    service = hub_service_factory()
    first = await service.search_models(limit=3)
    second = await service.search_models(limit=3, offset=3)
    assert [m.repo_id for m in first + second] == [f"org/m{i}" for i in range(9, 3, -1)]
    assert hub_env.api_request_count() == 1


async def test_search_stops_reading_once_below_the_minimum_it_is_sorted_by(hub_env, hub_service_factory):
    for i in range(20):
        hub_env.add_repo(FakeRepo(f"org/m{i:02d}", downloads=i * 10))
    hub_env.page_size = 3
    service = hub_service_factory()
    found = await service.search_models(limit=50, sort=HubSort.downloads, filters=SearchFilters(min_downloads=150))
    assert [m.downloads for m in found] == [190, 180, 170, 160, 150]
    assert hub_env.api_request_count() == 2  # the second page already went below 150


# ---------------------------------------------------------------- TTLCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_cache_keeps_answers_for_their_lifetime():
    clock, calls = Clock(), []

    async def fetch():
        calls.append(1)
        return len(calls)

    cache = TTLCache(10, clock=clock)
    assert await cache.get_or_fetch("k", fetch) == 1
    clock.now = 9.9
    assert await cache.get_or_fetch("k", fetch) == 1
    clock.now = 10.0
    assert await cache.get_or_fetch("k", fetch) == 2


async def test_cache_does_not_keep_failures():
    cache, calls = TTLCache(10), []

    async def fetch():
        calls.append(1)
        if len(calls) == 1:
            raise HubUnavailableError("down")
        return "ok"

    with pytest.raises(HubUnavailableError):
        await cache.get_or_fetch("k", fetch)
    assert await cache.get_or_fetch("k", fetch) == "ok"


async def test_cache_shares_a_fetch_between_concurrent_callers():
    cache, calls = TTLCache(0), []

    async def fetch():
        calls.append(1)
        await asyncio.sleep(0.05)
        return "answer"

    assert await asyncio.gather(*(cache.get_or_fetch("k", fetch) for _ in range(4))) == ["answer"] * 4
    assert len(calls) == 1
    assert len(cache) == 0  # a lifetime of 0 stores nothing


async def test_cache_is_bounded_least_recently_used_first():
    cache = TTLCache(60, max_entries=2)

    async def value(v):
        return v

    await cache.get_or_fetch("a", lambda: value(1))
    await cache.get_or_fetch("b", lambda: value(2))
    await cache.get_or_fetch("a", lambda: value(1))
    await cache.get_or_fetch("c", lambda: value(3))
    assert await cache.get_or_fetch("a", lambda: value("refetched")) == 1
    assert await cache.get_or_fetch("b", lambda: value("refetched")) == "refetched"


# ---------------------------------------------------------------- variants


def test_variants_group_split_parts_and_set_projectors_apart():
    grouped = group_variants(
        [
            ("x/M-Q8_0-00002-of-00002.gguf", 5),
            ("x/M-Q8_0-00001-of-00002.gguf", 7),
            ("M.Q4_K_M.gguf", 9),
            ("mmproj-model-f16.gguf", 2),
            ("custom-merge.gguf", 1),
            ("config.json", 3),
        ]
    )
    assert [(v.quantization, v.files, v.size_bytes) for v in grouped.variants] == [
        ("custom-merge", ["custom-merge.gguf"], 1),
        ("Q4_K_M", ["M.Q4_K_M.gguf"], 9),
        ("Q8_0", ["x/M-Q8_0-00001-of-00002.gguf", "x/M-Q8_0-00002-of-00002.gguf"], 12),
    ]
    assert grouped.mmproj_files == ["mmproj-model-f16.gguf"]
    assert grouped.variant("q4_k_m").files == ["M.Q4_K_M.gguf"]


def test_files_that_are_not_parts_of_one_set_are_separate_variants():
    grouped = group_variants(
        [
            ("llama-7b.Q4_K_M.gguf", 7),
            ("llama-13b.Q4_K_M.gguf", 13),
            ("model-instruct-Q4_K_M.gguf", 8),
            ("M-Q8_0-00001-of-00002.gguf", 1),
            ("M-Q8_0-00002-of-00002.gguf", 1),
            *((f"M-Q8_0-0000{i}-of-00003.gguf", 1) for i in (1, 2, 3)),
            ("Q6_K/model-Q6_K.gguf", 6),
            ("model-Q6_K.gguf", 6),
        ]
    )
    assert {v.quantization: v.files for v in grouped.variants} == {
        "Q4_K_M (llama-7b)": ["llama-7b.Q4_K_M.gguf"],
        "Q4_K_M (llama-13b)": ["llama-13b.Q4_K_M.gguf"],
        "Q4_K_M (model-instruct)": ["model-instruct-Q4_K_M.gguf"],
        "Q8_0 (M, 2 parts)": ["M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf"],
        "Q8_0 (M, 3 parts)": [f"M-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)],
        "Q6_K (Q6_K/model)": ["Q6_K/model-Q6_K.gguf"],
        "Q6_K (model)": ["model-Q6_K.gguf"],
    }
    assert len(grouped.matching("Q4_K_M")) == 3 and len(grouped.matching("q8_0")) == 2
    with pytest.raises(AmbiguousVariantError):
        grouped.variant("Q6_K")


@pytest.mark.parametrize(
    "names",
    [
        ["x" * 300 + ".gguf", "y" * 990 + ".gguf"],  # labels named after long files
        ["a/" + "m" * 900 + "-Q4_K_M.gguf", "b/" + "m" * 900 + "-Q4_K_M.gguf"],  # qualifiers as long as a path
        ["Model.gguf", "model.gguf", "sub/Model.gguf"],  # no quantization, one name in three places
        ["M-Q8_0.gguf", "M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf", "Q8_0/M-Q8_0.gguf"],
        ["Q4_K_M (x).gguf", "x-Q4_K_M.gguf", "Q4_K_M.gguf"],
    ],
)
def test_every_label_is_unique_and_taken_by_a_download_request(names):
    variants = group_variants((name, 1) for name in names).variants
    labels = [v.quantization for v in variants]
    assert len(labels) == len(set(labels))
    assert sorted(f for v in variants for f in v.files) == sorted(names)
    for label in labels:
        DownloadRequest(repo_id="org/model", quantization=label)  # raises when the request refuses the label
        assert group_variants((name, 1) for name in names).variant(label).quantization == label


def test_variants_leave_out_names_downloads_refuse_and_incomplete_split_sets():
    refused = ["a\\b-Q4_K_M.gguf", "./c-Q4_K_M.gguf", "d\x01-Q4_K_M.gguf", "e/../f-Q4_K_M.gguf", "/g-Q4_K_M.gguf",
               "h//i-Q4_K_M.gguf", "j" * 1000 + ".gguf"]
    incomplete = ["M-Q8_0-00001-of-00003.gguf", "M-Q8_0-00003-of-00003.gguf"]
    grouped = group_variants((name, 1) for name in [*refused, *incomplete, "ok-Q4_K_M.gguf", "./mmproj-f16.gguf"])
    assert [v.files for v in grouped.variants] == [["ok-Q4_K_M.gguf"]]
    assert grouped.mmproj_files == []
    assert sorted(grouped.left_out) == sorted([*refused, *incomplete, "./mmproj-f16.gguf"])
    for name in refused:
        with pytest.raises(InvalidFileError):
            check_repo_filename(name)


# ---------------------------------------------------------------- ranking


NOW = datetime(2025, 6, 1, tzinfo=timezone.utc)


def _candidate(repo_id="a/m-GGUF", **overrides) -> ProviderCandidate:
    values = dict(
        repo_id=repo_id, author=repo_id.split("/")[0], downloads=9_999, likes=99, last_modified=NOW - timedelta(days=180),
        variants=[QuantVariant(quantization=q, files=[f"m-{q}.gguf"], size_bytes=1) for q in ("Q4_K_M", "Q8_0")],
        mmproj_files=[], hub_relation=True, card_relation=True, gated=False, downloadable=True,
    )
    values.update(overrides)
    return ProviderCandidate(**values)


def test_score_follows_the_documented_formula():
    score, reasons = score_candidate(_candidate(), "base/m", NOW)
    expected = (
        30 * 1.0
        + 30 * math.log10(10_000) / math.log10(1_000_001)
        + 15 * math.log10(100) / math.log10(10_001)
        + 15 * 0.5
        + 10 * 2 / 8
    )
    assert score == round(expected, 2)
    assert len(reasons) == 5
    partial, _ = score_candidate(_candidate(card_relation=False), "base/m", NOW)
    assert partial == pytest.approx(score - 30 * 0.4, abs=0.01)


def test_known_quantizer_breaks_ties_only():
    unknown, known = _candidate("zzz/m-GGUF"), _candidate("bartowski/m-GGUF")
    ranked = rank_providers([unknown, known], "base/m", NOW)
    assert [p.repo_id for p in ranked] == ["bartowski/m-GGUF", "zzz/m-GGUF"]
    assert ranked[0].score == ranked[1].score
    better_unknown = _candidate("zzz/m-GGUF", likes=100)
    assert rank_providers([known, better_unknown], "base/m", NOW)[0].repo_id == "zzz/m-GGUF"


def test_a_provider_that_cannot_be_downloaded_is_never_recommended():
    (only,) = rank_providers([_candidate(gated=True, downloadable=False)], "base/m", NOW)
    assert only.is_recommended is False and only.gated is True


def test_a_provider_that_cannot_be_downloaded_scores_below_every_one_that_can():
    # The best possible gated provider without access against the weakest possible downloadable one.
    many = [QuantVariant(quantization=f"Q{i}", files=[f"m-Q{i}.gguf"], size_bytes=1) for i in range(9)]
    best = _candidate("big/m-GGUF", downloads=10**9, likes=10**9, last_modified=NOW, gated=True, downloadable=False,
                      why_not_downloadable="gated and the configured HF_TOKEN has no access", variants=many)
    weakest = _candidate("small/m-GGUF", downloads=0, likes=0, last_modified=None, card_relation=False, variants=[])
    ranked = rank_providers([best, weakest], "base/m", NOW)
    assert [p.repo_id for p in ranked] == ["small/m-GGUF", "big/m-GGUF"]
    assert ranked[0].score == 18.0 and ranked[1].score == pytest.approx(100 * DEMOTED_SHARE)
    assert [(p.is_recommended, p.downloadable) for p in ranked] == [(True, True), (False, False)]
    assert ranked[1].reasons[0].startswith("not downloadable: gated and the configured HF_TOKEN has no access")
    assert len(ranked[1].reasons) == 6  # the five parts of the score follow the reason it was demoted


# ---------------------------------------------------------------- cards


def _info(**data) -> ModelInfo:
    return ModelInfo(id="org/m", **data)


def test_license_prefers_the_tag_then_the_card():
    assert cards.license_of(_info(tags=["license:mit"], cardData={"license": "apache-2.0"})) == "mit"
    assert cards.license_of(_info(tags=[], cardData={"license": ["cc-by-4.0", "mit"]})) == "cc-by-4.0"
    assert cards.license_of(_info(tags=[])) is None


def test_base_models_of_a_card():
    assert cards.base_models_of(_info(cardData={"base_model": "a/b"})) == ["a/b"]
    assert cards.base_models_of(_info(cardData={"base_model": ["a/b", "c/d"]})) == ["a/b", "c/d"]
    assert cards.base_models_of(_info()) == []


def test_readme_body_and_description():
    text = "---\nlicense: mit\n---\n\n# Title\n\n![badge](x.png)\n\nA small model\nfor tests.\n\nMore.\n"
    body = cards.readme_body(text)
    assert body.startswith("# Title")
    assert cards.description_from(body) == "A small model for tests."
    assert cards.description_from("# only a heading") is None
