"""Region prefix rules for operator accounts, and the masks of summaries and upward payloads."""

from __future__ import annotations

from datetime import date

import pytest

from profiles.access import (
    Operator,
    OperatorRole,
    OperatorTier,
    can_read,
    expected_tier,
    region_scope_prefix,
)
from profiles.model import (
    Address,
    AssistanceStatus,
    NeedTag,
    Profile,
    StatusPeriod,
    mask_id_number_for_agent,
    summarise,
    upward_payload,
)
from profiles.phone import normalise_phone
from profiles.synthetic import synthetic_id_for_index

# A synthetic ID number whose check character is X: 33010619300118001X.
SAMPLE_ID = synthetic_id_for_index(17, "330106")


@pytest.mark.parametrize(
    ("region", "prefix", "tier"),
    [("000000", "", OperatorTier.MINISTRY), ("310000", "31", OperatorTier.PROVINCE),
     ("330100", "3301", OperatorTier.CITY), ("330106", "330106", OperatorTier.COUNTY)],
)
def test_scope_prefix_and_tier(region: str, prefix: str, tier: OperatorTier) -> None:
    assert region_scope_prefix(region) == prefix
    assert expected_tier(region) is tier


@pytest.mark.parametrize(
    ("account", "profile_region", "allowed"),
    [
        ("000000", "650102", True),
        ("330000", "330106", True),
        ("330000", "310115", False),
        ("330100", "330106", True),
        ("330100", "330206", False),
        ("330106", "330106", True),
        ("330106", "330102", False),
    ],
)
def test_can_read(account: str, profile_region: str, allowed: bool) -> None:
    operator = Operator("someone", expected_tier(account), account, OperatorRole.AGENT)
    assert can_read(operator, profile_region) is allowed


def _profile() -> Profile:
    return Profile(
        name="欧阳小明",
        id_number=SAMPLE_ID,
        phones=(normalise_phone("13900000001"), normalise_phone("0571-88886666")),
        address=Address("330106", "文三路1号"),
        statuses=(StatusPeriod(AssistanceStatus.LINSHI, date(2024, 1, 1), date(2024, 3, 1)),
                  StatusPeriod(AssistanceStatus.DIBAO, date(2024, 1, 1))),
        need_tags=frozenset({NeedTag.SIGN_LANGUAGE}),
        preferred_agent="agent-03",
    )


def test_summary_masks() -> None:
    summary = summarise(_profile(), profile_ref="ab" * 32, county_label="浙江省杭州市西湖区", today=date(2026, 12, 4))
    assert summary.name_masked == "欧***"
    assert summary.id_number_masked == "3***************1X"
    assert summary.phones_masked == ("139****0001", "0571******66")
    assert summary.address_masked == "浙江省杭州市西湖区"
    assert summary.active_statuses == (AssistanceStatus.DIBAO,)
    assert summary.need_tags == frozenset({NeedTag.SIGN_LANGUAGE})
    assert summary.preferred_agent == "agent-03"


def test_agent_mask_keeps_last_four() -> None:
    assert mask_id_number_for_agent(SAMPLE_ID) == "3*************001X"


def test_upward_payload_has_no_sensitive_fields() -> None:
    payload = upward_payload(_profile(), profile_ref="ab" * 32, phone_refs=("cd" * 32,),
                             county_label="浙江省杭州市西湖区")
    assert payload["id_number_masked"] == "3***************1X"
    assert payload["name_masked"] == "欧***"
    assert "need_tags" not in payload
    assert "statuses" not in payload
    assert "文三路" not in repr(payload)
