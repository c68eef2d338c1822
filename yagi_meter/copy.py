"""``yagi-meter copy --from-config PATH``: copy every event of another store into this one.

For moving an archive to another Redis, to a Redis Cluster, or to another
number of partitions: the configured store (``-c``) is the destination, the
store that PATH configures (its ``[redis]`` section; the environment is not
read for it) the source, which is only read.

Events are read in the source's merged order (each partition's stream,
merged by merge order, as the global feed shows them), decoded with the
source's dictionaries and stored through the destination's own ingest path
in batches: partitioned by the destination's layout, compressed with its
current dictionary (the source's current one is stored here first when the
destination has none), with their index and catalog entries, deduplicated
like any write (a message id already here is a duplicate, another body under
it a conflicting copy). Each keeps the ingest time it had in the source, so
retention and the feeds' ``updated`` go on as before. An event still waiting
in the source's forward outbox is put in this one (when this store forwards
its type); nothing is pushed: subscriptions are not copied.

After each batch is stored, the last seq copied from each source partition
is recorded here (keys.py ``copied``, keyed by the source partition's
epoch), so a copy stopped at any point goes on where it was, and running it
again later copies only what the source stored since.
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from collections.abc import Iterator
from itertools import islice

from yagi_meter import config as config_module
from yagi_meter.config import Config
from yagi_meter.daemon import start_store
from yagi_meter.errors import RET_ERROR, RET_OK, ConfigError
from yagi_meter.store import Store
from yagi_meter.store.events import EncodedEvent, Ingested, StoredEntry

log = logging.getLogger(__name__)

BATCH = 500
REPORT_EVERY = 50  # batches between progress lines in the log


@dataclasses.dataclass
class CopyReport:
    read: int = 0
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    undecodable: int = 0
    forward: int = 0  # forward outbox entries made here
    not_forwarded: int = 0  # pending in the source's forward outbox, not forwarded by this store

    def line(self, source: str) -> str:
        return (
            f"copied {self.read} events from {source}: stored {self.stored}, duplicates "
            f"{self.duplicates}, conflicts {self.conflicts}, undecodable {self.undecodable}; "
            f"forward outbox: {self.forward} entries here, {self.not_forwarded} pending in the "
            f"source that this store does not forward"
        )


def copy(config: Config, source_path: str, batch: int = BATCH) -> int:
    """Copy the store ``source_path`` configures into the configured one."""
    try:
        source_config = config_module.load(source_path, environ={})
    except ConfigError as e:
        raise ConfigError(f"--from-config {source_path}: {e}") from None
    if (source_config.redis.url, source_config.redis.key_prefix) == (
        config.redis.url,
        config.redis.key_prefix,
    ):
        raise ConfigError(f"--from-config {source_path}: names this store ([redis] url and key_prefix)")
    target = start_store("copy", config)
    source = start_store("copy (source)", source_config)
    target.events.push = False  # subscriptions are not copied: nothing to push to
    adopt_dictionary(source, target)

    epochs = source.events.partition_epochs()
    fields = [epoch or f"-{partition}" for partition, epoch in enumerate(epochs)]
    done = target.events.copy_progress(fields)
    entries = merged(source, done, batch)
    report = CopyReport()
    batches = 0
    while chunk := list(islice(entries, batch)):
        write(source, target, chunk, report)
        last: dict[str, int] = {}
        for entry in chunk:
            last[fields[entry.partition]] = entry.seq
        target.events.save_copy_progress(last)
        batches += 1
        if batches % REPORT_EVERY == 0:
            log.info("copy: %d events so far (%d stored)", report.read, report.stored)
    print(report.line(source_path))
    return RET_ERROR if report.undecodable else RET_OK


def adopt_dictionary(source: Store, target: Store) -> None:
    """Store the source's current dictionary here when this store has none yet: the
    bodies copied are then as small as they were (trained on the same traffic)."""
    if target.events.dictionaries.current() is not None:
        return
    current = source.events.dictionaries.current()
    if current is None:
        return
    dict_id = target.events.dictionaries.add(current.data)  # current here from the first batch
    log.info("copy: the source's current dictionary %d is dictionary %d here", current.id, dict_id)


def merged(source: Store, done: list[int], batch: int) -> Iterator[StoredEntry]:
    """Every source event after ``done`` (per partition), in the merged feeds' order."""
    streams = [_partition(source, partition, after, batch) for partition, after in enumerate(done)]
    if len(streams) == 1:
        return streams[0]
    return heapq.merge(*streams, key=lambda entry: (entry.order, entry.partition))


def _partition(source: Store, partition: int, after: int, batch: int) -> Iterator[StoredEntry]:
    while entries := source.events.stored_after(partition, after, batch):
        yield from entries
        after = entries[-1].seq


def write(source: Store, target: Store, chunk: list[StoredEntry], report: CopyReport) -> None:
    """Store one batch here: each event with its source ingest time, and a forward
    outbox entry where the source still had one and this store forwards the type."""
    report.read += len(chunk)
    pending = source.outbox("forward").pending(entry.number for entry in chunk)
    plain: list[EncodedEvent] = []
    copies: list[EncodedEvent] = []  # conflicting copies in the source: counted as conflicts here too
    for entry in chunk:
        if entry.event is None:
            report.undecodable += 1
            log.error(
                "copy: source event %d of partition %d skipped: %s", entry.seq, entry.partition, entry.error
            )
            continue
        encoded = target.events.encode(entry.event)
        forward = False
        if entry.number in pending:  # still to forward in the source
            forward = encoded.args[5] == "1"  # and this store's [forward] rules forward its type
            if forward:
                report.forward += 1
            else:
                report.not_forwarded += 1
        args = list(encoded.args)
        args[5] = "1" if forward else "0"
        encoded = dataclasses.replace(encoded, args=args, ingested_ms=entry.ingested_ms)
        (copies if entry.event.conflict_of else plain).append(encoded)
    for events, as_copies in ((plain, False), (copies, True)):
        if not events:
            continue
        call = target.events.prepare(events, copies=as_copies)
        for outcome in target.events.send(call).result().outcomes:
            if outcome.status == Ingested.STORED:
                report.stored += 1
            elif outcome.status == Ingested.DUPLICATE:
                report.duplicates += 1
            else:
                report.conflicts += 1
