"""Noticing that Redis lost recent writes: the store epoch and a sequence that goes back.

Sequence numbers are only unique while Redis keeps the ``seq`` key.  After a
restart without persistence, a FLUSHDB, an RDB restore or a failover to a
lagging replica they are given out again, to other events.  ingest.lua
creates a random epoch together with ``seq`` whenever ``seq`` does not exist,
so a complete loss changes the epoch.  A partial loss (RDB restore, lagging
replica) keeps the epoch but makes ``seq`` lower than a process saw before:
each write passes the (epoch, seq) its process saw, and ingest.lua then
makes a new epoch before giving out a seq again.  A reader notices either
(a new epoch, or a seq lower than it saw): logged once per change, as a
WARNING with both values, and ``generation`` is bumped, for caches to drop
what they hold.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class SeqWatch:
    """The newest (epoch, seq) this process has seen; thread-safe."""

    def __init__(self) -> None:
        self.epoch = ""
        self.seq = 0
        self.generation = 0
        self._lock = threading.Lock()

    def observe(self, epoch: str | bytes | None, seq: int, where: str = "") -> bool:
        """Note a reading of the store's epoch and last seq; True when it went back."""
        if isinstance(epoch, bytes):
            epoch = epoch.decode()
        epoch, seq = epoch or "", int(seq or 0)
        with self._lock:
            changed = bool(self.epoch) and epoch != self.epoch and (epoch or seq)
            backwards = not changed and seq < self.seq
            if changed or backwards:
                self.generation += 1
                log.warning(
                    "Redis lost recent writes (%s): store epoch %s seq %d, before epoch %s seq %d; "
                    "sequence numbers are being given out again, cached renderings dropped",
                    where or "read",
                    epoch or "(none)",
                    seq,
                    self.epoch,
                    self.seq,
                )
                self.epoch, self.seq = epoch, seq
                return True
            if epoch:
                self.epoch = epoch
            self.seq = max(self.seq, seq)
            return False
