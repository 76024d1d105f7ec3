"""The OpenAPI document tells the whole truth: schemathesis runs every check over every operation of the live
service (the fake Hub behind it) and finds nothing. A client generated from /openapi.json knows every outcome.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_manager.core.models import REPO_FILENAME_MAX_LENGTH, REPO_FILENAME_PATTERN
from model_manager.core.services.downloads.filenames import filename_problem
from tests.conftest import TEST_TOKEN, LiveServer
from tests.fake_hub.server import FakeHub, FakeRepo
from tests.llama.models import LLAMA_GQA, write_model
from tests.gguf_factory import write_gguf
from tests.hub_fixtures import add_provider_repos, add_search_repos, hub_settings

# The SSE stream (GET only) never ends on its own: a fuzzer cannot read it to the end.
SKIPPED_PATHS = ["/local/download/status"]
MAX_EXAMPLES = 12  # per operation and phase; the whole run stays well under a minute on 2 cores
SEED = 20261201  # a fixed seed: the run is the same every time, so a finding is reproducible
TINY_REPO = "contract/Tiny-GGUF"
HOOKS_MODULE = "tests.app.schemathesis_hooks"  # gives schema-valid uploads the bytes of a real GGUF file
REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ContractService:
    """The live service and what was put in it before the run, for schemathesis to use beside its own data."""

    server: LiveServer
    config_file: Path
    upload_file: Path


def _config(hub: FakeHub, model_id: str, download_id: str, import_files: list[str]) -> str:
    """schemathesis.toml: values that exist (Hub repos, a library model, a download, files to import), drawn
    now and then in place of generated ones, so requests reach past the 404s into the real work; and the hooks."""
    repo_ids = sorted(repo.repo_id for repo in hub.repos)
    dictionaries = {
        "repo-ids": repo_ids,
        "authors": sorted({repo_id.split("/")[0] for repo_id in repo_ids}),
        "model-names": sorted({repo_id.split("/")[1] for repo_id in repo_ids}),
        "model-ids": [model_id],
        "download-ids": [download_id],
        "import-files": import_files,
    }
    bindings = {
        "path.author": "authors", "path.model_name": "model-names", "path.model_id": "model-ids",
        "path.download_id": "download-ids", "query.repo_id": "repo-ids", "body.repo_id": "repo-ids",
        # Not `body.filename` nor `body.quantization`: a drawn value is put in even where the generated body has
        # no such field, and a body with both breaks the schema's oneOf.
        "body.file_path": "import-files",
    }
    lines = [f'hooks = "{HOOKS_MODULE}"', "", "[dictionaries]"]
    lines += [f"{name} = {{ values = {json.dumps(values)} }}" for name, values in dictionaries.items()]
    lines += ["", "[parameters]"]
    lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.5 }}' for key, name in bindings.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def contract_service(tmp_path: Path, hub_env: FakeHub) -> Iterator[ContractService]:
    add_search_repos(hub_env)
    add_provider_repos(hub_env)
    tiny = write_gguf(tmp_path / "tiny-Q8_0.gguf", file_type=7).read_bytes()
    hub_env.add_repo(FakeRepo(TINY_REPO, tags=["gguf"], files={"tiny-Q8_0.gguf": tiny}))
    # Hub answers are never cached here: each request exercises the real client against the fake Hub. A loaded
    # machine must not turn a slow fake Hub into a 502 (a server error to schemathesis).
    settings = hub_settings(
        tmp_path, hub_env, HUB_CACHE_TTL_SECONDS="0", HUB_TIMEOUT_SECONDS="30", LOG_LEVEL="ERROR"
    )
    import_files = [str(write_gguf(settings.import_allowed_dirs[0] / f"import-{i}.gguf", name=f"M{i}")) for i in range(3)]
    server = LiveServer(settings).start()
    try:
        with server.client() as client:
            # A model of a real architecture, so that its fit (and everything else) can be answered for real.
            seed_file = write_model(settings.import_allowed_dirs[0] / "seed.gguf", replace(LLAMA_GQA, n_vocab=512))
            model = client.post("/local/import", json={"file_path": str(seed_file)})
            download = client.post("/local/download", json={"repo_id": TINY_REPO, "quantization": "Q8_0"})
        assert model.status_code == 201 and download.status_code == 202, (model.text, download.text)
        config_file = tmp_path / "schemathesis.toml"
        config_file.write_text(_config(hub_env, model.json()["model_id"], download.json()["download_id"], import_files))
        upload = write_gguf(tmp_path / "upload.gguf", name="Uploaded")
        yield ContractService(server, config_file, upload)
    finally:
        server.stop()


def schemathesis_command(service: ContractService, report_dir: Path) -> list[str]:
    """The schemathesis CLI run over the live service, as a person would type it (see docs/api-additions.md)."""
    command = [
        sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        "--config-file", str(service.config_file),
        "run", f"{service.server.url}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {TEST_TOKEN}",
        "--max-examples", str(MAX_EXAMPLES),
        "--seed", str(SEED),
        "--workers", "1",
        "--request-timeout", "20",
        "--report", "junit", "--report-dir", str(report_dir),
    ]
    for path in SKIPPED_PATHS:
        command += ["--exclude-path", path]
    return command


def test_schemathesis_with_every_check_finds_nothing(contract_service, tmp_path):
    # Run in tmp_path: schemathesis keeps a cache folder in its working directory.
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "CONTRACT_UPLOAD_GGUF": str(contract_service.upload_file)}
    result = subprocess.run(
        schemathesis_command(contract_service, tmp_path / "report"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env,
    )
    summary = result.stdout[-20000:]
    assert result.returncode == 0, summary
    assert re.search(r"\d+ generated, (\d+) passed", summary), summary
    print(summary)


# ------------------------------------------------------------------ the document's patterns are the code's checks

_NAME_PIECES = ["", ".", "..", "...", "a", "Q4_K_M", "a:b", ".a", "..a", "é", " ", "\x00", "\x1f", "\x7f", "\\"]
_GGUF_ENDINGS = ["", ".gguf", ".GGUF", ".GgUf", ".gguf.part", "gguf"]


@st.composite
def repo_filenames(draw) -> str:
    """Names near every edge of the check: odd segments, control characters, colons, case, the .gguf ending."""
    segments = draw(st.lists(st.sampled_from(_NAME_PIECES) | st.text(max_size=6), min_size=1, max_size=4))
    return draw(st.sampled_from(["", "/"])) + "/".join(segments) + draw(st.sampled_from(_GGUF_ENDINGS))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(repo_filenames())
def test_the_documented_filename_pattern_is_exactly_the_download_check(name):
    documented = re.fullmatch(REPO_FILENAME_PATTERN, name) is not None and len(name) <= REPO_FILENAME_MAX_LENGTH
    assert documented == (filename_problem(name) is None), (name, filename_problem(name))


def test_the_document_declares_the_envelope_for_every_error_of_every_operation(client):
    document = client.get("/openapi.json").json()
    checked = 0
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            errors = {status: answer for status, answer in operation["responses"].items() if int(status) >= 400}
            if "security" in operation:
                assert "401" in errors, (method, path)
            for status, answer in errors.items():
                schema = answer["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorEnvelope"}, (method, path, status)
                checked += 1
    assert checked >= 40
    assert "HTTPValidationError" not in document["components"]["schemas"]
