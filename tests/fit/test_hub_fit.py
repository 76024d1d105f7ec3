"""Fit before download: headers read from the fake Hub with Range requests, what they cost, and the ranking.

The fake Hub serves Llama-3.2-1B-shaped GGUF headers (150k-token vocabulary) for a base model with four
providers; the app reads them through the real HTTP path (Hub resolve URL, redirect to the CDN).
"""

from __future__ import annotations

from collections import Counter

import pytest

from model_manager.core.fit import quality_rank
from model_manager.core.services.hub.remote_header import MAX_HEADER_BYTES
from tests.fit.conftest import COST_ROWS
from tests.fit.hub_models import llama_header_bytes, weights_bytes
from tests.hub_fixtures import *  # noqa: F403 - fixtures: hub_env, hub_client_factory
from tests.hub_fixtures import FakeHub, FakeRepo

BASE = "meta-llama/Llama-3.2-1B-Instruct"
GIB = 1024**3
MIB = 1024**2
# Each file: the header, then 4 MiB standing for the tensor data (so reads stop at our ranges, not at the end).
DATA = bytes(4 * 1024 * 1024)
PROVIDERS = {
    "bartowski/Llama-3.2-1B-Instruct-GGUF": {
        f"Llama-3.2-1B-Instruct-{q}.gguf": llama_header_bytes(q) + DATA for q in ("F16", "Q8_0", "Q6_K", "Q5_K_M", "Q4_K_M", "Q3_K_M")
    },
    "unsloth/Llama-3.2-1B-Instruct-GGUF": {
        f"unsloth.Llama-3.2-1B-Instruct.{q}.gguf": llama_header_bytes(q) + DATA for q in ("Q8_0", "Q4_K_M")
    },
    "lmstudio-community/Llama-3.2-1B-Instruct-GGUF": {
        f"lms-Llama-3.2-1B-Instruct-{q}.gguf": llama_header_bytes(q) + DATA for q in ("Q6_K", "Q3_K_M")
    },
    "someone/Llama-3.2-1B-Instruct-split-GGUF": {
        f"Q8_0/split-Llama-3.2-1B-Instruct-Q8_0-0000{i}-of-00002.gguf": llama_header_bytes("Q8_0", split=(i, 2)) + DATA
        for i in (1, 2)
    },
}


def add_llama_providers(hub: FakeHub) -> None:
    relation = f"base_model:quantized:{BASE}"
    hub.add_repo(FakeRepo(BASE, pipeline_tag="text-generation", files={"config.json": b"{}"}, downloads=10**6))
    for rank, (repo_id, files) in enumerate(PROVIDERS.items()):
        hub.add_repo(FakeRepo(repo_id, tags=["gguf", relation], card_data={"base_model": BASE},
                              downloads=10_000 - rank, likes=10, files=files))


@pytest.fixture
def llama_hub(hub_env: FakeHub) -> FakeHub:
    add_llama_providers(hub_env)
    return hub_env


