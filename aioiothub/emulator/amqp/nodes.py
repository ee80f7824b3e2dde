"""The addresses an AMQP connection may attach to, and what happens on each.

Theory of operation
-------------------
:class:`Nodes` is told of every link the client attaches, of link credit and of every message the
client sends, all on the event loop thread between reads; it answers through the engine's link
objects, and the connection writes whatever they produced. The nodes:

* ``$cbs``: ``put-token`` requests, checked by :class:`~aioiothub.emulator.amqp.cbs.Authorizations`;
  the reply goes to the client's link whose target is the request's ``reply_to`` (or, as
  azure-eventhub sends none, the client's link from the same node).
* ``$management``: ``READ`` of the event hub and of each partition, as azure-eventhub asks for them.
* ``/{event hub}/ConsumerGroups/{group}/Partitions/{id}``: a reader of one partition from the start
  its selector filter names; events go out as the client grants credit and as the hub appends. A
  reader with a higher ``com.microsoft:epoch`` (owner level) on the same partition and group takes
  it over: the older one is detached with ``amqp:link:stolen``.

The service SDKs' nodes (``/messages/devicebound``, feedback, file notifications and the
``messages/events`` redirect) are :class:`~aioiothub.emulator.amqp.service_nodes.ServiceNodes`'.
Anything else is refused with ``amqp:not-found``; a link without a token granting
``ServiceConnect`` for its address is refused with ``amqp:unauthorized-access``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from proton import Condition, Delivery, Link, Message, symbol

from aioiothub.emulator.amqp.cbs import Authorizations
from aioiothub.emulator.amqp.event_encoding import encode_event
from aioiothub.emulator.amqp.messages import eventhub_properties, partition_properties, reply
from aioiothub.emulator.amqp.service_nodes import ServiceNodes
from aioiothub.emulator.hub.core import HubCore
from aioiothub.emulator.hub.event_log import Partition, parse_selector
from aioiothub.emulator.service_api.policies import SharedAccessPolicy

__all__ = ["Nodes", "Owners"]

logger = logging.getLogger("aioiothub.emulator")

_CBS = "$cbs"
_MANAGEMENT = "$management"
_SELECTOR_FILTER = symbol("apache.org:selector-filter:string")
_EPOCH = symbol("com.microsoft:epoch")
_PARTITION_ADDRESS = re.compile(
    r"^(?:amqps?://[^/]+)?/?(?P<hub>[^/]+)/ConsumerGroups/(?P<group>[^/]+)/Partitions/(?P<id>[^/]+)/?$", re.I
)
_CREDIT = 100


@dataclass(eq=False, slots=True)
class _Reader:
    link: Link
    partition: Partition
    group: str
    epoch: int | None
    next_sequence: int
    tags: int = field(default=0)


class Owners:
    """Every connection's partition readers, by partition and consumer group: who owns what.

    A reader with an owner level (``com.microsoft:epoch``) takes its partition and group over from
    readers with a lower one or none, on any connection; a reader below an owner already there is
    refused. Each entry keeps a way to wake its connection, which must write the detach.
    """

    def __init__(self) -> None:
        self._readers: dict[tuple[int, str], list[tuple[_Reader, Nodes, Callable[[], None]]]] = {}

    def claim(self, reader: _Reader, nodes: Nodes, wake: Callable[[], None]) -> str | None:
        """Register ``reader``; the reason it may not read, if it may not."""
        held = self._readers.setdefault((id(reader.partition), reader.group), [])
        top = max((other.epoch for other, _, _ in held if other.epoch is not None), default=None)
        if top is not None and (reader.epoch is None or reader.epoch < top):
            return f"a receiver with owner level {top} owns the partition"
        if reader.epoch is not None:
            for entry in list(held):
                other, other_nodes, other_wake = entry
                if other.epoch is None or other.epoch < reader.epoch:
                    other.link.condition = Condition(
                        "amqp:link:stolen", f"a receiver with owner level {reader.epoch} took over the partition"
                    )
                    other.link.close()
                    other_nodes.readers.remove(other)
                    held.remove(entry)
                    other_wake()
        held.append((reader, nodes, wake))
        return None

    def release(self, reader: _Reader) -> None:
        """Forget a reader that ended."""
        held = self._readers.get((id(reader.partition), reader.group), [])
        held[:] = [entry for entry in held if entry[0] is not reader]


class Nodes:
    """The nodes of one AMQP connection (see the module docstring).

    Args:
        core: the hub whose events are read.
        policies: the hub's shared access policies.
        hostname: the hub's host name.
        event_hub_name: the built-in endpoint's event hub name.
        owners: every connection's partition readers.
        wake: makes the connection write what another connection's change produced.
        amqps_port: the AMQPS listener's port (named in redirects).
    """

    def __init__(
        self,
        core: HubCore,
        policies: Sequence[SharedAccessPolicy],
        *,
        hostname: str,
        event_hub_name: str,
        owners: Owners,
        wake: Callable[[], None],
        amqps_port: int = 5671,
    ) -> None:
        self._core = core
        self._hostname = hostname
        self._owners = owners
        self._wake = wake
        self._event_hub_name = event_hub_name
        self.authorizations = Authorizations(policies, hostname)
        self.service = ServiceNodes(
            core, self.authorizations, hostname=hostname, event_hub_name=event_hub_name, amqps_port=amqps_port
        )
        self._reply_links: dict[str, Link] = {}
        self._node_replies: dict[str, Link] = {}
        self.readers: list[_Reader] = []

    # --- attach and detach -------------------------------------------------------------------

    def attach(self, link: Link) -> None:
        """Accept or refuse a link the client attached."""
        if link.is_receiver:
            address = link.remote_target.address or ""
            refusal = None if address in (_CBS, _MANAGEMENT) else self.service.attach_incoming(link)
            if refusal is None:
                self._open(link)
                link.flow(_CREDIT)
            else:
                self._refuse(link, *refusal)
            return
        address = link.remote_source.address or ""
        if address in (_CBS, _MANAGEMENT):
            self._open(link)
            self._node_replies[address] = link
            if link.remote_target.address:
                self._reply_links[link.remote_target.address] = link
            return
        match = _PARTITION_ADDRESS.match(address)
        if match is not None and match["hub"].lower() == self._event_hub_name.lower():
            self._attach_reader(link, address, match["group"], match["id"])
            return
        refused = self.service.attach_outgoing(link)
        if refused is None:
            self._open(link)
        else:
            self._refuse(link, *refused)

    def _attach_reader(self, link: Link, address: str, group: str, partition_id: str) -> None:
        log = self._core.events
        partition = log.partition(partition_id)
        if partition is None:
            self._refuse(link, "amqp:not-found", f"partition {partition_id!r} does not exist")
            return
        if group not in log.consumer_groups and group.lower() != "$default":
            self._refuse(link, "amqp:not-found", f"consumer group {group!r} does not exist")
            return
        if not self.authorizations.allows(address, "ServiceConnect"):
            self._refuse(link, "amqp:unauthorized-access", f"no valid token with ServiceConnect for {address!r}")
            return
        selector = _selector(link)
        try:
            start = parse_selector(selector)
        except ValueError as exc:
            self._refuse(link, "amqp:invalid-field", str(exc))
            return
        reader = _Reader(link, partition, group.lower(), _epoch(link), partition.start(start))
        refusal = self._owners.claim(reader, self, self._wake)
        if refusal is not None:
            self._refuse(link, "amqp:link:stolen", refusal)
            return
        self._open(link)
        self.readers.append(reader)

    def detached(self, link: Link) -> None:
        """The client detached ``link``."""
        for reader in [reader for reader in self.readers if reader.link == link]:
            self._owners.release(reader)
            self.readers.remove(reader)
        for table in (self._reply_links, self._node_replies):
            for name in [name for name, held in table.items() if held == link]:
                del table[name]
        self.service.detached(link)

    def closed(self) -> None:
        """The connection ended: its partitions and what it held unsettled are free again."""
        for reader in self.readers:
            self._owners.release(reader)
        self.readers.clear()
        self.service.closed()

    def sasl_plain(self, initial_response: bytes) -> bool:
        """Take a SASL PLAIN password that is a SAS token as a put-token; ``False`` for a bad token."""
        password = initial_response.split(b"\x00")[-1].decode("utf-8", "replace")
        if not password.startswith("SharedAccessSignature "):
            return True  # not a token: links still need one on $cbs
        return self.authorizations.put_token(password, self._hostname).status == 200

    @staticmethod
    def _open(link: Link) -> None:
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        # Echo the settle modes asked for (uamqp's sender asks for "second" and checks the answer).
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        link.open()

    @staticmethod
    def _refuse(link: Link, condition: str, description: str, info: dict[Any, Any] | None = None) -> None:
        logger.info("AMQP link %r refused: %s", link.name, description)
        link.open()
        link.condition = Condition(condition, description, info)
        link.close()

    # --- messages from the client ---------------------------------------------------------------

    def received(self, link: Link, delivery: Delivery) -> None:
        """A whole message arrived on one of our receiving links."""
        data = link.recv(delivery.pending)
        link.advance()
        request = Message()
        try:
            request.decode(data)
        except Exception as exc:  # the engine raises its own error types for undecodable bytes
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            logger.info("AMQP message on %r not decodable: %s", link.name, exc)
            return
        node = link.remote_target.address
        if node not in (_CBS, _MANAGEMENT):
            self.service.received(link, delivery, request)
            return
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()
        answer = self._put_token(request) if node == _CBS else self._management(request)
        target = self._reply_links.get(request.reply_to or "") or self._node_replies.get(node or "")
        if target is None:
            logger.info("AMQP request to %r has no link to answer on", node)
            return
        if request.reply_to:
            answer.address = request.reply_to
        _send(target, answer.encode(), tag="reply")
        link.flow(1)

    def _put_token(self, request: Message) -> Message:
        properties: dict[Any, Any] = request.properties or {}
        if properties.get("operation") != "put-token":
            return reply(request, 400, f"unsupported $cbs operation {properties.get('operation')!r}")
        answer = self.authorizations.put_token(request.body, properties.get("name"))
        return reply(request, answer.status, answer.description)

    def _management(self, request: Message) -> Message:
        properties: dict[Any, Any] = request.properties or {}
        if properties.get("operation") != "READ":
            return reply(request, 400, f"unsupported $management operation {properties.get('operation')!r}")
        name = properties.get("name")
        if not isinstance(name, str) or name.lower() != self._event_hub_name.lower():
            return reply(request, 404, f"no event hub named {name!r}")
        if not self.authorizations.allows(f"sb://{self._hostname}/{self._event_hub_name}", "ServiceConnect"):
            return reply(request, 401, "no valid token with ServiceConnect for the event hub")
        kind = properties.get("type")
        log = self._core.events
        if kind == "com.microsoft:eventhub":
            return reply(request, 200, "OK", eventhub_properties(self._event_hub_name, log))
        if kind == "com.microsoft:partition":
            partition = log.partition(str(properties.get("partition")))
            if partition is None:
                return reply(request, 404, f"no partition {properties.get('partition')!r}")
            return reply(request, 200, "OK", partition_properties(self._event_hub_name, partition))
        return reply(request, 400, f"unsupported $management type {kind!r}")

    # --- events to readers ----------------------------------------------------------------------

    def updated(self, link: Link, delivery: Delivery) -> None:
        """The client settled a delivery we sent (partition events go settled; the service nodes' do not)."""
        self.service.updated(link, delivery)

    def pump(self) -> bool:
        """Send every reader what its credit allows of what its partition or queue holds; whether any was sent."""
        sent = self.service.pump()
        for reader in self.readers:
            credit = reader.link.credit
            if credit <= 0:
                continue
            for event in reader.partition.events_from(reader.next_sequence, credit):
                identity = self._identity_details(event.record.device_id, event.record.module_id)
                reader.tags += 1
                _send(reader.link, encode_event(event, generation_id=identity[0], authentication=identity[1]),
                      tag=str(reader.tags))
                reader.next_sequence = event.sequence_number + 1
                sent = True
        return sent

    def _identity_details(self, device_id: str, module_id: str | None) -> tuple[str, str]:
        try:
            identity = self._core.registry.lookup(device_id, module_id)
        except ValueError:
            return "", "sas"
        kind = "sas" if identity.authentication == "sas" else "x509Certificate"
        return identity.generation_id, kind


def _send(link: Link, message: bytes, *, tag: str) -> None:
    delivery = link.delivery(tag)
    link.send(message)
    link.advance()
    delivery.settle()


def _selector(link: Link) -> str | None:
    filters = link.remote_source.filter
    if filters is None:
        return None
    filters.rewind()
    value = filters.get_object() if filters.next() is not None else None
    if not isinstance(value, dict):
        return None
    for key, described in value.items():
        if key == _SELECTOR_FILTER or str(key).endswith("selector-filter:string"):
            inner = getattr(described, "value", described)
            return str(inner)
    return None


def _epoch(link: Link) -> int | None:
    properties = link.remote_properties
    if not properties:
        return None
    value = properties.get(_EPOCH)
    return int(value) if isinstance(value, int) else None
