"""The exceptions yagi-meter raises; boundary modules turn library errors into these."""


class YagiError(Exception):
    """Base class of every yagi-meter error."""


class ConfigError(YagiError):
    """The configuration is invalid; the message names the key."""


class BadNotification(YagiError):
    """A message cannot become an event; the message is the quarantine reason."""


class StoreError(YagiError):
    """Redis could not be reached or refused a command: try again later (HTTP 503)."""


class UnknownMarker(YagiError):
    """A feed's marker is not an entry of that feed (never was, or expired): the client's error."""


class UndecodableEvent(YagiError, ValueError):
    """A stored event body cannot be decoded (corrupt, or its dictionary is missing or damaged);
    the message names the seq."""


class BrokerError(YagiError):
    """Base class of errors talking to RabbitMQ."""


class ConnectionClosed(BrokerError):
    """The AMQP connection or channel was lost."""


class AccessRefused(BrokerError):
    """RabbitMQ refused the credentials or the virtual host."""


class ArchiveError(YagiError):
    """The AtomPub archive could not be reached, did not answer in time, or auth failed."""


class CallbackRefused(YagiError):
    """A WebSub callback URL is not allowed: its scheme, or an address outside the allowed networks."""


# Exit codes of the CLI.
RET_OK = 0
RET_ERROR = 1
RET_CONFIG = 2
RET_CONNECT = 3
RET_PIPE = 141  # standard output closed by its reader, as a shell reports SIGPIPE (128 + 13)
