"""`/hub/...` through the HTTP API, against the fake Hub on loopback."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pytest

from model_manager.core.services.hub.client import README_MAX_BYTES
from tests.conftest import free_port
from tests.fake_hub.server import FakeRepo
from tests.gguf_factory import sha256_of_bytes, write_gguf, write_split_model
from tests.hub_fixtures import *  # noqa: F403 - fixtures and repo sets
from tests.hub_fixtures import BASE_MODEL, DEFAULT_VALID_TOKEN, SEARCH_REPOS, add_provider_repos, add_search_repos


def _search(client, query: str = "", **params):
    if "filters" in params:
        params["filters_json"] = json.dumps(params.pop("filters"))
    return client.get("/hub/search", params={"query": query, **params})


def _ids(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["repo_id"] for row in response.json()]


def _expected(key, *, keep=lambda repo: True) -> list[str]:
    return [r.repo_id for r in sorted((r for r in SEARCH_REPOS if keep(r)), key=key, reverse=True)]


@pytest.fixture
def search_client(hub_env, hub_client_factory):
    add_search_repos(hub_env)
    return hub_client_factory()


# ---------------------------------------------------------------- search: query, rows, filters


def test_search_without_query_lists_every_model_by_likes(search_client):
    assert _ids(_search(search_client)) == _expected(lambda r: r.likes)


def test_search_query_matches_repo_ids(search_client):
    assert set(_ids(_search(search_client, "llama"))) == {"alpha/llama-chat-GGUF", "beta/llama-base"}


def test_search_rows_carry_task_license_counts_date_and_tags(search_client):
    (row,) = _search(search_client, "whisper").json()
    assert row == {
        "repo_id": "gamma/whisper-small",
        "model_name": "whisper-small",
        "author": "gamma",
        "task": "automatic-speech-recognition",
        "license": "apache-2.0",
        "downloads": 800,
        "likes": 300,
        "last_modified": "2024-06-15T00:00:00+00:00",
        "tags": ["license:apache-2.0"],
    }


def test_search_maps_the_license_from_the_card_when_no_tag_has_it(search_client):
    (row,) = _search(search_client, "tiny-embed").json()
    assert row["license"] == "cc-by-4.0"


def test_filter_task(search_client):
    ids = _ids(_search(search_client, filters={"task": "text-generation"}))
    assert ids == _expected(lambda r: r.likes, keep=lambda r: r.pipeline_tag == "text-generation")


def test_filter_license(search_client):
    assert set(_ids(_search(search_client, filters={"license": "mit"}))) == {"beta/llama-base"}


def test_filter_min_downloads(search_client):
    ids = _ids(_search(search_client, filters={"min_downloads": 1_200}))
    assert ids == _expected(lambda r: r.likes, keep=lambda r: r.downloads >= 1_200)


def test_filter_min_likes(search_client):
    ids = _ids(_search(search_client, sort="downloads", filters={"min_likes": 50}))
    assert ids == _expected(lambda r: r.downloads, keep=lambda r: r.likes >= 50)


def test_filter_tags_must_all_match(search_client):
    assert set(_ids(_search(search_client, filters={"tags": ["gguf", "chat"]}))) == {
        "alpha/llama-chat-GGUF",
        "epsilon/mistral-chat-GGUF",
    }


def test_filter_gguf(search_client):
    assert set(_ids(_search(search_client, filters={"gguf": True}))) == {
        "alpha/llama-chat-GGUF",
        "delta/qwen-coder-GGUF",
        "epsilon/mistral-chat-GGUF",
    }


def test_filter_author(search_client):
    assert set(_ids(_search(search_client, filters={"author": "alpha"}))) == {"alpha/llama-chat-GGUF", "alpha/tiny-embed"}


def test_filters_combine(search_client):
    filters = {"task": "text-generation", "license": "apache-2.0", "gguf": True, "min_downloads": 2_000, "min_likes": 40}
    assert _ids(_search(search_client, "chat", filters=filters)) == ["epsilon/mistral-chat-GGUF", "alpha/llama-chat-GGUF"]


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("likes", lambda r: r.likes),
        ("downloads", lambda r: r.downloads),
        ("time", lambda r: r.created_at),
        ("update", lambda r: r.last_modified),
        ("trending", lambda r: r.trending_score),
    ],
)
def test_sort_orders_descending(search_client, sort, key):
    assert _ids(_search(search_client, sort=sort)) == _expected(key)


@pytest.mark.parametrize(
    "filters_json",
    ["{not json", "[1, 2]", '"text"', '{"colour": "red"}', '{"min_downloads": "many"}', '{"min_likes": -1}',
     '{"tags": "chat"}', '{"gguf": "perhaps"}'],
)
def test_bad_filters_are_400_invalid_filters(search_client, filters_json):
    response = search_client.get("/hub/search", params={"filters_json": filters_json})
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_FILTERS"


def test_unknown_sort_is_400_invalid_filters(search_client):
    response = _search(search_client, sort="stars")
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_FILTERS"
    assert "likes" in response.json()["message"]


# ---------------------------------------------------------------- search: pagination


def _bulk_repos(hub, count: int = 30) -> list[FakeRepo]:
    return [
        hub.add_repo(FakeRepo(f"bulk/model-{i:02d}", downloads=1_000 + i * 37 % 101, likes=(i * 7) % 31))
        for i in range(count)
    ]


def test_pages_have_no_gaps_or_repeats_while_filters_read_further_hub_pages(hub_env, hub_client_factory):
    repos = _bulk_repos(hub_env)
    hub_env.page_size = 4  # the Hub answers 4 models per request: the filter forces the service to read on
    client = hub_client_factory()
    filters = {"min_likes": 10}
    expected = [r.repo_id for r in sorted((r for r in repos if r.likes >= 10), key=lambda r: r.downloads, reverse=True)]
    pages = [
        _ids(_search(client, sort="downloads", limit=5, offset=offset, filters=filters)) for offset in range(0, 30, 5)
    ]
    assert [repo_id for page in pages for repo_id in page] == expected
    assert all(len(page) == 5 for page in pages[: len(expected) // 5])
    assert len(hub_env.requests_to("hub")) > 1


def test_pages_without_filters_have_no_gaps_or_repeats(hub_env, hub_client_factory):
    repos = _bulk_repos(hub_env, 12)
    client = hub_client_factory()
    expected = [r.repo_id for r in sorted(repos, key=lambda r: r.likes, reverse=True)]
    pages = [_ids(_search(client, "bulk", limit=4, offset=offset)) for offset in (0, 4, 8, 12)]
    assert pages[3] == []
    assert pages[0] + pages[1] + pages[2] == expected


def test_search_limit_is_bounded(search_client):
    assert _search(search_client, limit=0).status_code == 422
    assert _search(search_client, limit=101).status_code == 422
    assert _search(search_client, offset=-1).status_code == 422


# ---------------------------------------------------------------- model details


def test_details_of_a_normal_repo(hub_env, hub_client_factory):
    add_provider_repos(hub_env)
    client = hub_client_factory()
    body = client.get("/hub/model/bartowski/Llama-3-8B-GGUF").json()
    assert body["repo_id"] == "bartowski/Llama-3-8B-GGUF"
    assert body["model_card"] == {"base_model": BASE_MODEL}
    assert body["base_model"] == BASE_MODEL
    assert body["gated"] is False
    assert body["readme_content"].startswith("# Llama-3-8B-GGUF")
    assert body["description"] == "A model card served by the fake Hub."
    files = {f["filename"]: f for f in body["files"]}
    meta = hub_env.file_meta("bartowski/Llama-3-8B-GGUF", "Llama-3-8B-Q4_K_M.gguf")
    assert files["Llama-3-8B-Q4_K_M.gguf"] == {"filename": "Llama-3-8B-Q4_K_M.gguf", "size_bytes": 400, "sha256": meta.sha256}
    assert files["README.md"]["sha256"] is None  # a small git file has no LFS sha256
    assert body["file_count"] == len(files) == 7
    assert body["total_size_bytes"] == sum(f["size_bytes"] for f in files.values())


def test_details_license_and_task(hub_env, hub_client_factory):
    add_provider_repos(hub_env)
    body = hub_client_factory().get(f"/hub/model/{BASE_MODEL}").json()
    assert (body["license"], body["task"], body["base_model"]) == ("llama3", "text-generation", None)


def test_details_of_a_gated_repo_without_token_is_403_gated_repo(hub_env, hub_client_factory):
    add_provider_repos(hub_env)
    response = hub_client_factory().get("/hub/model/gatedco/Llama-3-8B-GGUF")
    assert response.status_code == 403
    assert response.json()["error_code"] == "GATED_REPO"
    assert "HF_TOKEN" in response.json()["message"]


def test_details_of_a_gated_repo_with_a_valid_token(hub_env, hub_client_factory):
    add_provider_repos(hub_env)
    response = hub_client_factory(HF_TOKEN=DEFAULT_VALID_TOKEN).get("/hub/model/gatedco/Llama-3-8B-GGUF")
    assert response.status_code == 200, response.text
    assert response.json()["gated"] is True
    assert response.json()["readme_content"] is not None
    hub_requests = hub_env.requests_to("hub")
    assert hub_requests and all(r.authorization == f"Bearer {DEFAULT_VALID_TOKEN}" for r in hub_requests)


def test_details_of_a_gated_repo_with_a_refused_token_is_403(hub_env, hub_client_factory):
    add_provider_repos(hub_env)
    response = hub_client_factory(HF_TOKEN="hf_not_allowed").get("/hub/model/gatedco/Llama-3-8B-GGUF")
    assert (response.status_code, response.json()["error_code"]) == (403, "GATED_REPO")


def test_details_of_an_unknown_repo_is_404(hub_env, hub_client_factory):
    response = hub_client_factory().get("/hub/model/nobody/nothing")
    assert (response.status_code, response.json()["error_code"]) == (404, "NOT_FOUND")


# ---------------------------------------------------------------- GGUF providers


@pytest.fixture
def provider_hub(hub_env):
    add_provider_repos(hub_env)
    return hub_env


def test_providers_are_the_quantizations_of_the_model_best_first(provider_hub, hub_client_factory):
    response = hub_client_factory().get(f"/hub/model/{BASE_MODEL}/gguf-providers")
    assert response.status_code == 200, response.text
    providers = response.json()
    # impostor (name matches, quantizes another model), mislabeled (card names another base) and nofiles are out;
    # the gated repo cannot be downloaded without a token: a penalty inside its score puts it last.
    assert [p["repo_id"] for p in providers] == [
        "bartowski/Llama-3-8B-GGUF",
        "unsloth/Llama-3-8B-GGUF",
        "someone/Llama-3-8B-Q4-GGUF",
        "gatedco/Llama-3-8B-GGUF",
    ]
    assert [p["is_recommended"] for p in providers] == [True, False, False, False]
    assert [p["gated"] for p in providers] == [False, False, False, True]
    assert [p["downloadable"] for p in providers] == [True, True, True, False]
    assert providers[0]["score"] > providers[1]["score"] > providers[2]["score"] > providers[3]["score"]
    demoted = providers[3]["reasons"][0]  # a demoted provider says why first
    assert "not downloadable" in demoted and "HF_TOKEN" in demoted and "never recommended" in demoted


def test_provider_variants_group_split_parts_in_order_and_leave_projectors_out(provider_hub, hub_client_factory):
    providers = hub_client_factory().get(f"/hub/model/{BASE_MODEL}/gguf-providers").json()
    best = providers[0]
    assert best["provider_name"] == "bartowski"
    assert best["total_downloads"] == 50_000 and best["likes"] == 200
    variants = {v["quantization"]: v for v in best["variants"]}
    assert set(variants) == {"IQ2_XS", "Q4_K_M", "Q5_K_M", "Q8_0"}
    assert variants["Q8_0"] == {
        "quantization": "Q8_0",
        "files": [
            "Llama-3-8B-Q8_0/Llama-3-8B-Q8_0-00001-of-00002.gguf",
            "Llama-3-8B-Q8_0/Llama-3-8B-Q8_0-00002-of-00002.gguf",
        ],
        "size_bytes": 800,
    }
    assert best["model_variants"] == [v["quantization"] for v in best["variants"]]
    assert best["model_variants"] == ["IQ2_XS", "Q4_K_M", "Q5_K_M", "Q8_0"]  # smallest first
    assert any("mmproj" in reason for reason in best["reasons"])
    assert datetime.fromisoformat(best["last_updated"]) < datetime.now(timezone.utc)


def test_provider_reasons_explain_each_part_of_the_score(provider_hub, hub_client_factory):
    providers = hub_client_factory().get(f"/hub/model/{BASE_MODEL}/gguf-providers").json()
    best, hub_only = providers[0], providers[1]
    text = " | ".join(best["reasons"])
    for part in ("quantization of meta/Llama-3-8B", "downloads", "likes", "updated", "variant", "known quantizer",
                 "recommended"):
        assert part in text
    assert any("card does not name it" in reason for reason in hub_only["reasons"])


def test_a_gated_provider_is_ranked_by_score_when_a_token_is_configured(provider_hub, hub_client_factory):
    providers = hub_client_factory(HF_TOKEN=DEFAULT_VALID_TOKEN).get(f"/hub/model/{BASE_MODEL}/gguf-providers").json()
    assert providers[0]["repo_id"] == "gatedco/Llama-3-8B-GGUF"
    assert providers[0]["is_recommended"] is True and providers[0]["gated"] is True
    assert providers[0]["downloadable"] is True


def _by_score(providers: list[dict]) -> bool:
    return [p["score"] for p in providers] == sorted((p["score"] for p in providers), reverse=True)


def test_a_gated_provider_the_token_cannot_download_is_never_recommended(provider_hub, hub_client_factory):
    # Issue 8, scenario 8: with HF_TOKEN set, a gated repo whose terms that account never accepted was recommended.
    provider_hub.get_repo("gatedco/Llama-3-8B-GGUF").access_tokens = set()
    client = hub_client_factory(HF_TOKEN=DEFAULT_VALID_TOKEN)
    provider_hub.reset_requests()
    providers = client.get(f"/hub/model/{BASE_MODEL}/gguf-providers").json()

    assert [p["repo_id"] for p in providers][0] == "bartowski/Llama-3-8B-GGUF"
    assert [p["is_recommended"] for p in providers] == [True, False, False, False]
    gated = next(p for p in providers if p["repo_id"] == "gatedco/Llama-3-8B-GGUF")
    assert (gated["gated"], gated["downloadable"], gated["is_recommended"]) == (True, False, False)
    assert "not downloadable" in gated["reasons"][0] and "access" in gated["reasons"][0]
    assert _by_score(providers) and providers[-1] is gated
    # One HEAD checked the access, within the budget of 2 + candidates; the answer is cached with the rest.
    heads = [r.path for r in provider_hub.requests_to("hub") if r.method == "HEAD"]
    commit = provider_hub.get_repo("gatedco/Llama-3-8B-GGUF").sha
    assert heads == [f"/gatedco/Llama-3-8B-GGUF/resolve/{commit}/Llama-3-8B-Q6_K.gguf"]
    assert len(provider_hub.requests_to("hub")) == 7 <= 2 + 6
    provider_hub.reset_requests()
    assert client.get(f"/hub/model/{BASE_MODEL}/gguf-providers").json() == providers
    assert provider_hub.requests == []


MIXED_REPO = "mixed/Llama-3-8B-GGUF"


def _gguf(folder: Path, name: str, **kw) -> bytes:
    return write_gguf(folder / f"{name}.gguf", name=name, **kw).read_bytes()


def _split_set(folder: Path, stem: str, count: int) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    return {path.name: path.read_bytes() for path in write_split_model(folder, stem, count, name=f"{stem} x{count}")}



def _finish(client, download_id: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/local/downloads/{download_id}").json()
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        assert time.monotonic() < deadline, f"download {download_id} did not finish: {status}"
        time.sleep(0.05)


def _files_on_disk(model: dict) -> dict[str, str]:
    """{file name: sha256 of its bytes on disk} for every file (every part) of a listed model."""
    first = Path(model["file_path"])
    names = [part["filename"] for part in model["metadata"].get("parts") or []] or [first.name]
    return {name: hashlib.sha256((first.parent / name).read_bytes()).hexdigest() for name in names}


def test_files_that_are_not_parts_of_one_set_are_separate_variants_and_models(hub_env, hub_client_factory, tmp_path):
    # Issue 8, scenario 7: these files were one Q4_K_M "variant" (and one Q8_0), downloaded as one split model.
    files = {
        "llama-7b.Q4_K_M.gguf": _gguf(tmp_path, "llama-7b"),
        "llama-13b.Q4_K_M.gguf": _gguf(tmp_path, "llama-13b"),
        "model-instruct-Q4_K_M.gguf": _gguf(tmp_path, "model-instruct"),
        **_split_set(tmp_path / "two", "M-Q8_0", 2),
        **_split_set(tmp_path / "three", "M-Q8_0", 3),
    }
    hub_env.add_repo(FakeRepo(BASE_MODEL, files={"config.json": b"{}"}))
    hub_env.add_repo(FakeRepo(MIXED_REPO, tags=["gguf", f"base_model:quantized:{BASE_MODEL}"], files=files))
    client = hub_client_factory()

    (provider,) = client.get(f"/hub/model/{BASE_MODEL}/gguf-providers").json()
    labels = {tuple(v["files"]): v["quantization"] for v in provider["variants"]}
    assert labels == {
        ("llama-7b.Q4_K_M.gguf",): "Q4_K_M (llama-7b)",
        ("llama-13b.Q4_K_M.gguf",): "Q4_K_M (llama-13b)",
        ("model-instruct-Q4_K_M.gguf",): "Q4_K_M (model-instruct)",
        ("M-Q8_0-00001-of-00002.gguf", "M-Q8_0-00002-of-00002.gguf"): "Q8_0 (M, 2 parts)",
        tuple(f"M-Q8_0-0000{i}-of-00003.gguf" for i in (1, 2, 3)): "Q8_0 (M, 3 parts)",
    }
    assert provider["model_variants"] == [v["quantization"] for v in provider["variants"]]

    # The bare label now names several variants: 409 with the candidates, and nothing is queued.
    for legacy, count in (("Q4_K_M", 3), ("q8_0", 2)):
        response = client.post("/local/download", json={"repo_id": MIXED_REPO, "quantization": legacy})
        assert (response.status_code, response.json()["error_code"]) == (409, "AMBIGUOUS_VARIANT")
        candidates = response.json()["details"]["candidates"]
        wanted = sorted(label for label in labels.values() if legacy.upper() in label)
        assert sorted(c["quantization"] for c in candidates) == wanted
        assert len(candidates) == count and all(c["files"] for c in candidates)
    assert client.get("/local/downloads").json() == []

    # Each label downloads exactly its own files, and each becomes one model of its own.
    for variant_files, label in labels.items():
        response = client.post("/local/download", json={"repo_id": MIXED_REPO, "quantization": label})
        assert response.status_code == 202, response.text
        status = _finish(client, response.json()["download_id"])
        assert status["status"] == "completed", status
        assert status["files"] == list(variant_files)
    models = client.get("/local/models").json()
    assert len(models) == len(labels) == len({m["model_id"] for m in models})
    expected = {tuple(sha256_of_bytes(files[name]) for name in names) for names in labels}
    assert {tuple(_files_on_disk(m).values()) for m in models} == expected


def test_providers_offer_only_files_and_labels_the_download_endpoint_takes(hub_env, hub_client_factory, tmp_path):
    # Issue 8, scenario 8: files the download endpoint refuses were offered, and a label over 40 characters
    # (a file with no known quantization is named after the file) was a 422 on the page's Download button.
    good = _gguf(tmp_path, "Llama-3-8B-Q4_K_M")
    long_stem = "llama-3-8b-instruct-merged-with-a-very-long-experiment-name"
    refused = ["dir\\Llama-3-8B-Q5_K_M.gguf", "./Llama-3-8B-Q6_K.gguf", "Llama-3-8B-Q3_K_M\x01.gguf",
               "sub/../Llama-3-8B-Q2_K.gguf", "sub//Llama-3-8B-Q8_0.gguf"]
    files = {"Llama-3-8B-Q4_K_M.gguf": good, f"{long_stem}.gguf": _gguf(tmp_path, long_stem)}
    files.update({name: good for name in refused})
    hub_env.add_repo(FakeRepo(BASE_MODEL, files={"config.json": b"{}"}))
    hub_env.add_repo(FakeRepo(MIXED_REPO, tags=["gguf", f"base_model:quantized:{BASE_MODEL}"], files=files))
    client = hub_client_factory()

    (provider,) = client.get(f"/hub/model/{BASE_MODEL}/gguf-providers").json()
    offered = sorted(f for v in provider["variants"] for f in v["files"])
    assert offered == sorted(["Llama-3-8B-Q4_K_M.gguf", f"{long_stem}.gguf"])
    assert sorted(provider["model_variants"]) == sorted(["Q4_K_M", long_stem])
    assert any("left out" in reason and "Q5_K_M" in reason for reason in provider["reasons"])
    for name in refused:  # the download endpoint refuses each of them
        response = client.post("/local/download", json={"repo_id": MIXED_REPO, "filename": name})
        assert response.status_code in (400, 422), (name, response.text)

    for label in provider["model_variants"]:
        response = client.post("/local/download", json={"repo_id": MIXED_REPO, "quantization": label})
        assert response.status_code == 202, response.text
        assert _finish(client, response.json()["download_id"])["status"] == "completed"
    models = client.get("/local/models").json()
    assert sorted(_files_on_disk(m)[Path(m["file_path"]).name] for m in models) == sorted(
        sha256_of_bytes(files[name]) for name in ("Llama-3-8B-Q4_K_M.gguf", f"{long_stem}.gguf")
    )


def test_a_huge_readme_is_not_read_whole(hub_env, hub_client_factory):
    # Issue 8, scenario 10: the README was read whole, then cut to README_MAX_BYTES.
    readme = b"# Big\n\nA model card that never ends.\n\n" + b"lorem ipsum " * (64 * 1024 * 1024 // 12)
    hub_env.add_repo(FakeRepo("big/card", files={"README.md": readme, "config.json": b"{}"}))
    body = hub_client_factory().get("/hub/model/big/card").json()
    assert body["description"] == "A model card that never ends."
    content = body["readme_content"].encode()
    assert README_MAX_BYTES - 16 <= len(content) <= README_MAX_BYTES and readme.startswith(content)
    # What the Hub sent before we hung up: our limit, a read chunk and the sockets' buffers, not 64 MiB.
    assert hub_env.bytes_served["README.md"] < 16 * 1024 * 1024


def test_a_model_without_quantizations_has_no_providers(provider_hub, hub_client_factory):
    provider_hub.add_repo(FakeRepo("lonely/model", files={"config.json": b"{}"}))
    assert hub_client_factory().get("/hub/model/lonely/model/gguf-providers").json() == []


def test_providers_of_an_unknown_model_is_404(provider_hub, hub_client_factory):
    response = hub_client_factory().get("/hub/model/nobody/nothing/gguf-providers")
    assert (response.status_code, response.json()["error_code"]) == (404, "NOT_FOUND")


def test_providers_request_budget_and_cache(provider_hub, hub_client_factory):
    client = hub_client_factory()
    provider_hub.reset_requests()
    assert client.get(f"/hub/model/{BASE_MODEL}/gguf-providers").status_code == 200
    first_call = len(provider_hub.requests_to("hub"))
    # Candidates: the repos the relation listing returns (bartowski, unsloth, someone, gatedco, mislabeled, nofiles).
    candidates = sum(f"base_model:quantized:{BASE_MODEL}" in r.tags for r in provider_hub.repos)
    assert candidates == 6
    assert first_call <= 2 + candidates
    assert first_call == 6  # 1 listing + 1 base model_info + 4 candidates with .gguf files and the right base
    provider_hub.reset_requests()
    assert client.get(f"/hub/model/{BASE_MODEL}/gguf-providers").status_code == 200
    assert provider_hub.requests == []


def test_details_after_providers_reuse_the_cached_model_info(provider_hub, hub_client_factory):
    client = hub_client_factory()
    client.get(f"/hub/model/{BASE_MODEL}/gguf-providers")
    provider_hub.reset_requests()
    assert client.get("/hub/model/unsloth/Llama-3-8B-GGUF").status_code == 200
    assert [r.path for r in provider_hub.requests_to("hub")] == []  # no README in that repo, model_info cached


def test_cache_lifetime_comes_from_settings(provider_hub, hub_client_factory):
    client = hub_client_factory(HUB_CACHE_TTL_SECONDS="0.3")
    client.get(f"/hub/model/{BASE_MODEL}")
    time.sleep(0.4)
    provider_hub.reset_requests()
    client.get(f"/hub/model/{BASE_MODEL}")
    assert provider_hub.api_request_count() == 1


# ---------------------------------------------------------------- Hub failures

ENDPOINTS = ["/hub/search?query=llama", f"/hub/model/{BASE_MODEL}", f"/hub/model/{BASE_MODEL}/gguf-providers"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_hub_down_is_502_service_unavailable(hub_client_factory, path):
    client = hub_client_factory(HF_ENDPOINT=f"http://127.0.0.1:{free_port()}")
    response = client.get(path)
    assert (response.status_code, response.json()["error_code"]) == (502, "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_hub_server_error_is_502(provider_hub, hub_client_factory, path):
    provider_hub.api_status = 500
    response = hub_client_factory().get(path)
    assert (response.status_code, response.json()["error_code"]) == (502, "SERVICE_UNAVAILABLE")


@pytest.mark.parametrize("path", ENDPOINTS)
def test_slow_hub_times_out_as_502(provider_hub, hub_client_factory, path):
    provider_hub.api_delay_seconds = 2.0
    client = hub_client_factory(HUB_TIMEOUT_SECONDS="0.3")
    started = time.monotonic()
    response = client.get(path)
    assert time.monotonic() - started < 1.5
    assert (response.status_code, response.json()["error_code"]) == (502, "SERVICE_UNAVAILABLE")
    assert "did not answer" in response.json()["message"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_hub_rate_limit_is_429_with_the_hubs_retry_after(provider_hub, hub_client_factory, path):
    provider_hub.api_status = 429
    provider_hub.retry_after = 42
    response = hub_client_factory().get(path)
    assert response.status_code == 429
    assert response.json()["error_code"] == "RATE_LIMITED"
    assert response.headers["retry-after"] == "42"
    assert response.json()["details"]["retry_after"] == 42


def test_failures_are_not_cached(provider_hub, hub_client_factory):
    client = hub_client_factory()
    provider_hub.api_status, provider_hub.api_status_times = 503, 1
    assert client.get(f"/hub/model/{BASE_MODEL}").status_code == 502
    assert client.get(f"/hub/model/{BASE_MODEL}").status_code == 200


def test_repo_ids_with_special_characters_are_encoded(hub_env, hub_client_factory):
    hub_env.add_repo(FakeRepo("org/model.v1-2_b", files={"config.json": b"{}"}))
    response = hub_client_factory().get(f"/hub/model/org/{quote('model.v1-2_b')}")
    assert response.status_code == 200
    assert response.json()["repo_id"] == "org/model.v1-2_b"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_hub_routes_need_the_api_token(provider_hub, hub_client_factory, path):
    client = hub_client_factory()
    response = client.get(path, headers={"Authorization": "Bearer wrong"})
    assert (response.status_code, response.json()["error_code"]) == (401, "INVALID_TOKEN")
    assert provider_hub.requests == []