def providers_url(**params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/hub/model/{BASE}/gguf-providers" + (f"?{query}" if query else "")


def cdn_requests(hub: FakeHub) -> list:
    return [r for r in hub.requests_to("cdn") if r.method == "GET"]


def test_cold_providers_fit_reads_each_header_once_within_two_ranges_and_8_mib(llama_hub, hub_client_factory):
    client = hub_client_factory()
    llama_hub.reset_requests()

    response = client.get(providers_url(fit="true", context=8192, vram_gb=2, ram_gb=16))

    assert response.status_code == 200, response.text
    files = [name for files in PROVIDERS.values() for name in files]
    ranged = Counter(r.query["path"][0] for r in cdn_requests(llama_hub) if "range" in r.headers)
    assert set(ranged) == set(files)  # every variant file's header was read...
    assert max(ranged.values()) <= 2  # ...with at most 2 ranged requests each
    # The first header read sizes the others' first request: one request each for all the others.
    first_parts = [name for name in files if "00002-of" not in name]
    assert sorted(ranged[name] for name in first_parts) == [1] * (len(first_parts) - 1) + [2]
    sizes = {name: len(content) - len(DATA) for files_ in PROVIDERS.values() for name, content in files_.items()}
    for name in files:
        COST_ROWS.append((name, str(ranged[name]), str(llama_hub.bytes_served[name]), str(sizes[name])))
        assert llama_hub.bytes_served[name] <= 8 * MIB, (name, llama_hub.bytes_served[name])
    resolves = Counter(r.path for r in llama_hub.requests_to("hub") if "/resolve/" in r.path)
    assert set(resolves.values()) == {1}  # one trip through the Hub per file; the second range goes to the CDN
    assert all(r.authorization is None for r in cdn_requests(llama_hub))  # never the token on the CDN
    assert len(llama_header_bytes("Q8_0")) > 5 * MIB  # the 150k-token vocabulary really is that big
    for provider in response.json():
        assert all(v.get("fit") is not None for v in provider["variants"]), provider["reasons"]

    llama_hub.reset_requests()
    again = client.get(providers_url(fit="true", context=8192, vram_gb=2, ram_gb=16))

    assert again.status_code == 200
    assert again.json() == response.json()
    assert llama_hub.requests == []  # the same call again asks the Hub nothing


def test_headers_are_fetched_once_ever_even_by_a_new_app_on_the_same_catalogue(llama_hub, hub_client_factory, tmp_path):
    from fastapi.testclient import TestClient

    from model_manager.app.main import create_app
    from tests.conftest import TEST_TOKEN
    from tests.hub_fixtures import hub_settings

    settings = hub_settings(tmp_path, llama_hub)
    url = "/hub/fit?repo_id=bartowski/Llama-3.2-1B-Instruct-GGUF&quantization=Q4_K_M&vram_gb=2&ram_gb=8"
    for attempt in range(2):  # two app lifetimes: the TTL cache is gone, the catalogue is not
        llama_hub.reset_requests()
        with TestClient(create_app(settings)) as client:
            response = client.get(url, headers={"Authorization": f"Bearer {TEST_TOKEN}"})
        assert response.status_code == 200, response.text
        fetched = [r for r in cdn_requests(llama_hub)]
        assert len(fetched) == (2 if attempt == 0 else 0)


def test_providers_without_fit_read_no_header(llama_hub, hub_client_factory):
    client = hub_client_factory()
    llama_hub.reset_requests()

    response = client.get(providers_url())

    assert response.status_code == 200
    assert cdn_requests(llama_hub) == []
    assert [r for r in llama_hub.requests_to("hub") if "/resolve/" in r.path] == []
    # exactly today's answer: not even the new keys
    assert all("fit" not in v for p in response.json() for v in p["variants"])
    assert all("recommended_variant" not in p for p in response.json())


def _best_that_fits(provider: dict, budget: int) -> str | None:
    fitting = [v for v in provider["variants"] if v["fit"]["memory"]["total_bytes"] <= budget]
    return min(fitting, key=lambda v: quality_rank(v["quantization"]))["quantization"] if fitting else None


def test_with_2_gb_of_vram_the_largest_variant_whose_total_fits_is_recommended(llama_hub, hub_client_factory):
    client = hub_client_factory()

    providers = client.get(providers_url(fit="true", vram_gb=2, ram_gb=16)).json()

    bartowski = next(p for p in providers if p["repo_id"].startswith("bartowski/"))
    assert bartowski["recommended_variant"] == "Q6_K"
    assert bartowski["recommended_variant"] == _best_that_fits(bartowski, 2 * GIB)
    by_label = {v["quantization"]: v["fit"] for v in bartowski["variants"]}
    assert by_label["Q6_K"]["fit"] == "full_gpu" and by_label["Q6_K"]["memory"]["total_bytes"] <= 2 * GIB
    assert by_label["Q8_0"]["fit"] == "partial_gpu" and by_label["Q8_0"]["memory"]["total_bytes"] > 2 * GIB
    assert by_label["F16"]["fit"] == "partial_gpu" and by_label["F16"]["gpu_layers"] < 16
    assert by_label["Q4_K_M"]["memory"]["weights_bytes"] == weights_bytes("Q4_K_M")
    assert by_label["Q4_K_M"]["context_length"] == 8192  # the default, below the model's 131072
    for provider in providers:  # every provider: its own best that fits
        assert provider.get("recommended_variant") == _best_that_fits(provider, 2 * GIB)


def test_with_no_gpu_and_1_gb_of_ram_nothing_or_something_smaller_is_recommended(llama_hub, hub_client_factory):
    client = hub_client_factory()

    providers = client.get(providers_url(fit="true", vram_gb=0, ram_gb=1)).json()

    bartowski = next(p for p in providers if p["repo_id"].startswith("bartowski/"))
    assert bartowski.get("recommended_variant") is None
    for variant in bartowski["variants"]:
        assert variant["fit"]["fit"] == "too_large"
        assert variant["fit"]["gpu_layers"] == 0
        assert any("1.0 GiB of RAM" in reason for reason in variant["fit"]["reasons"])

    roomier = client.get(providers_url(fit="true", vram_gb=0, ram_gb=1.5)).json()
    bartowski = next(p for p in roomier if p["repo_id"].startswith("bartowski/"))
    assert quality_rank(bartowski["recommended_variant"]) > quality_rank("Q6_K")  # smaller than with the GPU
    assert bartowski["recommended_variant"] == _best_that_fits(bartowski, int(1.5 * GIB))


def test_hub_fit_of_a_split_variant_reads_only_its_parts(llama_hub, hub_client_factory):
    client = hub_client_factory()
    llama_hub.reset_requests()

    response = client.get("/hub/fit", params={"repo_id": "someone/Llama-3.2-1B-Instruct-split-GGUF",
                                                "quantization": "Q8_0", "vram_gb": 8, "ram_gb": 16, "context": 4096})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["fit"] == "full_gpu" and body["gpu_layers"] == body["total_layers"] == 16
    assert body["memory"]["weights_bytes"] == weights_bytes("Q8_0")  # both parts' tensors counted
    assert body["memory"]["kv_cache_bytes"] == 16 * 2 * 8 * 64 * 2 * 4096
    assert body["context_length"] == 4096
    assert body["target"] == {"ram_bytes": 16 * GIB, "gpu_free_bytes": [8 * GIB], "unified_memory": False}
    read = {r.query["path"][0] for r in cdn_requests(llama_hub)}
    assert read == set(PROVIDERS["someone/Llama-3.2-1B-Instruct-split-GGUF"])


def test_hub_fit_by_filename_and_errors(llama_hub, hub_client_factory):
    client = hub_client_factory()
    repo = "bartowski/Llama-3.2-1B-Instruct-GGUF"

    by_name = client.get("/hub/fit", params={"repo_id": repo, "filename": "Llama-3.2-1B-Instruct-Q3_K_M.gguf",
                                              "vram_gb": 0, "ram_gb": 4})
    assert by_name.status_code == 200, by_name.text
    assert by_name.json()["quantization"] == "Q3_K_M" and by_name.json()["fit"] == "cpu"

    assert client.get("/hub/fit", params={"repo_id": repo, "quantization": "IQ1_S"}).json()["error_code"] == "NOT_FOUND"
    assert client.get("/hub/fit", params={"repo_id": "nobody/nothing", "quantization": "Q4_K_M"}).status_code == 404
    assert client.get("/hub/fit", params={"repo_id": repo}).status_code == 422
    assert client.get("/hub/fit", params={"repo_id": repo, "quantization": "Q8_0", "context": 0}).status_code == 422
    assert client.get("/hub/fit", params={"repo_id": repo, "quantization": "Q8_0", "vram_gb": -1}).status_code == 422


def test_a_file_that_is_not_gguf_gets_no_fit_and_a_reason(hub_env, hub_client_factory):
    hub_env.add_repo(FakeRepo(BASE, files={"config.json": b"{}"}))
    hub_env.add_repo(FakeRepo("odd/Llama-GGUF", tags=["gguf", f"base_model:quantized:{BASE}"],
                              card_data={"base_model": BASE},
                              files={"odd-Q4_K_M.gguf": b"not a gguf file at all" * 10,
                                     "odd-Q8_0.gguf": llama_header_bytes("Q8_0")}))
    client = hub_client_factory()

    (provider,) = client.get(providers_url(fit="true", vram_gb=4, ram_gb=8)).json()

    fits = {v["quantization"]: v.get("fit") for v in provider["variants"]}
    assert fits["Q4_K_M"] is None and fits["Q8_0"]["fit"] == "full_gpu"
    assert any("Q4_K_M" in reason and "magic" in reason for reason in provider["reasons"])
    assert provider["recommended_variant"] == "Q8_0"
    bad = client.get("/hub/fit", params={"repo_id": "odd/Llama-GGUF", "quantization": "Q4_K_M"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_FILE"


def test_a_header_larger_than_the_cap_is_refused(hub_env, hub_client_factory, monkeypatch):
    from model_manager.core.services.hub import remote_header

    monkeypatch.setattr(remote_header, "MAX_HEADER_BYTES", 4 * MIB)  # instead of 64 MiB, to keep the test small
    hub_env.add_repo(FakeRepo("big/Header-GGUF", files={"big-Q8_0.gguf": llama_header_bytes("Q8_0")}))
    client = hub_client_factory()

    response = client.get("/hub/fit", params={"repo_id": "big/Header-GGUF", "quantization": "Q8_0"})

    assert response.status_code == 400
    assert "no complete GGUF header in its first" in response.json()["message"]
    assert sum(hub_env.bytes_served.values()) <= 4 * MIB
    assert MAX_HEADER_BYTES == 64 * MIB


def test_the_token_goes_to_the_hub_and_never_to_the_cdn(llama_hub, hub_client_factory):
    from tests.hub_fixtures import DEFAULT_VALID_TOKEN

    llama_hub.add_repo(FakeRepo("gatedco/Llama-3.2-1B-Instruct-GGUF", gated="manual",
                                files={"gated-Llama-3.2-1B-Instruct-Q4_K_M.gguf": llama_header_bytes("Q4_K_M") + DATA}))
    client = hub_client_factory(HF_TOKEN=DEFAULT_VALID_TOKEN)
    llama_hub.reset_requests()

    response = client.get("/hub/fit", params={"repo_id": "gatedco/Llama-3.2-1B-Instruct-GGUF",
                                                "quantization": "Q4_K_M", "vram_gb": 4, "ram_gb": 8})

    assert response.status_code == 200, response.text
    resolves = [r for r in llama_hub.requests_to("hub") if "/resolve/" in r.path]
    assert [r.authorization for r in resolves] == [f"Bearer {DEFAULT_VALID_TOKEN}"]
    assert cdn_requests(llama_hub) and all(r.authorization is None for r in cdn_requests(llama_hub))


def test_a_gated_repo_without_access_is_not_read(hub_env, hub_client_factory):
    hub_env.add_repo(FakeRepo(BASE, files={"config.json": b"{}"}))
    hub_env.add_repo(FakeRepo("gatedco/Llama-GGUF", tags=["gguf", f"base_model:quantized:{BASE}"], gated="manual",
                              card_data={"base_model": BASE}, files={"g-Q8_0.gguf": llama_header_bytes("Q8_0")}))
    client = hub_client_factory()  # no HF_TOKEN
    hub_env.reset_requests()

    (provider,) = client.get(providers_url(fit="true", vram_gb=4, ram_gb=8)).json()

    assert provider["variants"][0].get("fit") is None and provider.get("recommended_variant") is None
    assert any("gated" in reason for reason in provider["reasons"])
    assert [r for r in hub_env.requests if "/resolve/" in r.path or r.host == "cdn"] == []


async def test_the_same_header_asked_twice_at_once_is_fetched_once(llama_hub, tmp_path):
    import asyncio

    from model_manager.core.catalogue import Catalogue
    from model_manager.core.fit.service import FitService
    from model_manager.core.services.huggingface_service import HuggingFaceService
    from tests.hub_fixtures import hub_settings

    settings = hub_settings(tmp_path, llama_hub)
    catalogue = Catalogue(tmp_path / "catalogue.sqlite3")
    catalogue.open()
    try:
        service = FitService(settings, catalogue, HuggingFaceService(settings))
        llama_hub.reset_requests()
        ask = lambda: service.fit_hub("bartowski/Llama-3.2-1B-Instruct-GGUF", quantization="Q8_0",  # noqa: E731
                                      ram_gb=8, vram_gb=0)
        first, second = await asyncio.gather(ask(), ask())
    finally:
        catalogue.close()

    assert first == second and first.fit == "cpu"
    assert len([r for r in llama_hub.requests_to("hub") if "/resolve/" in r.path]) == 1
    assert service.headers.fetched == 1


def test_a_projector_given_is_counted_with_the_model(hub_env, hub_client_factory, tmp_path):
    from tests.gguf_factory import write_mmproj

    projector = write_mmproj(tmp_path / "mmproj.gguf", tensors=3, tensor_elements=1024).read_bytes()
    hub_env.add_repo(FakeRepo("vision/Llama-GGUF", files={"vision-Q4_K_M.gguf": llama_header_bytes("Q4_K_M"),
                                                          "mmproj-vision-F16.gguf": projector}))
    client = hub_client_factory()
    params = {"repo_id": "vision/Llama-GGUF", "quantization": "Q4_K_M", "vram_gb": 8, "ram_gb": 16}

    alone = client.get("/hub/fit", params=params).json()
    with_projector = client.get("/hub/fit", params={**params, "projector": "mmproj-vision-F16.gguf"}).json()
    not_one = client.get("/hub/fit", params={**params, "projector": "vision-Q4_K_M.gguf"})

    assert with_projector["memory"]["weights_bytes"] - alone["memory"]["weights_bytes"] == 3 * 1024 * 4
    assert alone["memory"]["weights_bytes"] == weights_bytes("Q4_K_M")
    assert any("mmproj-vision-F16.gguf" in reason for reason in with_projector["reasons"])
    assert not_one.status_code == 404
