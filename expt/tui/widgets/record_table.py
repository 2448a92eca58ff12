"""One of a run's tables (tables/NAME.json: per-class results, classification report, scaling grid)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import DataTable

from expt.tui.format import number, plain

MAX_ROWS = 2000


class RecordTable(DataTable):
    """``columns`` and ``rows`` (dicts) as a read-only table; numbers right-aligned."""

    DEFAULT_CSS = """
    RecordTable {
        height: auto;
        max-height: 24;
        margin-bottom: 1;
    }
    """

    def __init__(self, columns: list[str], rows: list[dict[str, Any]], *, name: str | None = None,
                 id: str | None = None, classes: str | None = None, disabled: bool = False):
        super().__init__(name=name, id=id, classes=classes, disabled=disabled, cursor_type="row",
                         zebra_stripes=True)
        self.record_columns, self.records = columns, rows

    def on_mount(self) -> None:
        for column in self.record_columns:
            self.add_column(plain(column), key=column)
        for row in self.records[:MAX_ROWS]:
            self.add_row(*(self._cell(row.get(c)) for c in self.record_columns))

    @staticmethod
    def _cell(value: Any) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Text(number(value), justify="right")
        return plain(number(value))
