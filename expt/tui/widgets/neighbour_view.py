"""A metric-learning run's nearest neighbours: pick a test image, see its closest training images."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from expt.tui.format import inert, number, plain
from expt.tui.widgets.picture import picture

QUERY_SIZE = (16, 8)
NEIGHBOUR_SIZE = (12, 6)


def query_label(query: dict[str, Any]) -> Text:
    neighbours = query.get("neighbours") or []
    hit = bool(neighbours) and str(neighbours[0].get("class")) == str(query.get("class"))
    text = Text("  " if hit else "x ", style="bold red" if not hit else "")
    text.append(f"test {query.get('test_index', '?')}", style="bold")
    text.append(inert(f"  class {query.get('class', '?')}"))
    return text


class NeighbourView(Horizontal):
    """``data`` is neighbours.json (``queries`` with their ``neighbours``); ``pictures`` its images.

    The list marks with x the queries whose nearest neighbour has another class.
    """

    def __init__(self, data: dict[str, Any], pictures: dict[str, Any], mode: str = "auto", *,
                 name: str | None = None, id: str | None = None, disabled: bool = False):
        super().__init__(name=name, id=id, disabled=disabled)
        self.data, self.pictures, self.mode = data, pictures, mode
        self.queries: list[dict[str, Any]] = [q for q in data.get("queries", []) if isinstance(q, dict)]

    def compose(self) -> ComposeResult:
        yield OptionList(*(Option(query_label(q), id=str(i)) for i, q in enumerate(self.queries)),
                         id="queries")
        yield VerticalScroll(id="neighbours")

    def on_mount(self) -> None:
        queries = self.query_one("#queries", OptionList)
        queries.focus()
        if self.queries:
            queries.highlighted = 0
            self.show(0)
        else:
            self.query_one("#neighbours").mount(Static("neighbours.json lists no queries"))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option.id is not None:
            self.show(int(event.option.id))

    def _picture(self, relative: str, size: tuple[int, int]) -> Any:
        image = self.pictures.get(relative) if relative else None
        if image is None:
            shown = Static(Text("(no picture)", style="dim"), classes="no-picture")
        else:
            shown = picture(image, self.mode)
        shown.styles.width, shown.styles.height = size
        return shown

    def show(self, index: int) -> None:
        query = self.queries[index]
        box = self.query_one("#neighbours", VerticalScroll)
        box.remove_children()
        distance = self.data.get("distance", "distance")
        title = plain(f"test image {query.get('test_index', '?')}, class {query.get('class', '?')}", style="bold")
        title.append(f"   {len(query.get('neighbours') or [])} nearest training images by {distance}", style="dim")
        cells = []
        for item in query.get("neighbours") or []:
            same = str(item.get("class")) == str(query.get("class"))
            caption = plain(f"{item.get('class', '?')} ", style="green" if same else "bold red")
            caption.append(number(item.get("distance")), style="dim")
            cell = Vertical(self._picture(item.get("image", ""), NEIGHBOUR_SIZE), Static(caption), classes="neighbour")
            cell.styles.width = NEIGHBOUR_SIZE[0] + 1
            cells.append(cell)
        row = Horizontal(*cells, classes="neighbour-row")
        row.styles.height = NEIGHBOUR_SIZE[1] + 1
        box.mount(Static(title), self._picture(query.get("image", ""), QUERY_SIZE), row)
