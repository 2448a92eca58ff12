"""User text is data: hostile descriptions reach the terminal verbatim, never as markup or control codes."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_TOML, expt, write_project
from expt.formatting import inert

HOSTILE = ("[/] [bold red]loud[/] [link=file:///etc/passwd]x[/link] \x1b[31mred \x1b]8;;http://evil\x07link "
           "over\rwrite nul\x00 \u202eevil\u200f e\u0301 🧪 " + "z" * 10_000)


def toml_string(text: str) -> str:
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in text) + '"'


def test_inert_escapes_every_control_code_and_keeps_the_rest():
    shown = inert(HOSTILE)
    assert not any(ord(c) < 32 or 0x7f <= ord(c) <= 0x9f or c in "\u202e\u200f" for c in shown)
    assert "\\x1b[31mred" in shown and "over\\rwrite" in shown and "nul\\x00" in shown and "\\u202eevil" in shown
    assert "[bold red]loud[/]" in shown and "e\u0301 🧪" in shown and inert("a\tb\nc") == "a\tb\nc"


def test_hostile_description_is_shown_as_written_by_the_cli(tmp_path: Path):
    write_project(tmp_path, TINY_TOML.replace('"a tiny test experiment"', toml_string(HOSTILE[:-10_000])))
    result = expt("experiments", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "\x1b" not in out and "\r" not in out and "\x00" not in out and "\u202e" not in out
    flat = "".join(line.strip() for line in out.splitlines())
    for piece in ("[/]", "[bold red]loud[/]", "[link=file:///etc/passwd]x[/link]", "\\x1b[31mred", "over\\rwrite",
                  "nul\\x00", "\\u202eevil\\u200f", "🧪"):
        assert piece in flat, piece
