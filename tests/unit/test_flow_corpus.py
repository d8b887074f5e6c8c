"""Validator corpus: every file in tests/flows_invalid is rejected at the line, column and message its header names.

Each file starts with ``# expect: LINE:COLUMN: FRAGMENT``; a file that checks for a missing
recording also has ``# audio-missing: PROMPT_ID``, and is checked against an audio folder
that contains every catalog prompt but that one.
"""

import re
from pathlib import Path

import pytest

from ivr.flow import FlowError, load_flow
from speech.catalog import load_catalog

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests" / "flows_invalid").glob("*.yaml"))
CATALOG = set(load_catalog(ROOT / "prompts" / "zh-CN.yaml"))
EXPECT_RE = re.compile(r"^# expect: (\d+):(\d+): (.+)$", re.MULTILINE)
AUDIO_MISSING_RE = re.compile(r"^# audio-missing: (\S+)$", re.MULTILINE)


def _audio_dir(tmp_path: Path, missing: set[str]) -> Path:
    folder = tmp_path / "audio"
    folder.mkdir()
    for prompt_id in CATALOG - missing:
        (folder / f"{prompt_id}.wav").write_bytes(b"")
    return folder


def test_corpus_is_large_enough():
    assert len(CORPUS) >= 25


@pytest.mark.parametrize("path", CORPUS, ids=[path.stem for path in CORPUS])
def test_invalid_flow_rejected(path: Path, tmp_path: Path):
    text = path.read_text(encoding="utf-8")
    expected = EXPECT_RE.search(text)
    assert expected is not None, f"{path.name} has no '# expect: LINE:COLUMN: FRAGMENT' header"
    line, column, fragment = int(expected.group(1)), int(expected.group(2)), expected.group(3)
    missing = set(AUDIO_MISSING_RE.findall(text))
    audio_dir = _audio_dir(tmp_path, missing) if missing else None

    with pytest.raises(FlowError) as caught:
        load_flow(path, prompt_ids=CATALOG, audio_dir=audio_dir)

    located = [(issue.line, issue.column) for issue in caught.value.issues if fragment in issue.message]
    assert located, [str(issue) for issue in caught.value.issues]
    assert (line, column) in located
    assert all(str(issue).startswith(f"{path}:") for issue in caught.value.issues)


@pytest.mark.parametrize("name", ["flows/12349.yaml", "tests/flows_valid/every_node.yaml"])
def test_shipped_flows_pass(name: str, tmp_path: Path):
    flow = load_flow(ROOT / name, prompt_ids=CATALOG, audio_dir=_audio_dir(tmp_path, set()))

    assert flow.nodes


def test_shipped_flow_passes_with_rendered_audio():
    audio = ROOT / "prompts" / "audio" / "zh-CN"
    if not (audio / "welcome.wav").exists():
        pytest.skip("prompts are not rendered; run `hotline prompts build`")

    flow = load_flow(ROOT / "flows" / "12349.yaml", prompt_ids=CATALOG, audio_dir=audio)

    assert flow.flow_id == "12349"
