"""A one-line editor in a dialog: a run's tags or its note (the run detail's `t` and `n`)."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Static

from expt.tui.format import plain


class EditTextScreen(ModalScreen[str | None]):
    """Dismisses with the text on enter, None on escape."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, value: str, hint: str = ""):
        super().__init__()
        self.title_text, self.value, self.hint = title, value, hint

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(plain(self.title_text), id="dialog-title")
            yield Input(self.value, id="edit-text", compact=True)
            yield Static(plain(self.hint or "enter: save  escape: cancel", style="dim"), id="dialog-body")

    def on_mount(self) -> None:
        self.query_one("#edit-text", Input).focus()

    @on(Input.Submitted, "#edit-text")
    def _save(self, event: Input.Submitted) -> None:
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        self.dismiss(None)
