"""The real huggingface_hub client (and plain httpx) against the fake Hub."""

from __future__ import annotations

import hashlib
import random
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from tests.fake_hub.server import FakeHub, FakeRepo

TOKEN = "hf_valid_token"
BASE = "meta/Llama-3-8B"
Q4 = "Llama-3-8B.Q4_K_M.gguf"


def blob(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


@pytest.fixture
def api(fake_hub: FakeHub) -> HfApi:
    return HfApi(endpoint=fake_hub.url, token=False)


@pytest.fixture
def llama_repo(fake_hub: FakeHub) -> FakeRepo:
    return fake_hub.add_repo(
        FakeRepo(
            "bartowski/Llama-3-8B-GGUF",
            files={
                "Llama-3-8B.Q4_K_M.gguf": blob(12_000, 1),
                "Llama-3-8B.Q8_0.gguf": blob(20_000, 2),
                "config.json": b'{"model_type": "llama"}',
            },
            downloads=500,
            likes=40,
            tags=["gguf", "text-generation", "license:apache-2.0", "base_model:quantized:meta/Llama-3-8B"],
            pipeline_tag="text-generation",
            library_name="gguf",
            card_data={"license": "apache-2.0", "base_model": "meta/Llama-3-8B"},
        )
    )


def populate(hub: FakeHub) -> None:
    specs = [
        # repo_id, downloads, likes, trending, created, modified, tags
        ("alice/Tiny-GGUF", 10, 5, 1, utc(2024, 1, 1), utc(2024, 5, 1), ["gguf", "license:mit"]),
        ("alice/Small-GGUF", 300, 1, 9, utc(2024, 2, 1), utc(2024, 3, 1), ["gguf", f"base_model:quantized:{BASE}"]),
        ("bob/tiny-safetensors", 1000, 50, 3, utc(2023, 6, 1), utc(2024, 7, 1), ["safetensors"]),
        ("carol/TINY-gguf-q8", 50, 20, 5, utc(2024, 3, 1), utc(2024, 1, 1), ["gguf", "license:mit"]),
        ("dave/other", 5, 0, 0, utc(2022, 1, 1), utc(2022, 1, 1), ["gguf"]),
    ]
    for repo_id, dl, likes, trending, created, modified, tags in specs:
        hub.add_repo(
            FakeRepo(
                repo_id,
                files={"model.gguf": blob(100)},
                downloads=dl,
                likes=likes,
                trending_score=trending,
                created_at=created,
                last_modified=modified,
                tags=tags,
                pipeline_tag="text-generation" if "gguf" in tags else None,
            )
        )


# ---------------------------------------------------------------------------------------------------------------------
# GET /api/models
# ---------------------------------------------------------------------------------------------------------------------


def test_list_models_search_author_filter(fake_hub: FakeHub, api: HfApi) -> None:
    populate(fake_hub)
    ids = lambda **kw: [m.id for m in api.list_models(**kw)]  # noqa: E731

    assert set(ids(search="tiny")) == {"alice/Tiny-GGUF", "bob/tiny-safetensors", "carol/TINY-gguf-q8"}
    assert set(ids(author="alice")) == {"alice/Tiny-GGUF", "alice/Small-GGUF"}
    assert set(ids(filter="gguf", search="tiny")) == {"alice/Tiny-GGUF", "carol/TINY-gguf-q8"}
    assert set(ids(filter=["gguf", "license:mit"])) == {"alice/Tiny-GGUF", "carol/TINY-gguf-q8"}
    assert ids(filter=["gguf", "base_model:quantized:meta/Llama-3-8B"]) == ["alice/Small-GGUF"]
    assert set(ids(pipeline_tag="text-generation", author="bob")) == set()
    assert ids(search="nothing-like-this") == []

    # what the 2.x client sends: repeated `filter`, plain values
    last = fake_hub.requests[-1]
    assert last.path == "/api/models" and last.query == {"search": ["nothing-like-this"]}


def test_list_models_sort_names_sent_by_client(fake_hub: FakeHub, api: HfApi) -> None:
    populate(fake_hub)
    expected = {
        "likes": ("likes", ["bob/tiny-safetensors", "carol/TINY-gguf-q8", "alice/Tiny-GGUF"]),
        "downloads": ("downloads", ["bob/tiny-safetensors", "alice/Small-GGUF", "carol/TINY-gguf-q8"]),
        "created_at": ("createdAt", ["carol/TINY-gguf-q8", "alice/Small-GGUF", "alice/Tiny-GGUF"]),
        "last_modified": ("lastModified", ["bob/tiny-safetensors", "alice/Tiny-GGUF", "alice/Small-GGUF"]),
        "trending_score": ("trendingScore", ["alice/Small-GGUF", "carol/TINY-gguf-q8", "bob/tiny-safetensors"]),
    }
    for sort, (sent, top3) in expected.items():
        models = list(api.list_models(sort=sort, limit=3))
        assert [m.id for m in models] == top3, sort
        query = fake_hub.requests[-1].query
        assert query["sort"] == [sent]
        assert "direction" not in query  # 2.x never sends it; the Hub sorts descending
    m = models[0]
    assert m.created_at == utc(2024, 2, 1) and m.last_modified == utc(2024, 3, 1)
    assert m.downloads == 300 and m.likes == 1 and m.trending_score == 9 and m.author == "alice"
    assert m.pipeline_tag == "text-generation" and m.private is False and m.gated is False and len(m.sha) == 40


def test_list_models_pagination(fake_hub: FakeHub, api: HfApi) -> None:
    populate(fake_hub)
    fake_hub.page_size = 2

    everything = [m.id for m in api.list_models(sort="downloads")]
    assert len(everything) == 5 and len(set(everything)) == 5
    pages = [r for r in fake_hub.requests if r.path == "/api/models"]
    assert len(pages) == 3
    assert "cursor" not in pages[0].query and all("cursor" in p.query for p in pages[1:])
    assert all(p.query["sort"] == ["downloads"] for p in pages)  # the Link URL keeps the query

    fake_hub.reset_requests()
    assert [m.id for m in api.list_models(sort="downloads", limit=3)] == everything[:3]
    assert fake_hub.api_request_count() == 2  # the client stops once it has `limit` items

    fake_hub.page_size = 1000
    fake_hub.reset_requests()
    assert [m.id for m in api.list_models(sort="downloads", limit=2)] == everything[:2]
    assert fake_hub.api_request_count() == 1  # a Link is sent, the client does not follow it
    with httpx.Client() as client:
        r = client.get(f"{fake_hub.url}/api/models", params={"limit": 2, "sort": "downloads"})
    assert len(r.json()) == 2 and 'rel="next"' in r.headers["link"]
    assert "next" in r.links and "cursor=" in r.links["next"]["url"]


def test_list_models_expand_full_carddata_private(fake_hub: FakeHub, api: HfApi, llama_repo: FakeRepo) -> None:
    fake_hub.add_repo(FakeRepo("secret/Private-GGUF", files={"a.gguf": b"x"}, tags=["gguf"], private=True))

    [m] = api.list_models(search="Llama", expand=["likes", "cardData", "gated"])
    assert fake_hub.requests[-1].query["expand"] == ["likes", "cardData", "gated"]
    assert m.likes == 40 and m.card_data.license == "apache-2.0" and m.gated is False
    assert m.downloads is None and m.tags is None  # only what was asked

    [m] = api.list_models(search="Llama", full=True, cardData=True)
    assert {s.rfilename for s in m.siblings} == {Q4, "Llama-3-8B.Q8_0.gguf", "config.json", "README.md"}
    assert m.card_data.base_model == "meta/Llama-3-8B"
    assert fake_hub.requests[-1].query["full"] == ["true"]

    assert [m.id for m in api.list_models(filter="gguf")] == ["bartowski/Llama-3-8B-GGUF"]
    with_token = {m.id for m in api.list_models(filter="gguf", token=TOKEN)}
    assert with_token == {"bartowski/Llama-3-8B-GGUF", "secret/Private-GGUF"}


# ---------------------------------------------------------------------------------------------------------------------
# GET /api/models/{repo_id}, tree
# ---------------------------------------------------------------------------------------------------------------------


def test_model_info_files_metadata(fake_hub: FakeHub, api: HfApi, llama_repo: FakeRepo) -> None:
    info = api.model_info(llama_repo.repo_id, files_metadata=True)
    assert fake_hub.requests[-1].query == {"blobs": ["true"]}
    assert info.id == llama_repo.repo_id and info.sha == llama_repo.sha and info.gated is False
    assert info.card_data.license == "apache-2.0" and info.library_name == "gguf"
    assert "base_model:quantized:meta/Llama-3-8B" in info.tags
    siblings = {s.rfilename: s for s in info.siblings}
    for path, content in llama_repo.files.items():
        assert siblings[path].size == len(content)
    q4 = siblings["Llama-3-8B.Q4_K_M.gguf"]
    assert q4.lfs.sha256 == sha256(llama_repo.files["Llama-3-8B.Q4_K_M.gguf"]) and q4.lfs.size == 12_000
    assert q4.lfs.pointer_size > 100 and len(q4.blob_id) == 40
    assert siblings["config.json"].lfs is None
    assert info.used_storage == sum(len(c) for c in llama_repo.files.values())

    plain = api.model_info(llama_repo.repo_id)
    assert all(s.size is None for s in plain.siblings)

    by_sha = api.model_info(llama_repo.repo_id, revision=llama_repo.sha)
    assert by_sha.sha == llama_repo.sha
    assert fake_hub.requests[-1].path == f"/api/models/{llama_repo.repo_id}/revision/{llama_repo.sha}"
    with pytest.raises(RevisionNotFoundError):
        api.model_info(llama_repo.repo_id, revision="v9")


def test_list_repo_tree(fake_hub: FakeHub, api: HfApi) -> None:
    repo = fake_hub.add_repo(
        FakeRepo(
            "org/split-GGUF",
            files={
                "a.gguf": blob(300),
                "Q8/part-1.gguf": blob(50, 3),
                "Q8/part-2.gguf": blob(60, 4),
                "README.md": b"# hi",
            },
        )
    )
    top = list(api.list_repo_tree(repo.repo_id))
    kinds = {(type(e).__name__, e.path) for e in top}
    assert kinds == {("RepoFolder", "Q8"), ("RepoFile", "a.gguf"), ("RepoFile", "README.md")}

    everything = {e.path: e for e in api.list_repo_tree(repo.repo_id, recursive=True)}
    assert set(everything) == {"Q8", "Q8/part-1.gguf", "Q8/part-2.gguf", "a.gguf", "README.md"}
    part = everything["Q8/part-1.gguf"]
    assert part.size == 50 and part.lfs.sha256 == sha256(repo.files["Q8/part-1.gguf"]) and part.lfs.size == 50
    readme = everything["README.md"]
    assert readme.lfs is None and readme.blob_id == fake_hub.file_meta(repo.repo_id, "README.md").blob_id
    assert fake_hub.requests[-1].query == {"recursive": ["true"], "expand": ["false"]}

    sub = list(api.list_repo_tree(repo.repo_id, path_in_repo="Q8", expand=True))
    assert [e.path for e in sub] == ["Q8/part-1.gguf", "Q8/part-2.gguf"]
    assert sub[0].last_commit.oid == repo.sha and sub[0].security.safe is True

    fake_hub.page_size = 2
    fake_hub.reset_requests()
    assert len(list(api.list_repo_tree(repo.repo_id, recursive=True))) == 5
    assert fake_hub.api_request_count() == 3

    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(repo.repo_id, path_in_repo="nope"))


