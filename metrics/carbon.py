"""Grid carbon intensity (g CO2eq per kWh) and the CO2 of an energy amount.

Country intensities come from the data file packaged inside codecarbon
(``data/private_infra/global_energy_mix.json``) and go through codecarbon's own
conversion (``Emissions._global_energy_mix_to_emissions_rate``), so our numbers agree
with what ``OfflineEmissionsTracker(country_iso_code=...)`` computes for a country
without a region. An explicit intensity given by the user wins over the country.
"""

from __future__ import annotations

import difflib
import math
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from ecocompress.tasks.errors import UserError


class CarbonIntensity(BaseModel):
    """A grid carbon intensity and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    g_per_kwh: float = Field(ge=0)
    source: str


@lru_cache(maxsize=1)
def _energy_mix() -> dict[str, dict]:
    from codecarbon.input import DataSource

    return DataSource().get_global_energy_mix_data()


def known_countries() -> dict[str, str]:
    """ISO 3166-1 alpha-3 code -> country name, for every country codecarbon has data for."""
    return {code: str(row.get("country_name", code)) for code, row in _energy_mix().items()}


def _unknown(code: str) -> UserError:
    countries = known_countries()
    close = difflib.get_close_matches(code.upper(), list(countries), n=3)
    # A country name ("France") maps to its code.
    by_name = {name.lower(): c for c, name in countries.items()}
    close += [by_name[n] for n in difflib.get_close_matches(code.lower(), list(by_name), n=1)]
    hint = f"; did you mean {', '.join(dict.fromkeys(close))}?" if close else ""
    return UserError(
        f"unknown country {code!r}: give an ISO 3166-1 alpha-3 code codecarbon knows "
        f"(e.g. USA, FRA, DEU, GBR){hint}"
    )


def grid_intensity(country_iso3: str) -> tuple[float, str]:
    """Carbon intensity of a country's electricity grid, as codecarbon computes it.

    Args:
        country_iso3: ISO 3166-1 alpha-3 code, e.g. ``"USA"`` (case-insensitive).

    Returns:
        ``(g CO2eq per kWh, source description)``, e.g.
        ``(369.473, "codecarbon 3.3.2 global_energy_mix USA 2023")``.

    Raises:
        UserError: the code is not in codecarbon's data (with suggestions).
    """
    import codecarbon
    from codecarbon.core.emissions import Emissions

    code = country_iso3.strip().upper()
    row = _energy_mix().get(code)
    if row is None:
        raise _unknown(country_iso3)
    g = Emissions._global_energy_mix_to_emissions_rate(row).kgs_per_kWh * 1000.0
    year = f" {row['year']}" if row.get("year") is not None else ""
    # kg -> g reintroduces float noise (56.039000000000001); the data has 3 decimals.
    return round(float(g), 6), f"codecarbon {codecarbon.__version__} global_energy_mix {code}{year}"


def co2_kg(energy_kwh: float, intensity_g_per_kwh: float) -> float:
    """CO2eq in kg of ``energy_kwh`` drawn from a grid of ``intensity_g_per_kwh``."""
    return energy_kwh * intensity_g_per_kwh / 1000.0


def resolve_intensity(country: str | None, explicit_g_per_kwh: float | None) -> tuple[float, str]:
    """The intensity to use: an explicit value wins, else the country's grid.

    Args:
        country: ISO alpha-3 code (``--country``), or None.
        explicit_g_per_kwh: ``--carbon-intensity`` in g CO2eq per kWh, or None.

    Returns:
        ``(g CO2eq per kWh, source description)``.

    Raises:
        UserError: neither is given, the explicit value is negative or not finite, or
            the country is unknown.
    """
    if explicit_g_per_kwh is not None:
        value = float(explicit_g_per_kwh)
        if not math.isfinite(value) or value < 0:
            raise UserError(
                f"carbon intensity {explicit_g_per_kwh!r} is invalid: give g CO2eq/kWh >= 0"
            )
        ci = CarbonIntensity(g_per_kwh=value, source="user-supplied --carbon-intensity")
    elif country is None:
        raise UserError(
            "no carbon intensity: give --country (ISO alpha-3, e.g. USA) or --carbon-intensity"
        )
    else:
        g, source = grid_intensity(country)
        ci = CarbonIntensity(g_per_kwh=g, source=source)
    return ci.g_per_kwh, ci.source
