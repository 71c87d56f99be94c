"""Energy of a window of work: codecarbon for CPU and RAM, NVML for NVIDIA GPUs.

On a machine with an NVIDIA GPU, the GPU's energy is the difference of NVML's
total-energy counter (mJ) across the window, the accurate source for windows well above
100 ms. CPU and RAM energy always come from ``codecarbon.OfflineEmissionsTracker``
(never the online tracker: its geo-IP lookup fails offline and silently assumes Canada).
Without RAPL counters or a known CPU model, codecarbon *estimates* CPU power from a TDP
scaled by load and RAM power from a DIMM count: ``energy_method`` says which it used, and
must be shown next to every energy number.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

# How codecarbon's CPU modes get their power, for the method string.
_CPU_MODES = {
    "cpu_load": "TDP x load estimate",
    "constant": "constant 50% of TDP estimate",
    "intel_rapl": "RAPL counters",
    "intel_power_gadget": "Intel Power Gadget",
    "windows_emi": "Windows EMI counters",
    "apple_powermetrics": "powermetrics",
}


def _nvml_handles() -> tuple[list[Any], str | None]:
    """NVML handles of the GPUs this process may use, or ``([], reason)`` without one."""
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:  # no driver / no GPU: the GPU is absent
        return [], f"no NVIDIA GPU ({type(e).__name__})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        ids: list[str] = [str(i) for i in range(pynvml.nvmlDeviceGetCount())]
    else:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
    handles = [
        pynvml.nvmlDeviceGetHandleByIndex(int(i))
        if i.isdigit()
        else pynvml.nvmlDeviceGetHandleByUUID(i)
        for i in ids
    ]
    return handles, None if handles else "NVML found no visible GPU"


def _nvml_energy_mj(handles: list[Any]) -> float:
    import pynvml

    return float(sum(pynvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in handles))


class EnergyMeter:
    """Context manager measuring the energy of the code it wraps.

    Attributes set on exit (``None`` when not measured, with the reason in
    ``energy_method``): ``energy_kwh`` (cpu + ram + gpu), ``cpu_energy_kwh``,
    ``ram_energy_kwh``, ``gpu_energy_kwh`` (0.0 without a GPU), ``duration_s`` (wall s),
    ``emissions_csv`` (codecarbon's CSV, one row per window), ``codecarbon_co2_kg``
    (codecarbon's own CO2, with its intensity for ``country_iso_code``),
    ``cpu_power_w`` and ``ram_power_w`` (codecarbon's mean estimates) and
    ``energy_method``.

    Example:
        >>> with EnergyMeter(run_dir, "USA") as meter:
        ...     evaluate()
        >>> meter.energy_kwh, meter.energy_method
    """

    def __init__(
        self,
        output_dir: str | Path,
        country_iso_code: str,
        *,
        tracking_mode: Literal["process", "machine"] = "process",
        measure_power_secs: float = 15.0,
        project_name: str = "ecocompress",
    ) -> None:
        """Prepare a meter.

        Args:
            output_dir: folder for codecarbon's ``emissions.csv`` (created).
            country_iso_code: ISO alpha-3 code for codecarbon's own CO2 figure.
            tracking_mode: ``process`` attributes CPU load and RAM of this process and its
                children (other jobs on the machine do not count); ``machine`` counts the
                whole machine.
            measure_power_secs: codecarbon's sampling interval (s); the window's end is
                always measured too.
            project_name: codecarbon's project name in the CSV.

        Raises:
            UserError: ``country_iso_code`` is not in codecarbon's data.
        """
        from ecocompress.metrics.carbon import grid_intensity

        # codecarbon logs an unknown country and falls back to a world average: refuse it.
        grid_intensity(country_iso_code)
        self.output_dir = Path(output_dir)
        self.country_iso_code = country_iso_code.strip().upper()
        self.tracking_mode = tracking_mode
        self.measure_power_secs = measure_power_secs
        self.project_name = project_name
        self.energy_kwh: float | None = None
        self.cpu_energy_kwh: float | None = None
        self.ram_energy_kwh: float | None = None
        self.gpu_energy_kwh: float | None = None
        self.duration_s: float | None = None
        self.codecarbon_co2_kg: float | None = None
        self.cpu_power_w: float | None = None
        self.ram_power_w: float | None = None
        self.emissions_csv: Path | None = None
        self.energy_method: str = "not measured yet"
        self._tracker: Any = None
        self._tracker_error: str | None = None
        self._gpu_handles: list[Any] = []
        self._gpu_note: str | None = None
        self._gpu_start_mj: float | None = None

    def __enter__(self) -> EnergyMeter:
        import codecarbon
        import pynvml

        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._version = codecarbon.__version__
        self._gpu_handles, self._gpu_note = _nvml_handles()
        if self._gpu_handles:
            try:
                self._gpu_start_mj = _nvml_energy_mj(self._gpu_handles)
            except pynvml.NVMLError as e:  # e.g. NotSupported before Volta
                self._gpu_note = f"NVML total energy unavailable ({type(e).__name__})"
        try:
            from codecarbon.output_methods.base_output import OutputMethod

            csv_only: dict[str, Any] = {"output_methods": [OutputMethod.CSV]}
        except ImportError:  # codecarbon < 3.3 has only the save_to_* flags
            csv_only = {"save_to_file": True}
        # codecarbon resets its logger on import; its level is set again here
        logging.getLogger("codecarbon").setLevel(logging.ERROR)
        try:
            self._tracker = codecarbon.OfflineEmissionsTracker(
                country_iso_code=self.country_iso_code,
                project_name=self.project_name,
                log_level="error",  # its fallbacks are recorded in energy_method
                **csv_only,
                output_dir=str(self.output_dir),
                output_file="emissions.csv",
                tracking_mode=self.tracking_mode,
                measure_power_secs=self.measure_power_secs,
            )
            self._tracker.start()
        except Exception as e:  # recorded, not hidden: energy stays None with this reason
            self._tracker, self._tracker_error = None, f"{type(e).__name__}: {e}"
        self._t0 = time.perf_counter()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self.duration_s = time.perf_counter() - self._t0
        gpu_method = self._stop_gpu()
        data = None
        if self._tracker is not None:
            try:
                self._tracker.stop()
                data = self._tracker.final_emissions_data
            except Exception as e:  # recorded as the reason energy is absent
                self._tracker_error = f"{type(e).__name__}: {e}"
        if data is None:
            why = self._tracker_error or "codecarbon returned no data"
            self.energy_method = f"not measured: codecarbon {self._version} failed ({why})"
            return False
        self.cpu_energy_kwh = float(data.cpu_energy)
        self.ram_energy_kwh = float(data.ram_energy)
        self.cpu_power_w, self.ram_power_w = float(data.cpu_power), float(data.ram_power)
        self.codecarbon_co2_kg = float(data.emissions)
        csv = self.output_dir / "emissions.csv"
        self.emissions_csv = csv if csv.is_file() else None
        if self.gpu_energy_kwh is not None:
            self.energy_kwh = self.cpu_energy_kwh + self.ram_energy_kwh + self.gpu_energy_kwh
        self.energy_method = f"{self._cpu_ram_method()}; {gpu_method}"
        return False

    def _stop_gpu(self) -> str:
        """Set ``gpu_energy_kwh`` and return the GPU part of the method string."""
        import pynvml

        if not self._gpu_handles:
            self.gpu_energy_kwh = 0.0  # no GPU: nothing drew GPU power
            return f"gpu: none ({self._gpu_note})"
        if self._gpu_start_mj is None:
            return f"gpu: not measured, so no total ({self._gpu_note})"
        try:
            end_mj = _nvml_energy_mj(self._gpu_handles)
        except pynvml.NVMLError as e:
            return f"gpu: not measured, so no total (NVML {type(e).__name__})"
        self.gpu_energy_kwh = (end_mj - self._gpu_start_mj) / 3.6e9  # mJ -> kWh
        n = len(self._gpu_handles)
        return f"gpu: NVML total-energy counter over {n} device(s), whole device"

    def _cpu_ram_method(self) -> str:
        """Describe what codecarbon actually used (read off its hardware objects)."""
        cpu = next((h for h in self._tracker._hardware if type(h).__name__ == "CPU"), None)
        mode = getattr(cpu, "_mode", "unknown")
        cpu_desc = _CPU_MODES.get(mode, mode)
        if mode in ("cpu_load", "constant"):
            generic = ", generic default" if getattr(cpu, "_is_generic_tdp", False) else ""
            cpu_desc += f" (TDP {getattr(cpu, '_tdp', '?')} W{generic})"
        forced_ram = self._tracker._conf.get("force_ram_power")
        ram_desc = f"forced {forced_ram} W" if forced_ram else "DIMM-count estimate"
        # the mean powers are numbers of their own (cpu_power_w, ram_power_w), not text here:
        # the method is the same for every evaluation measured the same way
        return (
            f"codecarbon {self._version} {self.tracking_mode} mode; "
            f"cpu: {cpu_desc}; ram: {ram_desc}"
        )

    def as_dict(self) -> dict[str, float | str | None]:
        """The measurements, for MLflow metrics and the results table."""
        return {
            "energy_kwh": self.energy_kwh,
            "cpu_energy_kwh": self.cpu_energy_kwh,
            "ram_energy_kwh": self.ram_energy_kwh,
            "gpu_energy_kwh": self.gpu_energy_kwh,
            "energy_duration_s": self.duration_s,
            "codecarbon_co2_kg": self.codecarbon_co2_kg,
            "energy_method": self.energy_method,
            "cpu_power_w": self.cpu_power_w,  # codecarbon's mean over the window, W
            "ram_power_w": self.ram_power_w,
            "emissions_csv": str(self.emissions_csv) if self.emissions_csv else None,
        }
