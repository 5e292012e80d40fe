"""A short, seeded slice of the decoder and preprocessing fuzzing (bench/bench_fuzz.py runs 10,000 and more)."""

from __future__ import annotations

import sys

import pytest

from conftest import ROOT

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "corpus"))
from fuzz_inputs import check_to_mnist, damaged_images, random_pictures  # noqa: E402

SLICE = settings(max_examples=150, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])


@SLICE
@given(damaged_images())
def test_damaged_images_are_read_or_refused_in_one_line(data):
    check_to_mnist(data)


@SLICE
@given(random_pictures())
def test_random_pictures_give_valid_inputs(data):
    assert check_to_mnist(data) in ("digits", "no digit")
