"""Item 7: start-up. `expt ls` and `expt compare` as new processes on a 1,000-run project, against
`python -c "import torch"` and MLflow's `mlflow runs list` on the same 1,000 runs in MLflow's own sqlite
store (logged through MLflow's client API).

"Cold" here is a new process each time with the files in the page cache (a machine in use); dropping
the page cache needs root and would slow everyone else on the machine.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import common
from common import Bench, result_under


def main() -> None:
    bench = Bench("startup", "Start-up",
                  "Wall time of a new process running `expt ls` and `expt compare` on a 1,000-run runs.db, against "
                  "`python -c \"import torch\"` and `mlflow runs list` on the same runs in MLflow's sqlite store.")
    runs = bench.size(1_000, 30)
    mlflow_steps = 10
    n = bench.repeats(7, 1)
    work = Path(tempfile.mkdtemp(prefix="expt-bench-startup-"))
    try:
        bench.progress(f"building {runs:,} runs in expt")
        built = common.build_project(work / "project", runs)
        project = work / "project"
        fns = {
            "ls": common.Command([common.EXPT, "ls"], cwd=project),
            "compare": common.Command([common.EXPT, "compare", built["first"], built["second"]], cwd=project),
            "torch": common.Command([sys.executable, "-c", "import torch"]),
            "python": common.Command([sys.executable, "-c", "pass"]),
            "imports": common.Command([sys.executable, "-c", "import expt.cli"]),
            "pydantic": common.Command([sys.executable, "-c", "import expt.cli, typer._adapters"]),
        }
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
    target = result_under(0.3, "s")
    torch_name = '`python -c "import torch"`'
    missed = [bench.row(f"`expt ls` ({runs:,} runs)", times["ls"], times["torch"], torch_name, target),
              bench.row("`expt compare` of two runs", times["compare"], times["torch"], torch_name, target)]
    if mlflow is not None:
        bench.row(f"`expt ls` ({runs:,} runs)", times["ls"], times["mlflow"],
                  f"`mlflow runs list` (the same {runs:,} runs)")
        bench.row("`expt compare` of two runs", times["compare"], times["mlflow"], "`mlflow runs list`")
        bench.row("`mlflow runs list`", times["mlflow"], times["torch"], torch_name)
    else:
        bench.note(common.MLFLOW_MISSING)
    bench.row("`python -c pass` (the interpreter alone)", times["python"], times["torch"], torch_name)
    warm = 0 if bench.quick else 1
    cpu = {name: fn.cpu_figure(skip=warm) for name, fn in fns.items()}
    bench.row("`expt ls`: CPU time (user + system)", cpu["ls"], cpu["torch"], f"{torch_name}, CPU time")
    bench.row("`expt compare`: CPU time (user + system)", cpu["compare"], cpu["torch"], f"{torch_name}, CPU time")
    bench.row("`python -c \"import expt.cli\"`: CPU time", cpu["imports"], cpu["python"], "`python -c pass`, CPU time")
    bench.row("... and typer's pydantic adapters: CPU time", cpu["pydantic"], cpu["imports"],
              "`import expt.cli`, CPU time")
    if False in missed:
        bench.note(_why(times, cpu))
    bench.note(f"{n} repeats of each command, interleaved{', after one untimed run' if warm else ''}. "
               "The CPU-time rows tell load "
               "from cost: on a busy machine a process waits for a core, and its wall time grows while its CPU "
               "time does not. The expt project holds "
               f"{runs:,} finished runs x 3 metrics x 100 steps; the MLflow store the same runs, params and final "
               f"metrics with {mlflow_steps} steps of history each (`mlflow runs list` reads runs, params, tags and "
               "latest metrics, not the history; logging 100 steps a run through MLflow would take minutes).")
    bench.write()


def _why(times: dict, cpu: dict) -> str:
    """Where `expt ls`'s time goes, from this run's figures, and what would close the gap."""
    import importlib.metadata

    interpreter, imports = cpu["python"].median, cpu["imports"].median
    pydantic = max(0.0, cpu["pydantic"].median - imports)
    command = max(0.0, cpu["ls"].median - imports - pydantic)
    load = times["ls"].median / max(cpu["ls"].median, 1e-9)
    return (f"Why the target is missed: `expt ls` took {times['ls'].median:.2f} s of wall time for "
            f"{cpu['ls'].median:.2f} s of CPU ({load:.1f}x: the rest is waiting for a core on this busy machine). "
            f"Of the CPU time, the interpreter takes {interpreter:.2f} s, expt.cli's imports (typer, rich, expt) "
            f"{imports - interpreter:.2f} s more, pydantic {pydantic:.2f} s (typer "
            f"{importlib.metadata.version('typer')} imports it to coerce the arguments of every command), and the "
            f"command itself (reap, ingest, query, rich's table of 50 rows) {command:.2f} s. What would close it: "
            "an idle machine (the CPU time is the floor of the wall time), a typer release without the pydantic "
            "adapters or a plain argument parser for the read commands, and a cheaper table (rich measures, then "
            "renders, every cell of the 50 rows).")


if __name__ == "__main__":
    main()
