"""Item 2: manager overhead. The finetune recipe's training loop run bare in a plain Python process, and the
same experiment run by `expt run` as an expt worker (scheduler, worker process, Tracker, heartbeat,
per-epoch checkpoints, the foreground CLI polling runs.db).

Both sides time the same span: from the first training batch to the end of the last evaluation, with the
same model, data, batches, seeds, optimizer and thread count. The worker's figure comes from its run's
summary (``train_seconds``, ``train_images``), as a user would read it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import Bench, ratio_at_least, rate

FULL = {"model": "efficientnet_lite0", "pretrained": True, "shots": 10, "img_size": 64, "epochs": 3,
        "batch_size": 16, "lr": 0.01, "mode": "e2e", "seed": 0, "device": "cpu", "workers": 0,
        "test_fraction": 0.1}
QUICK = {**FULL, "model": "test_efficientnet", "pretrained": False, "shots": 2, "img_size": 32, "epochs": 2,
         "batch_size": 8, "test_fraction": 0.05}


def main() -> None:
    bench = Bench("overhead", "Manager overhead",
                  "Images per second of the same few-shot training loop (the finetune recipe: "
                  "timm model, digits, fixed epochs) run bare in a Python process and run by `expt run` as a "
                  "worker with tracking, heartbeat and per-epoch checkpoints.")
    overrides = QUICK if bench.quick else FULL
    work = Path(tempfile.mkdtemp(prefix="expt-bench-overhead-"))
    # `expt run --jobs N` gives each CPU slot cores // N threads: one thread a slot, and the bare side the same
    jobs = os.cpu_count() or 1
    threads = "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads}
    try:
        project = work / "project"
        project.mkdir()
        (project / "experiments.toml").write_text(_toml(overrides))
        results: dict[str, list[dict[str, float]]] = {"bare": [], "worker": []}
        counter = iter(range(1, 1000))

        def bare() -> float:
            done = subprocess.run([sys.executable, __file__, "--bare", json.dumps(overrides)], env=env,
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"the bare loop failed: {done.stderr.strip()[-800:]}")
            results["bare"].append(json.loads(done.stdout.strip().splitlines()[-1]))
            return results["bare"][-1]["seconds"]

        def worker() -> float:
            done = subprocess.run([common.EXPT, "run", "overhead", "--jobs", str(jobs)], cwd=project, env=env,
                                  capture_output=True, text=True, check=False)
            run_id = f"overhead-{next(counter)}"
            if done.returncode != 0:
                log = project / "runs" / run_id / "log.txt"
                tail = log.read_text()[-800:] if log.is_file() else ""
                raise RuntimeError(f"expt run failed ({done.returncode}): {done.stderr.strip()[-400:]} {tail}")
            results["worker"].append(_summary(project, run_id, overrides["epochs"]))
            return results["worker"][-1]["seconds"]

        bench.progress(f"{bench.repeats(3, 1)} x (the bare loop, then `expt run`), alternating")
        common.interleaved({"bare": bare, "worker": worker}, bench.repeats(3, 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    images = results["bare"][0]["images"]
    if any(r["images"] != images for r in results["bare"] + results["worker"]):
        raise RuntimeError(f"the two sides trained different numbers of images: {results}")
    bare_rate = rate(images, [r["seconds"] for r in results["bare"]], "images/s")
    worker_rate = rate(images, [r["seconds"] for r in results["worker"]], "images/s")
    met = bench.row(f"`expt run` worker, {overrides['model']}", worker_rate, bare_rate, "the same loop bare",
                    ratio_at_least(0.95))
    if met is False:
        checkpoint = max(r["checkpoint"] for r in results["worker"]) / 2**20
        bench.note(f"Why the target is missed: within the span the worker also writes a checkpoint after every "
                   f"epoch (model, optimizer, scaler, position: what makes stop and resume exact; the final one, "
                   f"the model alone, is {checkpoint:.1f} MiB), logs, and shares the cores with the foreground "
                   "`expt run` polling runs.db twice a "
                   "second; with few images an epoch these are a visible share. Compare the medians with the best "
                   "repeats: on a busy machine the spread is larger than the gap. What would close it: more images "
                   "an epoch (the fixed costs are per epoch), or checkpoints every N epochs.")
    bench.note(f"{overrides['model']} ({'ImageNet weights' if overrides['pretrained'] else 'random init'}), "
               f"digits, {overrides['shots']} shots a class ({images // overrides['epochs']} images; "
               f"{overrides['test_fraction']:.0%} of the set held out for the evaluations), "
               f"{overrides['img_size']} px, batch {overrides['batch_size']}, {overrides['epochs']} epochs with an "
               f"evaluation after each; one thread on both sides (`expt run --jobs {jobs}` gives each CPU slot one; "
               "on a busy 2-core machine torch's two OpenMP threads ran 3-6x slower and far noisier than one); "
               f"{bench.repeats(3, 1)} repeats of each, interleaved. The span is the recipe's `train_seconds` "
               "(first batch to the last evaluation), so it includes the worker's per-epoch checkpoint writes "
               "and logging; process start-up and data loading are outside it on both sides.")
    bench.write()


def _toml(overrides: dict[str, Any]) -> str:
    lines = ["[experiments.overhead]", 'recipe = "finetune"']
    for key, value in overrides.items():
        lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def _summary(project: Path, run_id: str, epochs: int) -> dict[str, float]:
    from expt.store import Store

    with Store(project / "runs.db") as store:
        run = store.get(run_id)
    if run is None or run.status != "completed":
        raise RuntimeError(f"{run_id} did not complete: {run and run.status} {run and run.error}")
    checkpoint = run.path / "checkpoint.pt"
    return {"images": run.summary["train_images"] * epochs, "seconds": run.summary["train_seconds"],
            "checkpoint": checkpoint.stat().st_size if checkpoint.is_file() else 0}


def bare_loop(overrides: dict[str, Any]) -> dict[str, float]:
    """The finetune recipe's e2e loop without expt: what `fit` runs, with no Tracker, heartbeat or checkpoint."""
    import timm.data
    import torch

    from expt.core import data, evaluate, models, training
    from expt.core.recipes import get_recipe

    p = {**get_recipe("finetune").params.defaults(), **overrides}
    training.seed_everything(p["seed"])
    device = training.resolve_device(p["device"])
    splits = data.load_splits(p)
    train = splits.train.subset(data.few_shot(splits.train, p["shots"], p["seed"])).in_memory()
    model = models.create_model(p["model"], num_classes=len(train.classes), pretrained=p["pretrained"],
                                checkpoint=p["checkpoint"], drop_rate=p["drop_rate"])
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(p["img_size"], is_training=False, use_prefetcher=True,
                                           interpolation=config["interpolation"], crop_pct=config["crop_pct"])
    models.set_trainable(model, None)
    memory_format = torch.channels_last if p["channels_last"] else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    normalizer = data.Normalizer(device, config["mean"], config["std"], channels_last=p["channels_last"])
    test_x, test_y = data.tensor_cache(splits.test, transform, p["workers"])
    batches = data.Batches(train, transform, batch_size=p["batch_size"], seed=p["seed"], augment=False,
                           workers=p["workers"])
    optimizer = training.create_optimizer([q for q in model.parameters() if q.requires_grad], p)
    scheduler = training.create_scheduler(optimizer, p, len(batches))
    scaler = training.grad_scaler(device, p["amp"])
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=p["smoothing"])

    def forward(x: torch.Tensor) -> torch.Tensor:
        with training.autocast(device, p["amp"]):
            return model(x)

    def train_step(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, int]:
        x, y = normalizer(batch[0]), batch[1].to(device)
        loss = criterion(forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss.item(), len(x)

    images = step = 0
    start = time.monotonic()
    for epoch in range(p["epochs"]):
        model.train()
        models.set_norm_mode(model, True)
        for index, batch in enumerate(batches.epoch(epoch)):
            torch.manual_seed(data.batch_seed(p["seed"], epoch, index, 7))
            _, count = train_step(batch)
            images += count
            step += 1
            if scheduler is not None:
                scheduler.step_update(step)
        model.eval()
        with torch.no_grad():
            logits = evaluate.predict(model, test_x, normalizer, p["eval_batch_size"], forward)
            evaluate.classification_scores(logits, test_y)
    return {"images": images, "seconds": time.monotonic() - start}


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--bare":
        print(json.dumps(bare_loop(json.loads(sys.argv[2]))))
    else:
        main()
