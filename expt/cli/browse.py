"""Commands that read runs: ls, show, logs, compare, export. None of them imports torch."""

import csv
import io
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import orjson
import typer
from rich.table import Table
from rich.text import Text

from expt import analysis
from expt.cli import app, console, project
from expt.cli.render import curves_chart, duration, inert, number, plain, stat, status_text, when
from expt.cli.table import runs_text
from expt.core import runfiles, scheduler
from expt.core.runfiles import FINAL_STATUSES
from expt.errors import UsageError
from expt.store import Run, Store, open_store

if TYPE_CHECKING:
    from expt.query import Query

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (a stable contract for scripts).")]
SysOption = Annotated[bool, typer.Option("--sys", help="Include the system metrics (sys/ series, peak memory, "
                     "GPU utilisation).")]
WhereOption = Annotated[Optional[str], typer.Option("--where", "-w", metavar="EXPR", help="Only runs where EXPR "
                        "holds, e.g. \"best_top1 > 80 and mode = 'cbn'\" (see README: filters).")]
TagOption = Annotated[Optional[list[str]], typer.Option("--tag", metavar="TAG", help="Only runs with this tag "
                      "(repeatable: all must hold).")]
RunsArgument = Annotated[list[str], typer.Argument(help="Run ids, unique id prefixes, or experiment names.")]


def refresh(store: Store) -> None:
    """Bring runs.db up to date with the run folders before reading it."""
    scheduler.reap(store)
    store.ingest()


def _print_json(data: object) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode())


def run_query(where: Optional[str] = None, tags: Optional[list[str]] = None) -> "Query":
    """``--where`` and every ``--tag`` as one Query. A bad expression or tag is a QueryError / UsageError."""
    from expt.bookkeeping import check_tag
    from expt.query import Query

    query = Query.parse(where) if where else Query()
    if tags:
        query = query & Query.tags([check_tag(t) for t in tags])
    return query


def select_runs(store: Store, refs: Optional[list[str]] = None, where: Optional[str] = None,
                tags: Optional[list[str]] = None, limit: Optional[int] = None) -> list[Run]:
    """The runs named by ``refs`` (ids, prefixes, experiments; default: all, the newest ``limit``) for which
    ``--where`` and every ``--tag`` hold."""
    query = run_query(where, tags)
    if refs:
        return [r for r in store.resolve(refs) if query.matches(r)]
    condition, args = query.sql()
    return store.runs(condition, args, limit=limit)


@app.command("ls")
def ls(
    refs: Annotated[Optional[list[str]], typer.Argument(help="Only these experiments, runs or prefixes.")] = None,
    status: Annotated[Optional[list[str]], typer.Option("--status", "-s", help="Only runs with this status "
                      "(repeatable): queued, running, completed, failed, stopped, crashed, pruned.")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", "-n", min=0, help="Show the newest N runs "
                     "(default 50 in the table, all with --json; 0: all).")] = None,
    where: WhereOption = None,
    tag: TagOption = None,
    json_output: JsonOption = False,
) -> None:
    """List runs: id, status, the params that differ between them, best metric, progress, time."""
    with open_store(project().db_path) as store:
        refresh(store)
        n = limit if limit is not None else (0 if json_output else 50)
        runs = select_runs(store, refs, where, tag, limit=n or None)
        if status:
            runs = [r for r in runs if r.status in status]
        total = store.count()
    if json_output:
        _print_json([r.to_json() for r in runs])
        return
    if not runs:
        console.print("no runs yet: `expt run NAME` starts one" if not total else "no matching runs")
        return
    differing = analysis.differing_keys([r.params for r in runs])
    console.print(runs_text(runs, differing, console.width), no_wrap=True, overflow="ellipsis")
    if len(runs) < total and not refs and not where and not tag:
        console.print(Text(f"{len(runs)} of {total} runs; `expt ls -n 0` shows all", style="dim"))


