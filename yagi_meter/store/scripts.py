"""Every Lua script of the store, registered once when the store opens.

As dramatiq's Redis broker does (``self.scripts = {name: client.register_script(src)}``):
the store's classes call scripts by name and never load Lua themselves.  A
file whose name starts with ``_`` is a library, not a script: a script that
begins with ``-- include: _name.lua`` lines gets those libraries' functions
prepended, so the code writing one key family is written once (keys.py).
"""

from __future__ import annotations

from importlib import resources

import redis
from redis.commands.core import Script

_INCLUDE = "-- include: "


def _source(name: str) -> str:
    return resources.files("yagi_meter.store").joinpath(name).read_text()


def _with_includes(text: str) -> str:
    libraries = [
        _source(line[len(_INCLUDE) :].strip()) for line in text.splitlines() if line.startswith(_INCLUDE)
    ]
    return "\n".join([*libraries, text])


def names() -> list[str]:
    """The scripts shipped with the store, by name (file name without ``.lua``)."""
    files = resources.files("yagi_meter.store").iterdir()
    return sorted(f.name[:-4] for f in files if f.name.endswith(".lua") and not f.name.startswith("_"))


class Scripts(dict[str, Script]):
    """Script name -> registered script; EVALSHA, loaded again when Redis lost it."""

    @classmethod
    def register(cls, client: redis.Redis) -> Scripts:
        return cls({name: client.register_script(_with_includes(_source(name + ".lua"))) for name in names()})
