"""Item 7: start-up. `expt ls` and `expt compare` as new processes on a 1,000-run project, against
`python -c "import torch"`, MLflow's `mlflow runs list` on the same 1,000 runs in MLflow's own sqlite store
(logged through MLflow's client API), and the same two commands at the last commit with the eager start-up.

"Cold" here is a new process each time with the files in the page cache (a machine in use); dropping
the page cache needs root and would slow everyone else on the machine. expt's modules are byte-compiled
first, as `pip install` does: an editable install run with PYTHONDONTWRITEBYTECODE (as on the machines these
benchmarks ran on) would compile every expt module from source in every process.
"""

from __future__ import annotations

import compileall
import io
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path

import common
from common import Bench, result_at_most, result_under

# the eager start-up: typer's pydantic adapters for every parameter, each command's imports at the top of its module,
# rich's Table for the runs of `expt ls`
EAGER = common.BEFORE_ISSUE_13


def main() -> None:
    bench = Bench("startup", "Start-up",
                  "Wall and CPU time of a new process running `expt ls` and `expt compare` on a 1,000-run runs.db, "
                  "against `python -c \"import torch\"`, `mlflow runs list` on the same runs in MLflow's sqlite "
                  f"store, and the same commands at commit {EAGER} (before the start-up work of issue 13).")
    runs = bench.size(1_000, 30)
    mlflow_steps = 10
    n = bench.repeats(7, 1)
    work = Path(tempfile.mkdtemp(prefix="expt-bench-startup-"))
    try:
        bench.progress(f"building {runs:,} runs in expt")
        built = common.build_project(work / "project", runs)
        project = work / "project"
        compileall.compile_dir(common.ROOT / "expt", quiet=1)
        eager = _checkout(EAGER, work / "eager")
        ls, compare = [common.EXPT, "ls"], [common.EXPT, "compare", built["first"], built["second"]]
        fns = {
            "ls": common.Command(ls, cwd=project),
            "compare": common.Command(compare, cwd=project),
            "torch": common.Command([sys.executable, "-c", "import torch"]),
            "python": common.Command([sys.executable, "-c", "pass"]),
            "imports": common.Command([sys.executable, "-c", "import expt.cli"]),
            "pydantic": common.Command([sys.executable, "-c", "import expt.cli, typer._adapters"]),
        }
        if eager is not None:
            fns["eager_ls"] = common.Command(ls, cwd=project, env={"PYTHONPATH": str(eager)})
            fns["eager_compare"] = common.Command(compare, cwd=project, env={"PYTHONPATH": str(eager)})
            try:
                fns["eager_ls"]()
            except RuntimeError as error:  # a runs.db newer than that commit's code, say
                bench.note(f"`expt ls` at commit {EAGER} could not run here, so it is left out: {error}")
                del fns["eager_ls"], fns["eager_compare"]
                eager = None
        mlflow = None
        if common.mlflow_available():
            bench.progress(f"building the same {runs:,} runs in MLflow")
            scratch = common.scratch_dir("expt-bench-mlflow-")
            try:
                mlflow = common.build_mlflow(scratch / "mlflow.db", runs, steps=mlflow_steps)
                shutil.copy(scratch / "mlflow.db", work / "mlflow.db")  # read from the same disk as runs.db
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            fns["mlflow"] = common.Command(
                [str(common.VENV_BIN / "mlflow"), "runs", "list", "--experiment-id", mlflow["experiment"]],
                cwd=work, env={"MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}"})
        for fn in fns.values() if not bench.quick else ():
            fn()  # once untimed: the files in the page cache
        bench.progress(f"timing {len(fns)} commands, {n} times each")
        times = common.interleaved(fns, n)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    warm = 0 if bench.quick else 1
    cpu = {name: fn.cpu_figure(skip=warm + (name == "eager_ls")) for name, fn in fns.items()}  # + the check
    torch_name = '`python -c "import torch"`'
    missed = [bench.row(f"`expt ls` ({runs:,} runs)", times["ls"], times["torch"], torch_name, result_under(0.3, "s")),
              bench.row("`expt compare` of two runs", times["compare"], times["torch"], torch_name,
                        result_under(0.3, "s"))]
    if eager is not None:
        missed.append(bench.row("`expt ls`: CPU time (user + system)", cpu["ls"], cpu["eager_ls"],
                                f"`expt ls` at {EAGER}, CPU time", result_at_most(0.15, "s")))
        bench.row("`expt compare`: CPU time (user + system)", cpu["compare"], cpu["eager_compare"],
                  f"`expt compare` at {EAGER}, CPU time")
        bench.row(f"`expt ls` at {EAGER}: CPU time", cpu["eager_ls"], cpu["torch"], f"{torch_name}, CPU time")
    else:
        missed.append(bench.row("`expt ls`: CPU time (user + system)", cpu["ls"], cpu["torch"],
                                f"{torch_name}, CPU time", result_at_most(0.15, "s")))
        bench.row("`expt compare`: CPU time (user + system)", cpu["compare"], cpu["torch"], f"{torch_name}, CPU time")
    if mlflow is not None:
        bench.row(f"`expt ls` ({runs:,} runs)", times["ls"], times["mlflow"],
                  f"`mlflow runs list` (the same {runs:,} runs)")
        bench.row("`expt compare` of two runs", times["compare"], times["mlflow"], "`mlflow runs list`")
        bench.row("`mlflow runs list`", times["mlflow"], times["torch"], torch_name)
    else:
        bench.note(common.MLFLOW_MISSING)
    bench.row("`python -c pass` (the interpreter alone)", times["python"], times["torch"], torch_name)
    bench.row("`python -c \"import expt.cli\"`: CPU time", cpu["imports"], cpu["python"], "`python -c pass`, CPU time")
    bench.row("... and typer's pydantic adapters (which `expt ls` no longer imports): CPU time", cpu["pydantic"],
              cpu["imports"], "`import expt.cli`, CPU time")
    bench.note(_what_was_done(times, cpu, eager is not None))
    if False in missed:
        bench.note(_why(times, cpu))
    bench.note(f"{n} repeats of each command, interleaved{', after one untimed run' if warm else ''}. "
               "The CPU-time rows tell load "
               "from cost: on a busy machine a process waits for a core, and its wall time grows while its CPU "
               f"time does not. The commands at {EAGER} run that commit's expt package (`git archive`, byte-compiled "
               "like the current one) with the same interpreter, packages and runs.db. The expt project holds "
               f"{runs:,} finished runs x 3 metrics x 100 steps; the MLflow store the same runs, params and final "
               f"metrics with {mlflow_steps} steps of history each (`mlflow runs list` reads runs, params, tags and "
               "latest metrics, not the history; logging 100 steps a run through MLflow would take minutes).")
    bench.write()


