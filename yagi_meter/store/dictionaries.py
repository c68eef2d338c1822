"""The zstd dictionaries event bodies are compressed with, kept in Redis.

Keys (keys.py): ``dict:last`` (INCR: the last id given out), ``dict:<id>``
(string: the dictionary's bytes, written once, never changed), ``dict:info``
(hash: id -> JSON with size, created, samples, sha256 and the held-out
ratios), ``dict:current`` (the id writers compress new bodies with) and
``dict:training`` (a short lock while the listener trains one).

A body names the dictionary it needs (codec.py, kind ``d``).  A dictionary is
never deleted: an event anywhere in the retained history may need it, and at
64 KB each keeping all of them is simpler than proving none does.  Readers
load a dictionary by id once and keep it for the life of the process (it
cannot change); only when Redis lost data (SeqWatch's generation moves: ids
may then be given out again) is the cache dropped.  Writers look at
``dict:current`` at most every ``check_seconds`` (one GET, from the encoding
of the first event after the interval; nothing per batch), so a new
dictionary is in use everywhere within that time.

Training reads the store's own recent events (the newest few times the sample
size, from the events stream), takes them round-robin across event types (so
rare types are represented as well as frequent ones), holds back one in ten
to measure on, and trains a 64 KB dictionary with zstd's fastcover (its own
parameter search, one thread): seconds of CPU, never on the ingest path.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
import zstandard

from yagi_meter.errors import StoreError, UndecodableEvent
from yagi_meter.store import codec
from yagi_meter.store.base import translated
from yagi_meter.store.epoch import SeqWatch
from yagi_meter.store.keys import Keys

log = logging.getLogger(__name__)

_READ_BATCH = 1000
# Fewer events than this make no useful dictionary (zstd's trainer may refuse them too).
MIN_SAMPLES = 100
# Recent events read to draw a sample from, as a multiple of the sample size.
WINDOW_FACTOR = 4
HOLD_OUT_EVERY = 10
TRAINING_LOCK_SECONDS = 600


class MissingDictionary(UndecodableEvent):
    """A body needs a dictionary that is not in Redis, or is damaged."""


@dataclass(frozen=True)
class DictionaryInfo:
    """What ``yagi-meter dictionary list`` shows of one dictionary."""

    id: int
    size: int
    created: datetime | None
    samples: int
    ratio_before: float | None  # stored/text on the held-out events with what was in use before
    ratio_after: float | None  # ... with this dictionary
    current: bool


@dataclass(frozen=True)
class Trained:
    """The outcome of one training."""

    id: int | None  # None: not stored (no smaller than the current one)
    size: int
    samples: int
    held_out: int
    event_types: int
    seconds: float
    before: str  # what was in use before: "zlib" or "dictionary <id>"
    ratio_before: float
    ratio_after: float


class Dictionaries:
    """Every read and write of ``dict:*`` goes through here; thread-safe."""

    def __init__(
        self,
        client: redis.Redis,
        keys: Keys,
        *,
        check_seconds: float = 30.0,
        max_text_bytes: int = codec.MAX_TEXT_BYTES,
        watch: SeqWatch | None = None,
        parts: Sequence[Keys] = (),
    ) -> None:
        """``parts``: the keys of each partition, whose events training reads (default: ``keys``)."""
        self.client = client
        self.keys = keys
        self.parts = list(parts or [keys])
        self.check_seconds = check_seconds
        self.max_text_bytes = max_text_bytes
        self.watch = watch
        self._cache: dict[int, codec.Dictionary] = {}
        self._generation = watch.generation if watch else 0
        self._lock = threading.Lock()
        self._current: codec.Dictionary | None = None
        self._next_check = 0.0

    # -- reading -----------------------------------------------------------

    def get(self, dict_id: int) -> codec.Dictionary:
        """Dictionary ``dict_id``, from the cache or Redis.

        Raises MissingDictionary when Redis does not have it or it is damaged,
        StoreError when Redis cannot be reached.
        """
        self._drop_after_data_loss()
        found = self._cache.get(dict_id)
        if found is not None:
            return found
        key = self.keys.dictionary(dict_id)
        with translated(f"reading dictionary {dict_id}"):
            data, info = (
                self.client.pipeline(transaction=False)
                .get(key)
                .hget(self.keys.dict_info, str(dict_id))
                .execute()
            )
        if data is None:
            raise MissingDictionary(f"dictionary {dict_id} is not in Redis (key {key})")
        expected = json.loads(info).get("sha256") if info else None
        try:
            loaded = codec.Dictionary(dict_id, data)
        except (ValueError, zstandard.ZstdError) as e:
            raise MissingDictionary(f"dictionary {dict_id} (key {key}) is damaged: {e}") from None
        if expected and loaded.sha256 != expected:
            raise MissingDictionary(
                f"dictionary {dict_id} (key {key}) is damaged: sha256 {loaded.sha256}, "
                f"{self.keys.dict_info} says {expected}"
            )
        with self._lock:
            return self._cache.setdefault(dict_id, loaded)

    def current(self) -> codec.Dictionary | None:
        """The dictionary new bodies are compressed with, None before the first one.

        Looks at ``dict:current`` at most every ``check_seconds``; never raises
        (Redis unreachable, or a damaged dictionary: the one in use stays, with
        a warning, and the next interval tries again).
        """
        now = time.monotonic()
        if now < self._next_check and not self._drop_after_data_loss():
            return self._current
        self._next_check = now + self.check_seconds
        try:
            raw = self.client.get(self.keys.dict_current)
            wanted = int(raw) if raw else None
            if wanted is None:
                self._current = None
            elif self._current is None or self._current.id != wanted:
                self._current = self.get(wanted)
                log.info("compressing new event bodies with dictionary %d", wanted)
        except (redis.RedisError, StoreError, UndecodableEvent, ValueError) as e:
            log.warning(
                "cannot look at the current dictionary (%s); still compressing with %s",
                e,
                f"dictionary {self._current.id}" if self._current else "zlib",
            )
        return self._current

    def current_id(self) -> int | None:
        """``dict:current`` as Redis has it now (no cache)."""
        raw = self._call(self.client.get, self.keys.dict_current)
        return int(raw) if raw else None

    def list(self) -> list[DictionaryInfo]:
        """Every stored dictionary, oldest first."""
        last = int(self._call(self.client.get, self.keys.dict_last) or 0)
        current = self.current_id()
        infos = self._call(self.client.hgetall, self.keys.dict_info)
        pipe = self.client.pipeline(transaction=False)
        for dict_id in range(1, last + 1):
            pipe.strlen(self.keys.dictionary(dict_id))
        with translated("listing dictionaries"):
            sizes = pipe.execute()
        found = []
        for dict_id, size in zip(range(1, last + 1), sizes, strict=True):
            if not size:
                continue  # an id given out whose dictionary was never written (a failed store)
            info = json.loads(infos.get(str(dict_id).encode(), b"{}"))
            created = info.get("created_ms")
            found.append(
                DictionaryInfo(
                    dict_id,
                    size,
                    datetime.fromtimestamp(created / 1000, UTC) if created else None,
                    info.get("samples", 0),
                    info.get("ratio_before"),
                    info.get("ratio_after"),
                    dict_id == current,
                )
            )
        return found

    # -- writing -----------------------------------------------------------

    def add(
        self,
        data: bytes,
        *,
        samples: int = 0,
        ratio_before: float | None = None,
        ratio_after: float | None = None,
        current: bool = True,
    ) -> int:
        """Store a new dictionary under a new id (and make it current); return the id."""
        probe = codec.Dictionary(1, data)  # refuses what zstd cannot use, before an id is spent
        dict_id = int(self._call(self.client.incr, self.keys.dict_last))
        info = {
            "size": len(data),
            "created_ms": int(time.time() * 1000),
            "samples": samples,
            "sha256": probe.sha256,
            "ratio_before": ratio_before,
            "ratio_after": ratio_after,
        }
        key = self.keys.dictionary(dict_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, data, nx=True)
        pipe.hset(self.keys.dict_info, str(dict_id), json.dumps(info))
        if current:
            pipe.set(self.keys.dict_current, dict_id)
        with translated(f"storing dictionary {dict_id}"):
            written = pipe.execute()[0]
        if not written:  # only after Redis lost dict:last but kept a dictionary
            raise StoreError(f"{key} exists already; not overwritten")
        self._next_check = 0.0
        return dict_id

    # -- plumbing ----------------------------------------------------------

    def _drop_after_data_loss(self) -> bool:
        """Empty the cache when Redis lost data (ids may be given out again); True if so."""
        if self.watch is None or self.watch.generation == self._generation:
            return False
        with self._lock:
            self._generation = self.watch.generation
            self._cache = {}
            self._current = None
            self._next_check = 0.0
        return True

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with translated(getattr(method, "__name__", "redis call")):
            return method(*args, **kwargs)


# -- training ----------------------------------------------------------------


def recent_sample(
    dictionaries: Dictionaries, samples: int, window: int | None = None
) -> tuple[list[bytes], list[bytes], int]:
    """Texts of recent events to train on and to hold out, and how many event types they cover.

    Reads the newest ``window`` events (default ``WINDOW_FACTOR`` x ``samples``),
    takes up to ``samples`` of them round-robin across event types, newest
    first within each type, and holds back every ``HOLD_OUT_EVERY``-th.
    """
    client = dictionaries.client
    window = window or samples * WINDOW_FACTOR
    by_type: dict[bytes, list[bytes]] = {}
    # Each partition's newest events, its share of the window.
    share = -(-window // len(dictionaries.parts))
    for keys in dictionaries.parts:
        read, end = 0, "+"
        while read < share:
            with translated("reading events to train on"):
                entries = client.xrevrange(keys.events, end, "-", count=min(_READ_BATCH, share - read))
            if not entries:
                break
            for entry_id, fields in entries:
                try:
                    text = codec.decode_text(fields[b"d"], dictionaries)
                except (ValueError, zstandard.ZstdError, UndecodableEvent) as e:
                    log.warning("event %s left out of the training sample: %s", entry_id.decode(), e)
                    continue
                by_type.setdefault(fields[b"e"], []).append(text)
            read += len(entries)
            end = "(" + entries[-1][0].decode()
    picked: list[bytes] = []
    queues = [texts for texts in by_type.values()]
    depth = 0
    while len(picked) < samples and any(depth < len(texts) for texts in queues):
        for texts in queues:
            if depth < len(texts) and len(picked) < samples:
                picked.append(texts[depth])
        depth += 1
    held_out = picked[HOLD_OUT_EVERY - 1 :: HOLD_OUT_EVERY]
    train = [text for i, text in enumerate(picked) if i % HOLD_OUT_EVERY != HOLD_OUT_EVERY - 1]
    return train, held_out, len(by_type)


def train(
    dictionaries: Dictionaries, samples: int = 3000, current: bool = True, force: bool = False
) -> Trained:
    """Train a dictionary on the store's recent events, store it and (``current``) make it current.

    A dictionary that compresses the held-out events no smaller than the
    current one is not stored (every stored one stays for good), unless ``force``.
    Raises ValueError when the store holds too few events.
    """
    began = time.perf_counter()
    texts, held_out, types = recent_sample(dictionaries, samples)
    if len(texts) < MIN_SAMPLES:
        raise ValueError(f"{len(texts)} events to train on; at least {MIN_SAMPLES} are needed")
    trained = zstandard.train_dictionary(codec.DICTIONARY_BYTES, texts, threads=1)
    data = trained.as_bytes()
    seconds = time.perf_counter() - began
    in_use_id = dictionaries.current_id()
    in_use = dictionaries.get(in_use_id) if in_use_id else None
    before = in_use.compress if in_use else (lambda text: codec.encode_text(text, True))
    fresh = codec.Dictionary(1, data)
    ratio_before = codec.ratio(held_out, before)
    ratio_after = codec.ratio(held_out, fresh.compress)
    dict_id = None
    if force or in_use is None or ratio_after < ratio_before:
        dict_id = dictionaries.add(
            data, samples=len(texts), ratio_before=ratio_before, ratio_after=ratio_after, current=current
        )
    return Trained(
        dict_id,
        len(data),
        len(texts),
        len(held_out),
        types,
        seconds,
        f"dictionary {in_use.id}" if in_use else "zlib",
        ratio_before,
        ratio_after,
    )


class AutoTrain:
    """Trains the first dictionary once ``after`` events are stored and none exists yet.

    A thread of its own in the listener (zstd's trainer runs without the GIL,
    on one core): it looks every ``every`` seconds (the listener passes
    ``[redis] dictionary_check_seconds``: an XLEN and a GET) and stops once a dictionary
    exists (retraining is the operator's ``yagi-meter dictionary train``).  A
    short lock in Redis (``dict:training``) keeps several listeners from
    training at the same time.
    """

    def __init__(self, dictionaries: Dictionaries, after: int, samples: int, every: float = 60.0) -> None:
        self.dictionaries = dictionaries
        self.after = after
        self.samples = samples
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dictionary-train", daemon=True)

    def start(self) -> AutoTrain:
        if self.after > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if self.step():
                    return
            except Exception:
                log.exception("training a dictionary failed; trying again in %.0f s", self.every)
            self._stop.wait(self.every)

    def step(self) -> bool:
        """Train when due; True once a dictionary exists (nothing more to do)."""
        d = self.dictionaries
        if d.current_id() is not None:
            return True
        stored = sum(d._call(d.client.xlen, keys.events) for keys in d.parts)
        if stored < self.after:
            return False
        token = f"{time.time():.0f}"
        if not d._call(d.client.set, d.keys.dict_training, token, nx=True, ex=TRAINING_LOCK_SECONDS):
            return False  # another listener is training
        try:
            if d.current_id() is not None:
                return True
            result = train(d, self.samples)
        finally:
            d._call(d.client.delete, d.keys.dict_training)
        log.info(
            "trained dictionary %d (%d bytes) on %d events of %d types in %.1f s; "
            "held-out stored/text %.3f with %s, %.3f with it",
            result.id,
            result.size,
            result.samples,
            result.event_types,
            result.seconds,
            result.ratio_before,
            result.before,
            result.ratio_after,
        )
        return True
