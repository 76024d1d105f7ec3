"""Reading a response body straight from the socket into our own buffers, past httpx and h11.

Through httpx, each byte of a body is copied four times on the event loop (into h11's buffer, out of it
twice, into `bytes` by httpcore) before our writer copies it once more; with eight connections at
50 MB/s each that work, not the network, was the limit (py-spy: the event loop busy 90% of the time,
half of it in those copies). Once h11 has handed over what it had buffered, `DirectBody` receives the
rest of a Content-Length body with `recv_into` into the writer's buffers and keeps h11's count of the
bytes still due in step, so the connection goes back to the pool as usual at the end.

It depends on httpx's and httpcore's internals (the objects behind `response.stream`); `DirectBody.of`
returns None whenever they are not what it expects, and the caller then reads the body through httpx.
"""

from __future__ import annotations

from typing import Any

import h11
import httpcore
import httpx

from model_manager.core.services.downloads.sockets import SocketStream


class DirectBody:
    """The rest of one response body, read from its socket. Get one with `of(response)`."""

    def __init__(self, stream: SocketStream, reader: Any, timeout: float | None) -> None:
        self._stream = stream
        self._reader = reader  # h11's ContentLengthReader of this response
        self._timeout = timeout

    @classmethod
    def of(cls, response: httpx.Response) -> DirectBody | None:
        """A direct reader for `response`, or None when it cannot be read this way (then use httpx)."""
        try:
            connection = response.stream._stream._httpcore_stream._stream._connection  # type: ignore[attr-defined]
            state = connection._h11_state
            stream = connection._network_stream
            reader = state._reader
        except AttributeError:
            return None
        if not isinstance(stream, SocketStream) or type(reader).__name__ != "ContentLengthReader":
            return None
        if state.their_state is not h11.SEND_BODY or len(state._receive_buffer) or not hasattr(reader, "_remaining"):
            return None  # h11 still holds body bytes: they must come through it first
        timeout = response.request.extensions.get("timeout", {}).get("read")
        return cls(stream, reader, timeout)

    @property
    def remaining(self) -> int:
        return self._reader._remaining

    async def read_into(self, view: memoryview) -> int:
        """Receive up to len(view) bytes of the body (never past its end); 0 once it is complete.

        Raises httpx.ReadTimeout, httpx.ReadError, or httpx.RemoteProtocolError when the server closes
        the connection before the end of the body.
        """
        remaining = self._reader._remaining
        if remaining <= 0:
            return 0
        try:
            count = await self._stream.read_into(view[:remaining], self._timeout)
        except httpcore.ReadTimeout as exc:
            raise httpx.ReadTimeout(str(exc)) from exc
        except httpcore.ReadError as exc:
            raise httpx.ReadError(str(exc)) from exc
        if count == 0:
            raise httpx.RemoteProtocolError(
                f"peer closed connection without sending complete message body ({remaining} bytes missing)"
            )
        self._reader._remaining = remaining - count  # h11 then sees the end of the body as usual
        return count
