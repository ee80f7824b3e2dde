"""HTTP/1.1 for the emulator's REST surfaces: h11 framing, a small router, JSON answers.

Theory of operation
-------------------
:func:`serve_http` runs one connection: an ``h11.Connection`` in the server role turns the bytes
into a request head, the :class:`Router` picks the route from the method and path before the body
is read (so an unknown path or an oversize body is refused without buffering it), the body is
collected up to the route's limit, and the route's handler returns an :class:`HttpResponse`. The
connection is kept alive between requests as HTTP/1.1 allows, and closed when either side asks,
when the client is idle for :data:`IDLE_TIMEOUT`, or when a request is malformed (answered 400).

A request asking for a protocol switch (``Connection: Upgrade``) is not served: it is handed back
to the caller as an :class:`~aioiothub.emulator.listeners.UpgradeRequest`, so the port-443
listener can open a WebSocket on the same connection, as IoT Hub serves both on one port.

Handlers raise :class:`HttpError` for refusals; anything else they raise is logged and answered
500, and ends only that request. More routes (the service REST API) plug in with
:meth:`Router.add`. A response with a ``stream`` is sent with chunked transfer encoding, one chunk
per item the stream yields (server-sent events follow telemetry this way), until the stream ends
or the client goes away: the connection is read meanwhile, so a client that leaves an idle stream
is noticed at once, and the connection closes after the stream. A stream that fails midway (its
head is sent, so no 500 can be) is logged and ends that connection only. Status lines carry the
standard reason phrase. :attr:`Router.observer`, when set, is told of every answered request.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Final
from urllib.parse import parse_qsl, unquote

import anyio
import anyio.abc
import h11

from aioiothub.emulator.listeners import PeerInfo, UpgradeRequest

__all__ = [
    "IDLE_TIMEOUT",
    "HttpError",
    "HttpRequest",
    "HttpResponse",
    "Router",
    "reason_phrase",
    "serve_http",
]

logger = logging.getLogger("aioiothub.emulator")

IDLE_TIMEOUT: Final = 30.0
"""Seconds a kept-alive connection may wait for its next request, or a request for its next bytes."""

_MAX_HEAD: Final = 16 * 1024
_DEFAULT_MAX_BODY: Final = 256 * 1024
_RECEIVE_SIZE: Final = 65536


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One request as a route handler sees it.

    Attributes:
        method: ``GET``, ``POST``, ...
        path: the path as sent (still percent-encoded), without the query.
        query: the query parameters, decoded (the last one wins when a name repeats).
        headers: header names in lower case mapped to their values (repeated headers joined by ``,``).
        body: the whole body.
        params: the values the route pattern captured, percent-decoded.
        peer: the connection's peer (``None`` on a Unix socket).
    """

    method: str
    path: str
    query: Mapping[str, str]
    headers: Mapping[str, str]
    body: bytes
    params: Mapping[str, str] = field(default_factory=dict)
    peer: PeerInfo | None = None

    def json(self) -> Any:
        """The body decoded as JSON.

        Raises:
            HttpError: 400, the body is not JSON.
        """
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise HttpError(400, "the request body is not valid JSON") from None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """A response to send: status, headers and the whole body, or a stream of body chunks."""

    status: int
    body: bytes = b""
    headers: Sequence[tuple[str, str]] = ()
    #: Sent chunk by chunk instead of ``body`` when given.
    stream: AsyncIterator[bytes] | None = None

    @classmethod
    def json(cls, status: int, value: Any, headers: Sequence[tuple[str, str]] = ()) -> HttpResponse:
        """A response with ``value`` as its JSON body."""
        body = json.dumps(value, separators=(",", ":")).encode("utf-8")
        return cls(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers))


