"""The WSGI entry point for production: ``gunicorn -c conf/gunicorn.conf.py feeds.wsgi:app``.

Configuration comes from $YAGI_CONFIG (else ./yagi.conf, /etc/yagi/yagi.conf)
and YAGI_<SECTION>_<KEY> variables, as for the CLI.
"""

from __future__ import annotations

from feeds.app import create_app
from yagi_meter import config as config_module

app = create_app(config_module.load())
