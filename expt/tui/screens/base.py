"""What every expt screen shares: thread workers whose result is a message, errors as notifications."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from textual import on
from textual.message import Message
from textual.screen import Screen
from textual.worker import Worker, WorkerState, get_current_worker

if TYPE_CHECKING:
    from expt.tui.app import ExptApp


class ExptScreen(Screen):
    """A screen whose blocking work runs in thread workers (harlequin's pattern).

    ``in_thread(fn, ...)`` runs a function of ``expt.tui.actions`` in a worker thread; the
    message it returns is posted to this screen, unless a newer worker of the same group
    replaced it (``exclusive``). A worker that fails reports to the one
    ``Worker.StateChanged`` handler below, which shows a user's error as a notification.
    """

    HELP = ""  # a sentence for the ? screen
    _reload_due = False

    def reload(self) -> None:
        """Read the screen's data again (in a thread worker)."""

    def reload_soon(self, delay: float) -> None:
        """``reload`` once, ``delay`` seconds from now, however many changes ask for it meanwhile."""
        if not self._reload_due:
            self._reload_due = True
            self.set_timer(delay, self._reload_now)

    def _reload_now(self) -> None:
        self._reload_due = False
        self.reload()

    @property
    def expt(self) -> ExptApp:
        return self.app  # type: ignore[return-value]

    def in_thread(self, fn: Callable[..., Message | None], *args: Any, group: str = "load",
                  exclusive: bool = True, description: str = "") -> Worker:
        def work() -> Message | None:
            result = fn(*args)
            if result is not None and not get_current_worker().is_cancelled:
                self.post_message(result)
            return result

        return self.run_worker(work, thread=True, group=group, exclusive=exclusive, exit_on_error=False,
                               description=description or getattr(fn, "__name__", "work"))

    @on(Worker.StateChanged)
    def _worker_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            self.worker_failed(event.worker)
            self.expt.report_error(event.worker.error, event.worker.description)

    def worker_failed(self, worker: Worker) -> None:
        """A worker of this screen raised (after which the app shows the error)."""