# ---------------------------------------------------------------------------------------------------------------------
# resolve, CDN, downloads
# ---------------------------------------------------------------------------------------------------------------------


def test_file_metadata_lfs_and_git_file(fake_hub: FakeHub, llama_repo: FakeRepo) -> None:
    path = "Llama-3-8B.Q4_K_M.gguf"
    url = hf_hub_url(llama_repo.repo_id, path, endpoint=fake_hub.url)
    assert url == f"{fake_hub.url}/{llama_repo.repo_id}/resolve/main/{path}"
    assert url == fake_hub.resolve_url(llama_repo.repo_id, path)
    meta = get_hf_file_metadata(url, token=False)
    assert meta.size == 12_000 and meta.etag == sha256(llama_repo.files[path]) and meta.commit_hash == llama_repo.sha
    assert meta.location.startswith(f"{fake_hub.cdn_url}/cdn/{meta.etag}?")
    head = fake_hub.requests[-1]
    assert head.method == "HEAD" and head.host == "hub" and head.status == 302
    assert fake_hub.requests_to("cdn") == []

    cfg = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, "config.json", endpoint=fake_hub.url), token=False)
    assert cfg.location.startswith(fake_hub.url) and cfg.size == len(llama_repo.files["config.json"])
    assert cfg.etag == fake_hub.file_meta(llama_repo.repo_id, "config.json").blob_id
    assert cfg.commit_hash == llama_repo.sha

    sub = fake_hub.add_repo(FakeRepo("org/odd", files={"dir one/x+y.gguf": b"abc"}))
    meta = get_hf_file_metadata(hf_hub_url(sub.repo_id, "dir one/x+y.gguf", endpoint=fake_hub.url))
    assert meta.size == 3 and fake_hub.requests[-1].path == "/org/odd/resolve/main/dir one/x+y.gguf"


