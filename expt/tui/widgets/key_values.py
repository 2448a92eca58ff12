"""Keys and values as two columns (a run's params or summary), the keys that matter highlighted."""

from __future__ import annotations

from typing import Any, Iterable

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from expt.tui.format import number, plain


class KeyValues(Static):
    """A titled two-column list; ``highlight`` keys in bold yellow (a run's varying params)."""

    DEFAULT_CSS = """
    KeyValues {
        height: auto;
        padding: 0 1;
    }
    """

    def __init__(self, title: str, values: dict[str, Any] | None = None, highlight: Iterable[str] = (), *,
                 name: str | None = None, id: str | None = None, classes: str | None = None,
                 disabled: bool = False):
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.title = title
        self.set_values(values or {}, highlight)

    def set_values(self, values: dict[str, Any], highlight: Iterable[str] = ()) -> None:
        marked = set(highlight)
        table = Table(title=self.title, title_justify="left", title_style="bold", box=None, show_header=False,
                      pad_edge=False, expand=True)
        table.add_column(style="dim", no_wrap=True)
        table.add_column(ratio=1, overflow="fold")
        for key, value in values.items():
            table.add_row(plain(key), Text(number(value), style="bold yellow" if key in marked else ""))
        if not values:
            table.add_row("", Text("(none yet)", style="dim"))
        self.update(table)
