"""The feed app plus one benchmark-only route, for bench/feeds.py (never deployed).

``GET /_bench/bytes/<n>`` answers ``n`` prebuilt bytes as application/atom+xml
through the same gunicorn worker, Flask app, error handler and response path
as a feed, without touching Redis or rendering anything.  A feed page's
latency minus this baseline's is what reading and rendering the page costs.
"""

from __future__ import annotations

from flask import Response

from feeds.app import create_app
from yagi_meter import config as config_module

app = create_app(config_module.load())
_prebuilt: dict[int, bytes] = {}


@app.get("/_bench/bytes/<int:size>")
def prebuilt(size: int) -> Response:
    body = _prebuilt.get(size)
    if body is None:
        body = _prebuilt[size] = b"x" * size
    return Response(body, 200, content_type="application/atom+xml")
