"""o : choose the column the runs table is sorted by (the current one again reverses it)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from expt.tui.format import plain


class SortPicker(ModalScreen[str | None]):
    """Dismisses with a column key, ``"newest"``, or None (escape)."""

    BINDINGS = [Binding("escape,q", "dismiss_none", "Cancel"),
                Binding("j", "down", show=False), Binding("k", "up", show=False)]

    def __init__(self, columns: list[tuple[str, str]], current: str | None, reverse: bool):
        super().__init__()
        self.columns, self.current, self.reverse = columns, current, reverse

    def compose(self) -> ComposeResult:
        options = [Option("running first, then newest" + ("  (current)" if self.current is None else ""),
                          id="newest")]
        for key, label in self.columns:
            note = ""
            if key == self.current:
                note = "  (current: enter reverses)" + (" reversed" if self.reverse else "")
            options.append(Option(plain(f"{label}{note}"), id=key))
        with Vertical(id="picker"):
            yield Static("Sort runs by", id="picker-title")
            yield OptionList(*options, id="picker-options")

    def on_mount(self) -> None:
        options = self.query_one(OptionList)
        options.focus()
        ids = ["newest"] + [key for key, _ in self.columns]
        options.highlighted = ids.index(self.current) if self.current in ids else 0

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

    def action_down(self) -> None:
        self.query_one(OptionList).action_cursor_down()

    def action_up(self) -> None:
        self.query_one(OptionList).action_cursor_up()