def test_hf_hub_download_lfs_and_readme(fake_hub: FakeHub, llama_repo: FakeRepo, tmp_path: Path) -> None:
    path = "Llama-3-8B.Q8_0.gguf"
    local = hf_hub_download(llama_repo.repo_id, path, endpoint=fake_hub.url, cache_dir=tmp_path, token=TOKEN)
    assert Path(local).read_bytes() == llama_repo.files[path]
    assert fake_hub.bytes_served[path] == 20_000
    cdn = fake_hub.requests_to("cdn")
    assert [r.method for r in cdn] == ["GET"] and cdn[0].status == 200
    assert all("authorization" not in r.headers for r in cdn)
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in fake_hub.requests_to("hub"))

    readme = hf_hub_download(llama_repo.repo_id, "README.md", endpoint=fake_hub.url, cache_dir=tmp_path, token=False)
    text = Path(readme).read_text()
    assert text.startswith("---\n") and "license: apache-2.0" in text and "base_model: meta/Llama-3-8B" in text
    assert Path(readme).read_bytes() == llama_repo.files["README.md"]


def test_gated_repo(fake_hub: FakeHub, api: HfApi, tmp_path: Path) -> None:
    repo = fake_hub.add_repo(FakeRepo("meta/Gated-GGUF", files={"m.gguf": blob(5000, 7)}, gated="auto", tags=["gguf"]))
    info = api.model_info(repo.repo_id, files_metadata=True)  # metadata is public
    assert info.gated == "auto" and info.siblings[0].lfs.size == 5000

    url = hf_hub_url(repo.repo_id, "m.gguf", endpoint=fake_hub.url)
    for token in (False, "hf_not_a_valid_token"):
        with pytest.raises(GatedRepoError) as err:
            get_hf_file_metadata(url, token=token)
        assert err.value.response.status_code == 401
        with pytest.raises(GatedRepoError):
            hf_hub_download(repo.repo_id, "m.gguf", endpoint=fake_hub.url, cache_dir=tmp_path, token=token)

    fake_hub.reset_requests()
    local = hf_hub_download(repo.repo_id, "m.gguf", endpoint=fake_hub.url, cache_dir=tmp_path, token=TOKEN)
    assert Path(local).read_bytes() == repo.files["m.gguf"]
    assert fake_hub.requests_to("hub")[0].authorization == f"Bearer {TOKEN}"
    assert fake_hub.requests_to("cdn") and all(r.authorization is None for r in fake_hub.requests_to("cdn"))

    # httpx following the redirect itself drops the header too (other origin)
    with httpx.Client(follow_redirects=True) as client:
        r = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.content == repo.files["m.gguf"]
    assert fake_hub.requests[-1].host == "cdn" and fake_hub.requests[-1].authorization is None


