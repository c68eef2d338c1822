"""What every store collection shares: the client, the key names, the scripts, one
translation of Redis errors into StoreError, and (for streams) reading entries.

As rq's ``BaseRegistry`` does for its registries: each collection names its key
and decodes its own entries; reading, counting and error handling are here once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import redis

from yagi_meter.errors import StoreError
from yagi_meter.store.keys import Keys
from yagi_meter.store.scripts import Scripts

Pipeline = redis.client.Pipeline


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Raise StoreError("<what> failed: ...") for any Redis error inside the block."""
    try:
        yield
    except redis.RedisError as e:
        raise StoreError(f"{what} failed: {e}") from None


class Collection:
    """One family of keys and the code that writes them (keys.py says which)."""

    what = "the store"  # named in error messages: "reading <what> failed"

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
        self.client = client
        self.keys = keys
        self.scripts = scripts

    def _run(self, name: str, keys: list[str], args: list[Any], what: str = "") -> Any:
        """Call the registered script ``name``; a Redis error becomes StoreError."""
        with translated(what or f"{self.what}: {name}"):
            return self.scripts[name](keys=keys, args=args)

    def _execute(self, pipe: Pipeline, what: str = "") -> list[Any]:
        with translated(what or f"writing {self.what}"):
            return pipe.execute()


class StreamLog(Collection):
    """A collection kept in one stream (``key_name`` in Keys), oldest entry first."""

    key_name: ClassVar[str]

    def __init__(self, client: redis.Redis, keys: Keys, scripts: Scripts) -> None:
        super().__init__(client, keys, scripts)
        self.key: str = getattr(keys, self.key_name)

    def _after(self, after: str, count: int, last: str = "+") -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Up to ``count`` entries after the entry id ``after`` ("-": from the first) up to ``last``."""
        start = after if after == "-" else f"({after}"
        with translated(f"reading {self.what}"):
            return self.client.xrange(self.key, start, last, count=count)

    def _newest(self, count: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """The newest ``count`` entries, newest first."""
        with translated(f"reading {self.what}"):
            return self.client.xrevrange(self.key, "+", "-", count=count)

    def count(self) -> int:
        """Entries in the stream now."""
        with translated(f"reading {self.what}"):
            return self.client.xlen(self.key)
