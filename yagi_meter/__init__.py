"""yagi-meter: archive every OpenStack notification and serve it back as Atom."""

__version__ = "0.1.0"
