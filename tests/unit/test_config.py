import pytest

from tests.conftest import ROOT, make_config
from yagi_meter import config as config_module
from yagi_meter.errors import ConfigError


def test_sample_file_lists_every_option_with_its_default():
    assert (ROOT / "yagi.conf.sample").read_text() == config_module.render_sample()


def test_defaults_match_the_design():
    config = make_config()
    assert config.amqp.url == "amqp://guest:guest@localhost:5672/%2F"
    assert config.amqp.exchanges == ("nova", "glance", "cinder", "neutron", "heat", "keystone")
    assert config.amqp.topics == ("notifications",)
    assert config.amqp.priorities == ("info", "warn", "error")
    assert config.amqp.queue == "yagi-meter.{topic}.{priority}"
    assert (config.amqp.durable, config.amqp.exchange_durable) == (True, False)
    assert config.redis.url == "redis://localhost:6379/0"
    assert config.redis.retention_days == 90
    assert (config.feeds.host, config.feeds.port) == ("127.0.0.1", 8080)
    assert config.base_url == "http://127.0.0.1:8080"
    assert (config.feeds.page_size, config.feeds.max_page_size) == (25, 1000)
    assert config.auth.mode == "none"
    assert config.hub.external_url == ""
    assert config.forward.url == ""
    assert config.is_default("redis", "url")


def test_environment_overrides_the_file(tmp_path):
    conf = tmp_path / "yagi.conf"
    conf.write_text("[redis]\nurl = redis://localhost:6379/3\n[amqp]\nprefetch = 10\n")
    config = config_module.load(str(conf), environ={"YAGI_REDIS_URL": "redis://localhost:6379/9"})
    assert config.redis.url == "redis://localhost:6379/9"
    assert config.amqp.prefetch == 10
    assert not config.is_default("redis", "url")


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [
        ("amqp_prefetch", "0", "[amqp] prefetch"),
        ("amqp_prefetch", "many", "[amqp] prefetch"),
        ("redis_url", "http://x", "[redis] url"),
        ("auth_mode", "open", "[auth] mode"),
        ("hub_allowed_callback_networks", "10.0.0.0/33", "[hub] allowed_callback_networks"),
        ("redis_compress", "maybe", "[redis] compress"),
        ("notifications_mapping", "x.* = owner:payload.x", "[notifications] mapping"),
    ],
)
def test_bad_value_fails_naming_the_key(setting, value, named):
    with pytest.raises(ConfigError) as error:
        make_config(**{setting: value})
    assert str(error.value).startswith(named)
    assert "\n" not in str(error.value)


def test_unknown_key_in_file_is_refused(tmp_path):
    conf = tmp_path / "yagi.conf"
    conf.write_text("[redis]\nurll = redis://localhost\n")
    with pytest.raises(ConfigError, match=r"unknown option \[redis\] urll"):
        config_module.load(str(conf), environ={})


def test_describe_masks_passwords():
    line = make_config(amqp_url="amqp://user:s3cret@rabbit:5672/%2F").describe()
    assert "s3cret" not in line
    assert "amqp://user:***@rabbit:5672/%2F" in line


def test_unknown_yagi_variable_in_the_environment_is_refused_like_an_unknown_key():
    with pytest.raises(ConfigError, match=r"^environment: unknown variable YAGI_REDIS_URLL "):
        config_module.load(environ={"YAGI_CONFIG": "/dev/null", "YAGI_REDIS_URLL": "redis://x"})


@pytest.mark.parametrize("name", ["YAGI_CONFIG", "YAGI_TEST_REDIS_URL", "YAGI_BENCH_REDIS_URL"])
def test_the_yagi_variables_that_are_not_options_are_allowed(name):
    environ = {"YAGI_CONFIG": "/dev/null", name: "/dev/null", "OTHER_VARIABLE": "x"}
    assert config_module.load(environ=environ).redis.url == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("template", "queues"),
    [
        (
            "yagi-meter.{topic}.{priority}",
            ["yagi-meter.notifications.info", "yagi-meter.notifications.error"],
        ),
        ("{topic}.{priority}", ["notifications.info", "notifications.error"]),  # oslo.messaging's own
        ("billing", ["billing"]),  # one queue bound to every routing key
    ],
)
def test_queue_template_names_one_queue_per_routing_key_bound_on_every_exchange(template, queues):
    from yagi_meter.ingest.amqp import bindings

    config = make_config(amqp_queue=template, amqp_priorities="info, error", amqp_exchanges="nova, glance")
    links = bindings(config)
    assert list(dict.fromkeys(link.queue for link in links)) == queues
    assert {(link.exchange, link.routing_key) for link in links} == {
        (exchange, f"notifications.{priority}")
        for exchange in ("nova", "glance")
        for priority in ("info", "error")
    }
    for link in links:  # each routing key goes to its own queue
        assert link.queue in (
            template,
            template.format(topic="notifications", priority=link.routing_key[14:]),
        )


@pytest.mark.parametrize("template", ["", "yagi.{host}", "yagi.{topic", "amq.yagi"])
def test_bad_queue_templates_are_refused_naming_the_key(template):
    with pytest.raises(ConfigError, match=r"^\[amqp\] queue: "):
        make_config(amqp_queue=template)


# Values beside the defaults for options whose default is empty, so that the
# types of their items are checked too.
EXAMPLES = {
    ("auth", "tokens"): "t1 = admin\nt2 = tenant:abc",
    ("hub", "allowed_callback_networks"): "127.0.0.0/8, ::1/128",
    ("forward", "targets"): "compute.* = http://archive/nova",
}


def _is_a(value, annotation) -> bool:
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_a(value, arm) for arm in typing.get_args(annotation))
    if origin is tuple:
        items = typing.get_args(annotation)
        if not isinstance(value, tuple):
            return False
        if len(items) == 2 and items[1] is Ellipsis:
            return all(_is_a(item, items[0]) for item in value)
        return len(items) == len(value) and all(map(_is_a, value, items))
    if annotation is type(None):
        return value is None
    if annotation is int:  # a bool is an int to isinstance, not to the configuration
        return type(value) is int
    return isinstance(value, annotation)


def test_each_section_is_a_dataclass_of_its_options_with_the_types_they_parse_to():
    import dataclasses
    import typing

    for name, cls in config_module.SECTIONS.items():
        options = [o for o in config_module.OPTIONS if o.section == name]
        assert [f.name for f in dataclasses.fields(cls)] == [o.key for o in options]
        hints = typing.get_type_hints(cls, vars(config_module))
        for option in options:
            for text in (option.default, EXAMPLES.get((name, option.key), option.default)):
                value = option.parse(text)
                assert _is_a(value, hints[option.key]), (name, option.key, value, hints[option.key])


def test_the_type_check_of_the_sections_can_fail():
    assert not _is_a(True, int)
    assert not _is_a(("a", 1), tuple[str, ...])
    assert _is_a((("t", None),), tuple[tuple[str, str | None], ...])


def test_a_misspelt_option_is_no_attribute():
    with pytest.raises(AttributeError):
        make_config().redis.urll  # noqa: B018  (mypy reports it before any run)
