"""CLI framework text: click's help pages and usage errors print Simplified Chinese, whatever the locale."""

from __future__ import annotations

import ast
import gettext
import re
import string
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from hotline.cli import main
from hotline.cli_text import (
    CLICK_MESSAGES,
    KEPT_IN_ENGLISH,
    ChineseFloatRange,
    ChineseIntRange,
    click_modules,
    iter_commands,
    localize_cli,
    localized_type,
    wrap_cells,
)

ROOT = Path(__file__).resolve().parents[2]
ROSTER = str(ROOT / "examples" / "roster.yaml")
TRAFFIC = str(ROOT / "examples" / "traffic.yaml")

# English that click 8.5 prints around a command's own text. None of it may reach an operator.
ENGLISH_FRAMEWORK_WORDS = [
    "Usage", "Options", "Commands", "Positional arguments", "Show this message", "Show the version",
    "required]", "default:", "Error", "Try '", "for help", "Missing", "No such", "Invalid value",
    "is not", "not in the range", "x>=", "x<=", "<=x", "<x", "Got unexpected", "extra argument",
    "does not exist", "Did you mean", "Choose from", "one of", "OPTIONS", "COMMAND", "ARGS", "TEXT",
    "INTEGER", "FLOAT", "PATH", "FILENAME", "DIRECTORY", "BOOLEAN", "RANGE", "Aborted",
]

# An English locale, so that a lookup through the process-wide gettext would stay English.
ENGLISH_LOCALE = {"LANGUAGE": "en_US", "LC_ALL": "en_US.UTF-8", "LC_MESSAGES": "en_US.UTF-8", "LANG": "en_US.UTF-8"}


def run(*args: str):
    return CliRunner(env=ENGLISH_LOCALE).invoke(main, list(args), prog_name="hotline", terminal_width=100)


def english_words_in(text: str) -> list[str]:
    return [word for word in ENGLISH_FRAMEWORK_WORDS if word in text]


def click_msgids() -> set[str]:
    """Return every string literal click passes to ``_()`` or ``ngettext()``, read from its source."""
    msgids = set()
    for module in click_modules():
        if module.__file__ is None:
            continue
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("_", "ngettext"):
                literals = node.args if node.func.id == "ngettext" else node.args[:1]
                msgids.update(arg.value for arg in literals[:2] if isinstance(arg, ast.Constant))
    winconsole = Path(click.__file__).parent / "_winconsole.py"
    msgids.update(re.findall(r'_\("([^"]+)"\)', winconsole.read_text(encoding="utf-8")))
    return msgids


def format_fields(text: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(text) if field is not None}


def test_catalogue_covers_every_click_msgid():
    # click calls _(extra["required"]) on a variable, so the AST walk cannot see "required".
    msgids = click_msgids() | {"required"}

    missing = sorted(msgids - set(CLICK_MESSAGES) - KEPT_IN_ENGLISH)
    unused = sorted(set(CLICK_MESSAGES) - msgids)

    assert missing == [], f"click strings without a Chinese translation: {missing}"
    assert unused == [], f"translations of strings this click version no longer has: {unused}"


def test_translations_keep_only_known_placeholders():
    for msgid, translation in CLICK_MESSAGES.items():
        assert format_fields(translation) <= format_fields(msgid), msgid
        assert re.findall(r"%\(\w+\)s", translation) == re.findall(r"%\(\w+\)s", msgid), msgid


def test_no_click_module_left_on_global_gettext():
    for module in click_modules():
        assert getattr(module, "_", None) is not gettext.gettext, module.__name__
        assert getattr(module, "ngettext", None) is not gettext.ngettext, module.__name__


def test_root_help_in_chinese():
    result = run("--help")

    assert result.exit_code == 0
    assert result.output.startswith("用法：hotline [选项] 命令 [参数]...\n")
    assert "\n选项：\n" in result.output
    assert "\n命令：\n" in result.output
    assert "--help     显示本帮助并退出。" in result.output
    assert "--version  显示版本号并退出。" in result.output
    assert english_words_in(result.output) == []


def test_whatif_help_in_chinese():
    result = run("acd", "whatif", "--help")

    assert result.exit_code == 0
    assert result.output.startswith("用法：hotline acd whatif [选项] 名单文件 话务量文件\n")
    assert "--hours 数值" in result.output
    assert "[默认：40.0; 取值不小于 0.1]" in result.output
    assert "--seed 整数" in result.output
    assert english_words_in(result.output) == []


def test_missing_argument_in_chinese():
    result = run("acd", "whatif")

    assert result.exit_code == 2
    assert "用法：hotline acd whatif [选项] 名单文件 话务量文件" in result.output
    assert "用法说明请运行“hotline acd whatif --help”。" in result.output
    assert "错误：缺少参数 '名单文件'." in result.output
    assert english_words_in(result.output) == []


def test_missing_option_in_chinese():
    result = run("tickets", "list")

    assert result.exit_code == 2
    assert "错误：缺少选项 '--config'." in result.output
    assert english_words_in(result.output) == []


def test_unknown_option_in_chinese():
    result = run("acd", "whatif", ROSTER, TRAFFIC, "--foo")

    assert result.exit_code == 2
    assert "错误：没有 '--foo' 这个选项。" in result.output
    assert english_words_in(result.output) == []


def test_unknown_command_suggests_the_close_one():
    result = run("flows", "drawx")

    assert result.exit_code == 2
    assert "错误：没有 'drawx' 这个命令。 您是不是要输入 'draw'？" in result.output
    assert english_words_in(result.output) == []