def test_gated_repo_whose_terms_the_account_did_not_accept(fake_hub: FakeHub) -> None:
    fake_hub.valid_tokens.add("hf_other_account")
    repo = fake_hub.add_repo(
        FakeRepo("meta/Gated-GGUF", files={"m.gguf": blob(10, 1)}, gated="manual", access_tokens={TOKEN})
    )
    url = hf_hub_url(repo.repo_id, "m.gguf", endpoint=fake_hub.url)
    assert get_hf_file_metadata(url, token=TOKEN).size == 10
    with pytest.raises(GatedRepoError) as err:  # a valid token, but not in the authorized list: the Hub's 403
        get_hf_file_metadata(url, token="hf_other_account")
    assert err.value.response.status_code == 403


def test_unknown_repo_private_repo_missing_file(fake_hub: FakeHub, api: HfApi, llama_repo: FakeRepo) -> None:
    with pytest.raises(RepositoryNotFoundError) as err:
        api.model_info("nobody/nothing")
    assert err.value.response.status_code == 401 and err.value.response.headers["X-Error-Code"] == "RepoNotFound"
    with pytest.raises(RepositoryNotFoundError) as err:
        api.model_info("nobody/nothing", token=TOKEN)
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        get_hf_file_metadata(hf_hub_url("nobody/nothing", "a.gguf", endpoint=fake_hub.url))

    private = fake_hub.add_repo(FakeRepo("me/private", files={"a.gguf": b"abc"}, private=True))
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(private.repo_id)
    assert api.model_info(private.repo_id, token=TOKEN).private is True
    assert get_hf_file_metadata(hf_hub_url(private.repo_id, "a.gguf", endpoint=fake_hub.url), token=TOKEN).size == 3

    with pytest.raises(EntryNotFoundError) as err:
        get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, "missing.gguf", endpoint=fake_hub.url))
    assert err.value.response.status_code == 404
    assert err.value.response.headers["X-Repo-Commit"] == llama_repo.sha
    with pytest.raises(RevisionNotFoundError):
        get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, "config.json", revision="nope", endpoint=fake_hub.url))


