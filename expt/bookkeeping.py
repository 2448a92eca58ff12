"""A run's tags and note, the user's own bookkeeping: event lines in its metrics.jsonl (so reindex keeps them).

``expt tag/untag/note`` and the TUI's run detail both write through these functions. Each appends an event
only when it changes something (tagging twice writes nothing), then ingests it, and returns what it did.
"""

from __future__ import annotations

import unicodedata

from expt.core import runfiles
from expt.errors import UsageError
from expt.store import Run, Store

MAX_TAG = 64
MAX_NOTE = 10_000


def check_tag(tag: str) -> str:
    """A tag is 1 to 64 characters, without spaces or control characters, not starting with '-'."""
    shown = tag.encode("unicode_escape").decode("ascii")
    if not tag:
        raise UsageError("a tag cannot be empty")
    if len(tag) > MAX_TAG:
        raise UsageError(f"tag {shown[:40]}...: longer than {MAX_TAG} characters")
    if any(c.isspace() or unicodedata.category(c)[0] == "C" for c in tag):
        raise UsageError(f"tag {shown!r}: no spaces or control characters in a tag")
    if tag.startswith("-"):
        raise UsageError(f"tag {shown!r}: a tag cannot start with '-'")
    return tag


def check_note(text: str) -> str:
    if len(text) > MAX_NOTE:
        raise UsageError(f"a note is at most {MAX_NOTE} characters (this one has {len(text)})")
    return text


def _refresh(store: Store, run: Run) -> Run:
    store.ingest_run(run)
    return store.get(run.id) or run


def add_tags(store: Store, runs: list[Run], tags: list[str]) -> list[tuple[Run, list[str]]]:
    """Tag each run with ``tags``; returns (run, the tags it did not have yet) for every run."""
    tags = list(dict.fromkeys(check_tag(t) for t in tags))
    done = []
    for run in runs:
        run = _refresh(store, run)
        new = [t for t in tags if t not in run.tags]
        if new:
            runfiles.append_event(run.path, runfiles.TAGS_EVENT, add=new)
            run = _refresh(store, run)
        done.append((run, new))
    return done


def remove_tags(store: Store, runs: list[Run], tags: list[str]) -> list[tuple[Run, list[str]]]:
    """Remove ``tags`` from each run; returns (run, the tags it had and lost) for every run."""
    tags = list(dict.fromkeys(check_tag(t) for t in tags))
    done = []
    for run in runs:
        run = _refresh(store, run)
        gone = [t for t in tags if t in run.tags]
        if gone:
            runfiles.append_event(run.path, runfiles.TAGS_EVENT, remove=gone)
            run = _refresh(store, run)
        done.append((run, gone))
    return done


def set_tags(store: Store, run: Run, tags: list[str]) -> Run:
    """Make the run's tags exactly ``tags`` (the TUI's editor): one event with what to add and remove."""
    tags = list(dict.fromkeys(check_tag(t) for t in tags))
    run = _refresh(store, run)
    add = [t for t in tags if t not in run.tags]
    remove = [t for t in run.tags if t not in tags]
    if add or remove:
        runfiles.append_event(run.path, runfiles.TAGS_EVENT, add=add, remove=remove)
        run = _refresh(store, run)
    return run


def set_note(store: Store, run: Run, text: str) -> tuple[Run, bool]:
    """Set the run's note ("" clears it); returns the run and whether anything changed."""
    text = check_note(text)
    run = _refresh(store, run)
    if text == run.note:
        return run, False
    runfiles.append_event(run.path, runfiles.NOTE_EVENT, text=text)
    return _refresh(store, run), True
