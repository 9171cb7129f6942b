"""Graceful stops: SIGTERM (what schedulers send before they preempt) and SIGINT (Ctrl-C) ask the
training loop to stop after the current step; it then saves a checkpoint, waits for it and exits.
A second signal of the same kind gets the default behaviour (a second Ctrl-C aborts at once)."""

from __future__ import annotations

import signal
import threading

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequests:
    """Context manager installing the handlers (main thread only; elsewhere it does nothing).

        with StopRequests() as stop:
            for step in ...:
                ...
                if stop.requested():   # agreed over all processes
                    save, wait, leave
    """

    def __init__(self):
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        del frame
        self.signal_name = signal.Signals(signum).name
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))  # the second one aborts

    def requested(self) -> bool:
        """Whether any process got a signal. With several processes every one must call this at
        the same steps (it is a collective), so that all stop at the same step."""
        local = self.signal_name is not None
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils
        flags = multihost_utils.process_allgather(np.array(local, np.int32))
        if np.any(flags) and self.signal_name is None:
            self.signal_name = "a signal to another process"
        return bool(np.any(flags))
