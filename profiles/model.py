"""Domain: a citizen profile (民政档案), its masked summary and the payload that may leave the node.

Names, ID numbers, phones, addresses, assistance statuses and need tags are sensitive
personal information under PIPL. Full values live only in ``Profile``. Everything shown
to the call flow, the ACD or a higher tier goes through ``ProfileSummary`` or
``upward_payload``, which carry masked values and keyed hashes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date

from hotline.privacy import mask_id_number, mask_name
from profiles.phone import PhoneNumber


class AssistanceStatus(enum.Enum):
    """Social-assistance status recorded in the profile."""

    DIBAO = "低保"
    TEKUN = "特困"
    LINSHI = "临时救助"


class NeedTag(enum.Enum):
    """Special need that changes how an agent or the flow talks to the caller."""

    SLOW_SPEECH = "需语速放缓"
    REPEAT_CONFIRM = "需重复确认"
    SIGN_LANGUAGE = "手语"
    HEARING = "听力障碍"
    COGNITIVE = "认知障碍"
    VISUAL = "视力障碍"
    DIALECT = "需方言"
    ELDERLY_ALONE = "独居老人"


@dataclass(frozen=True)
class StatusPeriod:
    """One period of an assistance status; ``end`` is None while it still applies."""

    status: AssistanceStatus
    start: date
    end: date | None = None

    def active_on(self, day: date) -> bool:
        return self.start <= day and (self.end is None or day <= self.end)


@dataclass(frozen=True)
class HelpRecord:
    """One past act of help, such as a temporary-assistance payment or a home visit."""

    day: date
    description: str


@dataclass(frozen=True)
class Contact:
    """Guardian or contact person."""

    name: str
    relation: str
    phone: PhoneNumber | None = None


@dataclass(frozen=True)
class Address:
    """Address: the GB/T 2260 county-level region code and the rest (street, house number)."""

    region_code: str
    detail: str


@dataclass(frozen=True)
class Profile:
    name: str
    id_number: str
    phones: tuple[PhoneNumber, ...]
    address: Address
    statuses: tuple[StatusPeriod, ...] = ()
    need_tags: frozenset[NeedTag] = frozenset()
    contact: Contact | None = None
    help_history: tuple[HelpRecord, ...] = ()
    # Agent id of the agent the person prefers, as used by the ACD roster.
    preferred_agent: str | None = None

    def active_statuses(self, day: date) -> tuple[AssistanceStatus, ...]:
        return tuple(dict.fromkeys(period.status for period in self.statuses if period.active_on(day)))


@dataclass(frozen=True)
class ProfileSummary:
    """Masked profile view for the call flow, the ACD and an agent's screen, with the routing hints.

    ``profile_ref`` is the keyed hash of the ID number in hex, the only handle that leaves the store.
    """

    profile_ref: str
    name_masked: str
    id_number_masked: str
    phones_masked: tuple[str, ...]
    address_masked: str
    region_code: str
    need_tags: frozenset[NeedTag]
    active_statuses: tuple[AssistanceStatus, ...]
    preferred_agent: str | None


def mask_id_number_for_agent(value: str) -> str:
    """Mask an ID number for an agent's screen: the first character and the last 4 stay."""
    return value[0] + "*" * (len(value) - 5) + value[-4:]


def mask_address(address: Address, county_label: str) -> str:
    """Mask an address down to the county: the division names stay, street and house number go."""
    return county_label or address.region_code


def summarise(profile: Profile, *, profile_ref: str, county_label: str, today: date,
              for_agent: bool = False) -> ProfileSummary:
    """Build the masked summary of a profile; ``for_agent`` keeps the last 4 of the ID number."""
    id_masked = mask_id_number_for_agent(profile.id_number) if for_agent else mask_id_number(profile.id_number)
    return ProfileSummary(
        profile_ref=profile_ref,
        name_masked=mask_name(profile.name),
        id_number_masked=id_masked,
        phones_masked=tuple(phone.masked for phone in profile.phones),
        address_masked=mask_address(profile.address, county_label),
        region_code=profile.address.region_code,
        need_tags=profile.need_tags,
        active_statuses=profile.active_statuses(today),
        preferred_agent=profile.preferred_agent,
    )


def upward_payload(profile: Profile, *, profile_ref: str, phone_refs: tuple[str, ...],
                   county_label: str) -> dict[str, object]:
    """Return the profile fields a ticket may carry to a higher tier: masked values and keyed hashes only.

    The ID number keeps its first character and last two here, never the last four that
    an agent's screen shows, and no need tag or status leaves the node.
    """
    return {
        "profile_ref": profile_ref,
        "phone_refs": list(phone_refs),
        "name_masked": mask_name(profile.name),
        "id_number_masked": mask_id_number(profile.id_number),
        "phones_masked": [phone.masked for phone in profile.phones],
        "address_masked": mask_address(profile.address, county_label),
        "region_code": profile.address.region_code,
    }
