"""The project's one exception root.

Every error the project raises on purpose derives from :class:`AUSMStreamError`, so callers
can catch the project's errors apart from bugs. Caller mistakes also derive from
``ValueError`` (wrong shapes, bad blobs, bad config), so plain ``except ValueError`` works too.
Messages name the stream, the record or the argument, and the fix.
"""


class AUSMStreamError(Exception):
    """Root of every error ausm-stream raises on purpose."""


class InvalidInputError(AUSMStreamError, ValueError):
    """The caller passed something malformed: the message says what and how to fix it."""


class StateError(InvalidInputError):
    """A serialized stream state is corrupt or belongs to another model configuration."""


class ConfigError(InvalidInputError):
    """A configuration key is unknown or its value is wrong; the message names the key."""


class RecordError(InvalidInputError):
    """A record read from Kafka or storage failed validation; it goes to the dead-letter topic."""


class SourceError(AUSMStreamError):
    """A video source could not be opened or read (after the retries it was allowed)."""


class DeliveryError(AUSMStreamError):
    """The Kafka brokers did not take a record within ``kafka.delivery_timeout_s``."""


class NotFoundError(InvalidInputError):
    """The caller named something that does not exist (a stream id): the API's 404."""


class ConflictError(InvalidInputError):
    """The request clashes with what exists (a stream id taken, a frame already past): 409."""
