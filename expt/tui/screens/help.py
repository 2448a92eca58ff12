"""? : the keys of the screen below, with what they do."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Static

KEY_NAMES = {"question_mark": "?", "slash": "/", "space": "space", "escape": "esc", "enter": "enter",
             "tab": "tab", "shift+tab": "shift+tab", "ctrl+p": "ctrl+p", "plus": "+", "minus": "-",
             "left_square_bracket": "[", "right_square_bracket": "]", "less_than_sign": "<",
             "greater_than_sign": ">"}


def key_label(key: str) -> str:
    return ",".join(KEY_NAMES.get(k.strip(), k.strip()) for k in key.split(","))


def own_bindings(node: object) -> set[tuple[str, str]]:
    """(action, description) of the bindings that expt's classes declare in ``node``'s ancestry."""
    own = set()
    for cls in type(node).__mro__:
        if cls.__module__.startswith("expt."):
            for binding in cls.__dict__.get("BINDINGS", []):
                if isinstance(binding, Binding):
                    own.add((binding.action, binding.description))
    return own


def key_entries(screen: Screen) -> list[tuple[str, str]]:
    """(keys, what) for the screen, the focused widget and its parents, then the app; Textual's own
    keys (a table's cursor keys ...) are summed up in one line."""
    app = screen.app
    focused = list(screen.focused.ancestors_with_self) if screen.focused else []
    nodes = [screen, *(n for n in focused if n is not screen and n is not app), app]
    rows: list[tuple[str, str]] = []
    taken: set[str] = set()
    for node in nodes:
        own = own_bindings(node)
        keys_of: dict[str, list[str]] = {}
        labels: dict[str, str] = {}
        for key, binding in node._bindings:
            if (binding.action, binding.description) not in own or key in taken:
                continue
            keys_of.setdefault(binding.action, []).append(key_label(key))
            labels[binding.action] = binding.description
        for action, keys in keys_of.items():
            taken.update(keys)
            rows.append((", ".join(dict.fromkeys(keys)), labels[action]))
    rows.append(("arrows, pgup, pgdn", "move (the mouse works too)"))
    return rows


class HelpScreen(ModalScreen[None]):
    """A table of keys: ``entries`` are (keys, what) pairs gathered from the screen below."""

    @classmethod
    def for_screen(cls, screen: Screen) -> HelpScreen:
        name = type(screen).__name__.removesuffix("Screen")
        return cls(f"Keys: {name}", getattr(screen, "HELP", ""), key_entries(screen))

    BINDINGS = [Binding("escape,q,question_mark", "app.pop_screen", "Close")]

    def __init__(self, title: str, intro: str, entries: list[tuple[str, str]]):
        super().__init__()
        self.title_text, self.intro, self.entries = title, intro, entries

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=False, pad_edge=False, expand=True)
        table.add_column(style="bold", no_wrap=True, min_width=8, max_width=14)
        table.add_column(ratio=1)
        for keys, what in self.entries:
            table.add_row(keys, what)
        with VerticalScroll(id="help-box"):
            yield Static(Text(self.title_text, style="bold"), id="help-title")
            if self.intro:
                yield Static(Text(self.intro, style="dim"), id="help-intro")
            yield Static(table)
            yield Static(Text("esc closes; ctrl+p reaches every screen and action by name", style="dim"),
                         id="help-foot")