@app.command()
def show(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    tables: Annotated[bool, typer.Option("--tables", "-t", help="Also print the recipe's tables "
                      "(per-class results, classification report, scaling grid ...).")] = False,
    steps: Annotated[int, typer.Option("--steps", min=0, help="Rows of the per-epoch metrics table to show "
                     "(the last ones; 0: all).")] = 30,
    sys_metrics: SysOption = False,
    json_output: JsonOption = False,
) -> None:
    """One run: params, summary, per-epoch metrics, system metrics in short (--sys: in full), paths."""
    from expt.core.tracking import read_table

    with open_store(project().db_path) as store:
        refresh(store)
        run = one_run(store, run_ref)
        run.metrics = store.metrics(run)
    if json_output:
        data = run.to_json()
        if tables:
            data["tables"] = {p.stem: dict(zip(("columns", "rows"), read_table(p))) for p in _table_files(run)}
        _print_json(data)
        return
    header = Text.assemble((inert(run.id), "bold"), "  ", status_text(run.status),
                           inert(f"  {run.experiment} / {run.recipe}"))
    console.print(header)
    if run.description:
        console.print(plain(run.description, "dim"))
    if run.error:
        console.print(plain(f"error: {run.error}", "red"))
    if run.tags:
        console.print(Text.assemble(("tags ", "dim"), inert(" ".join(run.tags))))
    if run.note:
        console.print(Text.assemble(("note ", "dim"), inert(run.note)))
    console.print(f"created {when(run.created_at)}  started {when(run.started_at)}  ended {when(run.ended_at)}  "
                  f"({duration(run.duration)})  device {run.device or '-'}")
    console.print(_key_values("params", run.params, highlight=set(run.varying)))
    summary = {k: v for k, v in run.summary.items() if sys_metrics or not runfiles.is_sys_key(k)}
    if summary:
        console.print(_key_values("summary", summary))
    metrics = {k: v for k, v in run.metrics.items() if sys_metrics or not runfiles.is_sys_key(k)}
    if metrics:
        for table in _metrics_tables(metrics, steps, console.width):
            console.print(table)
    if not sys_metrics and (system := system_line(run)):
        console.print(plain(system, "dim"))
    if tables:
        for path in _table_files(run):
            columns, rows = read_table(path)
            console.print(_rows_table(path.stem, columns, rows))
    console.print(plain(f"folder {run.run_dir}\nlog    {run.path / runfiles.LOG}", "dim"))


def system_line(run: Run) -> str | None:
    """The run's system metrics in one line: peak memory, mean CPU, and on GPUs peak memory and utilisation."""
    summary, series = run.summary, run.metrics or {}
    parts = []
    if (rss := summary.get("peak_rss_mb")) is not None:
        parts.append(f"peak memory {number(rss)} MiB")
    elif points := series.get("sys/rss_mb"):
        parts.append(f"memory {number(points[-1][1])} MiB (peak so far {number(max(v for _, v in points))})")
    if (cpu := summary.get("mean_cpu_percent")) is not None:
        parts.append(f"mean CPU {number(cpu)}%")
    if (gpu := summary.get("peak_gpu_mem_mb")) is not None:
        parts.append(f"peak GPU memory {number(gpu)} MiB")
    if (util := summary.get("mean_gpu_util")) is not None:
        parts.append(f"mean GPU utilisation {number(util)}%")
    if not parts:
        return None
    return "system: " + ", ".join(parts) + "  (`expt show --sys` for every sample)"


def one_run(store: Store, ref: str) -> Run:
    runs = store.resolve_one(ref)
    if len(runs) != 1:
        raise UsageError(f"{ref!r} names {len(runs)} runs ({', '.join(r.id for r in runs[:6])}"
                         f"{', ...' if len(runs) > 6 else ''}); give one run id")
    return runs[0]


def _table_files(run: Run) -> list[Path]:
    folder = run.path / runfiles.TABLES
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def _key_values(title: str, values: dict, highlight: set[str] = frozenset()) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, show_header=False,
                  pad_edge=False)
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in values.items():
        style = "bold yellow" if key in highlight else ""
        table.add_row(inert(key), Text(number(value), style=style))
    return table


def _metrics_tables(metrics: dict[str, list[list[float]]], rows: int, width: int) -> list[Table]:
    """The per-epoch metrics, one row per step; as many tables as it takes for every column to fit the width
    (a two-phase run has twenty or more), each starting with the step."""
    keys = list(metrics)
    by_step: dict[int, dict[str, float]] = {}
    for key, points in metrics.items():
        for step, value in points:
            by_step.setdefault(int(step), {})[key] = value
    steps = sorted(by_step)
    shown = steps[-rows:] if rows else steps
    cells = {key: [number(by_step[step].get(key)) for step in shown] for key in keys}
    step_width = max([4] + [len(str(step)) for step in shown]) + 2
    groups: list[list[str]] = [[]]
    used = step_width
    for key in keys:
        needed = max([len(key)] + [len(c) for c in cells[key]]) + 2
        if groups[-1] and used + needed > width:
            groups.append([])
            used = step_width
        groups[-1].append(key)
        used += needed
    title = "metrics" + (f" (last {len(shown)} of {len(steps)} steps)" if len(shown) < len(steps) else "")
    tables = []
    for n, group in enumerate(groups):
        table = Table(title=title if n == 0 else None, title_justify="left", title_style="bold", box=None,
                      header_style="bold", pad_edge=False)
        table.add_column("step", justify="right")
        for key in group:
            table.add_column(key, justify="right")
        for i, step in enumerate(shown):
            table.add_row(str(step), *(cells[key][i] for key in group))
        tables.append(table)
    return tables


