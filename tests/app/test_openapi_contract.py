"""The OpenAPI document tells the whole truth: schemathesis runs every check over every operation of the live
service (the fake Hub behind it) and finds nothing. A client generated from /openapi.json knows every outcome.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_manager.core.models import REPO_FILENAME_MAX_LENGTH, REPO_FILENAME_PATTERN
from model_manager.core.services.downloads.filenames import filename_problem
from tests.conftest import TEST_TOKEN, LiveServer
from tests.fake_hub.server import FakeHub
from tests.hub_fixtures import add_provider_repos, add_search_repos, hub_settings

CONFIG_FILE = Path(__file__).with_name("schemathesis.toml")
# The SSE stream (GET only) never ends on its own: a fuzzer cannot read it to the end.
SKIPPED_PATHS = ["/local/download/status"]
MAX_EXAMPLES = 12  # per operation and phase; the whole run stays well under a minute on 2 cores
SEED = 20261201  # a fixed seed: the run is the same every time, so a finding is reproducible


@pytest.fixture
def contract_server(tmp_path: Path, hub_env: FakeHub) -> Iterator[LiveServer]:
    add_search_repos(hub_env)
    add_provider_repos(hub_env)
    # Hub answers are never cached here: each request exercises the real client against the fake Hub.
    server = LiveServer(hub_settings(tmp_path, hub_env, HUB_CACHE_TTL_SECONDS="0", LOG_LEVEL="ERROR")).start()
    yield server
    server.stop()


def schemathesis_command(server: LiveServer, report_dir: Path) -> list[str]:
    """The schemathesis CLI run over the live service, as a person would type it (see docs/api-additions.md)."""
    command = [
        sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())",
        "--config-file", str(CONFIG_FILE),
        "run", f"{server.url}/openapi.json",
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


def test_schemathesis_with_every_check_finds_nothing(contract_server, tmp_path):
    # Run in tmp_path: schemathesis keeps a cache folder in its working directory.
    result = subprocess.run(
        schemathesis_command(contract_server, tmp_path / "report"),
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    summary = result.stdout[-20000:]
    assert result.returncode == 0, summary
    assert "No issues found" in summary or "passed" in summary, summary
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