def _checkout(commit: str, folder: Path) -> Path | None:
    """The expt package at ``commit``, byte-compiled, in ``folder`` (None without git or that commit)."""
    archived = common.at_commit(commit, "expt")
    if archived is None:
        return None
    with tarfile.open(fileobj=io.BytesIO(archived)) as archive:
        archive.extractall(folder, filter="data")
    compileall.compile_dir(folder / "expt", quiet=1)
    return folder


def _what_was_done(times: dict, cpu: dict, eager: bool) -> str:
    ls = cpu["ls"].median
    before = (f"{cpu['eager_ls'].median:.3f} s of CPU for the same command at {EAGER}, in this run "
              f"({cpu['eager_ls'].median / max(ls, 1e-9):.1f}x)" if eager else "0.29 s of CPU in the run before")
    return (f"What was done (issue 13): `expt ls` takes {ls:.3f} s of CPU and {times['ls'].median:.3f} s of wall "
            f"time, against {before}; the run before this work measured 0.29 s of CPU and 0.47-0.63 s of wall "
            "time on a busy machine. typer builds a pydantic TypeAdapter for every parameter, even one left unset, "
            f"and importing pydantic alone costs {max(0.0, cpu['pydantic'].median - cpu['imports'].median):.3f} s: "
            "expt.cli.coerce passes values that need no coercion through as they are (typer's own coercion takes the "
            "rest). The imports only some commands need (launcher, config and recipes, rich.progress, the tracker, "
            "tomllib) moved into those commands; the command modules no longer use `from __future__ import "
            "annotations`, which had typer compile and evaluate every command's annotations twice per start; and "
            "the runs of `expt ls` are one rich Text (expt.cli.table) instead of a rich Table that measured and "
            "rendered its 350 cells one by one. What is left is mostly the interpreter "
            f"({cpu['python'].median:.3f} s) and importing typer and rich "
            f"({cpu['imports'].median - cpu['python'].median:.3f} s with expt's own modules).")


def _why(times: dict, cpu: dict) -> str:
    """Where `expt ls`'s time goes, from this run's figures."""
    interpreter, imports = cpu["python"].median, cpu["imports"].median
    command = max(0.0, cpu["ls"].median - imports)
    load = times["ls"].median / max(cpu["ls"].median, 1e-9)
    return (f"Why a target is missed: `expt ls` took {times['ls'].median:.2f} s of wall time for "
            f"{cpu['ls'].median:.3f} s of CPU ({load:.1f}x: the rest is waiting for a core). Of the CPU time, the "
            f"interpreter takes {interpreter:.3f} s, expt.cli's imports (typer, rich, expt) "
            f"{imports - interpreter:.3f} s more, and the command itself (typer's command tree, reap, ingest, query, the table) {command:.3f} s.")


if __name__ == "__main__":
    main()
