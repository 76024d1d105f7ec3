"""Streaming multipart/form-data parsing for uploads: the file part flows to the caller, never held whole."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from model_manager.core.errors import InvalidFileError

FILE_FIELD = "file"
# The text fields the form takes beside the file, each with its longest value in characters.
TEXT_FIELDS = {"display_name": 200}
MAX_FIELD_BYTES = 4 * max(TEXT_FIELDS.values())  # 4 bytes per character at most in UTF-8

# The form as the OpenAPI document shows it, from the same constants the parser enforces.
UPLOAD_FORM_SCHEMA = {
    "type": "object",
    "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {"type": "string", "format": "binary", "description": "The .gguf file"},
        "display_name": {"type": "string", "maxLength": TEXT_FIELDS["display_name"], "description": "Name in the library"},
    },
    "additionalProperties": False,
}
UPLOAD_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": UPLOAD_FORM_SCHEMA,
            # The part's file name matters: it must end in .gguf (else 400 INVALID_FILE) and names the library file.
            "encoding": {
                FILE_FIELD: {
                    "contentType": "application/octet-stream",
                    "headers": {
                        "Content-Disposition": {
                            "description": "Carries the file name, which must end in .gguf",
                            "schema": {"type": "string", "example": 'form-data; name="file"; filename="model.gguf"'},
                        }
                    },
                }
            },
        }
    },
}


def form_error(message: str, field: str = FILE_FIELD) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": ("body", field), "msg": message, "input": None}])


class MultipartUpload:
    """Parses a multipart/form-data request body as it arrives: the `file` part's bytes stream out
    (never held whole), the small fields around it are kept in `fields`.

    Raises `InvalidFileError` when the body is cut off (client gone, or no closing boundary) or is
    not valid multipart (python-multipart bounds each part's headers), and `RequestValidationError` for a
    missing or second `file` part, an unknown field, a text field sent twice, sent as a file, or too long.
    Each field may come once, so the number of parts is bounded too.
    """

    def __init__(self, request: Request) -> None:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        boundary = options.get(b"boundary")
        if content_type != b"multipart/form-data" or not boundary:
            raise form_error("send the file as multipart/form-data in the field 'file'")
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self._body = request.stream()
        self._file_bytes: list[bytes] = []
        self._ended = False
        self._headers: dict[bytes, bytes] = {}
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._part: str | None = None  # FILE_FIELD, another field's name, or None for a part we drop
        self._value = bytearray()
        callbacks = {
            "on_part_begin": self._on_part_begin,
            "on_header_field": lambda data, start, end: self._header_field.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._header_value.extend(data[start:end]),
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": self._on_part_data,
            "on_part_end": self._on_part_end,
            "on_end": self._on_end,
        }
        try:
            self._parser = MultipartParser(boundary, callbacks)
        except FormParserError as error:
            raise InvalidFileError(f"the upload's multipart boundary is not valid: {error}") from None

    async def open_file(self) -> str:
        """Parse up to the `file` part's headers and return the file name the client gave."""
        while self.filename is None:
            if self._ended:
                raise form_error("the form has no field 'file'")
            await self._feed()
        return self.filename

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The `file` part's bytes as they arrive; then the rest of the body is parsed up to its closing boundary."""
        while True:
            if self._file_bytes:
                chunk = b"".join(self._file_bytes)
                self._file_bytes.clear()
                yield chunk
            if self._ended:
                return
            await self._feed()

    async def _feed(self) -> None:
        try:
            chunk = await anext(self._body)
        except StopAsyncIteration:
            raise InvalidFileError("the upload was cut off: the body ended before the multipart closing boundary") from None
        except ClientDisconnect:
            raise InvalidFileError("the upload was cut off: the client disconnected") from None
        try:
            self._parser.write(chunk)
        except MultipartParseError as error:
            raise InvalidFileError(f"the upload is not valid multipart/form-data: {error}") from None

    def _on_part_begin(self) -> None:
        self._headers = {}
        self._part = None
        self._value = bytearray()

    def _on_header_end(self) -> None:
        self._headers[bytes(self._header_field).lower()] = bytes(self._header_value)
        self._header_field.clear()
        self._header_value.clear()

    def _on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if name == FILE_FIELD:
            if self.filename is not None:
                raise form_error("send one file per request")
            self.filename = options.get(b"filename", b"").decode("utf-8", "replace")
        elif name not in TEXT_FIELDS:
            known = ", ".join(repr(field) for field in (FILE_FIELD, *TEXT_FIELDS))
            raise form_error(f"unknown field {name!r}: the form takes {known}", name)
        elif name in self.fields:
            raise form_error(f"send the field {name!r} once", name)
        elif b"filename" in options:
            raise form_error(f"the field {name!r} is text, not a file", name)
        self._part = name

    def _on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._part == FILE_FIELD:
            self._file_bytes.append(data[start:end])
        elif self._part is not None:
            self._value.extend(data[start:end])
            if len(self._value) > MAX_FIELD_BYTES:
                self._refuse_long_field()

    def _on_part_end(self) -> None:
        if self._part not in (None, FILE_FIELD):
            value = self._value.decode("utf-8", "replace")
            if len(value) > TEXT_FIELDS[self._part]:
                self._refuse_long_field()
            self.fields[self._part] = value
        self._part = None

    def _refuse_long_field(self) -> None:
        raise form_error(f"the field {self._part!r} has at most {TEXT_FIELDS[self._part]} characters", self._part)

    def _on_end(self) -> None:
        self._ended = True


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None
