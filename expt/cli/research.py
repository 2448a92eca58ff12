"""Commands around a study's artefacts: samples, plot, params, import timm."""

from pathlib import Path
from typing import Annotated, Optional

import orjson
import typer
from rich.table import Table

from expt import analysis
from expt.cli import app, console, project
from expt.cli.browse import one_run, refresh
from expt.cli.coerce import Typer
from expt.cli.render import Series, curves_chart, inert, number, params_text
from expt.errors import UsageError
from expt.store import Run, open_store

import_app = Typer(help="Bring runs made by other tools into runs.db.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@app.command()
def samples(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a contact sheet PNG (one labelled "
                   "row per class) to this file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The few-shot training images of a run, per class (the selection its seed drew)."""
    from expt.samples import by_class, contact_sheet, read_samples

    with open_store(project().db_path) as store:
        run = one_run(store, run_ref)
    chosen = read_samples(run.path, run.id)
    if json_output:
        typer.echo(orjson.dumps([{"class": s.class_name, "label": s.label, "source": s.source,
                                  "file": str(s.path) if s.path else None} for s in chosen]).decode())
        return
    if out is not None:
        title = f"{run.id}  {params_text(run.params, [k for k in ('model', 'shots', 'seed') if k in run.params])}"
        console.print(f"wrote {contact_sheet(chosen, out, title)}")
        return
    table = Table(box=None, header_style="bold", pad_edge=False, title=f"{run.id}: {len(chosen)} training images",
                  title_justify="left")
    table.add_column("class", no_wrap=True)
    table.add_column("n", justify="right")
    table.add_column("images (source)", overflow="fold")
    for name, items in by_class(chosen).items():
        table.add_row(inert(name), str(len(items)), inert(", ".join(s.source for s in items)))
    console.print(table)


@app.command()
def plot(
    refs: Annotated[list[str], typer.Argument(help="Run ids, prefixes or experiment names.")],
    metric: Annotated[Optional[str], typer.Option("--metric", "-m", help="Metric to draw (default: the runs' "
                      "ranking metric, e.g. top1 or eval_top1).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write a PNG (matplotlib) instead of "
                   "drawing in the terminal.")] = None,
) -> None:
    """Draw a metric per epoch for several runs, one labelled line each (terminal, or PNG with --out)."""
    with open_store(project().db_path) as store:
        refresh(store)
        runs = store.resolve(refs)
        metric = metric or runs[0].metric or "top1"
        lines = _series(runs, {r.id: store.metrics(r, [metric]).get(metric, []) for r in runs})
        known = sorted({k for r in runs for k in store.metric_names(r)}) if not lines else []
    if not lines:
        raise UsageError(f"no values of {metric!r} in {', '.join(r.id for r in runs[:6])}; metrics: {', '.join(known) or 'none'}")
    if out is not None:
        _save_png(lines, metric, out)
        console.print(f"wrote {out}")
        return
    chart = curves_chart(lines, f"{metric} per epoch", console.width, height=20)
    if chart is None:
        raise UsageError(f"{metric!r} has fewer than two points in every run: nothing to draw")
    console.print(chart)


def _series(runs: list[Run], curves: dict[str, list[list[float]]]) -> list[Series]:
    differing = analysis.differing_keys([r.params for r in runs])
    lines = []
    for run in runs:
        points = [(int(s), v) for s, v in curves[run.id] if v is not None]
        if points:
            label = f"{run.id} {params_text(run.params, differing)}".strip()
            lines.append((label, [s for s, _ in points], [v for _, v in points]))
    return lines


def _save_png(lines: list[Series], metric: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2), dpi=150)
    for label, steps, values in lines:
        axes.plot(steps, values, marker="o" if len(steps) < 30 else None, markersize=3, label=label)
    axes.set_xlabel("epoch")
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out)
    plt.close(figure)


@app.command("params")
def params_command(
    models: Annotated[list[str], typer.Argument(help="timm model names, e.g. resnet18 resnet50.")],
    classes: Annotated[Optional[int], typer.Option("--classes", "-c", min=1, help="Classifier outputs "
                       "(default: the model's own, 1000 for ImageNet models).")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Parameter counts of timm models: total, and what each fine-tuning mode trains (the seed's table)."""
    from expt.modelnames import check_timm_model

    for name in models:
        if problem := check_timm_model(name):
            raise UsageError(problem)
    from expt.core.models import parameter_counts

    counts = {name: parameter_counts(name, classes) for name in models}
    if json_output:
        typer.echo(orjson.dumps(counts).decode())
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column, justify in (("model", "left"), ("classes", "right"), ("total", "right"), ("cbn deltas", "right"),
                            ("fc trains", "right"), ("cbn trains", "right")):
        table.add_column(column, justify=justify, no_wrap=True)
    for name, c in counts.items():
        table.add_row(name, str(c["classes"]), f"{c['total']:,}",
                      f"{c['cbn_deltas']:,} (+{100 * c['cbn_deltas'] / c['total']:.2f}%)",
                      f"{c['trainable_fc']:,}", f"{c['trainable_cbn']:,}")
    console.print(table)


@import_app.command("timm")
def import_timm(
    folders: Annotated[list[Path], typer.Argument(help="Output folders of timm's train.py (with summary.csv "
                       "and args.yaml), or folders holding several.")],
    experiment: Annotated[str, typer.Option("--experiment", "-e", help="Experiment name to file them "
                          "under (ids become NAME-1, NAME-2 ...).")] = "timm",
) -> None:
    """Record timm train.py runs as completed runs: params from args.yaml, per-epoch metrics from summary.csv.

    Importing a folder again does nothing. Imported runs appear in ls, show, compare, plot and export.
    """
    from expt.config import NAME_PATTERN
    from expt.timm_import import import_folders

    if not NAME_PATTERN.match(experiment):
        raise UsageError(f"--experiment {experiment!r}: use letters, digits, '_' and '-', starting with a letter")
    proj = project()
    with open_store(proj.db_path) as store:
        for run, created in import_folders(store, proj, folders, experiment):
            if created:
                console.print(inert(f"imported {run.id} from {run.description}: {run.summary.get('epochs')} epochs, "
                              f"best eval_top1 {number(run.best)} (epoch {run.summary.get('best_epoch')})"))
            else:
                console.print(inert(f"already imported as {run}"), style="dim")
