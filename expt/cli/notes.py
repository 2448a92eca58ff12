"""The user's bookkeeping on runs: tag, untag, note (event lines in the run folders: reindex keeps them)."""

from typing import Annotated, Callable, Optional

import typer
from rich.text import Text

from expt import bookkeeping
from expt.cli import app, console, project
from expt.cli.browse import one_run, refresh
from expt.cli.render import inert
from expt.errors import UsageError
from expt.store import open_store

TagArguments = Annotated[list[str], typer.Argument(metavar="RUN... TAG", help="Run ids, unique id prefixes or "
                         "experiment names, then the tag (1 to 64 characters, no spaces).")]


@app.command()
def tag(args: TagArguments) -> None:
    """Tag runs (`expt tag fewshot-3 fewshot-4 baseline`); `expt ls --tag baseline` lists them."""
    _change_tags(args, "tag", bookkeeping.add_tags, "tagged", "already tagged")


@app.command()
def untag(args: TagArguments) -> None:
    """Remove a tag from runs."""
    _change_tags(args, "untag", bookkeeping.remove_tags, "untagged", "not tagged")


def _change_tags(args: list[str], command: str, change: Callable, did: str, same: str) -> None:
    """RUN... TAG -> ``change(store, runs, [tag])``, then one line for the runs it changed and one for the rest."""
    if len(args) < 2:
        raise UsageError(f"expt {command} needs a run and a tag: expt {command} RUN... TAG")
    refs, name = args[:-1], bookkeeping.check_tag(args[-1])
    with open_store(project().db_path) as store:
        refresh(store)
        done = change(store, store.resolve(refs), [name])
    changed = [run.id for run, tags in done if tags]
    unchanged = [run.id for run, tags in done if not tags]
    if changed:
        console.print(inert(f"{did} {len(changed)} run{'s' * (len(changed) != 1)} {name}: {', '.join(changed)}"))
    if unchanged:
        console.print(Text(inert(f"{same} {name}: {', '.join(unchanged)}"), style="dim"))


@app.command()
def note(
    run_ref: Annotated[str, typer.Argument(metavar="RUN", help="Run id or unique prefix.")],
    text: Annotated[Optional[str], typer.Argument(help="The note (one per run; \"\" clears it). Without it: "
                    "print the note.")] = None,
) -> None:
    """Write a note on a run (`expt note fewshot-3 "lr too high"`), or print it."""
    with open_store(project().db_path) as store:
        refresh(store)
        run = one_run(store, run_ref)
        if text is None:
            if run.note:
                console.print(inert(run.note))
            else:
                console.print(Text(f"{inert(run.id)} has no note", style="dim"))
            return
        run, changed = bookkeeping.set_note(store, run, text)
    if not changed:
        console.print(Text(inert(f"{run.id}: note unchanged"), style="dim"))
    elif text:
        console.print(inert(f"noted on {run.id}: {text}"))
    else:
        console.print(inert(f"cleared the note of {run.id}"))
