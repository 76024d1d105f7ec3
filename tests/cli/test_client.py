"""The CLI's client pieces that need no service: SSE parsing, model references, ids, the error envelope."""

from __future__ import annotations

import httpx
import pytest

from model_manager.cli.client import ApiError, CliError, api_error_from, default_service_url, expand_id, parse_sse
from model_manager.cli.pull_commands import parse_model_reference
from model_manager.core.config import Settings


def test_sse_events_are_split_on_blank_lines_and_keep_their_id() -> None:
    lines = ['id: 1', 'data: {"a": 1}', '', 'id: 2', 'data: {"a": 2}', '']
    events = list(parse_sse(lines))
    assert [(event.id, event.json()) for event in events] == [("1", {"a": 1}), ("2", {"a": 2})]


def test_sse_comments_and_crlf_line_ends_are_ignored() -> None:
    lines = [": ping\r\n", "\r\n", 'data: {"ok": true}\r\n', "\r\n", ": ping"]
    assert [event.json() for event in parse_sse(lines)] == [{"ok": True}]


def test_sse_data_lines_of_one_event_are_joined_with_newlines() -> None:
    assert [event.data for event in parse_sse(["data: one", "data:two", ""])] == ["one\ntwo"]


def test_sse_last_event_without_blank_line_is_still_delivered() -> None:
    assert [event.data for event in parse_sse(["data: last"])] == ["last"]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("owner/name", ("owner/name", None)),
        ("owner/name:q4_k_m", ("owner/name", "Q4_K_M")),
        ("hf.co/owner/name:Q8_0", ("owner/name", "Q8_0")),
        ("https://huggingface.co/owner/name", ("owner/name", None)),
    ],
)
def test_model_references_name_a_repo_and_maybe_a_quantization(reference: str, expected: tuple) -> None:
    assert parse_model_reference(reference) == expected


def test_a_reference_without_owner_is_refused_with_the_expected_form() -> None:
    with pytest.raises(CliError, match="OWNER/NAME"):
        parse_model_reference("llama")


def test_short_ids_expand_to_the_one_id_they_start() -> None:
    assert expand_id("ab12", ["ab12cd", "ff00"]) == "ab12cd"
    assert expand_id("zz", ["ab12cd"]) == "zz"
    with pytest.raises(CliError, match="matches 2 ids"):
        expand_id("a", ["ab", "ac"])


def test_error_message_is_the_envelopes_message() -> None:
    response = httpx.Response(404, json={"error_code": "NOT_FOUND", "message": "no repo x/y", "detail": {}})
    error = api_error_from(response)
    assert isinstance(error, ApiError)
    assert (error.status_code, error.error_code, error.message) == (404, "NOT_FOUND", "no repo x/y")


def test_error_without_envelope_still_gives_a_readable_message() -> None:
    assert api_error_from(httpx.Response(502, text="Bad Gateway")).message == "HTTP 502: Bad Gateway"


def test_default_url_is_the_local_service_and_a_wildcard_host_means_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MODEL_MANAGER_HOST", "MODEL_MANAGER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert default_service_url(Settings(_env_file=None)) == "http://127.0.0.1:8000"
    assert default_service_url(Settings(_env_file=None, MODEL_MANAGER_HOST="0.0.0.0", MODEL_MANAGER_PORT=9000)) == "http://127.0.0.1:9000"
