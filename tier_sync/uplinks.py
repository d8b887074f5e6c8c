"""MQTT adapter: every publisher of one node towards the tiers above, started and stopped together.

The chain publisher sends all events to the parent and takes the parent's instructions.
One direct publisher per configured ancestor (province, ministry) sends the node's
emergency tickets straight to that ancestor's broker as well (跨级直连).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tier_sync.instructions import InstructionApplier
from tier_sync.mqtt_session import SessionSettings
from tier_sync.outbox_publisher import OutboxPublisher, PublisherSettings

if TYPE_CHECKING:
    from storage import TicketStore


@dataclass(frozen=True, slots=True)
class Uplink:
    """A node above this one and the broker it runs."""

    node_id: str
    host: str
    port: int
    max_packet_size: int
    # Session settings of this link, for its TLS and login; None keeps the publisher settings' session.
    session: SessionSettings | None = None


class Uplinks:
    """The chain publisher to ``parent`` and a direct publisher per entry of ``direct``."""

    def __init__(
        self,
        store: TicketStore,
        parent: Uplink,
        direct: Sequence[Uplink] = (),
        *,
        settings: PublisherSettings | None = None,
        use_lock: bool = True,
    ) -> None:
        base = settings or PublisherSettings()
        self.chain = OutboxPublisher(
            store, parent.host, parent.port, store.node_id, parent.node_id,
            settings=_link_settings(base, parent), use_lock=use_lock,
        )
        assert self.chain.instructions is not None
        self.instructions: InstructionApplier = self.chain.instructions
        self.direct = [
            OutboxPublisher(
                store, link.host, link.port, store.node_id, link.node_id,
                settings=_link_settings(base, link), use_lock=use_lock, direct=True,
            )
            for link in direct
        ]

    @property
    def publishers(self) -> list[OutboxPublisher]:
        return [self.chain, *self.direct]

    def notify(self) -> None:
        """Wake every publisher, for example right after a ticket was written."""
        for publisher in self.publishers:
            publisher.notify()

    async def start(self) -> None:
        """Start every publisher; on a failure (NodeAlreadyRunning) stop the ones already started."""
        started: list[OutboxPublisher] = []
        try:
            for publisher in self.publishers:
                await publisher.start()
                started.append(publisher)
        except BaseException:
            for publisher in reversed(started):
                await publisher.stop()
            raise

    async def stop(self) -> None:
        for publisher in reversed(self.publishers):
            await publisher.stop()


def _link_settings(settings: PublisherSettings, link: Uplink) -> PublisherSettings:
    return replace(settings, max_packet_size=link.max_packet_size, session=link.session or settings.session)
