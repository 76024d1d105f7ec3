"""An httpcore network backend over plain non-blocking sockets, read straight from the event loop.

httpcore's default backend goes through anyio and asyncio's transports: every read gets a cancel scope,
the transport reads 256 KiB at a time, and anyio pauses and resumes reading around each read (two
`epoll_ctl` calls). On a fast link the event loop spent about half its time there (py-spy, a 1 GiB
download over loopback). Here a read is one `recv` of up to `read_bytes` when data is waiting; only
when none is does it register for readability, with the timeout. TLS uses a non-blocking `SSLSocket`
(the handshake, reads and writes retry on `SSLWant*`), so https takes the same path.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any

import httpcore
from httpcore._utils import is_socket_readable

_WOULD_BLOCK = (BlockingIOError, InterruptedError)


class SocketBackend(httpcore.AsyncNetworkBackend):
    """Connects TCP sockets for httpcore; streams read up to `read_bytes` per call."""

    def __init__(self, read_bytes: int) -> None:
        self._read_bytes = read_bytes

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        # asyncio.timeout, never asyncio.wait_for: on Python 3.11 wait_for swallows a cancel that lands in
        # the loop iteration where the awaited thing completes, and a cancelled download then runs on.
        try:
            async with asyncio.timeout(timeout):
                infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        last: BaseException | None = None
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for option in socket_options or ():
                    sock.setsockopt(*option)
                if local_address:
                    sock.bind((local_address, 0))
                async with asyncio.timeout(timeout):
                    await loop.sock_connect(sock, address)
                return SocketStream(sock, self._read_bytes)
            except TimeoutError as exc:
                sock.close()
                raise httpcore.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
            except OSError as exc:
                sock.close()
                last = exc
            except BaseException:
                sock.close()
                raise
        raise httpcore.ConnectError(str(last) if last else f"cannot connect to {host}:{port}")

    async def connect_unix_socket(self, *args: Any, **kwargs: Any) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for downloads")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class SocketStream(httpcore.AsyncNetworkStream):
    """One connection: a non-blocking socket (or SSLSocket) driven by the running event loop."""

    def __init__(self, sock: socket.socket, read_bytes: int) -> None:
        self._sock = sock
        self._read_bytes = read_bytes

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        size = max(max_bytes, self._read_bytes)
        return await self._receive(lambda: self._sock.recv(size), timeout)

    async def read_into(self, view: memoryview, timeout: float | None = None) -> int:
        """Receive into `view` (no copy in Python); 0 when the peer closed the connection."""
        return await self._receive(lambda: self._sock.recv_into(view), timeout)

    async def _receive(self, receive, timeout: float | None):
        """`receive()` once the socket is ready, waiting (up to `timeout`) as often as it would block."""
        while True:
            try:
                return receive()
            except (*_WOULD_BLOCK, ssl.SSLWantReadError):
                await self._wait(readable=True, timeout=timeout, error=httpcore.ReadTimeout)
            except ssl.SSLWantWriteError:
                await self._wait(readable=False, timeout=timeout, error=httpcore.ReadTimeout)
            except OSError as exc:
                raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        view = memoryview(buffer)
        while view:
            try:
                view = view[self._sock.send(view) :]
            except (*_WOULD_BLOCK, ssl.SSLWantWriteError):
                await self._wait(readable=False, timeout=timeout, error=httpcore.WriteTimeout)
            except ssl.SSLWantReadError:
                await self._wait(readable=True, timeout=timeout, error=httpcore.WriteTimeout)
            except OSError as exc:
                raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        try:
            wrapped = ssl_context.wrap_socket(
                self._sock, server_hostname=server_hostname, do_handshake_on_connect=False
            )
        except OSError as exc:
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        stream = SocketStream(wrapped, self._read_bytes)
        try:
            while True:
                try:
                    wrapped.do_handshake()
                    return stream
                except ssl.SSLWantReadError:
                    await stream._wait(readable=True, timeout=timeout, error=httpcore.ConnectTimeout)
                except ssl.SSLWantWriteError:
                    await stream._wait(readable=False, timeout=timeout, error=httpcore.ConnectTimeout)
        except (OSError, ssl.SSLError) as exc:
            wrapped.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        except BaseException:
            wrapped.close()
            raise

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._sock if isinstance(self._sock, ssl.SSLSocket) else None
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "is_readable":
            return is_socket_readable(self._sock)
        return None

    async def _wait(self, *, readable: bool, timeout: float | None, error: type[Exception]) -> None:
        """Until the socket is readable (or writable); `error` after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self._sock.fileno()
        if fd < 0:
            raise httpcore.ReadError("the connection is closed")

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if readable:
            loop.add_reader(fd, wake)
        else:
            loop.add_writer(fd, wake)
        try:
            async with asyncio.timeout(timeout):  # not wait_for: see connect_tcp
                await ready
        except TimeoutError as exc:
            raise error(f"no progress for {timeout} s") from exc
        finally:
            if readable:
                loop.remove_reader(fd)
            else:
                loop.remove_writer(fd)
