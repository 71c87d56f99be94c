import csv
import time

import pytest

from ecocompress.metrics.energy import EnergyMeter
from ecocompress.tasks.errors import UserError


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        sum(range(1000))


def test_measures_a_busy_loop(tmp_path):
    with EnergyMeter(tmp_path / "cc", "FRA") as meter:
        _busy(1.5)
    assert meter.duration_s == pytest.approx(1.5, abs=0.3)
    assert meter.cpu_energy_kwh > 0 and meter.ram_energy_kwh > 0
    assert meter.energy_kwh == pytest.approx(
        meter.cpu_energy_kwh + meter.ram_energy_kwh + meter.gpu_energy_kwh
    )
    # codecarbon's own CO2 used its FRA intensity (56 g/kWh) on its energy, GPU included
    assert meter.codecarbon_co2_kg > 0
    assert "codecarbon" in meter.energy_method and "cpu:" in meter.energy_method
    assert "gpu:" in meter.energy_method
    rows = list(csv.DictReader(meter.emissions_csv.open()))
    assert len(rows) == 1 and rows[0]["country_iso_code"] == "FRA"
    assert meter.as_dict()["energy_method"] == meter.energy_method


def test_body_exception_propagates_and_energy_is_still_recorded(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with EnergyMeter(tmp_path, "USA") as meter:
            raise RuntimeError("boom")
    assert meter.cpu_energy_kwh is not None and meter.emissions_csv is not None


def test_unknown_country_is_refused_before_measuring(tmp_path):
    with pytest.raises(UserError, match="unknown country 'ZZZ'"):
        EnergyMeter(tmp_path, "ZZZ")
