"""The package: ``python -m build`` makes an sdist and a wheel, each installs into a fresh
virtualenv and runs there, away from this checkout.

pip fetches the dependencies (its cache makes later runs quick); the wheel
is built from the sdist, as ``python -m build`` does, so an sdist missing a
file the build needs fails here.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.conftest import ROOT, TEST_REDIS_URL
from tests.integration.listener_helpers import free_port
from tests.processes import spawn, wait_healthy

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.package]


def run(*args: str | Path, cwd: Path, timeout: float = 600) -> str:
    """Run a command (no YAGI_* variables, nothing of this checkout on the path); fail with its output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YAGI_") and k != "PYTHONPATH"}
    result = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{args} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The sdist and the wheel ``python -m build`` makes of this checkout."""
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=out)
    print(f"python -m build: {time.monotonic() - started:.1f}s")
    [sdist] = out.glob("yagi_meter-*.tar.gz")
    [wheel] = out.glob("yagi_meter-*-py3-none-any.whl")
    yield {"sdist": sdist, "wheel": wheel}


@pytest.mark.parametrize("kind", ["wheel", "sdist"])
def test_installed_package_runs_from_anywhere(
    kind: str, dist: dict[str, Path], tmp_path: Path, key_prefix: str
):
    venv = tmp_path / "venv"
    started = time.monotonic()
    run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    run(venv / "bin" / "pip", "install", "-q", dist[kind], cwd=tmp_path)
    print(f"{kind}: fresh venv and pip install: {time.monotonic() - started:.1f}s")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    yagi_meter = venv / "bin" / "yagi-meter"

    assert "sample-config" in run(yagi_meter, "--help", cwd=elsewhere)
    assert run(yagi_meter, "sample-config", cwd=elsewhere) == (ROOT / "yagi.conf.sample").read_text()
    where = run(
        venv / "bin" / "python",
        "-c",
        "import yagi_meter, feeds; print(yagi_meter.__file__, feeds.__file__)",
        cwd=elsewhere,
    )
    assert str(ROOT) not in where and str(venv) in where
    share = venv / "share" / "yagi-meter"
    for name in (
        "yagi.conf.sample",
        "conf/gunicorn.conf.py",
        "conf/logging.conf",
        "conf/systemd/yagi-meter-listen.service",
        "conf/systemd/yagi-meter-feeds.service",
        "conf/systemd/yagi-meter.target",
    ):
        assert (share / name).is_file(), f"{name} not installed under {share}"

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("YAGI_") and k != "PYTHONPATH"}
    env.update(
        YAGI_CONFIG=os.devnull,
        YAGI_REDIS_URL=TEST_REDIS_URL,
        YAGI_REDIS_KEY_PREFIX=key_prefix,
        YAGI_FEEDS_PORT=str(port),
    )
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        server = spawn(
            [str(yagi_meter), "serve"], cwd=elsewhere, env=env, stdout=log, stderr=subprocess.STDOUT
        )

    try:
        wait_healthy(server, f"http://127.0.0.1:{port}", log_path, timeout=30)
        feed = requests.get(f"http://127.0.0.1:{port}/events", timeout=5)
        assert feed.status_code == 200 and b"<feed" in feed.content
        assert requests.get(f"http://127.0.0.1:{port}/static/atom.xsl", timeout=5).status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(30)
    assert code == 0, log_path.read_text()
