"""The race catalogue: each race passes on asyncio's schedule, fuzzing finds it, the fix holds."""

from __future__ import annotations

import asyncio

import pytest

import tidal
import tidal.testing
from tidal.testing.races import CATALOGUE, Race, seeds_to_fail

RACES = {race.name: race for race in CATALOGUE}


@pytest.mark.parametrize("name", sorted(RACES))
def test_racy_version_passes_on_the_default_schedules(name: str) -> None:
    race = RACES[name]
    for _ in range(5):
        asyncio.run(race.racy())  # asyncio's own loop
        tidal.run(race.racy())  # tidal's loop, unperturbed
        tidal.testing.run(race.racy(), virtual_time=True)


@pytest.mark.parametrize("name", sorted(RACES))
def test_fuzzing_finds_the_race_within_20_seeds(name: str) -> None:
    needed = seeds_to_fail(RACES[name].racy, limit=20)
    assert needed is not None, f"{name}: 20 seeds did not expose the race"


@pytest.mark.parametrize("name", sorted(RACES))
def test_the_failing_seed_replays(name: str) -> None:
    race: Race = RACES[name]
    needed = seeds_to_fail(race.racy, limit=20)
    assert needed is not None
    for _ in range(3):
        with pytest.raises(AssertionError):
            tidal.testing.run(race.racy(), virtual_time=True, seed=needed - 1)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(RACES))
def test_fixed_version_passes_200_seeds(name: str) -> None:
    assert tidal.testing.fuzz(RACES[name].fixed, seeds=range(200)) == 200