def test_cdn_ranges(fake_hub: FakeHub, llama_repo: FakeRepo) -> None:
    content = llama_repo.files["Llama-3-8B.Q4_K_M.gguf"]
    location = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, Q4, endpoint=fake_hub.url)).location
    etag = f'"{sha256(content)}"'
    with httpx.Client() as client:
        r = client.get(location, headers={"Range": "bytes=100-199"})
        assert r.status_code == 206 and r.content == content[100:200]
        assert r.headers["content-range"] == "bytes 100-199/12000" and r.headers["etag"] == etag
        r = client.get(location, headers={"Range": "bytes=11990-"})
        assert r.status_code == 206 and r.content == content[11990:]
        r = client.get(location, headers={"Range": "bytes=-5"})
        assert r.status_code == 206 and r.content == content[-5:]
        r = client.get(location, headers={"Range": "bytes=12000-"})
        assert r.status_code == 416 and r.headers["content-range"] == "bytes */12000"
        r = client.get(location, headers={"Range": "bytes=10-19", "If-Range": etag})
        assert r.status_code == 206 and r.content == content[10:20]
        r = client.get(location, headers={"Range": "bytes=10-19", "If-Range": '"something-else"'})
        assert r.status_code == 200 and r.content == content
        r = client.head(location)
        assert r.status_code == 200 and r.headers["content-length"] == "12000" and r.headers["accept-ranges"] == "bytes"
        # git files are served by the Hub host itself, with ranges too
        r = client.get(fake_hub.resolve_url(llama_repo.repo_id, "config.json"), headers={"Range": "bytes=0-0"})
        assert r.status_code == 206 and r.content == b"{"
    assert fake_hub.bytes_served["Llama-3-8B.Q4_K_M.gguf"] == 100 + 10 + 5 + 10 + 12000


