"""The feed server's Flask application factory."""

from __future__ import annotations

import logging

from flask import Flask, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from feeds import audit, discovery, views
from feeds.auth import authenticator
from feeds.caching import RenderCache
from feeds.hub import init_hub, readers_of
from feeds.metrics import registry
from yagi_meter.config import Config
from yagi_meter.errors import StoreError, UndecodableEvent, UnknownMarker
from yagi_meter.store import Store, open_store

log = logging.getLogger(__name__)

# Whole rendered pages kept per process, by path and query: the head pages of
# this many pollers, in at most this many bytes (a 1000-entry page is ~3 MB).
PAGE_CACHE_SIZE = 256
PAGE_CACHE_BYTES = 64 * 1024 * 1024


def create_app(config: Config, store: Store | None = None) -> Flask:
    """The feed app for ``config``; pass ``store`` to use a given one (tests)."""
    store = open_store(config) if store is None else store
    app = Flask(__name__, static_folder="static", static_url_path="/static")
    app.extensions["yagi_meter"] = views.FeedServer(
        config=config,
        store=store,
        pages=store.pages,
        authenticate=authenticator(config),
        pages_cache=RenderCache(
            PAGE_CACHE_SIZE if config.feeds.cache_entries else 0,
            max_bytes=PAGE_CACHE_BYTES,
            weigh=lambda page: len(page.body),
        ),
        entries_cache=RenderCache(config.feeds.cache_entries),
    )
    app.register_blueprint(views.bp)
    app.register_blueprint(audit.bp)
    app.register_blueprint(discovery.bp)
    init_hub(app, config, store, readers_of(config.base_url, app.extensions["yagi_meter"].authenticate))
    metrics = registry(store, config.audit.keep_periods, config.redis.memory_bytes)

    @app.get("/health")
    def health() -> Response:
        try:
            seconds = store.ping()
        except StoreError as e:
            return Response(f"redis unreachable: {e}\n", 503, mimetype="text/plain")
        return Response(f"ok redis {seconds * 1000:.1f} ms\n", 200, mimetype="text/plain")

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(generate_latest(metrics), 200, content_type=CONTENT_TYPE_LATEST)

    app.register_error_handler(Exception, error_response)
    return app


def error_response(error: Exception) -> Response:
    """Every error as a status and one line of text; never a traceback."""
    if isinstance(error, HTTPException):
        code = error.code or 500
        reason = error.description or error.name
        headers = [(k, v) for k, v in error.get_headers() if k.lower() != "content-type"]
        if code == 401:
            headers.append(("WWW-Authenticate", 'Token realm="yagi-meter", header="X-Auth-Token"'))
    elif isinstance(error, UnknownMarker):  # the client's mistake, never an outage
        code, reason, headers = 400, str(error), []
    elif isinstance(error, UndecodableEvent):
        # A damaged body or a missing dictionary: this request fails, the server goes on.
        log.error("%s", error)
        code, reason, headers = 500, str(error), []
    elif isinstance(error, StoreError):
        log.error("store unavailable: %s", error)
        code, reason, headers = 503, "store unavailable, try again", [("Retry-After", "5")]
    else:
        log.exception("internal error")
        code, reason, headers = 500, "internal error", []
    line = " ".join(str(reason).split())
    return Response(line + "\n", code, headers, mimetype="text/plain")
