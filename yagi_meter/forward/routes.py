"""Which events the forwarder sends, and to which AtomPub collection (pure, no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from yagi_meter.config import Config


class Routes:
    """``[forward] event_types`` (the filter) and ``[forward] targets`` (per-type collections)."""

    def __init__(
        self, url: str, event_types: Sequence[str] = ("*",), targets: Sequence[tuple[str, str]] = ()
    ):
        self.url = url
        self.event_types = tuple(event_types)
        self.targets = tuple(targets)

    @classmethod
    def from_config(cls, config: Config) -> Routes:
        return cls(config.forward.url, config.forward.event_types, config.forward.targets)

    def wanted(self, event_type: str) -> bool:
        """True when events of this type are forwarded at all (checked at ingest)."""
        return bool(self.url) and any(fnmatchcase(event_type, p) for p in self.event_types)

    def target(self, event_type: str) -> str:
        """The collection URL an event of this type is POSTed to: first matching target, else url."""
        for pattern, url in self.targets:
            if fnmatchcase(event_type, pattern):
                return url
        return self.url
