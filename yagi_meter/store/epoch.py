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
    """The newest (epoch, seq) this process has seen of each partition; thread-safe.

    ``generation`` moves when any partition went back: caches drop everything.
    """

    def __init__(self) -> None:
        self._epochs: dict[int, str] = {}
        self._seqs: dict[int, int] = {}
        self.generation = 0
        self._lock = threading.Lock()

    def seen(self, partition: int = 0) -> tuple[str, int]:
        """The (epoch, seq) last seen of ``partition`` ("" and 0 before any)."""
        with self._lock:
            return self._epochs.get(partition, ""), self._seqs.get(partition, 0)

    @property
    def epoch(self) -> str:
        return self.seen(0)[0]

    @property
    def seq(self) -> int:
        return self.seen(0)[1]

    def observe(self, epoch: str | bytes | None, seq: int, where: str = "", partition: int = 0) -> bool:
        """Note a reading of a partition's epoch and last seq; True when it went back."""
        if isinstance(epoch, bytes):
            epoch = epoch.decode()
        epoch, seq = epoch or "", int(seq or 0)
        with self._lock:
            old_epoch, old_seq = self._epochs.get(partition, ""), self._seqs.get(partition, 0)
            changed = bool(old_epoch) and epoch != old_epoch and (epoch or seq)
            backwards = not changed and seq < old_seq
            if changed or backwards:
                self.generation += 1
                log.warning(
                    "Redis lost recent writes (%s, partition %d): store epoch %s seq %d, before epoch %s "
                    "seq %d; sequence numbers are being given out again, cached renderings dropped",
                    where or "read",
                    partition,
                    epoch or "(none)",
                    seq,
                    old_epoch,
                    old_seq,
                )
                self._epochs[partition], self._seqs[partition] = epoch, seq
                return True
            if epoch:
                self._epochs[partition] = epoch
            self._seqs[partition] = max(old_seq, seq)
            return False
