"""The few-shot training images a run used: listing them and drawing a contact sheet.

The finetune recipe saves its selection as ``tables/samples.json`` (class, label, source,
file) with one PNG per image under ``samples/``; the CLI and the TUI's sample browser read
the same files. Pillow only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from expt.core import runfiles
from expt.core.tracking import read_table
from expt.errors import UsageError

if TYPE_CHECKING:
    from PIL import Image

SAMPLES_TABLE = "samples.json"


@dataclass(frozen=True)
class Sample:
    label: int
    class_name: str
    source: str
    path: Path | None  # a PNG in the run folder; None beyond the pictures kept per class


def read_samples(run_dir: Path, run_id: str = "") -> list[Sample]:
    """The saved training selection of a run, in class order."""
    table = Path(run_dir) / runfiles.TABLES / SAMPLES_TABLE
    if not table.is_file():
        raise UsageError(f"{run_id or run_dir} saved no training samples (only finetune runs do, "
                         f"once their data is loaded)")
    _, rows = read_table(table)
    samples = [Sample(int(r["label"]), str(r["class"]), str(r.get("source", "")),
                      Path(run_dir) / r["file"] if r.get("file") else None)
               for r in rows]
    return sorted(samples, key=lambda s: (s.label, s.source))


def by_class(samples: list[Sample]) -> dict[str, list[Sample]]:
    groups: dict[str, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.class_name, []).append(sample)
    return groups


def contact_sheet(samples: list[Sample], out: Path, title: str, cell: int = 96, max_per_class: int = 20) -> Path:
    """A PNG with one row per class: its name, then its images (at most ``max_per_class``)."""
    from PIL import Image, ImageDraw, ImageFont

    groups = by_class(samples)
    if not groups:
        raise UsageError(f"{title}: no samples to draw")
    font = ImageFont.load_default(size=max(12, cell // 6))
    label_width = max(int(font.getlength(name)) for name in groups) + 16
    columns = min(max_per_class, max(len(items) for items in groups.values()))
    pad, header = 4, cell // 3 + 8
    width = label_width + columns * (cell + pad) + pad
    height = header + len(groups) * (cell + pad) + pad
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((pad, pad), title, fill="black", font=font)
    for row, (name, items) in enumerate(groups.items()):
        top = header + row * (cell + pad)
        draw.text((pad, top + cell // 2), name, fill="black", font=font, anchor="lm")
        for column, sample in enumerate([s for s in items if s.path is not None][:columns]):
            with Image.open(sample.path) as image:
                thumb = fit(image.convert("RGB"), cell)
            left = label_width + column * (cell + pad)
            sheet.paste(thumb, (left + (cell - thumb.width) // 2, top + (cell - thumb.height) // 2))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def fit(image: Image.Image, size: int) -> Image.Image:
    """Scale to fit a ``size`` square; small images (8x8 digits) grow with sharp pixels."""
    from PIL import Image

    scale = min(size / image.width, size / image.height)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(new, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
