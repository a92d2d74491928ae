"""One spelling of the unit table: ingest's --unit goes through psr.io.units.normalise_unit."""

from __future__ import annotations

import pytest

import psr.data.ingest as ingest
from psr.data.ingest import IngestError, unit_option


def test_unit_option_names_ngff_units_and_refuses_unknown_ones() -> None:
    assert unit_option("um") == "micrometer"
    assert unit_option(None) is None
    with pytest.raises(IngestError, match="--unit"):
        unit_option("furlong")


def test_the_former_spelling_warns_and_is_the_same_function() -> None:
    with pytest.warns(DeprecationWarning, match="unit_option"):
        assert ingest.normalize_unit is unit_option
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = ingest.nope  # type: ignore[attr-defined]
