"""A metric over epochs, one line per run (plotext through textual-plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from expt.tui.format import inert

Series = dict[str, tuple[list[float], list[float]]]  # label -> (steps, values)
COLORS = ("cyan", "orange", "green", "magenta", "blue", "red", "yellow", "gray")


class MetricChart(PlotextPlot):
    """``series`` drawn as labelled lines; ``extend`` adds points to a line as a run logs them."""

    DEFAULT_CSS = """
    MetricChart {
        height: 12;
        min-height: 8;
    }
    """

    def __init__(self, title: str, xlabel: str = "epoch", *, name: str | None = None, id: str | None = None,
                 classes: str | None = None, disabled: bool = False):
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self.title = title
        self.xlabel = xlabel
        self.series: Series = {}

    def set_series(self, series: Series, title: str | None = None) -> None:
        self.series = {label: (list(xs), list(ys)) for label, (xs, ys) in series.items()}
        if title is not None:
            self.title = title
        self._replot()

    def extend(self, label: str, points: list[list[float]]) -> None:
        xs, ys = self.series.setdefault(label, ([], []))
        for step, value in points:
            if value is None:
                continue
            if xs and step <= xs[-1]:  # a resumed run logging a step again replaces it
                while xs and xs[-1] >= step:
                    xs.pop()
                    ys.pop()
            xs.append(step)
            ys.append(value)
        self._replot()

    @property
    def last_step(self) -> dict[str, float]:
        return {label: xs[-1] for label, (xs, _) in self.series.items() if xs}

    def _replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        several = len(self.series) > 1
        for i, (label, (xs, ys)) in enumerate(self.series.items()):
            if not xs:
                continue
            plt.plot(xs, ys, label=inert(label) if several else None, color=COLORS[i % len(COLORS)],
                     marker="braille" if len(xs) > 1 else "dot")
        plt.title(inert(self.title))
        plt.xlabel(self.xlabel)
        self.refresh()
