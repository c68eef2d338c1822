"""zstd dictionary study: compressed size and CPU per event against today's codec, and compact layouts.

    .venv/bin/python bench/zstd_dictionary.py [--train 5000] [--test 5000]

The data: the text today's codec compresses (``codec.encode``: derived fields,
a newline, the canonical notification), made by parsing the messages
bench/ingest.py builds from the 70 real nova samples of
tests/fixtures/notifications/nova-versioned.  Dictionaries are trained on one set
(seed 1) and measured on another (seed 2: other tenants, users, instances,
message ids, request ids, timestamps), in two variants:

- as bench/ingest.py varies them: the ids above substituted, everything else
  exactly as in the 70 samples (flavors, hosts, image ids, IPs, names repeat);
- hard: in addition every UUID (dashed or 32 hex digits), ISO timestamp and
  IPv4 address of each event is replaced by a random one (consistent inside
  the event), so no id repeats across events at all.

Real traffic lies between the two (an instance's or a host's ids do repeat
across its events), from more services and versions than the 70 samples.

Codecs, each compressing one event at a time (as the store must): ISA-L zlib
at codec.py's level (today), zstd levels 1 and 3 without a dictionary, and
with dictionaries of 16/32/64/112 KB trained on ``--train`` events.  Frames
are written without checksum and without dictionary id (the store would tag
each body with its dictionary id itself), with the content size.  Times are
µs per event, compress then decompress, one thread, best of 3 passes, every
body checked to round-trip.

Then, in a private redis-server on a free loopback port: the events stream's
bytes per entry with bodies of each size (stream-node-max-bytes and
-entries: the defaults 4 KB/100, and larger nodes), and bytes per member of index layouts (zset member as
decimal seq or zero-padded string, big vs small zsets, packed strings, the
ids hash as it is and bucketed into listpack-sized hashes).
"""

from __future__ import annotations

import argparse
import hashlib
import random
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
import zstandard
from isal import isal_zlib

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.ingest import build_bodies  # noqa: E402
from tests.servers.redis_cluster import standalone_redis  # noqa: E402
from yagi_meter.notification import parse  # noqa: E402
from yagi_meter.store import codec  # noqa: E402

DICT_SIZES_KB = (16, 32, 64, 112)
LEVELS = (1, 3)
TENANTS = 50
UUID_RE = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|\b[0-9a-f]{32}\b")
TIMESTAMP_RE = re.compile(rb"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?")
IPV4_RE = re.compile(rb"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")


@dataclass(frozen=True)
class Codec:
    name: str
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


@dataclass(frozen=True)
class Measure:
    size: float  # mean compressed bytes per event
    compress_us: float
    decompress_us: float


# -- the data ------------------------------------------------------------------


def stored_texts(count: int, seed: int) -> list[bytes]:
    """What codec.encode compresses, for ``count`` messages built as bench/ingest.py builds them."""
    received_at = datetime.now(UTC)
    return [
        codec.encode(parse(body, received_at=received_at), compress=False)[1:]  # without the "j" tag
        for body in build_bodies(count, TENANTS, seed)
    ]


def hard(texts: list[bytes], seed: int) -> list[bytes]:
    """Every UUID, ISO timestamp and IPv4 address of each text replaced by a random one
    (the same value stays the same inside one text)."""
    rng = random.Random(seed)
    out = []
    for text in texts:
        seen: dict[bytes, bytes] = {}  # this text's replacements
        for pattern, make in ((UUID_RE, new_uuid), (TIMESTAMP_RE, new_time), (IPV4_RE, new_ip)):
            text = pattern.sub(
                lambda match, make=make, seen=seen: _once(seen, match.group(), make, rng), text
            )
        out.append(text)
    return out


def _once(seen: dict[bytes, bytes], value: bytes, make: Callable, rng: random.Random) -> bytes:
    if value not in seen:
        seen[value] = make(value, rng)
    return seen[value]


def new_uuid(value: bytes, rng: random.Random) -> bytes:
    made = uuid.UUID(int=rng.getrandbits(128))
    return str(made).encode() if b"-" in value else made.hex.encode()


def new_time(value: bytes, rng: random.Random) -> bytes:
    stamp = datetime.fromtimestamp(rng.uniform(1.5e9, 1.8e9), UTC)
    made = stamp.strftime("%Y-%m-%dT%H:%M:%S.%f" if b"." in value else "%Y-%m-%dT%H:%M:%S")
    return made.replace("T", chr(value[10])).encode()


def new_ip(value: bytes, rng: random.Random) -> bytes:
    return ".".join(str(rng.randrange(1, 255)) for _ in range(4)).encode()


# -- codecs ----------------------------------------------------------------------


def zlib_today() -> Codec:
    # codec.py's level, read rather than repeated so the study follows it.
    return Codec(
        f"isal zlib level {codec._LEVEL} (today)",
        lambda text: isal_zlib.compress(text, codec._LEVEL),
        isal_zlib.decompress,
    )


