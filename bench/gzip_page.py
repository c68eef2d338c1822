"""What gzip costs and saves on a 1,000-entry feed page (docs/performance.md, "gzip").

    .venv/bin/python bench/gzip_page.py

Renders one page of 1,000 entries made from the real nova samples, as Atom
(Base64 content) and as JSON, with the feed server's own renderers, then
times ``gzip.compress`` at levels 1, 6 and 9 (median of 15 runs each) and
prints the sizes.  Pure CPU: no Redis, no HTTP.
"""

from __future__ import annotations

import gzip
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from feeds import json_format  # noqa: E402
from yagi_meter import atom  # noqa: E402
from yagi_meter.notification import Event, parse  # noqa: E402

SAMPLES = ROOT / "tests" / "fixtures" / "notifications" / "nova-versioned"
ENTRIES = 1000
BASE = "http://127.0.0.1:8080"


def events() -> list[Event]:
    paths = sorted(SAMPLES.glob("*.json"))
    made = []
    for number in range(ENTRIES):
        message = json.loads(paths[number % len(paths)].read_text())
        message["message_id"] = f"00000000-0000-4000-8000-{number:012d}"
        message.setdefault("timestamp", "2026-11-24 09:00:00.000000")
        event = parse(json.dumps(message).encode(), received_at=datetime.now(UTC))
        made.append(event)
    return made


def median_ms(action, runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    stored = events()
    meta = atom.FeedMeta(
        f"{BASE}/events", "all events", datetime.now(UTC), (atom.Link("self", f"{BASE}/events"),)
    )
    pages = {
        "atom": atom.feed_document(meta, [atom.entry_bytes(e, BASE) for e in stored]),
        "json": json_format.feed_document(
            meta, [json_format.entry_json(e, BASE, f"urn:uuid:{e.message_id}") for e in stored]
        ),
    }
    inline = sum(len(e.notification_json) for e in stored)
    print(f"notification JSON in the page: {inline:,} bytes raw, {inline * 4 // 3:,} as Base64")
    for name, body in pages.items():
        print(f"{name}: {len(body):,} bytes")
        for level in (1, 6, 9):
            packed = gzip.compress(body, compresslevel=level, mtime=0)
            took = median_ms(lambda body=body, level=level: gzip.compress(body, compresslevel=level, mtime=0))
            print(f"  gzip -{level}: {len(packed):,} bytes ({len(packed) / len(body):.1%}), {took:.1f} ms")
        packed = gzip.compress(body, compresslevel=6, mtime=0)
        print(f"  gunzip of -6: {median_ms(lambda packed=packed: gzip.decompress(packed)):.1f} ms")


if __name__ == "__main__":
    main()