def _rows_table(title: str, columns: list[str], rows: list[dict], limit: int = 60) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", box=None, header_style="bold",
                  pad_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    for row in rows[:limit]:
        table.add_row(*(number(row.get(c)) for c in columns))
    if len(rows) > limit:
        table.caption = f"{limit} of {len(rows)} rows (all in the .csv beside it)"
    return table


@app.command()
def logs(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until the run ends "
                      "(Ctrl-C to leave).")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=0, help="Lines from the end to start with "
                     "(0: the whole log).")] = 50,
) -> None:
    """Print a run's log (its worker's output and traceback, if any)."""
    with open_store(project().db_path) as store:
        run = one_run(store, run_ref)
        path = run.path / runfiles.LOG
        offset = _print_tail(path, lines)
        if not follow:
            return
        try:
            while True:
                offset = _print_new(path, offset)
                scheduler.reap(store, [run])
                store.ingest_run(run)
                current = store.get(run.id)
                if current is None or current.status in FINAL_STATUSES:
                    _print_new(path, offset)
                    return
                time.sleep(0.25)
        except KeyboardInterrupt:
            return


def _print_tail(path: Path, lines: int) -> int:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return 0
    text = data.decode(errors="replace")
    chunks = text.splitlines(keepends=True)
    sys.stdout.write(inert("".join(chunks[-lines:] if lines else chunks)))
    sys.stdout.flush()
    return len(data)


def _print_new(path: Path, offset: int) -> int:
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            data = handle.read()
    except FileNotFoundError:
        return offset
    if data:
        sys.stdout.write(inert(data.decode(errors="replace")))
        sys.stdout.flush()
    return offset + len(data)


@app.command()
def compare(
    refs: Annotated[list[str], typer.Argument(help="Two or more run ids, prefixes or experiment names "
                    "(an experiment name means all its runs).")],
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Metric to draw per epoch "
                      "(default: the recipe's ranking metric).")] = None,
    no_group: Annotated[bool, typer.Option("--no-group", help="Show every run on its own instead of "
                        "grouping runs that differ only in their seed.")] = False,
    sort: Annotated[Optional[str], typer.Option("--sort", help="Order rows by this summary key "
                    "(best first; default: the recipe's own order, e.g. scaling by test_acc).")] = None,
    where: WhereOption = None,
    tag: TagOption = None,
    sys_metrics: SysOption = False,
    json_output: JsonOption = False,
) -> None:
    """Compare runs side by side: config differences, metrics (mean ± 95% CI over seeds), curves."""
    with open_store(project().db_path) as store:
        refresh(store)
        runs = select_runs(store, refs, where, tag)
        if len(runs) < 2:
            raise UsageError(f"compare needs at least two runs; {', '.join(refs)} name{'s' * (len(refs) == 1)} "
                             f"{len(runs)}")
        metric = metric or runs[0].metric or "top1"
        curves = {r.id: store.metrics(r, [metric]).get(metric, []) for r in runs}
    if json_output:
        data = analysis.compare_data(runs, sys_metrics)
        data["curves"] = {metric: curves}
        _print_json(data)
        return
    groups = [analysis.Group([r]) for r in runs] if no_group else analysis.group_by_seed(runs)
    sort = sort or analysis.default_sort(runs)
    if sort:
        goal = analysis.direction(sort, runs) or "max"
        groups.sort(key=lambda g: (s.mean if (s := g.stat(sort)) else float("-inf")) * (1 if goal == "min" else -1))
    for table in compare_tables(groups, runs, console.width, sys_metrics):
        console.print(table)
    chart = _curves(groups, curves, metric)
    if chart is not None:
        console.print(chart)