def zstd_codec(level: int, dictionary: zstandard.ZstdCompressionDict | None, name: str) -> Codec:
    params = dict(level=level, write_checksum=False, write_content_size=True, write_dict_id=False)
    if dictionary is not None:
        # A copy per level: precomputing one dictionary for a second level frees the first
        # level's digested form under a compressor still using it (a segfault).
        digested = zstandard.ZstdCompressionDict(dictionary.as_bytes())
        digested.precompute_compress(level=level)
        params["dict_data"] = digested
    compressor = zstandard.ZstdCompressor(**params)
    decompressor = (
        zstandard.ZstdDecompressor(dict_data=dictionary) if dictionary else zstandard.ZstdDecompressor()
    )
    return Codec(name, compressor.compress, decompressor.decompress)


def measure(codec_: Codec, texts: list[bytes], repeats: int = 3) -> Measure:
    """Mean compressed size; µs per event to compress, then to decompress (checked), each the
    best of ``repeats`` passes (the machine is shared: the best pass is the least disturbed)."""
    compress_s = decompress_s = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        blobs = [codec_.compress(text) for text in texts]
        compress_s = min(compress_s, time.perf_counter() - began)
        began = time.perf_counter()
        back = [codec_.decompress(blob) for blob in blobs]
        decompress_s = min(decompress_s, time.perf_counter() - began)
        if back != texts:
            raise RuntimeError(f"{codec_.name} did not round-trip")
    n = len(texts)
    return Measure(statistics.mean(map(len, blobs)), compress_s / n * 1e6, decompress_s / n * 1e6)


def train(texts: list[bytes], size_kb: int) -> tuple[zstandard.ZstdCompressionDict, float]:
    """A dictionary of ``size_kb`` trained on ``texts`` (zstd's fastcover, parameters
    optimized by zstd itself), and the seconds it took on one thread."""
    began = time.perf_counter()
    dictionary = zstandard.train_dictionary(size_kb * 1024, texts, threads=1)
    return dictionary, time.perf_counter() - began


def codec_study(train_texts: list[bytes], test_texts: list[bytes], label: str) -> dict[str, float]:
    """Print the codec table for one variant of the data; the mean size per codec."""
    raw = statistics.mean(map(len, test_texts))
    print(
        f"\n{label}: trained on {len(train_texts):,} events, measured on {len(test_texts):,} others; "
        f"text {raw:,.0f} bytes/event"
    )
    print(f"  {'codec':<34} {'bytes':>7} {'/text':>6} {'vs today':>8} {'comp us':>8} {'decomp us':>9}")
    codecs = [zlib_today()] + [zstd_codec(level, None, f"zstd {level}, no dictionary") for level in LEVELS]
    trained = {}
    for size_kb in DICT_SIZES_KB:
        dictionary, seconds = train(train_texts, size_kb)
        trained[size_kb] = (dictionary, seconds)
        codecs += [
            zstd_codec(level, dictionary, f"zstd {level}, dictionary {size_kb} KB") for level in LEVELS
        ]
    sizes = {}
    today = None
    for codec_ in codecs:
        result = measure(codec_, test_texts)
        today = today or result.size
        sizes[codec_.name] = result.size
        print(
            f"  {codec_.name:<34} {result.size:>7,.0f} {result.size / raw:>6.3f} {result.size / today:>8.2f} "
            f"{result.compress_us:>8.1f} {result.decompress_us:>9.1f}"
        )
    print(
        "  training (one thread): "
        + ", ".join(
            f"{kb} KB {seconds:.1f} s (got {len(d.as_bytes()):,} B)" for kb, (d, seconds) in trained.items()
        )
    )
    return sizes


def training_size_study(train_texts: list[bytes], test_texts: list[bytes], size_kb: int, level: int) -> None:
    """How the number of training events changes a dictionary of ``size_kb``."""
    print(
        f"\n  dictionary {size_kb} KB, level {level}, by training sample (measured on the same held-out set):"
    )
    for count in sorted({n for n in (500, 1000, 2000) if n < len(train_texts)} | {len(train_texts)}):
        dictionary, seconds = train(train_texts[:count], size_kb)
        result = measure(zstd_codec(level, dictionary, ""), test_texts)
        print(f"    {count:>6,} events ({sum(map(len, train_texts[:count])) / 1e6:5.1f} MB): "
              f"{result.size:,.0f} bytes/event, trained in {seconds:.1f} s")  # fmt: skip


# -- Redis layouts -------------------------------------------------------------------


# stream-node-max-bytes, stream-node-max-entries: the defaults, then larger nodes.
STREAM_NODES = ((4096, 100), (16384, 100), (65536, 100), (65536, 1000))


def stream_bytes_per_entry(client: redis.Redis, body_size: int, node: tuple[int, int], count: int) -> float:
    """MEMORY USAGE / entries of a stream laid out as the events stream (t, e, m, d), with
    incompressible bodies of ``body_size`` bytes (compressed bodies are random-looking)."""
    client.config_set("stream-node-max-bytes", node[0])
    client.config_set("stream-node-max-entries", node[1])
    rng = random.Random(body_size)
    pipe = client.pipeline(transaction=False)
    for seq in range(1, count + 1):
        fields = {"t": 1764547200000 + seq // 500, "e": "instance.update", "m": str(uuid.uuid4()),
                  "d": rng.randbytes(body_size)}  # fmt: skip
        pipe.xadd("stream", fields, id=f"{seq}-0")
    pipe.execute()
    usage = client.memory_usage("stream", samples=0) / count
    client.delete("stream")
    return usage


