"""Search experiments: `expt run NAME` on one (the study's follow loop) and `expt study NAME`."""

import signal
import time
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from expt.cli import app, console, err_console, project
from expt.cli.render import inert, number, plain, status_text
from expt.core import scheduler
from expt.formatting import sparkline
from expt.store import Store, open_store


class _HangUp(Exception):
    pass


def _on_hangup(*_: object) -> None:
    raise _HangUp()


def run_study(proj: Any, plan: Any, settings: Any, detach: bool, trials: int | None) -> None:
    """Create or continue the study and keep its trials in flight; with --detach a background scheduler does."""
    from expt.core import study

    experiment = plan.experiment
    spec = experiment.search
    with open_store(proj.db_path) as store:
        settings.save(proj)
        state, resumed = study.start(store, proj, experiment, trials)
        report = study.report(store, proj.runs_dir, experiment.name, importances=False) or {}
        where = ", ".join(s.name for s in settings.slots()) if settings.backend == "local" else "slurm"
        done = report.get("done", 0)
        console.print(Text.assemble((inert(experiment.name), "bold"), f": study ({spec.sampler} sampler, "
                                    f"{spec.pruner} pruner, {spec.direction} {inert(spec.metric)}) "
                                    f"{done}/{state.target} trials done, on {where}"))
        if resumed:
            console.print(f"resuming {', '.join(r.id for r in resumed)}")
        if detach:
            started = scheduler.ensure_scheduler(proj, store)
            console.print("a background scheduler runs the trials" + ("" if started else " (already running)") +
                          f"; follow with `expt study {experiment.name}` or `expt tui`")
            return
        _follow(store, proj, experiment.name)


def _follow(store: Store, proj: Any, name: str) -> None:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from expt.core import study

    sched = scheduler.Scheduler(proj)
    previous = signal.signal(signal.SIGHUP, _on_hangup)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(bar_width=24),
                        TextColumn("{task.fields[detail]}", markup=False), TimeElapsedColumn(), console=console,
                        transient=True)
    overall = progress.add_task(f"{name} trials", total=1, detail="")
    tasks: dict[str, int] = {}
    printed: set[int] = set()
    stopping = False
    report: dict[str, Any] = {}
    try:
        with progress:
            while True:
                try:
                    sched.acquire()
                    sched.tick(store)
                    report = study.report(store, proj.runs_dir, name, importances=False) or {}
                    active = _render(progress, store, report, tasks, printed, overall)
                    state = study.load_state(proj.runs_dir, name)
                    if (state is None or not state.active) and not active:
                        break
                    time.sleep(0.5)
                except KeyboardInterrupt:
                    if stopping:
                        raise
                    stopping = True
                    study.pause(proj.runs_dir, name, "stopped")
                    runs = [store.get(r["run"]) for r in report.get("trials_table", []) if r["run"]]
                    for note in scheduler.stop(store, [r for r in runs if r is not None and r.active]):
                        progress.console.print(plain(note, "yellow"))
                    progress.console.print(Text("stopping; Ctrl-C again to leave without waiting; `expt run "
                                                f"{name}` continues the study", style="yellow"))
    except KeyboardInterrupt:
        err_console.print("left the trials to stop on their own; see `expt ps`")
        raise typer.Exit(130)
    except _HangUp:
        sched.release()
        scheduler.ensure_scheduler(proj, store)
        raise typer.Exit(129)
    finally:
        signal.signal(signal.SIGHUP, previous)
        sched.release()
    scheduler.ensure_scheduler(proj, store)
    report = study.report(store, proj.runs_dir, name) or report
    _print_report(report, limit=10)
    if stopping:
        raise typer.Exit(130)
    if report.get("note") != "done":
        raise typer.Exit(1)


