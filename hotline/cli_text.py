"""CLI framework text in Simplified Chinese: click's own usage lines, help headings and errors.

click 8 marks its user-facing strings with ``gettext`` but looks them up through the
process-wide ``gettext.gettext``. That function chooses the language from ``LANGUAGE``,
``LC_ALL``, ``LC_MESSAGES`` and ``LANG``, so a catalogue installed for its domain is
ignored on a machine whose locale is ``C`` or English. Operators read Chinese whatever
the locale, so ``localize_cli`` binds the names ``_`` and ``ngettext`` inside click's
modules to a ``gettext.NullTranslations`` subclass that reads ``CLICK_MESSAGES``.

Some English is not a gettext string in click 8.5: the ``[OPTIONS]`` and
``COMMAND [ARGS]...`` placeholders, parameter type names (``TEXT``, ``INTEGER``,
``PATH``) and number ranges (``x>=0.1``). ``localize_cli`` sets those through click's
public attributes on every command and parameter of the tree, except ranges, which need
an override of ``_NumberRangeBase._describe_range``.
"""

from __future__ import annotations

import copy
import gettext
import importlib
import pkgutil
import re
import sys
from collections.abc import Iterable, Iterator
from types import ModuleType

import click
from click import types as click_types
from rich.cells import cell_len

