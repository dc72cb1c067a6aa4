"""GPU telemetry sampled with NVML (pynvml from nvidia-ml-py) while a benchmark runs.

Without the library, a driver or a GPU the summary says `status="absent"` with the reason; that is
not an error. Peak memory bandwidth comes from NVML: bus width (bits) / 8 × max memory clock × 2
(double data rate), e.g. H100 SXM 5120 bit × 2619 MHz × 2 = 3.35 TB/s.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict


class TelemetrySummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: str  # "ok" | "absent"
    reason: str | None = None
    gpu_index: int | None = None
    gpu_name: str | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    memory_total_mib: float | None = None
    memory_used_start_mib: float | None = None
    memory_used_peak_mib: float | None = None
    memory_used_mean_mib: float | None = None
    gpu_utilization_mean_pct: float | None = None
    gpu_utilization_max_pct: float | None = None
    memory_utilization_mean_pct: float | None = None
    power_mean_w: float | None = None
    power_max_w: float | None = None
    sm_clock_mean_mhz: float | None = None
    sm_clock_max_mhz: float | None = None
    memory_clock_max_mhz: float | None = None
    memory_bus_width_bits: int | None = None
    peak_bandwidth_gb_s: float | None = None
    samples: int = 0
    interval_s: float | None = None


def peak_bandwidth_gb_s(bus_width_bits: int, memory_clock_mhz: float) -> float:
    """Bytes per transfer × transfers per second (DDR: 2 per clock), in GB/s (1e9)."""
    return bus_width_bits / 8 * memory_clock_mhz * 1e6 * 2 / 1e9


def _load_nvml():
    try:
        import pynvml  # nvidia-ml-py
    except ImportError as error:
        return None, f"pynvml (nvidia-ml-py) is not installed: {error}"
    try:
        pynvml.nvmlInit()
    except Exception as error:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        return None, f"NVML could not start (no NVIDIA driver or GPU?): {error}"
    return pynvml, None


class GPUTelemetry:
    """`with GPUTelemetry(index) as t: ...; t.summary()` samples every `interval_s` in a thread."""

    def __init__(self, gpu_index: int = 0, interval_s: float = 0.1, nvml: Any = None):
        self.gpu_index = gpu_index
        self.interval_s = interval_s
        self._nvml, self._reason = (nvml, None) if nvml is not None else (None, None)
        self._handle = None
        self._static: dict = {}
        self._samples: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GPUTelemetry":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        if self._nvml is None:
            self._nvml, self._reason = _load_nvml()
        if self._nvml is None:
            return
        nv = self._nvml
        try:
            if nv.nvmlDeviceGetCount() <= self.gpu_index:
                self._reason = f"NVML sees {nv.nvmlDeviceGetCount()} GPU(s); no GPU index {self.gpu_index}"
                self._nvml = None
                return
            self._handle = nv.nvmlDeviceGetHandleByIndex(self.gpu_index)
            name = nv.nvmlDeviceGetName(self._handle)
            major, minor = nv.nvmlDeviceGetCudaComputeCapability(self._handle)
            self._static = {
                "gpu_name": name.decode() if isinstance(name, bytes) else str(name),
                "compute_capability": f"{major}.{minor}",
                "memory_total_mib": nv.nvmlDeviceGetMemoryInfo(self._handle).total / 2**20,
            }
            self._static["driver_version"] = _optional(lambda: _text(nv.nvmlSystemGetDriverVersion()))
            bus = _optional(lambda: int(nv.nvmlDeviceGetMemoryBusWidth(self._handle)))
            mem_clock = _optional(lambda: float(nv.nvmlDeviceGetMaxClockInfo(self._handle, nv.NVML_CLOCK_MEM)))
            self._static["memory_bus_width_bits"] = bus
            self._static["memory_clock_max_mhz"] = mem_clock
            self._static["peak_bandwidth_gb_s"] = peak_bandwidth_gb_s(bus, mem_clock) if bus and mem_clock else None
        except Exception as error:
            self._reason = f"NVML query failed: {error}"
            self._nvml = None
            return
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="gpu-telemetry", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        nv, handle = self._nvml, self._handle
        sample = {"t": time.perf_counter()}
        sample["memory_used_mib"] = _optional(lambda: nv.nvmlDeviceGetMemoryInfo(handle).used / 2**20)
        rates = _optional(lambda: nv.nvmlDeviceGetUtilizationRates(handle))
        sample["gpu_util"] = getattr(rates, "gpu", None)
        sample["mem_util"] = getattr(rates, "memory", None)
        sample["power_w"] = _optional(lambda: nv.nvmlDeviceGetPowerUsage(handle) / 1e3)
        sample["sm_clock_mhz"] = _optional(lambda: float(nv.nvmlDeviceGetClockInfo(handle, nv.NVML_CLOCK_SM)))
        self._samples.append(sample)

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()  # one at the end, so short runs have at least two

    def summary(self) -> TelemetrySummary:
        if self._nvml is None and not self._samples:
            return TelemetrySummary(status="absent", reason=self._reason or "telemetry was not started")

        def values(key):
            return [s[key] for s in self._samples if s.get(key) is not None]

        def mean(key):
            v = values(key)
            return sum(v) / len(v) if v else None

        def peak(key):
            v = values(key)
            return max(v) if v else None

        memory = values("memory_used_mib")
        return TelemetrySummary(
            status="ok",
            gpu_index=self.gpu_index,
            **self._static,
            memory_used_start_mib=memory[0] if memory else None,
            memory_used_peak_mib=peak("memory_used_mib"),
            memory_used_mean_mib=mean("memory_used_mib"),
            gpu_utilization_mean_pct=mean("gpu_util"),
            gpu_utilization_max_pct=peak("gpu_util"),
            memory_utilization_mean_pct=mean("mem_util"),
            power_mean_w=mean("power_w"),
            power_max_w=peak("power_w"),
            sm_clock_mean_mhz=mean("sm_clock_mhz"),
            sm_clock_max_mhz=peak("sm_clock_mhz"),
            samples=len(self._samples),
            interval_s=self.interval_s,
        )


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(read):
    """Some NVML queries are unsupported on some GPUs/drivers: record None, keep sampling."""
    try:
        return read()
    except Exception:
        return None
