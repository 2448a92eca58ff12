"""A small PyTorch training script of the kind expt's users write: a CNN on scikit-learn's digits (8x8 images,
10 classes, bundled offline), instrumented with W&B's API through expt.track.

    python train.py --lr 0.05 --epochs 8       # on its own: a run of its own in this project (expt ls shows it)
    expt run digits_lr                         # launched by expt: a sweep over lr (experiments.toml)
"""

import argparse
import os

import torch
from sklearn.datasets import load_digits
from torch import nn

import expt.track as wandb

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--epochs", type=int, default=8)
parser.add_argument("--width", type=int, default=16, help="channels of the first convolution")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--checkpoint", default="checkpoint.pt", help="where to save the model after each epoch")
parser.add_argument("--resume", help="a checkpoint to continue from")
args = parser.parse_args()

run = wandb.init(project="digits", config=vars(args))
torch.manual_seed(args.seed)
torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

digits = load_digits()
images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
labels = torch.tensor(digits.target)
order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))  # the same split for every run
test, train = order[:360], order[360:]

model = nn.Sequential(
    nn.Conv2d(1, args.width, 3, padding=1), nn.BatchNorm2d(args.width), nn.ReLU(),
    nn.Conv2d(args.width, 2 * args.width, 3, padding=1, stride=2), nn.BatchNorm2d(2 * args.width), nn.ReLU(),
    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * args.width, 10),
)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
start = 0
if args.resume and os.path.exists(args.resume):
    saved = torch.load(args.resume)
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    start = saved["epoch"] + 1
    print(f"resuming after epoch {saved['epoch']}")

best = 0.0
for epoch in range(start, args.epochs):
    model.train()
    shuffled = train[torch.randperm(len(train))]
    total = 0.0
    for batch in shuffled.split(64):
        loss = nn.functional.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        total += loss.item() * len(batch)
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[test]).argmax(1) == labels[test]).float().mean() * 100
    best = max(best, accuracy.item())
    wandb.log({"train_loss": total / len(train), "eval_top1": accuracy}, step=epoch + 1)
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch}, args.checkpoint)
    print(f"epoch {epoch + 1}/{args.epochs}: train_loss {total / len(train):.3f}, eval_top1 {accuracy:.2f}%")

run.summary["final_eval_top1"] = accuracy.item() if args.epochs > start else best
wandb.finish()
