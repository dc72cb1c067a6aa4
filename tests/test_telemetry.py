"""GPU telemetry: absent (not an error) without NVML; summary math on a fake NVML."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from foundry.bench.runner import run_benchmark
from foundry.bench.synthetic import SyntheticEngine
from foundry.bench.telemetry import GPUTelemetry, peak_bandwidth_gb_s
from foundry.bench.workload import Request


class FakeNVML:
    NVML_CLOCK_MEM, NVML_CLOCK_SM = 1, 0

    def __init__(self):
        self.used = iter([5, 10, 30] + [20] * 1000)  # the first read is the static total query

    def nvmlDeviceGetCount(self):
        return 1

    def nvmlDeviceGetHandleByIndex(self, i):
        return "h"

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetCudaComputeCapability(self, h):
        return (9, 0)

    def nvmlSystemGetDriverVersion(self):
        return "580.1"

    def nvmlDeviceGetMemoryBusWidth(self, h):
        return 5120

    def nvmlDeviceGetMaxClockInfo(self, h, kind):
        return 2619

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(total=80 * 2**30, used=next(self.used) * 2**20)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=50, memory=20)

    def nvmlDeviceGetPowerUsage(self, h):
        return 300_000

    def nvmlDeviceGetClockInfo(self, h, kind):
        raise RuntimeError("not supported")  # one query failing is fine


def test_peak_bandwidth_from_bus_width_and_memory_clock():
    assert peak_bandwidth_gb_s(5120, 2619) == pytest.approx(3352.3, rel=1e-4)  # H100 SXM: 3.35 TB/s


def test_fake_gpu_summary():
    with GPUTelemetry(0, interval_s=0.01, nvml=FakeNVML()) as telemetry:
        pass
    summary = telemetry.summary()
    assert (
        summary.status == "ok" and summary.gpu_name == "NVIDIA H100 80GB HBM3" and summary.compute_capability == "9.0"
    )
    assert summary.memory_used_start_mib == 10 and summary.memory_used_peak_mib == 30
    assert summary.power_max_w == 300 and summary.gpu_utilization_mean_pct == 50
    assert summary.sm_clock_max_mhz is None and summary.peak_bandwidth_gb_s == pytest.approx(3352.3, rel=1e-4)


def test_absent_gpu_is_reported_not_raised(monkeypatch):
    import foundry.bench.telemetry as telemetry_module

    monkeypatch.setattr(telemetry_module, "_load_nvml", lambda: (None, "NVML could not start: no driver"))
    report = run_benchmark(
        SyntheticEngine(1, 1), [Request(0, [1], 2), Request(1, [2], 2)], [1], 1, telemetry=GPUTelemetry(0)
    )
    assert report.telemetry["status"] == "absent" and "no driver" in report.telemetry["reason"]
    assert report.levels[0].completed == 1 and report.levels[0].mbu is None
