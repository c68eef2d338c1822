"""conf/systemd: one hardened unit per daemon, each starting a command that exists."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from yagi_meter.cli import _parser

UNITS = ROOT / "conf" / "systemd"
INSTALLED = "/opt/yagi-meter"  # where the units expect the code


def read_unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string(path.read_text())
    return unit


def services() -> list[Path]:
    return sorted(UNITS.glob("*.service"))


def yagi_meter_commands() -> set[str]:
    [subparsers] = [a for a in _parser()._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(subparsers.choices)


def test_every_daemon_has_a_unit() -> None:
    started = set()
    for path in services():
        argv = shlex.split(read_unit(path)["Service"]["ExecStart"])
        if argv[0].endswith("/yagi-meter"):
            assert argv[1] in yagi_meter_commands(), f"{path.name}: no command {argv[1]}"
            started.add(argv[1])
        else:
            assert argv[0].endswith("/gunicorn"), path.name
            assert argv[1:] == ["-c", f"{INSTALLED}/conf/gunicorn.conf.py", "feeds.wsgi:app"]
            started.add("gunicorn")
    assert started == {"listen", "retention", "push", "forward", "audit", "gunicorn"}
    assert (ROOT / "conf" / "gunicorn.conf.py").is_file() and "app = " in (
        ROOT / "feeds" / "wsgi.py"
    ).read_text()


@pytest.mark.parametrize("path", services(), ids=lambda p: p.name)
def test_units_are_hardened_and_restart_with_a_delay(path: Path) -> None:
    service = read_unit(path)["Service"]
    assert service["User"] == "yagi"
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "Restart": "on-failure",
        "RestartPreventExitStatus": "2",
        "CapabilityBoundingSet": "",
    }
    assert {key: service.get(key) for key in expected} == expected
    assert float(service["RestartSec"]) >= 1
    assert "ReadWritePaths" not in service  # nothing is written outside Redis and the journal
    assert read_unit(path)["Install"]["WantedBy"] == "yagi-meter.target"


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_units(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point the copies at this checkout.
    bin_dir = Path(sys.executable).parent
    for path in [*services(), UNITS / "yagi-meter.target"]:
        text = path.read_text().replace(f"{INSTALLED}/.venv/bin", str(bin_dir)).replace(INSTALLED, str(ROOT))
        (tmp_path / path.name).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.iterdir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