class HttpError(Exception):
    """A refusal: the handler's request is answered with ``status`` and a JSON error body.

    Attributes:
        status: the HTTP status.
        message: what went wrong, for the client and the log.
        error_code: IoT Hub's numeric error code (e.g. 404103), or ``None``.
        response: a complete response to send instead of the default JSON body.
    """

    def __init__(
        self, status: int, message: str, *, error_code: int | None = None, response: HttpResponse | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.response = response

    def to_response(self) -> HttpResponse:
        """IoT Hub's error shape: ``{"Message": "ErrorCode:…;…", "ExceptionMessage": "…"}``."""
        if self.response is not None:
            return self.response
        code = self.error_code if self.error_code is not None else self.status * 1000
        return HttpResponse.json(
            self.status,
            {"Message": f"ErrorCode:{code};{self.message}", "ExceptionMessage": f"Tracking ID:{uuid.uuid4().hex}"},
        )


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


@dataclass(frozen=True, slots=True)
class _Route:
    method: str
    segments: tuple[str, ...]
    handler: Handler
    max_body: int

    def match(self, parts: Sequence[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.startswith("{") and segment.endswith(":path}"):
                rest = parts[index:]
                if not rest or not all(rest):
                    return None
                params[segment[1:-6]] = unquote("/".join(rest))
                return params
            if index >= len(parts):
                return None
            if segment.startswith("{") and segment.endswith("}"):
                if not parts[index]:
                    return None
                params[segment[1:-1]] = unquote(parts[index])
            elif segment != parts[index]:
                return None
        return params if len(parts) == len(self.segments) else None


class Router:
    """Maps ``(method, path pattern)`` to handlers.

    A pattern is a ``/``-separated path whose segments are literal, ``{name}`` (one segment) or,
    last, ``{name:path}`` (the rest of the path, slashes included).

    Example:
        >>> router = Router()
        >>> async def files(request): ...
        >>> router.add("POST", "/devices/{device_id}/files", files)
    """

    def __init__(self) -> None:
        self._routes: list[_Route] = []
        #: Called with each request and the status it was answered with (traffic logs).
        self.observer: Callable[[HttpRequest, int], None] | None = None

    def add(self, method: str, pattern: str, handler: Handler, *, max_body: int = _DEFAULT_MAX_BODY) -> None:
        """Route ``method pattern`` to ``handler``; bodies over ``max_body`` bytes are answered 413."""
        if not pattern.startswith("/"):
            raise ValueError(f"pattern must start with '/', got {pattern!r}")
        self._routes.append(_Route(method.upper(), tuple(pattern[1:].split("/")), handler, max_body))

    def resolve(self, method: str, path: str) -> tuple[_Route, dict[str, str]]:
        """The route for a request and its captured values.

        Raises:
            HttpError: 404 for an unknown path, 405 for a known path with another method.
        """
        parts = path[1:].split("/") if path.startswith("/") else [path]
        known_path = False
        for route in self._routes:
            params = route.match(parts)
            if params is None:
                continue
            if route.method == method:
                return route, params
            known_path = True
        if known_path:
            raise HttpError(405, f"{method} is not allowed on {path}")
        raise HttpError(404, f"no such resource: {path}")


def reason_phrase(status: int) -> bytes:
    """The standard reason phrase of ``status`` (``b"Not Found"``), or ``b""`` for a code it has none for.

    h11 writes an empty phrase unless given one, and some clients (azure-iot-hub's msrest) report a
    status line without one as an invalid status code.
    """
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _header_map(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    result: dict[str, str] = {}
    for name, value in headers:
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        result[key] = f"{result[key]},{text}" if key in result else text
    return result


def _is_upgrade(headers: Mapping[str, str]) -> bool:
    connection = {token.strip().lower() for token in headers.get("connection", "").split(",")}
    return "upgrade" in connection and "upgrade" in headers


class _Connection:
    """One HTTP connection: h11 state plus the byte stream under it."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        self.peer_closed = False

    async def next_event(self) -> Any:
        while True:
            event = self.h11.next_event()
            if event is not h11.NEED_DATA:
                return event
            if self.peer_closed:
                return h11.ConnectionClosed()
            with anyio.fail_after(IDLE_TIMEOUT):
                try:
                    data = await self.stream.receive(_RECEIVE_SIZE)
                except anyio.EndOfStream:
                    data = b""
            if not data:
                self.peer_closed = True
            self.h11.receive_data(data)

    async def send(self, response: HttpResponse, *, head_only: bool = False) -> None:
        if response.stream is not None:
            await self._send_stream(response, response.stream)
            return
        headers = [
            ("Date", formatdate(usegmt=True)),
            ("Content-Length", str(len(response.body))),
            *response.headers,
        ]
        if response.status >= 400 and self.h11.their_state != h11.DONE:
            headers.append(("Connection", "close"))  # the rest of the request body was not read
        data = self.h11.send(
            h11.Response(status_code=response.status, headers=headers, reason=reason_phrase(response.status))
        )
        if response.body and not head_only:
            data += self.h11.send(h11.Data(data=response.body))
        data += self.h11.send(h11.EndOfMessage())
        await self.stream.send(data)

    async def _send_stream(self, response: HttpResponse, chunks: AsyncIterator[bytes]) -> None:
        # The client's side is read while the stream runs (to notice it leave), so a request it
        # pipelined behind this one could not be served: the connection closes after the stream.
        headers = [
            ("Date", formatdate(usegmt=True)),
            ("Transfer-Encoding", "chunked"),
            ("Connection", "close"),
            *response.headers,
        ]
        head = h11.Response(status_code=response.status, headers=headers, reason=reason_phrase(response.status))
        try:
            await self.stream.send(self.h11.send(head))
            async with anyio.create_task_group() as watch:
                watch.start_soon(self._watch_peer, watch.cancel_scope)
                async for chunk in chunks:
                    if chunk:
                        await self.stream.send(self.h11.send(h11.Data(data=chunk)))
                watch.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The watcher raises nothing: the group holds what the sending side raised, which the
            # caller tells apart (a client gone, or a failing stream) by its type.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            if isinstance(chunks, AsyncGenerator):
                await chunks.aclose()
        if not self.peer_closed:
            await self.stream.send(self.h11.send(h11.EndOfMessage()))

    async def _watch_peer(self, streaming: anyio.CancelScope) -> None:
        """Wait for the client to close its side, then stop the stream being sent to it.

        A stream may have nothing to send for a long while (telemetry that does not come); without
        this, a client that went away would be noticed only at the next write.
        """
        try:
            while True:
                await self.stream.receive(_RECEIVE_SIZE)  # anything sent now is not a request we answer
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
        self.peer_closed = True
        streaming.cancel()


async def _read_body(connection: _Connection, limit: int) -> bytes:
    body = bytearray()
    while True:
        event = await connection.next_event()
        if isinstance(event, h11.Data):
            if len(body) + len(event.data) > limit:
                raise HttpError(413, f"the request body is larger than {limit} bytes")
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            return bytes(body)
        else:
            raise HttpError(400, "the request body ended early")


async def _answer(connection: _Connection, request: h11.Request, router: Router, peer: PeerInfo | None) -> None:
    method = request.method.decode("ascii")
    target = request.target.decode("ascii", "replace")
    path, _, query_text = target.partition("?")
    headers = _header_map(request.headers)
    try:
        route, params = router.resolve(method, path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > route.max_body:
            raise HttpError(413, f"the request body is larger than {route.max_body} bytes")
        body = await _read_body(connection, route.max_body)
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        response = await route.handler(HttpRequest(method, path, query, headers, body, params, peer))
    except HttpError as exc:
        logger.info("HTTP %s %s answered %d: %s", method, path, exc.status, exc.message)
        response = exc.to_response()
    except Exception:
        logger.exception("HTTP %s %s failed", method, path)
        response = HttpError(500, "internal error").to_response()
    if router.observer is not None:
        router.observer(HttpRequest(method, path, {}, headers, b"", {}, peer), response.status)
    await connection.send(response, head_only=method == "HEAD")


def _address(peer: PeerInfo | None) -> str:
    return peer.remote_address if peer is not None else "a local socket"


def _method(request: h11.Request) -> str:
    return request.method.decode("ascii", "replace")


def _path(request: h11.Request) -> str:
    # The path only: a query string can carry a SAS token (the blob endpoint's), never logged.
    return request.target.decode("ascii", "replace").partition("?")[0]


async def serve_http(
    stream: anyio.abc.ByteStream, peer: PeerInfo | None, router: Router
) -> UpgradeRequest | None:
    """Serve requests on one connection until it ends, or until a request asks for an upgrade.

    Args:
        stream: the connection (TLS already unwrapped, or a Unix socket).
        peer: what the listener knows about the client, passed on to handlers.
        router: the routes to serve.

    Returns:
        The upgrade request (for the caller to complete, e.g. as a WebSocket), or ``None`` once the
        connection is done; the caller closes the stream.
    """
    connection = _Connection(stream)
    while True:
        try:
            event = await connection.next_event()
        except h11.RemoteProtocolError as exc:
            if connection.h11.our_state is h11.SEND_RESPONSE or connection.h11.our_state is h11.IDLE:
                status = exc.error_status_hint
                await connection.send(HttpError(status, f"malformed request: {exc}").to_response())
            return None
        except TimeoutError:
            return None
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            return None
        headers = _header_map(event.headers)
        if _is_upgrade(headers):
            trailing, _closed = connection.h11.trailing_data
            return UpgradeRequest(event.target.decode("ascii", "replace"), list(event.headers.raw_items()), trailing)
        try:
            await _answer(connection, event, router, peer)
        except h11.ProtocolError as exc:
            logger.info("HTTP connection ended on a framing error: %s", exc)
            return None
        except TimeoutError:
            return None
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            logger.debug("HTTP connection from %s ended: %r", _address(peer), exc)
            return None
        except Exception:
            # Past the handler (a response stream failing, say): the response is already under way,
            # so no 500 can be sent; this one connection ends and the listener serves the others.
            logger.exception("HTTP %s %s failed while answering", _method(event), _path(event))
            return None
        if connection.h11.our_state is h11.MUST_CLOSE or connection.h11.their_state is not h11.DONE:
            return None
        connection.h11.start_next_cycle()