def test_drop_after_bytes(fake_hub: FakeHub, llama_repo: FakeRepo) -> None:
    path = "Llama-3-8B.Q8_0.gguf"
    location = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, path, endpoint=fake_hub.url)).location
    fake_hub.drop_after_bytes = 5000
    fake_hub.drop_times = 1
    received = bytearray()
    with httpx.Client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            with client.stream("GET", location) as r:
                assert r.headers["content-length"] == "20000"
                for chunk in r.iter_bytes():
                    received += chunk
        assert bytes(received) == llama_repo.files[path][:5000]
        r = client.get(location, headers={"Range": f"bytes={len(received)}-"})  # second time: served normally
        assert r.status_code == 206 and bytes(received) + r.content == llama_repo.files[path]
    assert fake_hub.bytes_served[path] == 20_000 and fake_hub.drop_times == 0


def test_hf_hub_download_resumes_after_drop(fake_hub: FakeHub, llama_repo: FakeRepo, tmp_path: Path) -> None:
    path = "Llama-3-8B.Q8_0.gguf"
    fake_hub.drop_after_bytes = 8000
    local = hf_hub_download(llama_repo.repo_id, path, endpoint=fake_hub.url, cache_dir=tmp_path)
    assert Path(local).read_bytes() == llama_repo.files[path]
    gets = [r for r in fake_hub.requests_to("cdn") if r.method == "GET"]
    assert len(gets) == 2 and gets[1].status in (200, 206)
    # the client buffers 10 MiB chunks: a drop inside the first chunk means starting again from byte 0
    assert "range" not in gets[1].headers and fake_hub.bytes_served[path] == 8000 + 20_000


def test_throttle(fake_hub: FakeHub, llama_repo: FakeRepo) -> None:
    location = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, Q4, endpoint=fake_hub.url)).location
    fake_hub.throttle_bytes_per_second = 40_000
    start = time.monotonic()
    with httpx.Client() as client:
        r = client.get(location)
    elapsed = time.monotonic() - start
    assert r.content == llama_repo.files["Llama-3-8B.Q4_K_M.gguf"]
    assert 0.2 <= elapsed < 1.5  # 12 000 bytes at 40 000 B/s: 0.3 s, less the first 2 000-byte chunk sent at once