def compare_tables(groups: list[analysis.Group], runs: list[Run], width: int, sys_metrics: bool = False
                   ) -> list[Table | Text]:
    """Config differences and metrics: runs as columns when they fit, else runs as rows."""
    params = [g.params for g in groups]
    differing = analysis.differing_keys(params)
    same = [k for k in dict.fromkeys(k for p in params for k in p) if k not in differing]
    keys = analysis.numeric_summary_keys(runs, sys_metrics)
    stats = {key: [g.stat(key) for g in groups] for key in keys}
    best = {key: analysis.best_index([s.mean if s else None for s in stats[key]], analysis.direction(key, runs))
            for key in keys}

    def cell(key: str, i: int, spread: bool = False) -> Text:
        text = stat(stats[key][i], spread)
        return Text(f"*{text}", style="bold green") if best[key] == i else Text(text)

    label_width = max(len(g.label) for g in groups)
    folded_text = f"{len(same)} identical keys: " + ", ".join(f"{k}={number(params[0].get(k))}" for k in same)
    folded = Text(folded_text if len(folded_text) < width else folded_text[:width - 2] + "…", style="dim")
    grouped = any(len(g.runs) > 1 for g in groups)
    title = "metrics" + (" (mean ±95% CI over seeds)" if grouped else "") + " * best"
    wide = 20 + len(groups) * max(26 if grouped else 14, label_width + 8) <= width
    if wide:
        config = _table("config differences")
        metrics = _table(title)
        for table, first in ((config, "param"), (metrics, "metric")):
            table.add_column(first, style="dim")
            for group in groups:
                table.add_column(group.label + (f" n={len(group.runs)}" if len(group.runs) > 1 else ""),
                                 justify="right")
        for key in differing:
            config.add_row(key, *(number(p.get(key)) for p in params))
        for key in keys:
            metrics.add_row(key, *(cell(key, i, spread=grouped) for i in range(len(groups))))
        return [config, folded, metrics]
    table = _table(title)
    table.add_column("run", no_wrap=True)
    table.add_column("n", justify="right")
    for key in differing:
        table.add_column(key)
    cells = {key: [cell(key, i) for i in range(len(groups))] for key in keys}
    values = {key: [number(p.get(key)) for p in params] for key in differing}
    used = label_width + 4 + sum(_column_width(key, values[key]) for key in differing)
    shown: list[str] = []
    for key in keys:  # as many metric columns as their widest cell lets fit
        needed = _column_width(key, [c.plain for c in cells[key]])
        if shown and used + needed > width:
            break
        used += needed
        shown.append(key)
    for key in shown:
        table.add_column(key, justify="right")
    for i, group in enumerate(groups):
        table.add_row(group.label, str(len(group.runs)), *(values[k][i] for k in differing),
                      *(cells[key][i] for key in shown))
    if len(keys) > len(shown):
        table.caption = f"{len(keys) - len(shown)} more metrics: --json, or a wider terminal"
    return [table, folded]


def _column_width(header: str, texts: list[str]) -> int:
    return max([len(header)] + [len(t) for t in texts]) + 2


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=None, header_style="bold",
                 pad_edge=False)


def _curves(groups: list[analysis.Group], curves: dict[str, list[list[float]]], metric: str) -> Text | None:
    lines = []
    for group in groups:
        series = [dict((int(s), v) for s, v in curves.get(r.id, []) if v is not None) for r in group.runs]
        steps = sorted(set().union(*series))
        if steps:
            means = [sum(s[k] for s in series if k in s) / sum(1 for s in series if k in s) for k in steps]
            lines.append((group.label, steps, means))
    title = f"{metric} per epoch" + (" (mean over seeds)" if any(len(g.runs) > 1 for g in groups) else "")
    return curves_chart(lines, title, console.width)


@app.command()
def export(
    refs: Annotated[Optional[list[str]], typer.Argument(help="Runs to export (default: all).")] = None,
    fmt: Annotated[str, typer.Option("--format", "-F", help="csv, md (Markdown), latex (booktabs) or json."
                   )] = "csv",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file instead of "
                      "stdout.")] = None,
    where: WhereOption = None,
    tag: TagOption = None,
    sys_metrics: SysOption = False,
) -> None:
    """Write the runs table (id, status, params, summary) for papers and spreadsheets."""
    if fmt not in ("csv", "md", "latex", "json"):
        raise UsageError(f"--format {fmt!r}: expected csv, md, latex or json")
    with open_store(project().db_path) as store:
        refresh(store)
        runs = select_runs(store, refs, where, tag)
    rows = [{"id": r.id, "experiment": r.experiment, "recipe": r.recipe, "status": r.status,
             "tags": " ".join(r.tags), "note": r.note,
             **{f"params.{k}": v for k, v in r.params.items()},
             **{f"summary.{k}": v for k, v in r.summary.items() if sys_metrics or not runfiles.is_sys_key(k)},
             "duration_s": r.duration} for r in runs]
    if fmt == "json":
        text = orjson.dumps([r.to_json() for r in runs], option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        if fmt == "csv":
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
            text = buffer.getvalue()
        elif fmt == "latex":
            from expt.pivot import latex_escape

            lines = [rf"\begin{{tabular}}{{{'l' * len(columns)}}}", r"\toprule",
                     " & ".join(latex_escape(c) for c in columns) + r" \\", r"\midrule"]
            lines += [" & ".join(latex_escape(_cell(row.get(c))) for c in columns) + r" \\" for row in rows]
            text = "\n".join([*lines, r"\bottomrule", r"\end{tabular}"]) + "\n"
        else:
            lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(_cell(row.get(c)).replace("|", "\\|") for c in columns) + " |"
                      for row in rows]
            text = "\n".join(lines) + "\n"
    if output is None:  # a terminal, most often: control codes escaped (in JSON the escape means the same)
        sys.stdout.write(inert(text))
    else:
        output.write_text(text)
        console.print(inert(f"wrote {len(runs)} runs to {output}"))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, (list, dict)):
        return orjson.dumps(value).decode()
    return str(value)
