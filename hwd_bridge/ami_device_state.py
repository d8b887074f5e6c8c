"""AMI adapter: translate device-state events into the ACD's agent device states.

Asterisk 22 reports a PJSIP endpoint's state as ``Device: PJSIP/<endpoint>`` with
``State:`` one of NOT_INUSE, INUSE, BUSY, INVALID, UNAVAILABLE, RINGING, RINGINUSE,
ONHOLD or UNKNOWN, both in ``DeviceStateChange`` events and in the items of the
``DeviceStateList`` action.
"""

from __future__ import annotations

from acd.pool import DeviceState
from hwd_bridge.ami_protocol import AmiMessage

_STATES = {
    "NOT_INUSE": DeviceState.NOT_IN_USE,
    "INUSE": DeviceState.IN_USE,
    "BUSY": DeviceState.BUSY,
    "RINGING": DeviceState.RINGING,
    # Ringing while already on a call: the agent is busy for routing purposes.
    "RINGINUSE": DeviceState.IN_USE,
    "ONHOLD": DeviceState.ON_HOLD,
    "UNAVAILABLE": DeviceState.UNAVAILABLE,
    "INVALID": DeviceState.UNAVAILABLE,
    "UNKNOWN": DeviceState.UNKNOWN,
}

_PJSIP_PREFIX = "PJSIP/"


def endpoint_state_from_ami_event(message: AmiMessage) -> tuple[str, DeviceState] | None:
    """Return (endpoint, state) for a PJSIP device-state message, or None for anything else."""
    device = message.get("Device") or ""
    if not device.startswith(_PJSIP_PREFIX):
        return None

    endpoint = device[len(_PJSIP_PREFIX) :]
    raw_state = (message.get("State") or "").strip().upper()
    return endpoint, _STATES.get(raw_state, DeviceState.UNKNOWN)
