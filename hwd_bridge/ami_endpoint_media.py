"""AMI adapter: whether an agent's PJSIP endpoint may carry video, read with ``PJSIPShowEndpoint``.

A sign-language call needs an agent whose phone sends and receives video. The roster lists
the agents with such a phone (capability ``video``), but the endpoint's ``allow`` list on
the switch decides what the phone may negotiate. Asterisk 22 replies to ``PJSIPShowEndpoint`` with
an ``EndpointDetail`` event whose ``Allow`` field lists the codecs as ``(ulaw|alaw|h264)``.
"""

from __future__ import annotations

import structlog

from hwd_bridge.ami_client import AmiClient
from hwd_bridge.ami_errors import AmiError
from hwd_bridge.ami_protocol import AmiMessage

log = structlog.get_logger(__name__)

# Video codecs Asterisk 22 can pass through (format names as in pjsip.conf ``allow``).
VIDEO_CODECS = frozenset({"h261", "h263", "h263p", "h264", "h265", "mpeg4", "vp8", "vp9"})


def allowed_codecs(message: AmiMessage) -> frozenset[str] | None:
    """Return the codecs in an ``EndpointDetail`` event's ``Allow`` field, or None for other messages."""
    if (message.get("Event") or "") != "EndpointDetail":
        return None
    text = (message.get("Allow") or "").strip().strip("()")
    return frozenset(codec.strip().lower() for codec in text.split("|") if codec.strip())


async def endpoint_allows_video(client: AmiClient, endpoint: str) -> bool | None:
    """Return whether ``endpoint`` allows a video codec; None when the switch's reply lacks the list."""
    try:
        result = await client.action("PJSIPShowEndpoint", {"Endpoint": endpoint})
    except AmiError as exc:
        log.warning("endpoint media not read", endpoint=endpoint, error=str(exc))
        return None
    for item in result.events:
        codecs = allowed_codecs(item)
        if codecs is not None:
            return bool(codecs & VIDEO_CODECS)
    return None