# Every string click 8.5.1 passes to ``_()`` or ``ngettext()``, by its English msgid. For
# ``ngettext`` both the singular and the plural msgid are listed. Chinese has one form,
# but click's two msgids sometimes differ in more than number ("Did you mean X?" and
# "(Did you mean one of: ...?)"). The tests compare this table with click's source.
CLICK_MESSAGES: dict[str, str] = {
    # Help pages.
    "Usage:": "用法：",
    "Options": "选项",
    "Positional arguments": "位置参数",
    "Commands": "命令",
    "Show this message and exit.": "显示本帮助并退出。",
    "Show the version and exit.": "显示版本号并退出。",
    "%(prog)s, version %(version)s": "%(prog)s，版本 %(version)s",
    "required": "必填",
    "default: {default}": "默认：{default}",
    "env var: {var}": "环境变量：{var}",
    "(dynamic)": "（运行时确定）",
    "deprecated": "已停用",
    "Do you want to continue?": "确定要继续吗？",
    "Confirm the action without prompting.": "不再询问，直接确认。",
    # Usage errors (exit status 2) and other errors.
    "Error: {message}": "错误：{message}",
    "Try '{command} {option}' for help.": "用法说明请运行“{command} {option}”。",
    "Missing command.": "缺少子命令，请从帮助列出的命令中选一个。",
    "Missing argument": "缺少参数",
    "Missing option": "缺少选项",
    "Missing parameter": "缺少参数",
    "Missing {param_type}": "缺少{param_type}",
    "Missing parameter: {param_name}": "缺少参数：{param_name}",
    "No such option {name!r}.": "没有 {name!r} 这个选项。",
    "No such command {name!r}.": "没有 {name!r} 这个命令。",
    "Did you mean {possibility}?": "您是不是要输入 {possibility}？",
    "(Did you mean one of: {possibilities}?)": "（您是不是要输入其中之一：{possibilities}？）",
    "Got unexpected extra argument ({args})": "多出了参数（{args}），请删掉，或检查引号和空格。",
    "Got unexpected extra arguments ({args})": "多出了参数（{args}），请删掉，或检查引号和空格。",
    "Invalid value for {param_hint}: {message}": "{param_hint} 的值无效：{message}",
    "Invalid value: {message}": "值无效：{message}",
    "Value must be an iterable.": "这里要填一组值。",
    "Takes {nargs} values but 1 was given.": "需要 {nargs} 个值，实际只给了 1 个。",
    "Takes {nargs} values but {len} were given.": "需要 {nargs} 个值，实际给了 {len} 个。",
    "{len_type} values are required, but {len_value} was given.": "需要 {len_type} 个值，实际给了 {len_value} 个。",
    "{len_type} values are required, but {len_value} were given.": "需要 {len_type} 个值，实际给了 {len_value} 个。",
    "Option {name!r} does not take a value.": "选项 {name!r} 后面不能带值。",
    "Option {name!r} requires an argument.": "选项 {name!r} 后面缺少值。",
    "Option {name!r} requires {nargs} arguments.": "选项 {name!r} 后面需要 {nargs} 个值。",
    "Argument {name!r} takes {nargs} values.": "参数 {name!r} 需要 {nargs} 个值。",
    "Aborted!": "已中止。",
    "unknown error": "未知错误",
    "Could not open file {filename!r}: {message}": "无法打开文件 {filename!r}：{message}",
    # Parameter values.
    "{value} is not in the range {range}.": "{value} 超出允许范围（{range}）。",
    "{value!r} is not a valid {number_type}.": "{value!r} 不是有效的{number_type}。",
    "{value!r} is not a valid boolean. Recognized values: {states}": "{value!r} 不是有效的是否值，可以填：{states}",
    "{value!r} is not a valid UUID.": "{value!r} 不是有效的 UUID。",
    "{value!r} is not {choice}.": "{value!r} 不是可选的值，只能填 {choice}。",
    "{value!r} is not one of {choices}.": "{value!r} 不是可选的值，请从 {choices} 中选一个。",
    "Choose from:\n\t{choices}": "可以选：\n\t{choices}",
    "{value!r} does not match the format {format}.": "{value!r} 不符合格式 {format}。",
    "{value!r} does not match the formats {formats}.": "{value!r} 不符合以下任何一种格式：{formats}。",
    "file": "文件",
    "directory": "目录",
    "path": "路径",
    "{name} {filename!r} does not exist.": "{name} {filename!r} 不存在，请检查路径。",
    "{name} {filename!r} is a file.": "{name} {filename!r} 是文件，这里要填目录。",
    "{name} {filename!r} is a directory.": "{name} {filename!r} 是目录，这里要填文件。",
    "{name} {filename!r} is not readable.": "{name} {filename!r} 没有读权限，请检查文件权限。",
    "{name} {filename!r} is not writable.": "{name} {filename!r} 没有写权限，请检查文件权限。",
    "{name} {filename!r} is not executable.": "{name} {filename!r} 没有执行权限，请检查文件权限。",
    # Prompts, editor, progress bar and shell completion.
    "Repeat for confirmation": "请再输入一次以确认",
    "Error: The two entered values do not match.": "错误：两次输入的值不一致。",
    "Error: invalid input": "错误：输入无效",
    "Press any key to continue...": "按任意键继续……",
    "{editor}: Editing failed": "{editor}：编辑失败",
    "{editor}: Editing failed: {e}": "{editor}：编辑失败：{e}",
    "d": "天",
    "Unknown color {colour!r}": "未知颜色 {colour!r}",
    "Unknown standard stream '{name}'": "未知的标准流 '{name}'",
    "Windows error: {error}": "Windows 错误：{error}",
    "Couldn't detect Bash version, shell completion is not supported.": "无法识别 Bash 版本，不能使用命令补全。",
    "Shell completion is not supported for Bash versions older than 4.4.": "Bash 4.4 以前的版本不能使用命令补全。",
    # Deprecation notes and errors in how a command is declared, which developers see.
    "DeprecationWarning: The command {name!r} is deprecated.{extra_message}": "注意：命令 {name!r} 已停用。{extra_message}",
    "DeprecationWarning: The {param_type} {name!r} is deprecated.{extra_message}": "注意：参数 {name!r} 已停用。{extra_message}",
    "Could not determine name for option with declarations {decls!r}": "无法从声明 {decls!r} 确定选项名",
    "No options defined but a name was passed ({name}). Did you mean to declare an argument instead? "
    "Did you mean to pass '--{name}'?": "没有声明选项却给了名字（{name}）：要声明的是参数，还是要写成 '--{name}'？",
    "Arguments take exactly one parameter declaration, got {length}: {decls}.": "参数只能有一个声明，实际有 {length} 个：{decls}。",
    "Name '{name}' defined twice": "名字 '{name}' 声明了两次",
    "Boolean option {decl!r} cannot use the same flag for true/false.": "开关选项 {decl!r} 的开和关不能用同一个写法。",
    "Invalid start character for option ({option})": "选项名开头的字符无效（{option}）",
}

# msgids click passes to ``_()`` that stay in English: a ``repr`` for developers.
KEPT_IN_ENGLISH = frozenset({"Choice({choices})"})

