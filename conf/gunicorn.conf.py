"""gunicorn settings for the feed server: ``gunicorn -c conf/gunicorn.conf.py feeds.wsgi:app``.

Reads the same configuration as the CLI ($YAGI_CONFIG or ./yagi.conf or
/etc/yagi/yagi.conf, and YAGI_<SECTION>_<KEY> variables): bind from [feeds]
host and port, workers from [feeds] workers.  GUNICORN_* variables and
command-line flags still win, as gunicorn always allows.
"""

# gevent first: the app is loaded in this process before the workers fork
# (preload_app), so sockets, locks and threads must be gevent's already.
from gevent import monkey

monkey.patch_all()

import multiprocessing  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

from yagi_meter import config as _config  # noqa: E402
from yagi_meter.errors import RET_CONFIG, ConfigError  # noqa: E402

try:
    _settings = _config.load()
except ConfigError as _error:
    # One line and exit 2, as the yagi-meter command does (systemd does not restart on 2).
    print(f"yagi-meter: configuration error: {_error}", file=sys.stderr)
    sys.exit(RET_CONFIG)

bind = os.environ.get("GUNICORN_BIND", f"{_settings.feeds.host}:{_settings.feeds.port}")
# Feed requests are short and mostly waiting on Redis or the client: two
# workers per CPU plus one, unless [feeds] workers says otherwise.
workers = _settings.feeds.workers or multiprocessing.cpu_count() * 2 + 1
# gevent, not sync or gthread: a client that trickles its headers (slowloris)
# holds a sync worker, or a gthread thread, until it finishes; under gevent it
# holds a greenlet, and each worker serves up to worker_connections at once.
# Measured: /health kept answering within a second under 50 such clients with
# 2 workers, where sync and gthread (8 threads) stopped answering.
worker_class = "gevent"
worker_connections = 1000
# A deep 1000-entry page is rendered well under a second; 30 s means stuck.
timeout = 30
graceful_timeout = 20
# Behind a load balancer that keeps connections open between polls.  Under
# gevent this is also the time a client has to send a request's headers, new
# connection or kept-alive: a slower one is dropped (measured: each trickling
# connection of the slowloris test was dropped after about 5 s).  Keep it above
# 0: with keepalive = 0 the gevent worker reads headers with no time limit.
keepalive = 5
# Recycle workers now and then, jittered so they do not all restart at once.
max_requests = 10000
max_requests_jitter = 1000
# Load the app before forking: a bad configuration fails once, at start.
preload_app = True
# Access log on stdout (journald / container logs), with the request time in µs.
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus "%(a)s"'
errorlog = "-"
loglevel = _settings.logging.level
# The app's own warnings and errors (yagi_meter.*, feeds.*) reach standard
# error through Python's last-resort handler; for one format everywhere pass
# gunicorn --log-config a file that also names gunicorn.error/gunicorn.access.
# Trust X-Forwarded-* only from the local proxy.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
proc_name = "yagi-meter-feeds"

# No post_fork hook is needed: redis-py notices the fork and opens new connections.
