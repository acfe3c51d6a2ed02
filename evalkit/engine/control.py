"""Stopping a run: the first interrupt (or the budget) stops submitting, a second one stops waiting."""

from __future__ import annotations

import asyncio


class StopController:
    """Ctrl-C handling: the first interrupt stops submitting and gives in-flight calls a grace period;
    a second one stops waiting for them (their rows stay resumable)."""

    def __init__(self) -> None:
        self.stop_submitting = asyncio.Event()
        self.abandon = asyncio.Event()
        self.reason: str | None = None

    def request_stop(self, reason: str) -> None:
        if not self.stop_submitting.is_set():
            self.reason = reason
            self.stop_submitting.set()

    def interrupt(self) -> None:
        if self.stop_submitting.is_set() and self.reason == "interrupted":
            self.abandon.set()
        self.request_stop("interrupted")
