import pytest

from tests.conftest import make_config
from yagi_meter import cli
from yagi_meter.errors import RET_CONFIG, ConfigError
from yagi_meter.forward.forwarder import Verdict, classify
from yagi_meter.forward.routes import Routes
from yagi_meter.supervisor import DAEMONS, WANTED


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, Verdict.ARCHIVED),
        (200, Verdict.ARCHIVED),
        (409, Verdict.DUPLICATE),
        (400, Verdict.DEAD),
        (403, Verdict.DEAD),
        (404, Verdict.DEAD),
        (413, Verdict.DEAD),
        (422, Verdict.DEAD),
        (401, Verdict.RETRY),
        (408, Verdict.RETRY),
        (429, Verdict.RETRY),
        (500, Verdict.RETRY),
        (502, Verdict.RETRY),
        (503, Verdict.RETRY),
        (302, Verdict.RETRY),
    ],
)
def test_each_status_has_the_outcome_the_design_gives_it(status, outcome):
    assert classify(status) == outcome


def test_routes_filter_and_first_matching_target():
    routes = Routes(
        "http://a/all",
        event_types=("compute.instance.*", "image.*"),
        targets=(("compute.*", "http://a/nova"), ("compute.instance.exists", "http://a/never")),
    )
    assert routes.wanted("compute.instance.create.end")
    assert routes.wanted("image.upload")
    assert not routes.wanted("volume.create.end")
    assert routes.target("compute.instance.exists") == "http://a/nova"
    assert routes.target("image.upload") == "http://a/all"
    assert not Routes("").wanted("image.upload")


def test_targets_are_read_one_per_line():
    config = make_config(
        forward_url="http://archive/events",
        forward_targets="\n nova.* = http://archive/nova/events\n# a comment\nimage.* = https://a/glance\n",
    )
    assert config.forward.targets == (
        ("nova.*", "http://archive/nova/events"),
        ("image.*", "https://a/glance"),
    )


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"forward_targets": "nova.* = ftp://x"}, "[forward] targets"),
        ({"forward_targets": "nova.*"}, "[forward] targets"),
        ({"forward_url": "", "forward_targets": "nova.* = http://x/n"}, "[forward] targets"),
        ({"forward_event_types": " , "}, "[forward] event_types"),
        ({"forward_concurrency": "0"}, "[forward] concurrency"),
        ({"forward_timeout": "20"}, "[forward] lease_seconds"),
        ({"forward_backoff_max": "0.5"}, "[forward] backoff_max"),
        ({"forward_auth": "oauth"}, "[forward] auth"),
        ({"forward_auth": "basic"}, "[forward] username"),
        ({"forward_auth": "basic", "forward_username": "u"}, "[forward] password"),
        (
            {"forward_auth": "keystone", "forward_username": "u", "forward_password": "p"},
            "[forward] keystone_url",
        ),
    ],
)
def test_bad_forward_settings_fail_at_start_naming_the_key(settings, named):
    with pytest.raises(ConfigError) as error:
        make_config(**{"forward_url": "http://archive/events", **settings})
    assert str(error.value).startswith(named)


def test_forward_password_is_masked_in_the_start_line():
    line = make_config(
        forward_url="http://archive/events",
        forward_auth="basic",
        forward_username="u",
        forward_password="s3cret",
    ).describe()
    assert "s3cret" not in line
    assert "forward.password=***" in line


def test_run_starts_the_forwarder_only_when_a_url_is_set():
    assert "forward" in DAEMONS
    assert WANTED["forward"](make_config(forward_url="http://archive/events"))
    assert not WANTED["forward"](make_config())


def test_forward_without_a_url_exits_with_a_configuration_error(monkeypatch, capsys):
    monkeypatch.setenv("YAGI_CONFIG", "/dev/null")
    monkeypatch.delenv("YAGI_FORWARD_URL", raising=False)
    assert cli.main(["forward"]) == RET_CONFIG
    assert "[forward] url" in capsys.readouterr().err
