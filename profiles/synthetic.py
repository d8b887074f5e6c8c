"""Synthetic profiles for tests and benchmarks: valid check characters, phones 139xxxxxxxx, made-up names.

Nothing here is real personal data. Numbers are derived from a row index, so a given
index always yields the same ID number and phone, which lets tests re-import a file and
expect updates instead of new profiles.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date

from profiles.id_number import check_character
from profiles.model import (
    Address,
    AssistanceStatus,
    Contact,
    NeedTag,
    Profile,
    StatusPeriod,
)
from profiles.phone import normalise_phone

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英"
COUNTIES = ("110101", "110105", "310115", "310104", "330106", "330102", "440106", "510107")
STREETS = ("人民路", "解放路", "中山路", "建设路", "和平街", "幸福里")


def synthetic_id_for_index(index: int, region_code: str = "110101") -> str:
    """Return an 18-character ID number with a valid check character, unique for every index below 29,000 × 999."""
    birth = date.fromordinal(date(1930, 1, 1).toordinal() + index % 29000)
    order = 1 + (index // 29000) % 999
    first17 = f"{region_code}{birth:%Y%m%d}{order:03d}"
    return first17 + check_character(first17)


def synthetic_mobile_for_index(index: int) -> str:
    return f"139{index:08d}"


def synthetic_row(index: int, rng: random.Random) -> dict[str, str]:
    """Return one import row, keyed by CSV column name, for the profile with this index."""
    region = COUNTIES[index % len(COUNTIES)]
    tags = rng.sample([tag.value for tag in NeedTag], k=rng.randint(0, 2))
    statuses = "低保:2023-01-01~2024-06-30;特困:2024-07-01~" if index % 3 == 0 else ""
    return {
        "name": rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
        "id_number": synthetic_id_for_index(index, "110101"),
        "phones": synthetic_mobile_for_index(index),
        "region_code": region,
        "address": f"{rng.choice(STREETS)}{rng.randint(1, 999)}号{rng.randint(1, 30)}栋{rng.randint(101, 2505)}室",
        "statuses": statuses,
        "need_tags": ";".join(tags),
        "contact_name": rng.choice(SURNAMES) + rng.choice(GIVEN) if index % 4 == 0 else "",
        "contact_relation": "女儿" if index % 4 == 0 else "",
        "contact_phone": f"021-5550{index % 10000:04d}" if index % 4 == 0 else "",
        "help_history": "2024-03-02 临时救助800元" if index % 5 == 0 else "",
        "preferred_agent": f"agent-{index % 20:02d}" if index % 7 == 0 else "",
    }


def synthetic_profiles(count: int, *, seed: int = 12349) -> Iterator[Profile]:
    """Profiles built directly, without an import file, for benchmarks."""
    rng = random.Random(seed)
    for index in range(count):
        region = COUNTIES[index % len(COUNTIES)]
        tags = frozenset(rng.sample(list(NeedTag), k=rng.randint(0, 2)))
        yield Profile(
            name=rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN),
            id_number=synthetic_id_for_index(index),
            phones=(normalise_phone(synthetic_mobile_for_index(index)),),
            address=Address(region, f"{rng.choice(STREETS)}{rng.randint(1, 999)}号"),
            statuses=(StatusPeriod(AssistanceStatus.DIBAO, date(2023, 1, 1)),) if index % 3 == 0 else (),
            need_tags=tags,
            contact=Contact("联系人", "子女", None) if index % 4 == 0 else None,
            preferred_agent=f"agent-{index % 20:02d}" if index % 7 == 0 else None,
        )
