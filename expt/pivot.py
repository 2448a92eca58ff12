"""Pivot tables: one cell per (row value, column value) over the runs that share them.

``build(runs, rows=("mode",), cols=("shots",), metric="best_top1")`` groups runs by the values of the row
and column keys (params, or ``experiment`` / ``recipe``); a cell's statistics are ``analysis.Stat`` over its
completed runs' summary values (mean, std, 95% CI, n: the same numbers as compare's seed groups), and the best
cell of each column is ``analysis.best_index`` over the means. The CLI (``expt table``), the TUI's table of an
experiment and ``expt report`` all draw from the same ``Pivot``; ``to_markdown``, ``to_latex``, ``to_csv`` and
``to_json`` write it out. Pure Python: no rich, typer or textual.
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Sequence

from expt import analysis
from expt.analysis import SEED_KEYS, Stat
from expt.core.runfiles import ACTIVE_STATUSES
from expt.errors import UsageError
from expt.formatting import inert, mean_ci, number
from expt.store import Run

RUN_KEYS = ("experiment", "recipe")  # keys that are not params but columns of the run
PENDING = "…"  # a cell whose runs have not completed yet
_MISSING = None


@dataclass(frozen=True)
class Cell:
    """The runs that share a (row value, column value): every one, whatever its status."""

    runs: tuple[Run, ...]
    stat: Stat | None  # analysis.Stat.of over the completed runs' summary[metric]

    @property
    def pending(self) -> int:
        """Runs of the cell still queued or running."""
        return sum(1 for r in self.runs if r.status in ACTIVE_STATUSES)

    @property
    def failed(self) -> int:
        """Runs of the cell that ended without completing (failed, stopped, crashed, pruned)."""
        return sum(1 for r in self.runs if r.status != "completed" and r.status not in ACTIVE_STATUSES)


@dataclass
class Pivot:
    metric: str
    goal: str | None  # analysis.direction(metric, runs): "max", "min" or None (no best marked)
    rows: tuple[str, ...]
    cols: tuple[str, ...]  # may be (): one column, the metric
    row_values: list[tuple]
    col_values: list[tuple]
    cells: dict[tuple[tuple, tuple], Cell]
    best: dict[tuple, tuple]  # column value -> row value of its best cell
    mixed: list[str]  # keys (not rows, cols or seed) whose values differ inside some cell
    pending: int  # runs of the table not yet completed (queued, starting, running)
    failed: int = 0  # runs that ended without completing (their cells count only the completed ones)
    runs: tuple[Run, ...] = field(default=(), repr=False)

    def cell(self, row: tuple, col: tuple) -> Cell | None:
        return self.cells.get((row, col))

    @property
    def grouped(self) -> bool:
        """Some cell holds more than one run (its value is a mean)."""
        return any(len(c.runs) > 1 for c in self.cells.values())

    @property
    def per_cell(self) -> str:
        """How many runs a cell holds: '3', or '2-3' when they differ ('' without cells)."""
        sizes = sorted({len(c.runs) for c in self.cells.values()})
        if not sizes:
            return ""
        return str(sizes[0]) if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}"


def value_of(run: Run, key: str) -> Any:
    """The run's value of ``key``: a param, or its experiment or recipe; hashable (lists as tuples)."""
    if key == "experiment":
        return run.experiment
    if key == "recipe":
        return run.recipe
    return analysis._freeze(run.params.get(key, _MISSING))


def known_keys(runs: Sequence[Run]) -> list[str]:
    return list(dict.fromkeys([*RUN_KEYS, *(k for r in runs for k in r.params)]))


def default_axes(runs: Sequence[Run]) -> tuple[list[str], list[str]]:
    """The swept keys (``Run.varying``, the seed left out; ``experiment`` or ``recipe`` when the runs have more
    than one): one key -> rows only; two -> rows, cols; more -> all but the last as rows, the last as cols."""
    keys = []
    if len({r.experiment for r in runs}) > 1:
        keys.append("experiment")
    elif len({r.recipe for r in runs}) > 1:
        keys.append("recipe")
    swept = [k for k in dict.fromkeys(k for r in runs for k in r.varying) if k not in SEED_KEYS]
    differing = [k for k in swept if len({value_of(r, k) for r in runs}) > 1]
    keys += differing or ([] if keys else swept)
    if len(keys) <= 1:
        return keys, []
    return keys[:-1], keys[-1:]