def test_concurrent_transfers_counted(fake_hub: FakeHub, llama_repo: FakeRepo) -> None:
    location = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, Q4, endpoint=fake_hub.url)).location
    fake_hub.throttle_bytes_per_second = 24_000  # 0.5 s per transfer
    fake_hub.reset_requests()
    results: list[bytes] = []
    clients = [httpx.Client() for _ in range(3)]
    barrier = threading.Barrier(3)

    def fetch(client: httpx.Client) -> None:
        barrier.wait()
        with client:
            results.append(client.get(location).content)

    threads = [threading.Thread(target=fetch, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r == llama_repo.files["Llama-3-8B.Q4_K_M.gguf"] for r in results)
    assert fake_hub.max_concurrent_file_transfers == 3
    fake_hub.reset_requests()
    assert fake_hub.max_concurrent_file_transfers == 0


def test_api_status_faults(fake_hub: FakeHub, api: HfApi, llama_repo: FakeRepo) -> None:
    fake_hub.api_status = 429
    fake_hub.api_status_times = 1
    with pytest.raises(HfHubHTTPError) as err:
        api.model_info(llama_repo.repo_id)
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "7"
    assert api.model_info(llama_repo.repo_id).id == llama_repo.repo_id  # only once

    fake_hub.api_status, fake_hub.api_status_times = 500, None
    for _ in range(2):
        with pytest.raises(HfHubHTTPError) as err:
            api.model_info(llama_repo.repo_id)
        assert err.value.response.status_code == 500
    fake_hub.reset_faults()
    assert api.model_info(llama_repo.repo_id).sha == llama_repo.sha
    assert fake_hub.api_request_count() == 5

    location = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, Q4, endpoint=fake_hub.url)).location
    fake_hub.file_status, fake_hub.retry_after = 503, 2
    r = httpx.get(location)
    assert r.status_code == 503 and r.headers["retry-after"] == "2"
    assert httpx.head(location).status_code == 200  # HEAD is not a file GET


def test_api_delay_makes_client_time_out(fake_hub: FakeHub, api: HfApi, llama_repo: FakeRepo) -> None:
    fake_hub.api_delay_seconds = 0.5
    with pytest.raises(Exception) as err:
        api.model_info(llama_repo.repo_id, timeout=0.1)
    assert "Timeout" in type(err.value).__name__


def test_corrupt_files(fake_hub: FakeHub, llama_repo: FakeRepo, api: HfApi, tmp_path: Path) -> None:
    path = "Llama-3-8B.Q4_K_M.gguf"
    true_sha = sha256(llama_repo.files[path])
    fake_hub.corrupt_files = {path}
    meta = get_hf_file_metadata(hf_hub_url(llama_repo.repo_id, path, endpoint=fake_hub.url))
    assert meta.etag == true_sha and meta.size == 12_000
    [sibling] = [s for s in api.model_info(llama_repo.repo_id, files_metadata=True).siblings if s.rfilename == path]
    assert sibling.lfs.sha256 == true_sha
    served = httpx.get(meta.location).content
    assert len(served) == 12_000 and served != llama_repo.files[path] and sha256(served) != true_sha
    assert sum(a != b for a, b in zip(served, llama_repo.files[path])) == 1
    # the real client accepts it: it checks the size only
    local = hf_hub_download(llama_repo.repo_id, path, endpoint=fake_hub.url, cache_dir=tmp_path)
    assert Path(local).read_bytes() == served


# ---------------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------------


def test_hub_env_points_the_client_at_the_fake_hub(hub_env: FakeHub, tmp_path: Path) -> None:
    import os

    from huggingface_hub import constants

    assert os.environ["HF_ENDPOINT"] == hub_env.url and os.environ["HF_HUB_DISABLE_XET"] == "1"
    assert "HF_TOKEN" not in os.environ and constants.ENDPOINT == hub_env.url
    repo = hub_env.add_repo(FakeRepo("org/env", files={"m.gguf": b"hello"}))
    assert HfApi().model_info(repo.repo_id).id == repo.repo_id  # no endpoint given
    local = hf_hub_download(repo.repo_id, "m.gguf")  # no endpoint, no cache_dir
    assert Path(local).read_bytes() == b"hello" and str(tmp_path) in local
    assert all(r.authorization is None for r in hub_env.requests)


def test_start_stop_context_manager() -> None:
    with FakeHub(valid_tokens={"t1"}) as hub:
        hub.add_repo(FakeRepo("a/b", files={"x.bin": b"123"}, gated="manual"))
        url = hf_hub_url("a/b", "x.bin", endpoint=hub.url)
        assert get_hf_file_metadata(url, token="t1").size == 3
        with pytest.raises(GatedRepoError):
            get_hf_file_metadata(url, token=TOKEN)
        assert hub.cdn_url != hub.url
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{hub.url}/api/models")