def _render(progress: Any, store: Store, report: dict[str, Any], tasks: dict[str, int], printed: set[int],
            overall: int) -> int:
    """Print trials as they end, a bar per running one; returns how many trial runs are active."""
    active = 0
    for row in sorted(report.get("trials_table", []), key=lambda r: r["trial"]):
        run = store.get(row["run"]) if row["run"] else None
        label = f"trial {row['trial']} {row['run'] or ''} " + " ".join(f"{k}={number(v)}"
                                                                       for k, v in row["params"].items())
        if row["status"] in ("completed", "pruned", "failed", "infeasible", "paused") and (
                run is None or not run.active):
            if row["trial"] not in printed:
                printed.add(row["trial"])
                if row["run"] in tasks:
                    progress.remove_task(tasks.pop(row["run"]))
                value = number(row["value"]) if row["value"] is not None else (row["note"] or "")
                progress.console.print(Text.assemble(inert(label), "  ", status_text(row["status"]), "  ",
                                                     inert(value)))
            continue
        if run is None or not run.active:
            continue
        active += 1
        if run.status == "queued":
            continue
        if run.id not in tasks:
            tasks[run.id] = progress.add_task(label, total=run.epochs or 1, detail="")
        best = f"best {number(run.best)}" if run.best is not None else ""
        epoch = f"epoch {run.epoch}/{run.epochs}" if run.epochs else run.status
        progress.update(tasks[run.id], completed=run.epoch or 0, total=run.epochs or 1,
                        detail=f"{epoch} {run.device or ''} {best}")
    best = report.get("best") or {}
    progress.update(overall, completed=report.get("done", 0), total=max(1, report.get("trials", 1)),
                    detail=f"best {number(best.get('value'))} {sparkline(report.get('best_so_far', []), 16)}"
                    if best else "")
    return active


def _print_report(report: dict[str, Any], limit: int = 0) -> None:
    if not report:
        return
    counts = report["counts"]
    console.print(Text.assemble((inert(report["experiment"]), "bold"),
                                f"  {report['sampler']} sampler, {report['pruner']} pruner, {report['direction']} "
                                f"{inert(report['metric'])}  {report['done']}/{report['trials']} trials: ",
                                ", ".join(f"{n} {k}" for k, n in counts.items() if n) or "none yet",
                                ("  (active)" if report["active"] else f"  ({inert(report['note'] or 'paused')})",
                                 "dim")))
    best = report.get("best")
    if best:
        console.print(Text.assemble(("best: ", "bold"), f"trial {best['trial']} ", (inert(best["run"] or ""), "bold"),
                                    f"  {inert(report['metric'])} = {number(best['value'])}  ",
                                    inert(" ".join(f"{k}={number(v)}" for k, v in best["params"].items()))))
        console.print(Text(f"best so far: {sparkline(report['best_so_far'], 48)}", style="cyan"))
    else:
        console.print(Text("no trial has completed yet", style="dim"))
    rows = report["trials_table"]
    keys = list(dict.fromkeys(k for r in rows for k in r["params"]))
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("trial", "run", "status", report["metric"], "epochs", *keys):
        table.add_column(inert(column), justify="right" if column in ("trial", "epochs") else "left")
    shown = rows[:limit] if limit else rows
    for r in shown:
        value = number(r["value"]) if r["value"] is not None else (
            f"({number(r['last'])})" if r["last"] is not None else inert(r["note"][:40]))
        table.add_row(str(r["trial"]), inert(r["run"] or ""), status_text(r["status"]), value,
                      str(r["epochs"] or ""), *(number(r["params"].get(k)) for k in keys))
    if rows:
        console.print(table)
    if limit and len(rows) > limit:
        console.print(Text(f"{len(rows) - limit} more trials: `expt study {report['experiment']}`", style="dim"))
    if "importances" in report:
        if report["importances"]:
            console.print(Text("parameter importances:", style="bold"))
            for key, value in report["importances"].items():
                console.print(Text.assemble(f"  {inert(key):<20} ", ("█" * max(1, round(value * 30)), "cyan"),
                                            f" {value:.2f}"))
        else:
            console.print(Text(f"parameter importances: {report['importances_note']}", style="dim"))
    if report.get("epochs_planned"):
        console.print(Text(f"epochs run {report['epochs_run']} of {report['epochs_planned']} planned "
                           f"({1 - report['epochs_run'] / report['epochs_planned']:.0%} saved by pruning)"
                           if report["pruner"] != "none" else f"epochs run {report['epochs_run']}", style="dim"))


@app.command(name="study")
def study_command(
    name: Annotated[str, typer.Argument(help="A search experiment (with [experiments.NAME.search]).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """A search experiment's study: the best trial, every trial sorted by the metric, the parameter importances."""
    from expt.core import study
    from expt.errors import NotFoundError

    proj = project()
    with open_store(proj.db_path) as store:
        scheduler.reap(store)
        store.ingest()
        report = study.report(store, proj.runs_dir, name)
    if report is None:
        raise NotFoundError(f"no study {name!r} in {proj.runs_dir} (a search experiment starts one with "
                            f"`expt run {name}`)")
    if json_output:
        import orjson

        typer.echo(orjson.dumps(report, option=orjson.OPT_SERIALIZE_NUMPY).decode())
        return
    _print_report(report)
