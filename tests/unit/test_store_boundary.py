"""The store's own rules: scripts registered in one place, errors with one meaning each."""

from __future__ import annotations

from importlib import resources

from feeds.app import error_response
from yagi_meter.errors import StoreError, UnknownMarker
from yagi_meter.store import scripts


def test_every_script_file_is_registered_and_libraries_are_not() -> None:
    files = {f.name for f in resources.files("yagi_meter.store").iterdir() if f.name.endswith(".lua")}
    assert {f"{name}.lua" for name in scripts.names()} == {f for f in files if not f.startswith("_")}
    assert "_outbox.lua" in files and "outbox" not in scripts.names()


def test_included_libraries_come_before_the_script_that_uses_them() -> None:
    source = scripts._with_includes(scripts._source("ingest.lua"))
    assert source.index("local function outbox_add") < source.index("outbox_add(push_outbox")
    source = scripts._with_includes(scripts._source("quarantine.lua"))
    assert source.index("local function quarantine_add") < source.index("quarantine_add(quarantine,")


def test_a_client_error_is_not_a_store_outage() -> None:
    # The web app answers StoreError with 503: an unknown marker must never be one.
    assert not issubclass(UnknownMarker, StoreError)
    assert error_response(UnknownMarker("unknown marker 'x'")).status_code == 400
    assert error_response(StoreError("cannot reach Redis")).status_code == 503
