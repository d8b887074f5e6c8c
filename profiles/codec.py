"""Domain: the JSON form of a profile's encrypted details, and the text forms used by import files."""

from __future__ import annotations

import json
from datetime import date
from typing import Any

from profiles.model import (
    Address,
    AssistanceStatus,
    Contact,
    HelpRecord,
    NeedTag,
    Profile,
    StatusPeriod,
)
from profiles.phone import PhoneNumber, normalise_phone


def details_to_json(profile: Profile) -> bytes:
    """Serialise every field but name, ID number and address, which have their own columns."""
    contact = None
    if profile.contact is not None:
        contact = {
            "name": profile.contact.name,
            "relation": profile.contact.relation,
            "phone": profile.contact.phone.e164 if profile.contact.phone else None,
        }
    document = {
        "phones": [phone.e164 for phone in profile.phones],
        "statuses": [
            [period.status.value, period.start.isoformat(), period.end.isoformat() if period.end else None]
            for period in profile.statuses
        ],
        "need_tags": sorted(tag.value for tag in profile.need_tags),
        "contact": contact,
        "help_history": [[record.day.isoformat(), record.description] for record in profile.help_history],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def profile_from_parts(*, name: str, id_number: str, region_code: str, address_detail: str,
                       details: bytes, preferred_agent: str | None) -> Profile:
    document: dict[str, Any] = json.loads(details)
    contact = None
    if document["contact"] is not None:
        phone = document["contact"]["phone"]
        contact = Contact(document["contact"]["name"], document["contact"]["relation"],
                          normalise_phone(phone) if phone else None)
    return Profile(
        name=name,
        id_number=id_number,
        phones=tuple(normalise_phone(phone) for phone in document["phones"]),
        address=Address(region_code, address_detail),
        statuses=tuple(
            StatusPeriod(AssistanceStatus(status), date.fromisoformat(start), date.fromisoformat(end) if end else None)
            for status, start, end in document["statuses"]
        ),
        need_tags=frozenset(NeedTag(tag) for tag in document["need_tags"]),
        contact=contact,
        help_history=tuple(HelpRecord(date.fromisoformat(day), text) for day, text in document["help_history"]),
        preferred_agent=preferred_agent,
    )


def phone_list(profile: Profile) -> tuple[PhoneNumber, ...]:
    """Return the numbers a profile is found by: its own phones, without duplicates, in order.

    NOTE: the contact's phone is not a lookup key, so a guardian calling from their own
    number is not matched to the profile.
    """
    return tuple(dict.fromkeys(profile.phones))
