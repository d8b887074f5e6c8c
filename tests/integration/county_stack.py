"""Test harness: one county `hotline run` process on its own Asterisk, with the test's flow file.

Lighter than ``hotline.demo.DemoStack``: it starts no city node. The county's parent broker
runs, so its outbox connects, but nothing reads it. The test writes the flow, and the SIP
phones are roster agents or other endpoints such as a trunk toward the city's switch.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from hotline.demo import COUNTY, PROMPT_AUDIO_DIR, REPO_ROOT, _NodeProcess
from ivr.flow_registry import FlowRegistry
from speech.catalog import load_catalog
from stack import net
from stack.asterisk import AgentEndpoint, AsteriskInstance, ensure_root
from stack.mosquitto import MosquittoBroker
from stack.sipp import SippAgent

PROMPT_IDS = frozenset(load_catalog(REPO_ROOT / "prompts" / "zh-CN.yaml"))


@dataclass(frozen=True, slots=True)
class Phone:
    """A SIP endpoint on the test switch.

    With ``skills`` it is a roster agent; without, another endpoint (a trunk toward the
    city's switch, say). ``talk_ms`` None means no phone registers for it. ``ring_ms``
    longer than the queue's ring timeout makes a phone that rings unanswered. ``roster``
    adds YAML fields to the agent's roster row, such as ``"capabilities: [video]"``;
    skills may carry a level (``dibao:5``).
    """

    endpoint: str
    skills: tuple[str, ...] = ()
    talk_ms: int | None = None
    ring_ms: int = 200
    roster: str = ""
    # Dialplan context of calls the endpoint places ("from-lower-tier" for a lower tier's trunk),
    # and SIP headers its phone logs from each INVITE it receives.
    context: str = "from-agents"
    log_headers: tuple[str, ...] = ()
    # True for a video phone: its endpoint on the switch allows video codecs.
    video: bool = False


@dataclass
class CountyStack:
    asterisk: AsteriskInstance
    county: _NodeProcess
    flow_file: Path
    database: Path
    config: Path
    store: FlowRegistry
    phones: dict[str, SippAgent] = field(default_factory=dict)
    # Digest passwords of every endpoint, for tests that place calls from one.
    passwords: dict[str, str] = field(default_factory=dict)

    def active_version(self) -> str | None:
        active = self.store.active()
        return active.version if active else None


@contextmanager
def county_stack(tmp_path: Path, flow_text: str, phones: Sequence[Phone], *,
                 acd_settings: str = "wrap_up_s: 2\n", extra_config: str = "") -> Iterator[CountyStack]:
    """Start broker, Asterisk, the county node and the registered phones; stop them in reverse.

    ``extra_config`` is appended to the county's YAML config. The telephony section comes
    last, so lines indented by two spaces add telephony keys (``"  profiles: PATH\\n"``).
    """
    root = ensure_root()
    flow_file = tmp_path / "flow.yaml"
    flow_file.write_text(flow_text, encoding="utf-8")
    database = tmp_path / "county.sqlite3"
    passwords = {phone.endpoint: secrets.token_urlsafe(12) for phone in phones}

    with ExitStack() as stack:
        broker = MosquittoBroker(port=0, work_dir=tmp_path / "broker")
        stack.callback(broker.cleanup)
        stack.callback(broker.stop)
        broker.start()

        fastagi_port = net.free_port()
        asterisk = AsteriskInstance.with_free_ports(
            f"county{os.getpid()}", root=root, fastagi_port=fastagi_port,
            agents=[AgentEndpoint(p.endpoint, p.endpoint, passwords[p.endpoint], context=p.context,
                                  video=p.video) for p in phones],
            prompt_dir=PROMPT_AUDIO_DIR, fallback_prompt_id="system_error", test_extensions=False,
        )
        stack.callback(asterisk.stop, remove_files=True)
        asterisk.start()

        secret_file = tmp_path / "ami-secret"
        secret_file.write_text(asterisk.ami.secret, encoding="utf-8")
        roster = tmp_path / "roster.yaml"
        roster.write_text("".join(
            f"- {{id: {p.endpoint}, name: 坐席{p.endpoint}, endpoint: {p.endpoint}, skills: [{', '.join(map(repr, p.skills))}]"
            f"{', ' + p.roster if p.roster else ''}}}\n"
            for p in phones if p.skills
        ), encoding="utf-8")
        acd = tmp_path / "acd.yaml"
        acd.write_text(acd_settings, encoding="utf-8")
        config = tmp_path / "county.yaml"
        config.write_text(f"""\
node_id: {COUNTY['node_id']}
tier: county
region_code: "{COUNTY['region_code']}"
database: {database}
parent:
  node_id: city-test
  broker: {{port: {broker.port}}}
telephony:
  fastagi: {{port: {fastagi_port}}}
  ami: {{port: {asterisk.ami.port}, username: {asterisk.ami.username}, secret_file: {secret_file}}}
  flow: {flow_file}
  prompt_catalog: {REPO_ROOT / 'prompts' / 'zh-CN.yaml'}
  prompt_sound_dir: {asterisk.instance_dir / 'sounds'}
  roster: {roster}
  acd_settings: {acd}
{extra_config}""", encoding="utf-8")
        county = _NodeProcess("county", config, tmp_path)
        stack.callback(county.stop)
        county.start()

        registered = {}
        for phone in phones:
            if phone.talk_ms is None:
                continue
            agent = SippAgent(endpoint_id=phone.endpoint, username=phone.endpoint, password=passwords[phone.endpoint],
                              registrar_port=asterisk.sip_port, talk_ms=phone.talk_ms, ring_ms=phone.ring_ms,
                              work_dir=tmp_path / f"sipp-{phone.endpoint}", keep_files=True,
                              log_headers=phone.log_headers)
            stack.callback(agent.stop)
            agent.start()
            registered[phone.endpoint] = agent

        yield CountyStack(asterisk, county, flow_file, database, config,
                          FlowRegistry.for_database(database, prompt_ids=PROMPT_IDS), registered, passwords)
