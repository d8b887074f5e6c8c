"""Domain: operator accounts and which profiles each may read.

An account may read profiles of its own region and below, by GB/T 2260 code prefix. A
province account PP0000 reads every code starting PP, a city account PPCC00 every code
starting PPCC, a county account its own code only, and the ministry (000000) all.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

OPERATOR_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{2,64}$")


class OperatorRole(enum.Enum):
    """``agent`` reads the ID number with its last 4 digits; ``supervisor`` reads it in full."""

    AGENT = "agent"
    SUPERVISOR = "supervisor"

    @property
    def label(self) -> str:
        return {"agent": "坐席", "supervisor": "班长"}[self.value]


class OperatorTier(enum.Enum):
    COUNTY = "county"
    CITY = "city"
    PROVINCE = "province"
    MINISTRY = "ministry"


@dataclass(frozen=True)
class Operator:
    name: str
    tier: OperatorTier
    region_code: str
    role: OperatorRole


def region_scope_prefix(region_code: str) -> str:
    """Return the code prefix readable by an account of this region: "" for 000000, PP, PPCC or the whole code."""
    if region_code == "000000":
        return ""
    if region_code.endswith("0000"):
        return region_code[:2]
    if region_code.endswith("00"):
        return region_code[:4]
    return region_code


def expected_tier(region_code: str) -> OperatorTier:
    if region_code == "000000":
        return OperatorTier.MINISTRY
    if region_code.endswith("0000"):
        return OperatorTier.PROVINCE
    if region_code.endswith("00"):
        return OperatorTier.CITY
    return OperatorTier.COUNTY


def can_read(operator: Operator, profile_region_code: str) -> bool:
    return profile_region_code.startswith(region_scope_prefix(operator.region_code))


class AccessDenied(Exception):
    """An operator asked for something outside their account; the message is Chinese."""
