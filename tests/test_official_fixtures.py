"""The recorded official runs are part of the checkout: present, complete, small enough, and a missing one fails."""

import pytest

from tests.official import MANA_FIXTURE, OFFICIAL, VSRT_FIXTURE, load_official

KEYS = {"config", "state_dict", "inputs", "outputs", "intermediates", "notes", "meta"}


@pytest.mark.parametrize("path", [MANA_FIXTURE, VSRT_FIXTURE], ids=["mana", "vsrt"])
def test_fixture_is_in_the_repository_and_complete(path):
    assert path.parent == OFFICIAL and OFFICIAL.parts[-3:] == ("tests", "fixtures", "official")
    data = load_official(path)
    assert set(data) == KEYS and data["outputs"]["out"].dtype.is_floating_point


def test_fixtures_stay_small():
    assert sum(p.stat().st_size for p in OFFICIAL.iterdir()) < 25 * 2**20


def test_a_missing_fixture_is_an_error_not_a_skip(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing from the checkout"):
        load_official(tmp_path / "gone.pt")
