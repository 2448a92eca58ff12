"""Issue 16: the result commands. `expt table`, `expt ls --where` and `expt report` as new processes on a project
of completed runs, each against `expt ls` on the same runs in the same run of the benchmark.

`expt ls EXP` is the baseline: the cheapest read of the same runs (start-up, refresh, one query, a table).
`expt table EXP` adds the pivot (mean ± CI per cell); `expt ls --where` adds the filter (compiled to SQL);
`expt report EXP` adds matplotlib's figures, which is most of its time.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import common
from common import Bench, ratio_at_most

WHERE = "best_top1 > 80 and mode = 'cbn'"
WHERE_ALL = "best_top1 > -1 and mode != 'none'"  # keeps every run: the filter's own cost, the same rows printed


def main() -> None:
    bench = Bench("results", "Result tables, filters and reports",
                  "Wall time of a new process running `expt table`, `expt ls --where` and `expt report` on a "
                  "project of completed finetune runs (100 per experiment: mode x shots x 7 seeds, 100 epochs of "
                  "3 metrics), against `expt ls` on the same runs.")
    runs = bench.size(1_500, 30)
    n = bench.repeats(7, 1)
    work = Path(tempfile.mkdtemp(prefix="expt-bench-results-"))
    try:
        bench.progress(f"building {runs:,} runs")
        common.build_project(work / "project", runs)
        project = work / "project"
        out = work / "report"
        fns = {
            "ls": common.Command([common.EXPT, "ls", "bench000", "-n", "0"], cwd=project),
            "table": common.Command([common.EXPT, "table", "bench000", "--rows", "mode", "--cols", "shots"],
                                    cwd=project),
            "table_md": common.Command([common.EXPT, "table", "bench000", "--rows", "mode", "--cols", "shots",
                                        "-F", "md"], cwd=project),
            "ls_all": common.Command([common.EXPT, "ls", "-n", "0"], cwd=project),
            "where": common.Command([common.EXPT, "ls", "-n", "0", "--where", WHERE], cwd=project),
            "where_all": common.Command([common.EXPT, "ls", "-n", "0", "--where", WHERE_ALL], cwd=project),
            "report": common.Command([common.EXPT, "report", "bench000", "--out", str(out)], cwd=project),
        }
        bench.progress(f"{n} interleaved repeats of {', '.join(fns)}")
        times = common.interleaved(fns, n)
        bench.row("`expt table bench000 --rows mode --cols shots` (100 runs, 15 cells)", times["table"],
                  times["ls"], "`expt ls bench000`", ratio_at_most(1.5))
        bench.row("`expt table ... -F md`", times["table_md"], times["ls"], "`expt ls bench000`", ratio_at_most(1.5))
        bench.row(f"`expt ls --where \"{WHERE}\"` ({runs:,} runs)", times["where"], times["ls_all"],
                  f"`expt ls` ({runs:,} runs)", ratio_at_most(1.2))
        bench.row(f"`expt ls --where \"{WHERE_ALL}\"` (keeps all {runs:,})", times["where_all"], times["ls_all"],
                  f"`expt ls` ({runs:,} runs)", ratio_at_most(1.2))
        bench.row("`expt report bench000` (README.md, curves PNG)", times["report"], times["ls"],
                  "`expt ls bench000`")
        bench.note("`--where` is compiled to SQL: the runs it drops are never read or printed, so a filter that keeps "
                   "few runs is faster than listing them all; the filter that keeps every run is its own cost.")
        bench.note("The report's figure is a reference: matplotlib's import and one PNG with 15 groups of 7 seeds "
                   "are most of it; it is run by hand after a study, not in a loop.")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    bench.write()


if __name__ == "__main__":
    main()