# Chinese names of click's parameter types: ``make_metavar`` prints them upper-cased in
# the help (``--limit 整数``), and number errors name them ("不是有效的整数").
TYPE_NAMES: dict[type[click.ParamType], str] = {
    click_types.StringParamType: "文本",
    click_types.IntParamType: "整数",
    click_types.FloatParamType: "数值",
    click_types.BoolParamType: "是否",
    click_types.File: "文件",
}

# click's English usage placeholders (Command.options_metavar, Group.subcommand_metavar).
USAGE_PLACEHOLDERS = {
    "[OPTIONS]": "[选项]",
    "COMMAND [ARGS]...": "命令 [参数]...",
    "[COMMAND] [ARGS]...": "[命令] [参数]...",
    "COMMAND1 [ARGS]... [COMMAND2 [ARGS]...]...": "命令1 [参数]... [命令2 [参数]...]...",
    "[COMMAND1] [ARGS]... [COMMAND2 [ARGS]...]...": "[命令1] [参数]... [命令2 [参数]...]...",
}


class ClickCatalogue(gettext.NullTranslations):
    """Translations of click's msgids into Simplified Chinese; unknown msgids pass through."""

    def gettext(self, message: str) -> str:
        return CLICK_MESSAGES.get(message, message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        msgid = msgid1 if n == 1 else msgid2
        return CLICK_MESSAGES.get(msgid, msgid)


CATALOGUE = ClickCatalogue()


class ChineseHelpFormatter(click.HelpFormatter):
    """click's help formatter with full-width colons after ``用法`` and section headings."""

    def write_usage(self, prog: str, args: str = "", prefix: str | None = None) -> None:
        # click's default prefix is "Usage: " with a space, which reads badly after "：".
        super().write_usage(prog, args, CATALOGUE.gettext("Usage:") if prefix is None else prefix)

    def write_heading(self, heading: str) -> None:
        self.write(f"{'':>{self.current_indent}}{heading}：\n")

    def write_text(self, text: str) -> None:
        """Write a command's help paragraphs, wrapped in terminal cells."""
        if "\b" in text:
            # click's mark for a paragraph that must keep its line breaks.
            super().write_text(text)
            return

        indent = " " * self.current_indent
        width = max(self.width - self.current_indent, 11)
        for index, paragraph in enumerate(re.split(r"\n\s*\n", text.strip())):
            if index:
                self.write("\n")
            for line in wrap_cells(" ".join(paragraph.split()), width):
                self.write(f"{indent}{line}\n")

    def write_dl(self, rows: Iterable[tuple[str, str]], col_max: int = 30, col_spacing: int = 2) -> None:
        """Write option and command rows as click does, measured in terminal cells.

        click counts characters, but a Chinese character takes two cells, so its columns
        drift and its lines run past the terminal width.
        """
        rows = list(rows)
        first_col = min(max((cell_len(first) for first, _ in rows), default=0), col_max) + col_spacing
        text_width = max(self.width - first_col - 2, 10)

        for first, second in rows:
            self.write(f"{'':>{self.current_indent}}{first}")
            if not second:
                self.write("\n")
                continue

            if cell_len(first) <= first_col - col_spacing:
                self.write(" " * (first_col - cell_len(first)))
            else:
                self.write("\n" + " " * (first_col + self.current_indent))

            lines = wrap_cells(second, text_width)
            self.write(f"{lines[0]}\n")
            for line in lines[1:]:
                self.write(f"{'':>{first_col + self.current_indent}}{line}\n")


# Whitespace runs, words of printable ASCII, or any other single character.
_WRAP_TOKEN = re.compile(r"\s+|[!-~]+|.")
# Chinese punctuation that must not start a line: the character before it moves down too.
_NO_LINE_START = frozenset("，。、；：！？）》」』”’")


def wrap_cells(text: str, width: int) -> list[str]:
    """Wrap ``text`` to ``width`` terminal cells; ASCII words stay whole, Chinese breaks anywhere."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for token in _WRAP_TOKEN.findall(" ".join(paragraph.split())):
            if cell_len(line + token) <= width or not line.strip():
                line += token
                continue

            if token in _NO_LINE_START:
                # The punctuation moves down with the ASCII word or character it follows.
                carried = re.search(r"[!-~]+$|.$", line).group()
                if carried == line.strip():
                    line += token
                    continue
                lines.append(line[: -len(carried)].rstrip())
                line = carried + token
                continue

            lines.append(line.rstrip())
            line = "" if token.isspace() else token
        lines.append(line.rstrip())
    return lines


class ChineseContext(click.Context):
    """click context whose help and usage lines come from ``ChineseHelpFormatter``."""

    formatter_class = ChineseHelpFormatter


class _ChineseRangeMixin:
    """Number range described in words, e.g. ``取值不小于 0.1`` for click's ``x>=0.1``."""

    min: float | None
    max: float | None
    min_open: bool
    max_open: bool

    # NOTE: click 8.5 has no public hook for this text; ``_describe_range`` is private and
    # the CLI text tests fail if click renames it.
    def _describe_range(self) -> str:
        lower = None if self.min is None else f"{'大于' if self.min_open else '不小于'} {self.min}"
        upper = None if self.max is None else f"{'小于' if self.max_open else '不大于'} {self.max}"
        if lower is not None and upper is not None:
            if not self.min_open and not self.max_open:
                return f"取值 {self.min} 到 {self.max}"
            return f"取值{lower}且{upper}"
        return f"取值{lower or upper}"


class ChineseIntRange(_ChineseRangeMixin, click.IntRange):
    name = "整数"


class ChineseFloatRange(_ChineseRangeMixin, click.FloatRange):
    name = "数值"


def localize_cli(root: click.Command) -> None:
    """Make click print Chinese for ``root`` and every command below it.

    Installs ``CATALOGUE`` into click's modules, then sets the Chinese context class,
    placeholders and parameter types on each command. Calling it again changes nothing.
    """
    install_click_catalogue()

    for command in iter_commands(root):
        if command.context_class is click.Context:
            command.context_class = ChineseContext
        if command.options_metavar is not None:
            command.options_metavar = USAGE_PLACEHOLDERS.get(command.options_metavar, command.options_metavar)
        if isinstance(command, click.Group):
            command.subcommand_metavar = USAGE_PLACEHOLDERS.get(command.subcommand_metavar,
                                                                command.subcommand_metavar)
        for param in command.params:
            param.type = localized_type(param.type)


def install_click_catalogue() -> None:
    """Bind ``_`` and ``ngettext`` in every click module to ``CATALOGUE``."""
    for module in click_modules():
        if getattr(module, "_", None) is gettext.gettext:
            module._ = CATALOGUE.gettext  # type: ignore[attr-defined]
        if getattr(module, "ngettext", None) is gettext.ngettext:
            module.ngettext = CATALOGUE.ngettext  # type: ignore[attr-defined]


def click_modules() -> Iterator[ModuleType]:
    """Yield click and each of its submodules that imports on this platform."""
    yield click
    for info in pkgutil.iter_modules(click.__path__):
        # click._winconsole asserts that it runs on Windows; click imports it only there.
        if info.name == "_winconsole" and sys.platform != "win32":
            continue
        yield importlib.import_module(f"click.{info.name}")


def iter_commands(root: click.Command) -> Iterator[click.Command]:
    """Yield ``root`` and every command of its groups, depth first."""
    yield root
    if isinstance(root, click.Group):
        for command in root.commands.values():
            yield from iter_commands(command)


def localized_type(param_type: click.ParamType) -> click.ParamType:
    """Return ``param_type`` with a Chinese name and range text, as a new object if it changes.

    A copy is returned rather than the type renamed in place, because click shares one
    instance of each basic type (``click.INT``) between every parameter of the process.
    """
    if isinstance(param_type, _ChineseRangeMixin):
        return param_type
    range_class = {click.IntRange: ChineseIntRange, click.FloatRange: ChineseFloatRange}.get(type(param_type))
    if range_class is not None:
        return range_class(param_type.min, param_type.max, param_type.min_open, param_type.max_open,
                           param_type.clamp)

    if isinstance(param_type, click.Path):
        name = _path_name(param_type)
    else:
        name = TYPE_NAMES.get(type(param_type))
    if name is None or param_type.name == name:
        return param_type
    localized = copy.copy(param_type)
    localized.name = name
    return localized


def _path_name(path_type: click.Path) -> str:
    # The same choice click.Path makes for its own name, which it computes once at creation.
    if path_type.file_okay and not path_type.dir_okay:
        return CATALOGUE.gettext("file")
    if path_type.dir_okay and not path_type.file_okay:
        return CATALOGUE.gettext("directory")
    return CATALOGUE.gettext("path")