def per_member(client: redis.Redis, fill: Callable[[redis.client.Pipeline], None], count: int) -> float:
    """MEMORY USAGE of every key ``fill`` writes, per member (``count`` members in all)."""
    pipe = client.pipeline(transaction=False)
    fill(pipe)
    pipe.execute()
    keys = list(client.scan_iter(count=1000))
    usage = sum(client.memory_usage(key, samples=0) for key in keys) / count
    client.flushall()
    return usage


def redis_study(body_sizes: dict[str, float], count: int = 20000) -> None:
    with standalone_redis() as client:
        print(f"\nRedis {client.info('server')['redis_version']}: events stream, MEMORY USAGE per entry "
              f"(t, e, m and a body of the size each codec gives, {count:,} entries)")  # fmt: skip
        nodes = [f"{size // 1024} KB/{entries}" for size, entries in STREAM_NODES]
        print(f"  {'body':<40} {'bytes':>6} " + " ".join(f"{node:>11}" for node in nodes))
        for name, size in body_sizes.items():
            per_entry = [stream_bytes_per_entry(client, round(size), node, count) for node in STREAM_NODES]
            print(f"  {name:<40} {round(size):>6,} " + " ".join(f"{b:>11,.0f}" for b in per_entry))
        client.config_set("stream-node-max-bytes", 4096)
        client.config_set("stream-node-max-entries", 100)

        print(f"\n  index layouts, MEMORY USAGE per member ({count:,} members):")
        seqs = range(1, count + 1)
        layouts: dict[str, Callable[[redis.client.Pipeline], None]] = {
            "one zset, member decimal seq (by_time, tenant:*)": lambda p: [
                p.zadd("z", {seq: seq}) for seq in seqs
            ],
            "one zset, member %015d (outbox:*)": lambda p: [
                p.zadd("z", {f"{seq:015d}": seq}) for seq in seqs
            ],
            "zsets of 100 members (listpack, <= 128)": lambda p: [
                p.zadd(f"z{seq // 100}", {seq: seq}) for seq in seqs
            ],
            "zsets of 1000, zset-max-listpack-entries 1024": lambda p: [
                p.zadd(f"z{seq // 1000}", {seq: seq}) for seq in seqs
            ],
            "strings of packed 5-byte seqs, 1000 per key": lambda p: [
                p.append(f"s{seq // 1000}", seq.to_bytes(5, "big")) for seq in seqs
            ],
            "ids hash as today (uuid -> 'seq digest')": lambda p: [
                p.hset("ids", str(uuid.UUID(int=seq)), f"{seq} {_digest(seq)}") for seq in seqs
            ],
            "ids hash, 16-byte uuid -> 5-byte seq + 8-byte digest": lambda p: [
                p.hset("ids", uuid.UUID(int=seq).bytes, _packed(seq)) for seq in seqs
            ],
            "ids bucketed: 64 hashes (listpack, <= 512), binary": lambda p: [
                p.hset(f"ids:{seq % 64}", uuid.UUID(int=seq).bytes, _packed(seq)) for seq in seqs
            ],
        }  # fmt: skip
        for name, fill in layouts.items():
            if "1024" in name:
                client.config_set("zset-max-listpack-entries", 1024)
            print(f"    {name:<54} {per_member(client, fill, count):>6.1f}")
            client.config_set("zset-max-listpack-entries", 128)


def _packed(seq: int) -> bytes:
    """A 5-byte seq and the 8-byte digest, as a binary ids value could hold them."""
    return seq.to_bytes(5, "big") + bytes.fromhex(_digest(seq))


def _digest(seq: int) -> str:
    return hashlib.blake2b(str(seq).encode(), digest_size=8).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--train", type=int, default=5000, help="events to train dictionaries on")
    parser.add_argument("--test", type=int, default=5000, help="other events to measure on")
    args = parser.parse_args(argv)

    train_texts, test_texts = stored_texts(args.train, seed=1), stored_texts(args.test, seed=2)
    easy = codec_study(train_texts, test_texts, "as bench/ingest.py varies them")
    training_size_study(train_texts, test_texts, 64, 3)
    hard_train, hard_test = hard(train_texts, 3), hard(test_texts, 4)
    hard_sizes = codec_study(hard_train, hard_test, "hard: every uuid, timestamp and IP random")
    training_size_study(hard_train, hard_test, 64, 3)
    bodies = {"plain text (compress = false)": statistics.mean(map(len, test_texts))}
    bodies.update(
        {f"{name}": size for name, size in easy.items() if "112" not in name and "32 KB" not in name}
    )
    bodies.update({f"hard, {name}": size for name, size in hard_sizes.items() if "64 KB" in name})
    redis_study(bodies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
