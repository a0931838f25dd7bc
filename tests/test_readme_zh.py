"""README_zh.md is README.md in Chinese, kept in step with it: each links the other at the top, both have the
same fenced code blocks (byte for byte, in order), the same heading structure, the same ``mmt-nas`` commands and
the same numbers, and the Chinese one's prose is actually Chinese."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EN = (ROOT / "README.md").read_text(encoding="utf-8")
ZH = (ROOT / "README_zh.md").read_text(encoding="utf-8")

# An opening fence: optional indentation (a block inside a list item), three or more backticks, an optional
# language tag. It closes on a line with the same indentation and the same backticks and nothing else.
_OPEN = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<lang>[\w+-]*)[ \t]*$")


def split(text: str) -> tuple[list[tuple[str, str, str]], str]:
    """The fenced blocks as (indentation, language tag, content), and the text outside them (the fences of each
    block replaced by one empty line). An unclosed fence fails."""
    lines = text.splitlines(keepends=True)
    blocks: list[tuple[str, str, str]] = []
    prose: list[str] = []
    i = 0
    while i < len(lines):
        m = _OPEN.match(lines[i].rstrip("\n"))
        if not m:
            prose.append(lines[i])
            i += 1
            continue
        close = re.compile(rf"^{m['indent']}{m['fence']}[ \t]*$")
        j = i + 1
        while j < len(lines) and not close.match(lines[j].rstrip("\n")):
            j += 1
        assert j < len(lines), f"unclosed code fence at line {i + 1}: {lines[i]!r}"
        blocks.append((m["indent"], m["lang"], "".join(lines[i + 1 : j])))
        prose.append("\n")
        i = j + 1
    return blocks, "".join(prose)


EN_BLOCKS, EN_PROSE = split(EN)
ZH_BLOCKS, ZH_PROSE = split(ZH)


def headings(prose: str) -> list[int]:
    return [len(m[1]) for m in re.finditer(r"^(#{1,6})\s+\S", prose, flags=re.MULTILINE)]


def inline_code(prose: str) -> list[str]:
    """Inline code spans (which may run over a line break, as "`mmt-nas\\npredict`" does)."""
    return re.findall(r"(?<!`)`([^`]+)`(?!`)", prose)


def subcommands(code: list[str]) -> Counter[str]:
    return Counter(m for c in code for m in re.findall(r"mmt-nas\s+([a-z][a-z-]*)", c))


def numbers(prose: str) -> set[str]:
    """Every number in the prose and tables (not parts of names such as MobileNetV2, p90 or x86)."""
    return set(re.findall(r"(?<![\w.])\d+(?:[.,]\d+)*", prose))


def _cjk(ch: str) -> bool:
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF


def test_the_parser_finds_the_blocks_the_readme_has() -> None:
    # 14 today; the README's two first commands, its YAML, Python and the indented lint block among them
    assert len(EN_BLOCKS) >= 10
    langs = {lang for _, lang, _ in EN_BLOCKS}
    assert {"bash", "python", "yaml", ""} <= langs, langs
    assert any(indent for indent, _, _ in EN_BLOCKS), "the indented block in a list item was not found"
    assert "```" not in EN_PROSE and "```" not in ZH_PROSE


def test_each_readme_links_the_other_at_the_top() -> None:
    assert "[中文说明](README_zh.md)" in EN.splitlines()[:3]
    assert "[English](README.md)" in ZH.splitlines()[:3]
    assert (ROOT / "README_zh.md").is_file()


@pytest.mark.parametrize("n", range(max(len(EN_BLOCKS), len(ZH_BLOCKS))))
def test_the_code_blocks_are_the_same_in_the_same_order(n: int) -> None:
    assert n < len(EN_BLOCKS), f"README_zh.md has an extra code block: {ZH_BLOCKS[n]}"
    assert n < len(ZH_BLOCKS), f"README_zh.md lacks README.md's code block {n + 1}: {EN_BLOCKS[n]}"
    assert ZH_BLOCKS[n] == EN_BLOCKS[n], f"code block {n + 1} differs (copy it from README.md as it is)"


def test_the_heading_structure_is_the_same() -> None:
    en, zh = headings(EN_PROSE), headings(ZH_PROSE)
    assert len(en) >= 10 and en[0] == 1, en
    assert zh == en, f"heading levels differ:\n  README.md    {en}\n  README_zh.md {zh}"
    # the comments of bash and YAML blocks start with '#' too: they are not headings
    assert headings(EN) != en


def test_both_readmes_name_the_same_commands() -> None:
    en = set(subcommands([c for _, _, c in EN_BLOCKS] + inline_code(EN_PROSE)))
    zh = set(subcommands([c for _, _, c in ZH_BLOCKS] + inline_code(ZH_PROSE)))
    assert {"demo", "generate", "meter", "merge", "predict", "report", "sample", "space"} <= en, en
    assert zh == en, f"only in README.md: {sorted(en - zh)}; only in README_zh.md: {sorted(zh - en)}"
    # and the prose mentions each as often (the code blocks alone would hide a dropped sentence)
    en_inline, zh_inline = subcommands(inline_code(EN_PROSE)), subcommands(inline_code(ZH_PROSE))
    assert zh_inline == en_inline, f"`mmt-nas ...` in the prose: README.md {en_inline}, README_zh.md {zh_inline}"


def test_the_translation_keeps_every_number() -> None:
    missing = sorted(numbers(EN_PROSE) - numbers(ZH_PROSE))
    assert not missing, f"numbers of README.md's prose or tables missing from README_zh.md: {missing}"


def test_the_chinese_readme_is_mostly_chinese() -> None:
    def share(prose: str) -> float:
        text = re.sub(r"(?<!`)`[^`]+`(?!`)", "", prose)  # inline code stays in English
        text = re.sub(r"\]\([^)]*\)", "]", text)  # link targets
        chars = [c for c in text if not c.isspace()]
        return sum(map(_cjk, chars)) / max(1, len(chars))

    assert share(EN_PROSE) < 0.01
    assert share(ZH_PROSE) >= 0.30, f"only {share(ZH_PROSE):.0%} of README_zh.md's prose is Chinese"
