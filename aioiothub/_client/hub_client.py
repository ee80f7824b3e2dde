"""What the device and module clients share: the :class:`HubClient` base and the argument checks both use.

:class:`HubClient` owns the lifetime of one :class:`~aioiothub._session.session.HubSession` (``async with`` opens
it in a task group, leaving the block closes it), and offers what every identity can do: telemetry,
the twin, Plug and Play writable properties, direct methods, the ``errors()`` stream, connection
state and SAS token replacement. The helpers turn what callers pass (a message of any accepted type,
an acknowledgement mode, a connection string or SAS token with further options) into checked values.
:mod:`aioiothub.device_client` and :mod:`aioiothub.module_client` build the public classes on it.

Where the hub, identity and credential are not fixed at construction (a device provisioned through
DPS), the client is given an :class:`IdentityProvider`: it is consulted each time the client is
entered, and again when the hub refuses the credential as the client connects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Collection
from types import MappingProxyType, TracebackType
from typing import Any, Literal, Protocol, Self

import anyio
import anyio.abc

from aioiothub import pnp
from aioiothub._auth.credentials import X509Credential
from aioiothub._client.outbox_delivery import deliver_outbox, new_message_id
from aioiothub._client.settings import identity_from_sas_token, options_from_connection_string
from aioiothub._outbox.outbox import LossKind, OutboxQueue
from aioiothub._session.background_errors import BackgroundError, OutboxMessagesDropped, OutboxMessagesExpired
from aioiothub._session.methods import MethodRequest
from aioiothub._session.session import HubSession, SessionSettings
from aioiothub._session.twin import Twin
from aioiothub.exceptions import AuthenticationError, unwrap_group
from aioiothub.message import Message, encode_json
from aioiothub.options import ClientOptions
from aioiothub.protocol.twin import validate_patch, validate_section_size

__all__ = [
    "AckMode",
    "HubClient",
    "IdentityProvider",
    "MessageLike",
    "identity_from_connection_string",
    "identity_from_sas_token_argument",
    "manual_ack",
]

MessageLike = Message | bytes | str | dict[str, Any]
"""What ``send_message`` accepts: a dict is sent as JSON, bytes and str as the body."""

AckMode = Literal["auto", "manual"]
"""How received messages are acknowledged: as the loop takes them, or by ``await message.acknowledge()``."""

# What Message.json() sets, for dicts sent without building a Message first.
_JSON_PROPERTIES = MappingProxyType({"$.ct": "application/json", "$.ce": "utf-8"})


class IdentityProvider(Protocol):
    """Where a client's hub, identity and credential come from when they are not fixed (DPS).

    The client asks :meth:`settings` each time it is entered; when the hub refuses the credential
    as it connects (CONNACK 4 or 5), it tells :meth:`refused`, which may find a new identity (a
    new registration) and return ``True`` for the client to connect once more with it.
    """

    def settings(self) -> SessionSettings:
        """The checked settings to connect with now."""
        ...

    async def refused(self, error: AuthenticationError) -> bool:
        """The hub refused the credential; ``True`` when :meth:`settings` now names another identity."""
        ...


def manual_ack(ack: object) -> bool:
    if ack not in ("auto", "manual"):
        raise ValueError(f"ack must be 'auto' or 'manual', not {ack!r}")
    return ack == "manual"


def _to_message(message: object) -> Message:
    if isinstance(message, Message):
        return message
    if isinstance(message, bytes | bytearray | memoryview | str):
        return Message(bytes(message) if not isinstance(message, str) else message)
    if isinstance(message, dict):
        return Message.json(message)
    raise TypeError(f"message must be a Message, bytes, str or dict, not {type(message).__name__}")


class HubClient:
    """What device and module clients share: lifecycle, telemetry, twin and direct methods.

    Args:
        settings: the checked settings (the public constructors build them from their arguments).
        provider: where the settings come from at each entry, when they are not fixed.
    """

    def __init__(self, settings: SessionSettings, *, provider: IdentityProvider | None = None) -> None:
        self._settings = settings
        self._provider = provider
        self._session: HubSession | None = None
        self._task_group: anyio.abc.TaskGroup | None = None
        self._outbox: OutboxQueue | None = None

    @classmethod
    def from_settings(cls, settings: SessionSettings, *, provider: IdentityProvider | None = None) -> Self:
        """A client of this class for settings already checked (the factories: DPS, IoT Edge).

        The public constructors only turn their arguments into settings, so nothing of theirs is
        skipped here.
        """
        client = cls.__new__(cls)
        HubClient.__init__(client, settings, provider=provider)
        return client

    def __repr__(self) -> str:
        # The identity and where it connects: what tells clients apart in a log. Never a key or a token.
        settings = self._settings
        module = f" module_id={settings.module_id!r}" if settings.module_id is not None else ""
        state = "connected" if self.connected else "open" if self._session is not None else "not open"
        identity = f"hostname={settings.hostname!r} device_id={settings.device_id!r}{module}"
        return f"<{type(self).__name__} {identity} {state}>"

    # -------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Self:
        if self._task_group is not None:
            raise RuntimeError("the client is already open")
        provider = self._provider
        if provider is None:
            return await self._open()
        self._settings = provider.settings()
        try:
            return await self._open()
        except AuthenticationError as exc:
            if not await provider.refused(exc):
                raise
        self._settings = provider.settings()
        return await self._open()

    async def _open(self) -> Self:
        settings = self._settings
        outbox = None
        if settings.outbox is not None:
            # Claimed before connecting: a file that cannot be used, or an identity another
            # client delivers, is refused at once.
            outbox = await settings.outbox.queue(settings.device_id, settings.module_id)
        try:
            await self._start_session()
        except BaseException:
            if outbox is not None:
                await outbox.release()
            raise
        if outbox is not None:
            session, task_group = self._session, self._task_group
            assert session is not None
            assert task_group is not None
            outbox.on_loss = self._outbox_loss_reporter(session)
            task_group.start_soon(deliver_outbox, outbox, session, name="aioiothub outbox delivery")
            self._outbox = outbox
        return self

    def _outbox_loss_reporter(self, session: HubSession) -> Callable[[LossKind, int], None]:
        ttl = self._settings.outbox.limits.ttl if self._settings.outbox is not None else None

        def report(kind: LossKind, count: int) -> None:
            if kind == "expired":
                session.supervisor.report(OutboxMessagesExpired(count, ttl or 0.0))
            else:
                session.supervisor.report(OutboxMessagesDropped(count))

        return report

    async def _start_session(self) -> None:
        self._session = HubSession(self._settings)
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        try:
            await task_group.start(self._session.run, name="aioiothub connection")
        except BaseException as exc:
            task_group.cancel_scope.cancel()
            try:
                await task_group.__aexit__(type(exc), exc, exc.__traceback__)
            except BaseException as group:
                error = unwrap_group(group)
                raise error from error.__cause__  # not "from None": that would erase the error's own cause
            self._session = None
            raise
        self._task_group = task_group

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        task_group, session = self._task_group, self._session
        if task_group is None or session is None:
            return None
        self._task_group = None
        session.close()
        task_group.cancel_scope.cancel()
        try:
            return await task_group.__aexit__(exc_type, exc, tb)
        except BaseException as group:
            error = unwrap_group(group, fatal=session.fatal_error)
            raise error from error.__cause__  # not "from None": that would erase the error's own cause
        finally:
            self._session = None
            outbox, self._outbox = self._outbox, None
            if outbox is not None:
                with anyio.CancelScope(shield=True):
                    await outbox.release()

    def _require_session(self) -> HubSession:
        if self._session is None:
            raise RuntimeError("the client is not open: use it as 'async with client:'")
        return self._session

    @property
    def outbox(self) -> OutboxQueue | None:
        """This identity's queue in the client's outbox while the client is open; ``None`` without one.

        Example:
            >>> async def drain(client):
            ...     await client.outbox.flush(timeout=60)     # all acknowledged by the hub
            ...     print(client.outbox.statistics())

        Raises:
            RuntimeError: the client has an outbox but is not open.
        """
        if self._settings.outbox is None:
            return None
        if self._outbox is None:
            raise RuntimeError("the client is not open: its outbox queue is claimed by 'async with client:'")
        return self._outbox

    @property
    def connected(self) -> bool:
        """Whether the client has a live connection to the hub right now."""
        return self._session is not None and self._session.connected

    async def wait_connected(self) -> None:
        """Return once the client is connected (at once if it already is)."""
        await self._require_session().current()

    def connection_states(self) -> AsyncIterator[bool]:
        """Yield the connection's state, then ``True`` or ``False`` each time it comes up or goes down.

        The first item is the state when this is called -- for ``async for up in
        client.connection_states()``, when the loop starts; after it, only changes. A reconnect the
        client makes on purpose (to renew its SAS token, or to use one given to
        :meth:`update_sas_token`) replaces the connection and is not reported (operations made
        meanwhile wait for the new one); if the new connection cannot be made, ``False`` is yielded
        then. Unplanned drops
        always yield ``False``, and ``True`` once reconnected. Up to 16 changes wait for a slow
        consumer; changes past those are not queued.

        Example:
            >>> async def watch(client):
            ...     async for up in client.connection_states():
            ...         print("connected" if up else "reconnecting")
        """
        return self._require_session().connection_states()

    def errors(self) -> AsyncIterator[BackgroundError]:
        """Yield the errors the client recovers from on its own, as typed events.

        A lost connection (:class:`~aioiothub._session.background_errors.ConnectionDropped`), a failed or
        refused reconnect (``ReconnectFailed``, with the CONNACK ``return_code``), a loop that fell
        behind (``ConsumerFellBehind``: which stream, how many), a failed token renewal
        (``RenewalFailed``), a method nobody handles, a malformed message, a failed twin re-read.
        The client carries on after each; errors it cannot recover from are raised from the
        ``async with`` block instead. Every loop sees every event from when it starts; each keeps
        at most 64 waiting, dropping the oldest and then yielding ``ErrorsDropped(count)``. The
        library itself prints nothing: it logs on the ``aioiothub`` logger, which has no output
        unless the application configures logging.

        Example:
            >>> async def watch(client):
            ...     async for error in client.errors():
            ...         print("recovered from:", error)
        """
        return self._require_session().errors.events()

    async def update_sas_token(self, sas_token: str) -> None:
        """Use a new SAS token, made elsewhere, from now on.

        The client reconnects with it at once -- a planned reconnect, as for a renewal: nothing
        queued or in flight is lost -- so the old token's expiry never forces a drop. Returns once
        the new connection is up.

        Example:
            >>> async def rotate(client, token_service):
            ...     await client.update_sas_token(await token_service.token_for("dev1"))

        Raises:
            RuntimeError: the client is not open, or was not created with a SAS token.
            CredentialError: the token is malformed, has expired, or is scoped to another device
                or module; the message says which.
            TimeoutError: no connection with the new token within ``request_timeout`` (the
                token stays in use; the client keeps trying).
        """
        await self._require_session().update_token(sas_token)

    # -------------------------------------------------------------- telemetry

    async def _send(self, message: object, qos: int, output_name: str | None, retain: bool = False) -> None:
        session = self._require_session()
        if type(message) is dict:
            # The common case, without building a Message: the same body and properties.
            body = encode_json(message)
            properties: Any = _JSON_PROPERTIES if output_name is None else {**_JSON_PROPERTIES, "$.on": output_name}
        else:
            built = _to_message(message)
            if output_name is not None:
                built = built.replace(output_name=output_name)
            body, properties = built.body, built.wire_properties()
        if not isinstance(retain, bool):
            raise TypeError("retain must be True or False")
        outbox = self._outbox
        if outbox is not None and qos == 1:
            # A stable id for the back end to drop the duplicates of at-least-once delivery.
            if "$.mid" not in properties:
                properties = {**properties, "$.mid": new_message_id()}
            publish = session.protocol.telemetry(body, properties, qos=1, retain=retain)
            await outbox.put(publish.topic, publish.payload, retain)
            return
        await session.publish(session.protocol.telemetry(body, properties, qos=qos, retain=retain))

    async def send_message(self, message: MessageLike, *, qos: int = 1, retain: bool = False) -> None:
        """Send telemetry; returns once the hub acknowledged it (QoS 1) or it was written (QoS 0).

        A ``dict`` is sent as JSON with content type ``application/json`` and encoding ``utf-8``;
        ``bytes`` and ``str`` are sent as the body. Many concurrent calls share the connection
        (up to ``max_in_flight`` unacknowledged at once). If the connection drops before the
        acknowledgement, the message is sent again on the next connection (at-least-once).
        With ``retain=True`` the MQTT RETAIN flag is set: IoT Hub does not store the message, it
        forwards it with the application property ``mqtt-retain: true`` for routing to act on.

        With an ``outbox`` (a client option), a QoS 1 message is committed to the outbox instead,
        with a message id (``$.mid``) if it had none, and this returns once it is in the file --
        connected or not; the client delivers it in the background (see
        :class:`~aioiothub.Outbox`). QoS 0 messages bypass the outbox.

        Raises:
            TypeError: ``message`` is of an unsupported type.
            ValueError: the message is over 256 KiB on the wire, or ``qos`` is not 0 or 1.
            TimeoutError: no acknowledgement within ``request_timeout`` (never with an outbox).
            OutboxFull: with an outbox at its bound and ``when_full="reject"``.
            OutboxError: with an outbox whose file refuses the write (``OutboxStorageError``:
                disk full, read-only; ``OutboxCorruptError``); nothing was stored.

        Example:
            >>> async def report(client):
            ...     await client.send_message({"temperature": 21.5})
            ...     await client.send_message(Message(b"raw", properties={"alert": "1"}))
        """
        await self._send(message, qos, None, retain)

    # ------------------------------------------------------------------ twin

    async def get_twin(self) -> Twin:
        """Read the twin.

        Raises:
            ServiceError: the hub answered with an error status (``ThrottledError`` for 429).
            TimeoutError: no answer within ``request_timeout``.

        Example:
            >>> async def show(client):
            ...     twin = await client.get_twin()
            ...     print(twin.desired.get("interval"), twin.reported_version)
        """
        return await self._require_session().get_twin()

    async def update_reported_properties(self, patch: dict[str, Any]) -> int:
        """Merge ``patch`` into the reported properties (``None`` deletes a key).

        Returns:
            The new reported ``$version``.

        Raises:
            ValueError: the patch breaks a twin rule (key characters, depth, sizes); nothing is sent.
            ServiceError: the hub refused the patch.
            TimeoutError: no answer within ``request_timeout``.

        Example:
            >>> async def report_firmware(client):
            ...     version = await client.update_reported_properties({"fw": "1.2.0"})
        """
        if not isinstance(patch, dict):
            raise TypeError(f"patch must be a dict, not {type(patch).__name__}")
        validate_patch(patch, argument="patch")
        validate_section_size(patch, argument="patch")
        body = json.dumps(patch, separators=(",", ":"), allow_nan=False).encode()
        return await self._require_session().update_reported(body)

    def desired_property_patches(self) -> AsyncIterator[dict[str, Any]]:
        """Iterate over desired-property patches as the solution back end writes them.

        Each patch is a dict including ``"$version"``. Changes made while the device was offline
        (or while the consumer fell behind) arrive as one synthetic patch after the client
        re-reads the twin, so no desired change is lost. Patches never go backwards: each one's
        ``$version`` is above every one yielded before it; notifications that arrive while the
        twin is re-read follow its patch, in version order.

        Example:
            >>> async def follow(client):
            ...     async for patch in client.desired_property_patches():
            ...         print("desired now at version", patch["$version"])
        """
        return self._require_session().desired_patches()

    def writable_property_requests(
        self, *, components: Collection[str] | None = None, pending: bool = True
    ) -> AsyncIterator[pnp.WritablePropertyRequest]:
        """Iterate over Plug and Play writable-property requests, one per component and property.

        Each desired patch is split into :class:`~aioiothub.pnp.WritablePropertyRequest` values
        carrying the desired ``$version``; ``await request.respond(200)`` acknowledges one in the
        reported properties as the conventions say (``{"value", "ac", "av", "ad"}``, nested under
        its component with ``"__t": "c"``). With ``pending=True`` the loop starts with the
        properties already in the twin that were not yet acknowledged with their value.

        This loop and :meth:`desired_property_patches` share the same patches: use one of them.

        Args:
            components: the model's component names, for desired patches that lack the
                ``"__t": "c"`` marker.
            pending: first yield what the twin holds that the device has not acknowledged.

        Example:
            >>> async def follow(client):
            ...     async for request in client.writable_property_requests():
            ...         apply(request.component, request.name, request.value)
            ...         await request.respond(200, "applied")
        """
        if not isinstance(pending, bool):
            raise TypeError("pending must be True or False")
        if components is not None and (isinstance(components, str) or not isinstance(components, Collection)):
            raise TypeError("components must be a collection of component names, such as a set")
        return pnp.writable_property_requests(
            self._require_session(), self.update_reported_properties, components=components, pending=pending
        )

    # ---------------------------------------------------------------- methods

    def method_requests(self, method_name: str | None = None) -> AsyncIterator[MethodRequest]:
        """Iterate over direct method invocations; answer each with ``await request.respond(...)``.

        ``method_requests("reboot")`` yields only the invocations of ``reboot``; ``method_requests()``
        yields every method that no loop asked for by name. Plug and Play component commands are
        named ``"{component}*{command}"``, and each request has them split (``request.component``,
        ``request.command``). While no loop takes a method, invocations are answered with 503 at
        once; past ``inbound_buffer_size`` requests waiting, further ones are answered with 503.
        Both are reported on :meth:`errors`. Several loops over the same name share its requests:
        each request goes to one of them. A loop owns its method only while it runs: once it ends,
        requests go to the catch-all loop, or are answered with 503; none is kept for a later loop.

        Example:
            >>> async def serve_reboots(client):
            ...     async for request in client.method_requests("reboot"):
            ...         await request.respond(200, {"rebooting": True})
        """
        if method_name is not None and (not isinstance(method_name, str) or not method_name):
            raise ValueError("method_name must be a non-empty string or None")
        return self._require_session().method_requests(method_name)


def identity_from_connection_string(
    connection_string: str, x509: X509Credential | None, options: ClientOptions
) -> dict[str, Any]:
    identity = options_from_connection_string(connection_string, x509=x509)
    for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token"):
        if name in options:
            raise TypeError(f"{name} comes from the connection string; do not pass it as well")
    gateway = identity.pop("gateway_hostname")
    if gateway is not None and "gateway_hostname" not in options:
        options["gateway_hostname"] = gateway
    return identity


def identity_from_sas_token_argument(sas_token: str, options: ClientOptions) -> tuple[str, str, str | None]:
    for name in ("hostname", "device_id", "module_id", "shared_access_key", "sas_token", "x509"):
        if name in options:
            raise TypeError(f"{name} comes from the SAS token; do not pass it as well")
    return identity_from_sas_token(sas_token)
