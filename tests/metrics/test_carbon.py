import json
from pathlib import Path

import pytest

from ecocompress.metrics.carbon import co2_kg, grid_intensity, known_countries, resolve_intensity
from ecocompress.tasks.errors import UserError


def _packaged_mix() -> dict:
    import codecarbon

    path = Path(codecarbon.__file__).parent / "data/private_infra/global_energy_mix.json"
    return json.loads(path.read_text())


def test_grid_intensity_reads_codecarbon_data():
    import codecarbon

    g, source = grid_intensity("usa")
    assert g == pytest.approx(_packaged_mix()["USA"]["carbon_intensity"])
    assert source == f"codecarbon {codecarbon.__version__} global_energy_mix USA 2023"
    assert "USA" in known_countries() and len(known_countries()) > 150


def test_grid_intensity_agrees_with_codecarbon_emissions():
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import GeoMetadata
    from codecarbon.input import DataSource

    emissions = Emissions(DataSource())
    for code in ("FRA", "DEU", "IND", "BRA"):
        kg = emissions.get_country_emissions(
            Energy.from_energy(kWh=2.0), GeoMetadata(country_iso_code=code)
        )
        assert co2_kg(2.0, grid_intensity(code)[0]) == pytest.approx(kg, rel=1e-9)


@pytest.mark.parametrize(("code", "hint"), [("France", "FRA"), ("US", "USA"), ("DEUX", "DEU")])
def test_unknown_country_suggests_codes(code, hint):
    with pytest.raises(UserError, match=rf"unknown country {code!r}.*did you mean.*{hint}"):
        grid_intensity(code)


def test_co2_kg_units():
    # 2 kWh at 500 g/kWh = 1000 g = 1 kg
    assert co2_kg(2.0, 500.0) == pytest.approx(1.0)
    assert co2_kg(0.0, 500.0) == 0.0


def test_explicit_intensity_wins_over_country():
    assert resolve_intensity("USA", 12.5) == (12.5, "user-supplied --carbon-intensity")
    assert resolve_intensity("FRA", None) == grid_intensity("FRA")
    assert resolve_intensity(None, 0.0)[0] == 0.0


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_invalid_explicit_intensity(bad):
    with pytest.raises(UserError, match="carbon intensity"):
        resolve_intensity("USA", bad)


def test_neither_country_nor_intensity():
    with pytest.raises(UserError, match="--country"):
        resolve_intensity(None, None)
