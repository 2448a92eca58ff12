"""Issue 15: what a search buys over a grid. The finetune recipe on digits (timm's test_efficientnet from
scratch, 32 px, 10 images per class) searched over lr and weight_decay with N trials each: TPE and random
over a few study seeds, against the equivalent grid of N points (the same ranges, log-spaced lr); and TPE
with the median pruner, whose slot-epochs run are set against the trials x epochs planned. Every study runs
through `expt run NAME --jobs 2`, the real scheduler and workers; the figures come from `expt study --json`.
"""

from __future__ import annotations

import orjson

from common import EXPT, Bench, Figure, scratch_dir

TOML = """
[experiments.{name}]
recipe = "finetune"
model = "test_efficientnet"
pretrained = false
shots = 10
img_size = 32
epochs = {epochs}
batch_size = 16
opt = "sgd"
eval_batch_size = 512
seed = 0

[experiments.{name}.search]
sampler = "{sampler}"
trials = {trials}
seed = {seed}
{extra}
[experiments.{name}.search.space]
{space}
"""
RANGES = "lr = {low = 0.001, high = 0.5, log = true}\nweight_decay = {low = 0.0, high = 0.01}"
GRID = "lr = [0.002, 0.01, 0.05, 0.25]\nweight_decay = [0.0, 0.01]"  # 8 points over the same ranges


def main() -> None:
    import subprocess

    bench = Bench("search", "Search: TPE and random against the grid, and pruning",
                  "The finetune recipe on digits (test_efficientnet from scratch, 32 px, 10 shots, SGD) over lr "
                  "(log) and weight_decay: the best top-1 after N trials for Optuna's TPE and random samplers over "
                  "several study seeds, against the equivalent grid of N points, each study through `expt run "
                  "--jobs 2`; and the slot-epochs a median pruner saves against the trials x epochs planned.")
    trials = bench.size(8, 2)
    epochs = bench.size(6, 1)
    seeds = list(range(bench.repeats(3, 1)))
    grid = GRID if not bench.quick else "lr = [0.01, 0.25]\nweight_decay = [0.0]"
    studies = {"grid": [("grid", 0, grid, "")]}
    studies["tpe"] = [("tpe", s, RANGES, "startup_trials = 3\n") for s in seeds]
    studies["random"] = [("random", s, RANGES, "") for s in seeds]
    studies["tpe_median"] = [("tpe", s, RANGES, 'startup_trials = 3\npruner = "median"\npruner_startup = 2\n'
                                                 "pruner_warmup = 1\n") for s in seeds]
    folder = scratch_dir("expt-bench-search-")
    text = '[defaults]\ndataset = "digits"\n'
    names: dict[str, list[str]] = {}
    for label, runs in studies.items():
        for sampler, seed, space, extra in runs:
            name = f"{label}_s{seed}"
            names.setdefault(label, []).append(name)
            text += TOML.format(name=name, sampler=sampler, trials=trials, seed=seed, space=space, extra=extra,
                                epochs=epochs)
    (folder / "experiments.toml").write_text(text)
    reports: dict[str, list[dict]] = {}
    walls: dict[str, list[float]] = {}
    import time

    for label, experiment_names in names.items():
        for name in experiment_names:
            bench.progress(f"expt run {name}")
            start = time.perf_counter()
            done = subprocess.run([EXPT, "run", name, "--jobs", "2"], cwd=folder, capture_output=True, text=True)
            walls.setdefault(label, []).append(time.perf_counter() - start)
            if done.returncode != 0:
                raise RuntimeError(f"expt run {name} exited {done.returncode}: {done.stderr[-800:]}")
            report = orjson.loads(subprocess.run([EXPT, "study", name, "--json"], cwd=folder, capture_output=True,
                                                 check=True).stdout)
            reports.setdefault(label, []).append(report)

    def best(label: str) -> Figure:
        return Figure([r["best"]["value"] for r in reports[label]], "% top-1", higher_better=True)

    grid_best = best("grid")
    bench.row(f"grid, {trials} points: best top-1", grid_best, None, "the baseline")
    for label, title in (("tpe", "TPE"), ("random", "random"), ("tpe_median", "TPE + median pruner")):
        bench.row(f"{title}, {trials} trials: best top-1 over {len(seeds)} study seeds", best(label), grid_best,
                  "the grid")
    for label in ("tpe", "random"):
        beats = sum(r["best"]["value"] >= grid_best.median for r in reports[label])
        bench.text_row(f"{label}: studies reaching the grid's best", f"{beats} of {len(reports[label])}")
    ran = sum(r["epochs_run"] for r in reports["tpe_median"])
    planned = sum(r["epochs_planned"] for r in reports["tpe_median"])
    pruned = sum(r["counts"]["pruned"] for r in reports["tpe_median"])
    bench.text_row("TPE + median pruner: slot-epochs run", f"{ran} of {planned} planned ({pruned} trials pruned)",
                   f"without pruning: {planned}", f"{ran / planned:.2f}x", "reference")
    for label in names:
        bench.row(f"{label}: wall time of one study", Figure(walls[label], "s"))
    curve = {label: [r["best_so_far"] for r in reports[label]] for label in ("tpe", "random")}
    bench.note(f"{trials} trials per study, {epochs} epochs per trial, 2 runs at a time (CPU); the value is each "
               "run's best top-1 on the digits test split. Grid lr = 0.002, 0.01, 0.05, 0.25 x weight_decay = 0, 0.01; "
               "TPE's first 3 trials are random (startup_trials), the median pruner starts after 2 finished trials "
               "and from epoch 1. Best so far per trial: " + "; ".join(
                   f"{label} " + " / ".join(",".join(f"{v:.0f}" for v in c if v is not None) for c in curves)
                   for label, curves in curve.items()) + ".")
    bench.write()


if __name__ == "__main__":
    main()