def test_out_of_range_value_in_chinese():
    result = run("acd", "whatif", ROSTER, TRAFFIC, "--hours", "0")

    assert result.exit_code == 2
    assert "错误：'--hours' 的值无效：0.0 超出允许范围（取值不小于 0.1）。" in result.output
    assert english_words_in(result.output) == []


def test_not_a_number_in_chinese():
    result = run("tickets", "list", "--config", "node.yaml", "--limit", "many")

    assert result.exit_code == 2
    assert "错误：'--limit' 的值无效：'many' 不是有效的整数。" in result.output
    assert english_words_in(result.output) == []


def test_extra_argument_in_chinese():
    result = run("acd", "whatif", ROSTER, TRAFFIC, "surplus")

    assert result.exit_code == 2
    assert "错误：多出了参数（surplus），请删掉，或检查引号和空格。" in result.output
    assert english_words_in(result.output) == []


def test_bad_choice_in_chinese():
    result = run("run", "--config", "node.yaml", "--log-level", "LOUD")

    assert result.exit_code == 2
    assert "'LOUD' 不是可选的值，请从 'debug', 'info', 'warning', 'error' 中选一个。" in result.output
    assert english_words_in(result.output) == []


def test_missing_roster_file_in_chinese(tmp_path):
    result = run("acd", "check", str(tmp_path / "missing.yaml"))

    assert result.exit_code == 1
    assert "错误：找不到坐席名单" in result.output
    assert english_words_in(result.output) == []


def test_missing_file_for_existing_path_type(tmp_path):
    @click.group()
    def tool() -> None:
        pass

    @tool.command()
    @click.argument("roster", type=click.Path(exists=True, dir_okay=False))
    def check(roster: str) -> None:
        click.echo(roster)

    localize_cli(tool)
    missing = tmp_path / "missing.yaml"

    result = CliRunner(env=ENGLISH_LOCALE).invoke(tool, ["check", str(missing)])

    assert result.exit_code == 2
    assert f"错误：'ROSTER' 的值无效：文件 '{missing}' 不存在，请检查路径。" in result.output
    assert english_words_in(result.output) == []


def test_directory_given_for_file(tmp_path):
    @click.command()
    @click.option("--out", type=click.Path(exists=True, dir_okay=False), required=True)
    def write(out: str) -> None:
        click.echo(out)

    localize_cli(write)

    result = CliRunner(env=ENGLISH_LOCALE).invoke(write, ["--out", str(tmp_path)])

    assert result.exit_code == 2
    assert f"文件 '{tmp_path}' 是目录，这里要填文件。" in result.output
    assert english_words_in(result.output) == []


def test_every_command_help_in_chinese():
    commands = []

    def walk(command: click.Command, path: list[str]) -> None:
        commands.append(path)
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])

    walk(main, [])

    assert len(commands) > 40
    for path in commands:
        result = run(*path, "--help")
        assert result.exit_code == 0, path
        assert result.output.startswith(f"用法：{' '.join(['hotline', *path])}"), path
        assert english_words_in(result.output) == [], (path, english_words_in(result.output))
        assert max(cell_len(line) for line in result.output.splitlines()) <= 100, path


def test_help_rows_fit_terminal_width():
    result = run("run", "--help")

    lines = result.output.splitlines()
    option_rows = [line for line in lines if line.startswith("  --")]

    assert max(cell_len(line) for line in lines) <= 100
    # The help column starts at the same cell on every row whose option fits the first column.
    starts = {cell_len(line[: line.index("节点")]) for line in option_rows if "--config" in line or "--ready-file" in line}
    assert len(starts) == 1


def test_range_descriptions():
    assert ChineseIntRange(1, 5)._describe_range() == "取值 1 到 5"
    assert ChineseIntRange(min=0)._describe_range() == "取值不小于 0"
    assert ChineseIntRange(max=9)._describe_range() == "取值不大于 9"
    assert ChineseFloatRange(0, min_open=True)._describe_range() == "取值大于 0"
    assert ChineseFloatRange(max=1.5, max_open=True)._describe_range() == "取值小于 1.5"
    assert ChineseFloatRange(0, 1, min_open=True)._describe_range() == "取值大于 0且不大于 1"


def test_localized_type_copies_shared_types():
    localized = localized_type(click.INT)

    assert localized.name == "整数"
    assert click.INT.name == "integer"
    assert localized_type(localized) is localized


def test_localized_range_keeps_bounds_and_clamp():
    localized = localized_type(click.IntRange(1, 10, max_open=True, clamp=True))

    assert isinstance(localized, ChineseIntRange)
    assert (localized.min, localized.max, localized.min_open, localized.max_open, localized.clamp) == (1, 10, False,
                                                                                                      True, True)
    assert localized.convert("99", None, None) == 9


def test_localize_cli_twice_changes_nothing():
    types_before = [param.type for command in iter_commands(main) for param in command.params]

    localize_cli(main)

    assert [param.type for command in iter_commands(main) for param in command.params] == types_before


@pytest.mark.parametrize(("text", "width", "expected"), [
    ("短句", 10, ["短句"]),
    ("一二三四五六七八九十", 10, ["一二三四五", "六七八九十"]),
    ("写在 service_level 里", 12, ["写在", "service_level", "里"]),
    ("一二三四，五", 8, ["一二三", "四，五"]),
    ("写 abc，五", 6, ["写", "abc，", "五"]),
    ("abcdef，五", 6, ["abcdef，", "五"]),
    ("第一段\n第二段", 20, ["第一段", "第二段"]),
])
def test_wrap_cells(text, width, expected):
    assert wrap_cells(text, width) == expected
