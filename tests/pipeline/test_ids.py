"""Stream ids: one rule for every name that becomes a Kafka key, an object key or a folder."""

from __future__ import annotations

import argparse

import pytest

from ausm_stream.errors import InvalidInputError
from ausm_stream.pipeline.ids import check_stream_id, stream_id_argument
from tests.poison import HOSTILE_IDS


@pytest.mark.parametrize("bad", [*HOSTILE_IDS, "a b", "-lead", ".hidden", "cam\x00", "é", 7])
def test_ids_that_could_name_another_path_are_refused(bad):
    with pytest.raises(InvalidInputError, match=r"stream id .*: use 1-128 letters"):
        check_stream_id(bad)


@pytest.mark.parametrize("good", ["cam-7", "a", "A.b_c-9", "x" * 128, "0"])
def test_plain_ids_pass_unchanged(good):
    assert check_stream_id(good) == good


def test_a_long_hostile_id_is_shown_cut():
    with pytest.raises(InvalidInputError) as refused:
        check_stream_id("../" * 100_000)
    assert len(str(refused.value)) < 300


def test_the_command_line_type_makes_a_bad_id_a_usage_error():
    assert stream_id_argument("cam-7") == "cam-7"
    with pytest.raises(argparse.ArgumentTypeError, match=r"stream id '\.\./x'"):
        stream_id_argument("../x")
