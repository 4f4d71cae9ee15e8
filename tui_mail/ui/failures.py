"""Route failed workers to the app's one error handler.

``Worker.StateChanged`` does not bubble, so each screen that starts workers mixes this in; the
app then shows the error (MailError text as is, anything else with its type) and calls the
screen's ``worker_failed`` hook to undo optimistic changes.
"""

from __future__ import annotations

from textual.worker import Worker, WorkerState


class ReportsWorkerFailures:
    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR:
            self.app.report_worker_failure(event.worker)
