"""Commands that start and stop runs: run, resume, rerun, stop, ps."""

import signal
import time
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from expt.cli import app, console, err_console, project
from expt.cli.render import duration, inert, number, params_text, plain, status_text
from expt.core import scheduler
from expt.core.runfiles import FINAL_STATUSES
from expt.store import Run, Store, open_store

if TYPE_CHECKING:  # launcher (with config and the recipes) and rich.progress load when a run starts, not for `expt ls`
    from rich.progress import Progress

    from expt.core import launcher

JobsOption = Annotated[Optional[int], typer.Option("--jobs", "-j", min=1, help="Runs at a time on CPU "
                       "(default 1, or [launcher] jobs); with GPUs, one run per GPU.")]
GpusOption = Annotated[Optional[str], typer.Option("--gpus", help="GPU indices to use, e.g. 0,1,3 (default: "
                       "CUDA_VISIBLE_DEVICES, or every GPU nvidia-smi lists).")]
DetachOption = Annotated[bool, typer.Option("--detach", "-d", help="Queue the runs, start a background "
                         "scheduler and return at once; follow with `expt ps`, `expt ls` or `expt tui`.")]


class _HangUp(Exception):
    pass


def _on_hangup(*_: object) -> None:
    raise _HangUp()


@app.command()
def run(
    name: Annotated[str, typer.Argument(help="Experiment name in experiments.toml.")],
    jobs: JobsOption = None,
    gpus: GpusOption = None,
    detach: DetachOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs the sweep expands to; run nothing.")]
    = False,
    trials: Annotated[Optional[int], typer.Option("--trials", min=1, help="A search experiment: the study's total "
                      "number of trials (raise it to extend a finished study).")] = None,
) -> None:
    """Run every point of an experiment's sweep, with live progress; Ctrl-C stops them cleanly.

    Each run is its own worker process (`python -m expt.core.worker runs/ID`) in its own session,
    logging to runs/ID/; finished runs print the seed's line "Best metric: X (epoch N)".
    """
    from expt.config import load_config
    from expt.core import launcher

    proj = project(need_config=True)
    config = load_config(proj.config_path)
    the_plan = launcher.plan(config, name)
    for warning in the_plan.warnings:
        err_console.print(plain(f"warning: {warning}", "yellow"), soft_wrap=True)
    if dry_run:
        if the_plan.experiment.search is not None:
            spec = the_plan.experiment.search
            console.print(Text(f"{name}: a study of {trials or spec.trials} trials ({spec.sampler} sampler, "
                               f"{spec.pruner} pruner, {spec.direction} {spec.metric}) over " +
                               ", ".join(f"{k} {d.describe()}" for k, d in spec.space.items())))
            return
        _print_plan(the_plan)
        return
    settings = scheduler.pool_settings(config.launcher, gpus=gpus, jobs=jobs)
    if the_plan.experiment.search is not None:  # a search: trials are asked as slots free up (expt/cli/study.py)
        from expt.cli.study import run_study

        return run_study(proj, the_plan, settings, detach, trials)
    with open_store(proj.db_path) as store:
        runs = launcher.enqueue(store, proj, the_plan)
        settings.save(proj)
        for varying, reason in the_plan.expansion.skipped:
            console.print(plain(f"skipped {launcher.describe_point(varying)}: {reason}", "dim"))
        where = ", ".join(s.name for s in settings.slots()) if settings.backend == "local" else "slurm"
        console.print(Text.assemble((inert(name), "bold"), f": {len(runs)} run{'s' * (len(runs) != 1)} queued "
                                    f"({inert(runs[0].id)} .. {inert(runs[-1].id)}) on {where}"))
        if detach:
            started = scheduler.ensure_scheduler(proj, store)
            console.print("a background scheduler is running them" + ("" if started else " (already running)") +
                          "; follow with `expt ps` or `expt tui`")
            return
        _follow(store, proj, [r.id for r in runs])


def _print_plan(the_plan: "launcher.Plan") -> None:
    from expt.core import launcher

    table = Table(title=f"{the_plan.experiment.name}: {the_plan.size} runs", box=None, header_style="bold")
    keys = list(dict.fromkeys(k for p in the_plan.expansion.points for k in p.varying))
    table.add_column("#", justify="right")
    for key in keys:
        table.add_column(key)
    for i, point in enumerate(the_plan.expansion.points, start=1):
        table.add_row(str(i), *(number(point.varying.get(k)) for k in keys))
    console.print(table)
    for varying, reason in the_plan.expansion.skipped:
        console.print(plain(f"skipped {launcher.describe_point(varying)}: {reason}", "dim"))


