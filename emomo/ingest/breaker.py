"""The write breaker: writes that failed in a row (any item that completes resets the count);
at ``ingest.max_write_failures`` the crawl stops rather than pay the VLM for items that cannot
be kept."""

from __future__ import annotations


class WriteBreaker:
    def __init__(self, max_failures: int) -> None:
        self.max_failures = max_failures
        self.failures = 0

    def failed(self) -> bool:
        """One more failed write; True when the breaker trips."""
        self.failures += 1
        return self.failures >= self.max_failures

    def ok(self) -> None:
        self.failures = 0
