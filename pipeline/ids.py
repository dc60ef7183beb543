"""Stream ids: the one rule for the names that become Kafka keys, object keys and folders.

A stream id names its Kafka key, its checkpoints (``checkpoints/<id>/``), its registry entry
(``registry/streams/<id>.json``), its Hive partition (``stream_id=<id>``) and the files an
export writes (``<id>.txt``). An id is therefore one plain path segment: 1-128 letters,
digits, ``.``, ``_`` or ``-``, starting with a letter or digit (so never ``..``, never hidden,
never an option). No ``/`` (another stream's folder, or out of the store), no ``%`` (Hive
readers URL-decode partition folders, so ``x%2Fy`` reads back as ``x/y``), no ``=``, no
whitespace. The rule is matched whole (``fullmatch``): ``re.match`` with ``$`` would let a
trailing newline through.

Every id from outside is checked where it enters (API bodies and paths, the command line,
Kafka keys and records, datasets read for an export) and again where a path is built from
it (:mod:`.storage` users: checkpoints, registry, Parquet), so that no path is ever built
from an unchecked id.
"""

from __future__ import annotations

import argparse
import re

from ausm_stream.errors import InvalidInputError

MAX_STREAM_ID_LENGTH = 128
"""Characters (ASCII, so bytes) a stream id has at most."""

STREAM_ID_PATTERN = f"[A-Za-z0-9][A-Za-z0-9._-]{{0,{MAX_STREAM_ID_LENGTH - 1}}}"
"""The rule as a regular expression, unanchored: match it whole."""

STREAM_ID = re.compile(STREAM_ID_PATTERN)

STREAM_ID_RULE = (
    f"use 1-{MAX_STREAM_ID_LENGTH} letters, digits, '.', '_' or '-', "
    "starting with a letter or digit"
)
"""What an error message says the fix is."""

SHOWN_CHARACTERS = 80
"""Characters of a refused id that a message quotes (a key can be megabytes long)."""


def shown(value: object) -> str:
    """``repr`` of an untrusted value, cut for a log line or an error message."""
    text = repr(value)
    if len(text) <= SHOWN_CHARACTERS:
        return text
    return f"{text[:SHOWN_CHARACTERS]}... ({len(text)} characters)"


def is_stream_id(value: object) -> bool:
    return isinstance(value, str) and STREAM_ID.fullmatch(value) is not None


def check_stream_id(value: object) -> str:
    """``value`` if it is a stream id; else :class:`InvalidInputError` saying the rule."""
    if not is_stream_id(value):
        raise InvalidInputError(f"stream id {shown(value)}: {STREAM_ID_RULE}")
    assert isinstance(value, str)
    return value


def stream_id_argument(text: str) -> str:
    """:func:`check_stream_id` as an argparse ``type``: a bad id is a usage error (exit code 2,
    before anything is opened)."""
    try:
        return check_stream_id(text)
    except InvalidInputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