def _follow(store: Store, proj, run_ids: list[str]) -> None:
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from expt.core import launcher

    sched = scheduler.Scheduler(proj)
    previous = signal.signal(signal.SIGHUP, _on_hangup)
    progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(bar_width=24),
                        TextColumn("{task.fields[detail]}", markup=False), TimeElapsedColumn(), console=console,
                        transient=True)
    tasks: dict[str, int] = {}
    finished: set[str] = set()
    overall = progress.add_task(f"{len(run_ids)} runs", total=len(run_ids), detail="")
    stopping = False
    final: list[Run] = []
    try:
        with progress:
            runs_iter = launcher.watch(store, sched, run_ids)
            while True:
                try:
                    runs = next(runs_iter)
                    final = runs
                    _render(progress, tasks, finished, runs, overall)
                except StopIteration:
                    break
                except KeyboardInterrupt:
                    if stopping:
                        raise
                    stopping = True
                    active = [r for r in (store.get(i) for i in run_ids) if r and r.status not in FINAL_STATUSES]
                    for note in scheduler.stop(store, active):
                        progress.console.print(plain(note, "yellow"))
                    progress.console.print(Text("stopping; Ctrl-C again to leave without waiting", style="yellow"))
                    runs_iter = launcher.watch(store, sched, run_ids)
    except KeyboardInterrupt:
        err_console.print("left the runs to stop on their own; see `expt ps`")
        raise typer.Exit(130)
    except _HangUp:
        sched.release()
        scheduler.ensure_scheduler(proj, store)
        raise typer.Exit(129)
    finally:
        signal.signal(signal.SIGHUP, previous)
        sched.release()
    scheduler.ensure_scheduler(proj, store)
    _print_results(final)
    if stopping:
        raise typer.Exit(130)
    if any(r.status != "completed" for r in final):
        raise typer.Exit(1)


def _render(progress: "Progress", tasks: dict[str, int], finished: set[str], runs: list[Run], overall: int) -> None:
    from expt.core import launcher

    differing = _varying_keys(runs)
    for run in runs:
        label = f"{inert(run.id)} {params_text(run.params, differing)}".rstrip()
        if run.status in FINAL_STATUSES:
            if run.id not in finished:
                finished.add(run.id)
                if run.id in tasks:
                    progress.remove_task(tasks.pop(run.id))
                line = launcher.summary_line(run, digits=4)
                progress.console.print(Text.assemble(_mark(run.status), " ", (label, "bold")), status_text(run.status),
                                       Text.assemble(inert(line), " ", (duration(run.duration), "dim")))
            continue
        if run.status == "queued":
            continue
        if run.id not in tasks:
            tasks[run.id] = progress.add_task(label, total=run.epochs or 1, detail="")
        best = f"best {number(run.best)}" if run.best is not None else ""
        epoch = f"epoch {run.epoch}/{run.epochs}" if run.epochs else run.status
        progress.update(tasks[run.id], completed=run.epoch or 0, total=run.epochs or 1,
                        detail=f"{epoch} {run.device or ''} {best}")
    progress.update(overall, completed=len(finished))


def _mark(status: str) -> Text:
    mark, style = {"completed": ("✓", "green"), "stopped": ("■", "yellow")}.get(status, ("✗", "red"))
    return Text(mark, style=style)


def _varying_keys(runs: list[Run]) -> list[str]:
    return list(dict.fromkeys(k for r in runs for k in r.varying))


def _print_results(runs: list[Run]) -> None:
    from expt.core import launcher

    if not runs:
        return
    differing = _varying_keys(runs)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("id", "params", "status", "result", "time"):
        table.add_column(column, overflow="fold")
    for run in runs:
        table.add_row(run.id, params_text(run.params, differing), status_text(run.status),
                      launcher.summary_line(run, digits=4), duration(run.duration))
    console.print(table)


@app.command()
def resume(runs: Annotated[list[str], typer.Argument(help="Run ids, prefixes or experiment names.")],
           jobs: JobsOption = None, gpus: GpusOption = None, detach: DetachOption = False) -> None:
    """Continue stopped, crashed or failed runs from their last checkpoint, in the same run ids."""
    from expt.core import launcher

    proj = project()
    with open_store(proj.db_path) as store:
        named = store.resolve(runs)
        resumed = launcher.resume(store, named)
        _settings_for(proj, gpus, jobs).save(proj)
        passed_over = len(named) - len(resumed)
        console.print(f"resuming {', '.join(r.id for r in resumed)}" +
                      (f" ({passed_over} completed or active runs left as they are)" if passed_over else ""))
        if detach:
            scheduler.ensure_scheduler(proj, store)
            return
        _follow(store, proj, [r.id for r in resumed])


