"""expt tui: the live dashboard (the Textual app in expt.tui)."""

from typing import Annotated

import typer

from expt.cli import app, project
from expt.errors import UsageError
from expt.store import open_store

IMAGE_MODES = ("auto", "halfcell", "sixel", "tgp", "unicode")


@app.command()
def tui(
    images: Annotated[str, typer.Option("--images", help="How to draw pictures: auto (Kitty or Sixel graphics "
                      "where the terminal has them, else coloured half blocks), halfcell, sixel, tgp, unicode.")]
    = "auto",
    interval: Annotated[float, typer.Option("--interval", min=0.1, max=10.0, help="Seconds between looks at "
                        "runs.db for new metric lines and status changes.")] = 0.2,
) -> None:
    """The live dashboard: launch experiments, watch runs, stop and resume, compare, browse samples.

    Its runs are the background workers of `expt run --detach`: quitting it or losing SSH stops none.

    Keys: ? on any screen lists them; ctrl+p opens the command palette; q quits.
    """
    if images not in IMAGE_MODES:
        raise UsageError(f"--images {images!r}: expected one of {', '.join(IMAGE_MODES)}")
    proj = project()
    with open_store(proj.db_path):
        pass  # create or check runs.db here, so a bad one is a one-line error before the screen opens
    from expt.tui.app import create_app

    create_app(proj, interval=interval, image_mode=images).run()
