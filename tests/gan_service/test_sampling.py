"""The Sample request's seeds: refused by size before any is listed."""

from __future__ import annotations

import pytest

from dreamsuite.errors import InvalidArgument
from services.gan.sampling import MAX_SAMPLES, seeds_of


@pytest.mark.timeout(10)
@pytest.mark.parametrize("count", [MAX_SAMPLES + 1, 2**31 - 1, 2**63 - 1, -1])
def test_a_count_out_of_range_is_refused_before_any_seed_is_listed(count):
    """A count of 2**31 - 1 built a list of that many seeds first (minutes of the event loop,
    tens of GiB) and only then said "at most 1024"."""
    with pytest.raises(InvalidArgument, match=f"1 to {MAX_SAMPLES} images"):
        seeds_of([], 0, count)


def test_seeds_come_from_the_list_or_from_seed_and_count():
    assert seeds_of([], 5, 3) == [5, 6, 7]
    assert seeds_of([9, 2], 0, 0) == [9, 2]
    with pytest.raises(InvalidArgument, match="not both"):
        seeds_of([1], 2, 2)
    with pytest.raises(InvalidArgument, match="at least one seed"):
        seeds_of([], 0, 0)
    with pytest.raises(InvalidArgument, match=f"1 to {MAX_SAMPLES} images"):
        seeds_of(list(range(MAX_SAMPLES + 1)), 0, 0)