@app.command()
def rerun(runs: Annotated[list[str], typer.Argument(help="Run ids, prefixes or experiment names.")],
          jobs: JobsOption = None, gpus: GpusOption = None, detach: DetachOption = False) -> None:
    """Start fresh runs with the same configuration as the given runs (new ids)."""
    from expt.core import launcher

    proj = project()
    with open_store(proj.db_path) as store:
        fresh = [launcher.rerun(store, proj, r) for r in store.resolve(runs)]
        _settings_for(proj, gpus, jobs).save(proj)
        console.print(f"queued {', '.join(r.id for r in fresh)}")
        if detach:
            scheduler.ensure_scheduler(proj, store)
            return
        _follow(store, proj, [r.id for r in fresh])


def _settings_for(proj, gpus: str | None, jobs: int | None) -> scheduler.PoolSettings:
    from expt.config import load_config

    launcher_table = load_config(proj.config_path).launcher if proj.config_path.is_file() else {}
    return scheduler.pool_settings(launcher_table, gpus=gpus, jobs=jobs)


@app.command()
def stop(runs: Annotated[list[str], typer.Argument(help="Run ids, prefixes or experiment names.")]) -> None:
    """Stop runs: queued ones are cancelled, running ones checkpoint and end 'stopped'."""
    proj = project()
    with open_store(proj.db_path) as store:
        store.ingest()
        targets = [r for r in store.resolve(runs) if r.status not in FINAL_STATUSES]
        if not targets:
            console.print("nothing to stop: those runs have ended")
            return
        for note in scheduler.stop(store, targets):
            console.print(note)


@app.command()
def ps(json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What is queued and running, where, and who schedules it; each device's load, its runs and free slots."""
    from expt.core import devices

    proj = project()
    with open_store(proj.db_path) as store:
        scheduler.reap(store)
        store.ingest()
        active = store.runs("status IN ('queued', 'starting', 'running')")
        owner = scheduler.has_owner(proj)
        sampler = devices.MachineSampler()
        rows, queue = devices.overview(store, proj, sampler)
        jobs = scheduler.describe([r for r in active if r.backend not in (None, "local") and r.status != "queued"])
        if json_output:
            import orjson

            runs = [{**r.to_json(), "job": jobs.get(r.id)} for r in active]
            typer.echo(orjson.dumps({"scheduler": owner, "runs": runs,
                                     "devices": [d.to_json() for d in rows], "queue": [r.id for r in queue],
                                     "nvml": sampler.nvml.reason or "ok"}).decode())
            return
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("id", "status", "device", "load", "pid", "epoch", "time", "host") + ("job",) * bool(jobs):
            table.add_column(column, justify="right" if column == "load" else "left")
        now = time.time()
        loads = {run_id: value for d in rows for run_id, value in d.run_load.items()}
        for r in active:
            table.add_row(inert(r.id), status_text(r.status), inert(r.device or ""),
                          f"{loads[r.id]:.0f}%" if r.id in loads else "", str(r.pid or ""),
                          f"{r.epoch}/{r.epochs}" if r.epochs else "",
                          duration(now - r.started_at) if r.started_at else "", inert(r.host or ""),
                          *([inert(jobs.get(r.id, ""))] if jobs else []))
        console.print(table if active else "nothing queued or running")
        console.print(devices_table(rows, sampler.nvml.reason))
        if queue:
            console.print(Text(f"queue ({len(queue)}, in order): " + ", ".join(inert(r.id) for r in queue[:20])
                               + (" ..." if len(queue) > 20 else "")))
        console.print(Text(f"scheduler: {'running' if owner else 'not running'}", style="dim"))


def devices_table(rows: list, nvml_reason: str) -> Table:
    """One line per device: load, memory, power, temperature, its runs and free slots."""
    table = Table(box=None, header_style="bold", pad_edge=False, title="devices", title_justify="left",
                  title_style="bold", caption=nvml_reason or None, caption_justify="left")
    for column in ("device", "name", "util", "memory", "power", "temp", "runs", "free"):
        table.add_column(column, justify="right" if column in ("util", "power", "temp", "free") else "left")
    for d in rows:
        memory = (f"{d.mem_used_mb / 1024:.1f}/{d.mem_total_mb / 1024:.1f} GiB"
                  if d.mem_used_mb is not None and d.mem_total_mb else "")
        runs = ", ".join(d.runs) + (f" (+{d.others} other)" if d.others else "")
        table.add_row(d.name, inert(d.label), f"{d.util:.0f}%" if d.util is not None else "", memory,
                      f"{d.power_w:.0f} W" if d.power_w is not None else "",
                      f"{d.temperature_c:.0f}°C" if d.temperature_c is not None else "", inert(runs), str(d.free))
    return table