def default_metrics(runs: Sequence[Run]) -> list[str]:
    """The numeric summary keys, ``best_<metric>`` of the runs' recipes first (``analysis.numeric_summary_keys``
    order after it); ``best_<metric>`` even before any run has completed."""
    keys = analysis.numeric_summary_keys(runs)
    completed = any(r.status == "completed" for r in runs)
    best = [f"best_{r.metric}" for r in runs if r.metric and (f"best_{r.metric}" in keys or not completed)]
    return list(dict.fromkeys(best + keys))


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _check_key(key: str, runs: Sequence[Run], what: str) -> None:
    keys = known_keys(runs)
    if key not in keys:
        shown = ", ".join(keys[:12])
        raise UsageError(f"{what} {key!r}: no run has that key{_did_you_mean(key, keys)} (keys: {shown}"
                         f"{', ...' if len(keys) > 12 else ''})")


def _ordered(values: list[Any]) -> list[Any]:
    """Distinct values in order of first appearance; numbers sorted numerically (a missing value last)."""
    distinct = list(dict.fromkeys(values))
    present = [v for v in distinct if v is not _MISSING]
    if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        present.sort()
    return present + [v for v in distinct if v is _MISSING]


def split_keys(text: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"model, mode"`` or ``["model", "mode"]`` -> ``("model", "mode")``: the keys of ``--rows``/``--cols``."""
    if text is None:
        return ()
    parts = [text] if isinstance(text, str) else list(text)
    return tuple(k.strip() for p in parts for k in p.split(",") if k.strip())


def build(runs: Sequence[Run], rows: str | Sequence[str] = (), cols: str | Sequence[str] = (),
          metric: str | None = None) -> Pivot:
    """The pivot of ``runs`` (any statuses) on ``rows`` x ``cols`` (keys, or comma-separated names) for one
    summary key; without rows and cols, ``default_axes``; without a metric, ``default_metrics``'s first."""
    runs = list(runs)
    if not runs:
        raise UsageError("no runs to tabulate")
    rows, cols = split_keys(rows), split_keys(cols)
    if not rows and not cols:
        default_rows, default_cols = default_axes(runs)
        rows, cols = tuple(default_rows), tuple(default_cols)
    for key in rows:
        _check_key(key, runs, "--rows")
    for key in cols:
        _check_key(key, runs, "--cols")
    if len(set(rows + cols)) < len(rows + cols):
        raise UsageError(f"a key is given twice in --rows/--cols: {', '.join(rows + cols)}")
    metrics = default_metrics(runs)
    if metric is None:
        if not metrics:
            raise UsageError("the runs have no numeric summary values to tabulate (give --metric)")
        metric = metrics[0]
    elif metric not in metrics and not any(metric in r.summary for r in runs):
        raise UsageError(f"--metric {metric!r}: no run has that summary value{_did_you_mean(metric, metrics)}"
                         f" (metrics: {', '.join(metrics[:10])}{', ...' if len(metrics) > 10 else ''})")

    ranks = {key: {v: i for i, v in enumerate(_ordered([value_of(r, key) for r in runs]))} for key in rows + cols}
    members: dict[tuple[tuple, tuple], list[Run]] = {}
    for run in runs:
        row = tuple(value_of(run, k) for k in rows)
        col = tuple(value_of(run, k) for k in cols)
        members.setdefault((row, col), []).append(run)

    def order(values: Iterable[tuple], keys: tuple[str, ...]) -> list[tuple]:
        return sorted(dict.fromkeys(values), key=lambda v: tuple(ranks[k][x] for k, x in zip(keys, v)))

    row_values = order((r for r, _ in members), rows)
    col_values = order((c for _, c in members), cols)
    cells = {key: Cell(tuple(group), Stat.of(r.summary.get(metric) for r in group if r.status == "completed"))
             for key, group in members.items()}
    goal = analysis.direction(metric, runs)
    best: dict[tuple, tuple] = {}
    for col in col_values:
        means = [(c.stat.mean if (c := cells.get((row, col))) and c.stat else None) for row in row_values]
        index = analysis.best_index(means, goal)
        if index is not None and means.count(means[index]) == 1:  # a tie for the best marks nothing
            best[col] = row_values[index]
    axes = set(rows + cols) | set(SEED_KEYS)
    mixed: list[str] = []
    for group in members.values():
        if len(group) < 2:
            continue
        dicts = [{**r.params, **{k: value_of(r, k) for k in RUN_KEYS}} for r in group]
        mixed += [k for k in analysis.differing_keys(dicts, ignore=axes) if k not in mixed]
    pending = sum(1 for r in runs if r.status in ACTIVE_STATUSES)
    failed = sum(1 for r in runs if r.status != "completed" and r.status not in ACTIVE_STATUSES)
    return Pivot(metric, goal, rows, cols, row_values, col_values, cells, best, mixed, pending, failed, tuple(runs))


def build_all(runs: Sequence[Run], rows: str | Sequence[str] = (), cols: str | Sequence[str] = (),
              metrics: Sequence[str] = ()) -> list[Pivot]:
    """One pivot per metric (the first default metric when none is given)."""
    return [build(runs, rows, cols, m) for m in (metrics or [None])]


# -- text ----------------------------------------------------------------------------------------------------

def cell_text(pivot: Pivot, cell: Cell | None, pm: str = "±") -> str:
    """A cell as the tables print it: ``83.2 ± 1.4 (n=3)``, one run ``83.2``, ``…`` while its runs are pending
    with no value yet (``83.2 …`` when some are), ``""`` for an empty cell."""
    if cell is None:
        return ""
    text = mean_ci(cell.stat, len(cell.runs), pm)
    if cell.pending:
        return f"{text} {PENDING}" if text else PENDING
    return text


def value_label(value: Any) -> str:
    """A key's value in a header or row label (user text made inert; a missing value as '-')."""
    return "-" if value is _MISSING else number(value)


def col_label(pivot: Pivot, col: tuple) -> str:
    """``shots=1``; ``model=r18 shots=1`` for several column keys; the metric without column keys."""
    if not pivot.cols:
        return pivot.metric
    return " ".join(f"{inert(k)}={value_label(v)}" for k, v in zip(pivot.cols, col))


def title(pivot: Pivot) -> str:
    """``best_top1 (mean ± 95% CI over 2 seeds)`` when cells group runs, else the metric."""
    if not pivot.grouped:
        return inert(pivot.metric)
    what = "runs" if pivot.mixed else "seeds"
    return f"{inert(pivot.metric)} (mean ± 95% CI over {pivot.per_cell} {what})"


def notes(pivot: Pivot) -> list[str]:
    """What the table does not show: pending runs, runs that did not complete, keys mixed inside a cell."""
    lines = []
    if pivot.pending:
        lines.append(f"{pivot.pending} run{'s' * (pivot.pending != 1)} not completed yet ({PENDING}): "
                     "their cells fill in as they complete")
    if pivot.failed:
        lines.append(f"{pivot.failed} run{'s' * (pivot.failed != 1)} ended without completing: "
                     "not counted in the cells")
    if pivot.mixed:
        lines.append("mixed inside a cell: " + ", ".join(inert(k) for k in pivot.mixed)
                     + " (add to --rows/--cols to split)")
    return lines


def header(pivot: Pivot) -> list[str]:
    return [inert(k) for k in pivot.rows] + [col_label(pivot, c) for c in pivot.col_values]


def row_labels(pivot: Pivot, row: tuple) -> list[str]:
    return [value_label(v) for v in row] if pivot.rows else []


def _is_best(pivot: Pivot, row: tuple, col: tuple) -> bool:
    return pivot.best.get(col) == row and pivot.best.get(col) is not None


def grid(pivot: Pivot, pm: str = "±") -> list[tuple[list[str], list[tuple[str, bool]]]]:
    """The table's body: (row labels, [(cell text, is best)]) per row value."""
    return [(row_labels(pivot, row), [(cell_text(pivot, pivot.cell(row, col), pm), _is_best(pivot, row, col))
                                      for col in pivot.col_values])
            for row in pivot.row_values]


def md_escape(text: str) -> str:
    """Text for a Markdown table cell, shown as written: backslashes, pipes and asterisks escaped, HTML's
    ``& < >`` as entities, on one line."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("*", "\\*")


def to_markdown(p: Pivot) -> str:
    """A GitHub Markdown table (the best cell of each column in bold), the notes below it in italics."""
    md = md_escape
    head = header(p) or [""]
    lines = ["| " + " | ".join(md(h) for h in head) + " |",
             "|" + "|".join(":---" if i < len(p.rows) else "---:" for i in range(len(head))) + "|"]
    for labels, cells in grid(p):
        shown = [f"**{md(t)}**" if best and t else md(t) for t, best in cells]
        lines.append("| " + " | ".join([md(x) for x in labels] + shown) + " |")
    text = "\n".join(lines) + "\n"
    extra = notes(p)
    if extra:
        text += "\n" + "\n".join(f"_{md(line)}_" for line in extra) + "\n"
    return text


_LATEX = {"&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}",
          "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "\\": r"\textbackslash{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}"}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX))


def latex_escape(text: object) -> str:
    """User text for LaTeX: control codes shown escaped (``inert``), then every special character escaped."""
    return _LATEX_RE.sub(lambda m: _LATEX[m.group()], inert(text).replace("\n", " ").replace("\t", " "))


def latex_cell(text: str) -> str:
    """A cell's text (``83.2 ± 1.4 (n=3)``) for LaTeX: ``\\pm`` in math mode, the rest escaped."""
    return " ".join(r"$\pm$" if part == "±" else (r"\dots{}" if part == PENDING else latex_escape(part))
                    for part in text.split(" "))


def to_latex(p: Pivot) -> str:
    """A booktabs tabular (``\\usepackage{booktabs}``): the best cell of each column in ``\\textbf``."""
    head = header(p) or [""]
    spec = "l" * len(p.rows) + "r" * len(p.col_values)
    lines = [f"% {latex_escape(title(p))}", rf"\begin{{tabular}}{{{spec or 'l'}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in head) + r" \\", r"\midrule"]
    for labels, cells in grid(p):
        shown = [rf"\textbf{{{latex_cell(t)}}}" if best and t else latex_cell(t) for t, best in cells]
        lines.append(" & ".join([latex_escape(x) for x in labels] + shown) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {latex_escape(line)}" for line in notes(p)]
    return "\n".join(lines) + "\n"


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return inert(value) if isinstance(value, str) else value


def to_csv(p: Pivot) -> str:
    """One line per cell (tidy): the row and column keys' values, metric, mean, std, ci95, n, best, pending,
    runs (space-separated ids); full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*p.rows, *p.cols, "metric", "mean", "std", "ci95", "n", "best", "pending", "runs"])
    for row, col, cell in _filled(p):
        s = cell.stat
        numbers = ["", "", "", 0] if s is None else [_csv_value(x) for x in (s.mean, s.std, s.ci95, s.n)]
        writer.writerow([*(_csv_value(_thaw(v)) for v in row), *(_csv_value(_thaw(v)) for v in col),
                         inert(p.metric), *numbers, int(_is_best(p, row, col)), cell.pending,
                         " ".join(r.id for r in cell.runs)])
    return buffer.getvalue()


def _filled(p: Pivot) -> Iterator[tuple[tuple, tuple, Cell]]:
    """(row value, col value, cell) for every cell that holds runs, in the table's order."""
    for row in p.row_values:
        for col in p.col_values:
            cell = p.cell(row, col)
            if cell is not None:
                yield row, col, cell


def _thaw(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_thaw(v) for v in value]
    return value


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def to_json(p: Pivot) -> dict[str, Any]:
    """The numbers: per cell its row and column values, mean, std, ci95, n, run ids, pending, best."""
    cells = []
    for row, col, cell in _filled(p):
        s = cell.stat
        cells.append({
            "row": {k: _thaw(v) for k, v in zip(p.rows, row)},
            "col": {k: _thaw(v) for k, v in zip(p.cols, col)},
            "mean": _finite(s.mean) if s else None, "std": s.std if s else None,
            "ci95": s.ci95 if s else None, "n": s.n if s else 0,
            "runs": [r.id for r in cell.runs], "pending": cell.pending, "best": _is_best(p, row, col),
            "text": cell_text(p, cell),
        })
    return {
        "metric": p.metric, "goal": p.goal, "rows": list(p.rows), "cols": list(p.cols),
        "row_values": [[_thaw(v) for v in r] for r in p.row_values],
        "col_values": [[_thaw(v) for v in c] for c in p.col_values],
        "cells": cells, "mixed": p.mixed, "pending": p.pending, "failed": p.failed, "title": title(p),
    }
