"""Energy meters: RAPL against a fake powercap tree, NVML behind its interface with a fake
(this machine has no GPU), the declared fallback, and the rule that a meter never hurts a job."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.daemon import Daemon
from scheduler.energy import (
    EnergyMonitor,
    GpuDevice,
    MeterError,
    NvmlApi,
    RaplMeter,
    find_rapl_domains,
    tree_cpu_seconds,
    visible_gpus,
)
from scheduler.models import Job, JobState
from scheduler.timespec import utc_now
from scheduler.units import JOULES_PER_KWH
from tests.conftest import Workspace, floor_hour, hourly, utc

T0 = utc(2026, 11, 26, 12)
MAX_RANGE_UJ = 262_143_328_850


class FakePowercap:
    """A powercap sysfs tree: two packages with core subzones, DRAM, psys and an mmio copy."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.zones: dict[str, Path] = {}
        for zone, name in (("intel-rapl:0", "package-0"), ("intel-rapl:0:0", "core"),
                           ("intel-rapl:0:2", "dram"), ("intel-rapl:1", "package-1"),
                           ("intel-rapl:2", "psys"), ("intel-rapl-mmio:0", "package-0")):
            path = root / zone
            path.mkdir(parents=True)
            (path / "name").write_text(name + "\n")
            (path / "max_energy_range_uj").write_text(f"{MAX_RANGE_UJ}\n")
            self.zones[zone] = path
            self.set(zone, 1_000_000)

    def set(self, zone: str, microjoules: int) -> None:
        (self.zones[zone] / "energy_uj").write_text(f"{microjoules}\n")

    def add(self, zone: str, microjoules: int) -> None:
        current = int((self.zones[zone] / "energy_uj").read_text())
        self.set(zone, (current + microjoules) % (MAX_RANGE_UJ + 1))


class FakeGpus:
    """``GpuApi`` for tests: energy counters (or none) and power the test sets."""

    def __init__(self, count: int = 2, counter: bool = True) -> None:
        self.list = [GpuDevice(i, f"GPU-{i}aaa-{i}") for i in range(count)]
        self.energy = dict.fromkeys(range(count), 5_000_000)  # mJ since "driver load"
        self.power = dict.fromkeys(range(count), 100_000)  # mW
        self.counter = counter
        self.fail: Exception | None = None

    def devices(self) -> list[GpuDevice]:
        return list(self.list)

    def energy_mj(self, index: int) -> int | None:
        if self.fail is not None:
            raise self.fail
        return self.energy[index] if self.counter else None

    def power_mw(self, index: int) -> int:
        if self.fail is not None:
            raise self.fail
        return self.power[index]


def no_meter(what: str) -> MeterError:
    return MeterError(f"{what} not on this test machine")


# RAPL ---------------------------------------------------------------------------------------


def test_rapl_counts_packages_and_dram_once(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    domains = find_rapl_domains(tmp_path)
    assert sorted(d.name for d in domains) == ["dram", "package-0", "package-1"]
    meter = RaplMeter(tmp_path)
    tree.add("intel-rapl:0", 30_000_000)
    tree.add("intel-rapl:0:2", 5_000_000)
    tree.add("intel-rapl:1", 20_000_000)
    tree.add("intel-rapl:0:0", 25_000_000)  # core: inside package-0, not added again
    tree.add("intel-rapl:2", 90_000_000)  # psys: the whole platform, not added again
    assert meter.joules_since_last() == pytest.approx(55.0)
    assert meter.joules_since_last() == 0.0


def test_rapl_counter_wrap_around(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    tree.set("intel-rapl:0", MAX_RANGE_UJ - 2_000_000)
    meter = RaplMeter(tmp_path)
    tree.set("intel-rapl:0", 3_000_000)  # wrapped: 2 J to the top, then 3 J
    assert meter.joules_since_last() == pytest.approx(5.0)


def test_rapl_unreadable_or_missing(tmp_path: Path) -> None:
    with pytest.raises(MeterError, match="no RAPL powercap tree"):
        RaplMeter(tmp_path / "absent")
    FakePowercap(tmp_path)
    counter = tmp_path / "intel-rapl:1" / "energy_uj"
    counter.unlink()
    counter.mkdir()  # reading a directory fails like an unreadable file
    with pytest.raises(MeterError, match=r"intel-rapl:1/energy_uj: unreadable"):
        RaplMeter(tmp_path)
    counter.rmdir()
    counter.write_text("garbage\n")
    with pytest.raises(MeterError, match="unreadable"):
        RaplMeter(tmp_path)


def test_rapl_without_package_zones(tmp_path: Path) -> None:
    (tmp_path / "intel-rapl:0").mkdir()
    (tmp_path / "intel-rapl:0" / "name").write_text("psys\n")
    with pytest.raises(MeterError, match="no RAPL package or DRAM zone"):
        RaplMeter(tmp_path)


# NVML device selection ----------------------------------------------------------------------


def test_visible_gpus_follows_cuda_rules() -> None:
    gpus = [GpuDevice(0, "GPU-0aaa"), GpuDevice(1, "GPU-1bbb"), GpuDevice(2, "GPU-2ccc")]
    assert visible_gpus(gpus, None) == gpus
    assert visible_gpus(gpus, "") == []
    assert visible_gpus(gpus, "-1") == []
    assert [d.index for d in visible_gpus(gpus, "2,0")] == [2, 0]
    assert [d.index for d in visible_gpus(gpus, "GPU-1b")] == [1]
    assert [d.index for d in visible_gpus(gpus, "0,7,1")] == [0]  # stops at the bad entry
    assert [d.index for d in visible_gpus(gpus, "1,1")] == [1]


def test_nvml_on_a_machine_without_gpu_is_unavailable() -> None:
    try:
        NvmlApi()
    except MeterError as error:
        assert "NVML" in str(error) or "nvidia-ml-py" in str(error)
    else:
        pytest.skip("this machine has a working NVML")


# The monitor --------------------------------------------------------------------------------


def test_gpu_counter_and_rapl_for_one_job(tmp_path: Path) -> None:
    tree, gpus = FakePowercap(tmp_path), FakeGpus()
    monitor = EnergyMonitor(rapl=lambda: RaplMeter(tmp_path), gpu=lambda: gpus,
                            cpu_seconds=lambda pid: 0.0)
    monitor.start(1, pid=4242, env={"CUDA_VISIBLE_DEVICES": "1"}, now=T0)
    gpus.energy[1] += 600_000  # 600 J on the job's GPU
    gpus.energy[0] += 999_000  # a GPU the job cannot see
    tree.add("intel-rapl:0", 40_000_000)
    monitor.sample(T0 + timedelta(seconds=5))
    gpus.energy[1] += 400_000
    tree.add("intel-rapl:1", 20_000_000)
    result = monitor.stop(1, T0 + timedelta(seconds=10), 300.0, T0, T0 + timedelta(seconds=10))
    assert result.method == "nvml+rapl"
    assert result.energy_kwh == pytest.approx((1000.0 + 60.0) / JOULES_PER_KWH)
    assert "NVML GPU 1 (energy counter)" in result.note
    assert "split" not in result.note


def test_gpu_without_counter_integrates_power_samples(tmp_path: Path) -> None:
    gpus = FakeGpus(count=1, counter=False)
    monitor = EnergyMonitor(rapl=lambda: (_ for _ in ()).throw(no_meter("RAPL")),
                            gpu=lambda: gpus)
    gpus.power[0] = 100_000
    monitor.start(1, pid=4242, env={}, now=T0)
    gpus.power[0] = 300_000
    monitor.sample(T0 + timedelta(seconds=10))  # trapezoid: (100 + 300) / 2 * 10 = 2000 J
    gpus.power[0] = 300_000
    result = monitor.stop(1, T0 + timedelta(seconds=20), 50.0, T0, T0 + timedelta(seconds=20))
    assert result.method == "nvml"
    assert result.energy_kwh == pytest.approx((2000.0 + 3000.0) / JOULES_PER_KWH)
    assert "integrated power samples" in result.note
    assert "rapl not measured: RAPL not on this test machine" in result.note


def test_overlapping_jobs_split_host_energy_by_cpu_time(tmp_path: Path) -> None:
    tree = FakePowercap(tmp_path)
    cpu = {101: 0.0, 202: 0.0}
    monitor = EnergyMonitor(rapl=lambda: RaplMeter(tmp_path), gpu=None,
                            cpu_seconds=lambda pid: cpu[pid])
    monitor.start(1, pid=101, env={}, now=T0)
    tree.add("intel-rapl:0", 10_000_000)  # 10 J while job 1 runs alone
    cpu[101] = 1.0
    monitor.start(2, pid=202, env={}, now=T0 + timedelta(seconds=10))
    tree.add("intel-rapl:0", 40_000_000)  # 40 J shared: job 1 used 3 s of CPU, job 2 1 s
    cpu[101], cpu[202] = 4.0, 1.0
    first = monitor.stop(1, T0 + timedelta(seconds=20), 100.0, T0, T0 + timedelta(seconds=20))
    tree.add("intel-rapl:0", 8_000_000)  # job 2 alone again
    second = monitor.stop(2, T0 + timedelta(seconds=30), 100.0, T0, T0 + timedelta(seconds=30))
    assert first.energy_kwh == pytest.approx((10.0 + 30.0) / JOULES_PER_KWH)
    assert second.energy_kwh == pytest.approx((10.0 + 8.0) / JOULES_PER_KWH)
    for result in (first, second):
        assert result.method == "rapl"
        assert "split by CPU-time share" in result.note


def test_jobs_sharing_a_gpu_split_it_evenly() -> None:
    gpus = FakeGpus(count=1)
    monitor = EnergyMonitor(rapl=None, gpu=lambda: gpus)
    monitor.start(1, pid=1, env={}, now=T0)
    monitor.start(2, pid=2, env={}, now=T0)
    gpus.energy[0] += 800_000
    first = monitor.stop(1, T0 + timedelta(seconds=8), 100.0, T0, T0 + timedelta(seconds=8))
    second = monitor.stop(2, T0 + timedelta(seconds=8), 100.0, T0, T0 + timedelta(seconds=8))
    assert first.energy_kwh == second.energy_kwh == pytest.approx(400.0 / JOULES_PER_KWH)
    assert "split evenly" in first.note


def test_no_meter_falls_back_to_declared_power(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gridshift.energy")

    def missing() -> RaplMeter:
        raise no_meter("RAPL")

    monitor = EnergyMonitor(rapl=missing, gpu=NvmlApi)
    for job_id in (1, 2):
        monitor.start(job_id, pid=1, env={}, now=T0)
        result = monitor.stop(job_id, T0 + timedelta(minutes=30), 250.0, T0,
                              T0 + timedelta(minutes=30))
        assert result.method == "declared"
        assert result.energy_kwh == pytest.approx(0.125)  # 250 W x 0.5 h
        assert "RAPL not on this test machine" in result.note
    assert sum("energy meter rapl off" in r.getMessage() for r in caplog.records) == 1


def test_failing_meter_never_raises_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tree, gpus = FakePowercap(tmp_path), FakeGpus(count=1)
    monitor = EnergyMonitor(rapl=lambda: RaplMeter(tmp_path), gpu=lambda: gpus,
                            cpu_seconds=lambda pid: 0.0)
    monitor.start(1, pid=1, env={}, now=T0)
    gpus.fail = MeterError("GPU fell off the bus")
    tree.add("intel-rapl:0", 7_000_000)
    monitor.sample(T0 + timedelta(seconds=5))
    monitor.sample(T0 + timedelta(seconds=6))
    result = monitor.stop(1, T0 + timedelta(seconds=10), 100.0, T0, T0 + timedelta(seconds=10))
    assert result.method == "rapl"  # the GPU part is incomplete, so it is left out
    assert result.energy_kwh == pytest.approx(7.0 / JOULES_PER_KWH)
    assert "nvml failed during the run: GPU fell off the bus" in result.note
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1

    # An unexpected error (a bug, a driver crash) switches everything off, still no raise.
    (tmp_path / "intel-rapl:0" / "energy_uj").unlink()
    monitor.start(2, pid=1, env={}, now=T0 + timedelta(seconds=20))
    result = monitor.stop(2, T0 + timedelta(seconds=30), 100.0, T0 + timedelta(seconds=20),
                          T0 + timedelta(seconds=30))
    assert result.method == "declared"


def test_unexpected_exception_in_a_meter_is_contained() -> None:
    gpus = FakeGpus(count=1)
    monitor = EnergyMonitor(rapl=None, gpu=lambda: gpus)
    monitor.start(1, pid=1, env={}, now=T0)
    gpus.fail = RuntimeError("driver bug")  # not a MeterError
    monitor.sample(T0 + timedelta(seconds=1))
    result = monitor.stop(1, T0 + timedelta(seconds=2), 100.0, T0, T0 + timedelta(seconds=2))
    assert result.method == "declared"
    assert result.energy_kwh == pytest.approx(200.0 / JOULES_PER_KWH)


def test_restarted_daemon_and_remote_jobs_get_declared_power() -> None:
    monitor = EnergyMonitor(rapl=None, gpu=lambda: FakeGpus())
    readopted = monitor.stop(9, T0 + timedelta(hours=1), 100.0, T0, T0 + timedelta(hours=1))
    assert readopted.method == "declared" and readopted.energy_kwh == pytest.approx(0.1)
    assert "restarted" in readopted.note
    monitor.start(3, pid=1, env={}, now=T0, remote="runs through region x's launcher 'ssh'")
    remote = monitor.stop(3, T0 + timedelta(hours=2), 100.0, T0, T0 + timedelta(hours=2))
    assert remote.method == "declared" and remote.energy_kwh == pytest.approx(0.2)
    assert "launcher 'ssh'" in remote.note
    lost = monitor.stop(4, T0, 100.0, T0, None)
    assert lost.energy_kwh is None and "end time is unknown" in lost.note


def test_tree_cpu_seconds_counts_waited_children() -> None:
    burn = "x = 0\nfor i in range(4_000_000): x += i"
    parent = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        f"subprocess.run([sys.executable, '-c', {burn!r}])\n"
        "time.sleep(30)\n")])
    try:
        used = 0.0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # until the child has run and been waited for
            used = tree_cpu_seconds(parent.pid) or 0.0
            if used > 0.15 and not psutil_children(parent.pid):
                break
            time.sleep(0.05)
        assert used > 0.15  # the child's loop, counted through its parent after it exited
    finally:
        parent.kill()
        parent.wait()
    assert tree_cpu_seconds(parent.pid) is None


def psutil_children(pid: int) -> list[object]:
    import psutil

    return list(psutil.Process(pid).children(recursive=True))


class BrokenGpus(FakeGpus):
    def devices(self) -> list[GpuDevice]:
        raise RuntimeError("driver crashed")


def test_daemon_runs_jobs_despite_a_broken_meter_and_after_a_restart(
    csv_workspace: Callable[..., Workspace],
) -> None:
    """Through Daemon.run_once with real processes: a meter that crashes changes nothing for
    the job, and a job reaped by a restarted daemon gets declared energy, saying why."""
    hour = floor_hour(utc_now())
    workspace = csv_workspace({"north": hourly(hour - timedelta(hours=1), [50, 50, 50, 400])},
                              slots=2)
    ids = []
    for pause in ("0.2", "1.5"):
        submitted = workspace.cli("submit", "--duration", "1m", "--within", "2h", "--power",
                                  "100", "--json", "--", sys.executable, "-c",
                                  f"import time; time.sleep({pause})")
        assert submitted.returncode == 0, submitted.stderr
        ids.append(submitted.json()["id"])
    store, config = workspace.store(), workspace.config()
    first = Daemon(config, store, energy=EnergyMonitor(rapl=None, gpu=BrokenGpus))
    first.run_once(utc_now())
    quick, slow = (store.get_job(i) for i in ids)
    assert quick.state == slow.state == JobState.RUNNING

    def wait_for_end(daemon: Daemon, job_id: int) -> Job:
        deadline = time.monotonic() + 30
        while store.get_job(job_id).state == JobState.RUNNING:
            assert time.monotonic() < deadline
            time.sleep(0.05)
            daemon.tick(utc_now())
        return store.get_job(job_id)

    quick = wait_for_end(first, ids[0])
    assert quick.state == JobState.SUCCEEDED
    assert quick.energy_method == "declared" and "driver crashed" in (quick.energy_note or "")
    assert quick.started_at is not None and quick.ended_at is not None
    assert quick.energy_kwh == pytest.approx(
        100 * (quick.ended_at - quick.started_at).total_seconds() / JOULES_PER_KWH)

    restarted = Daemon(config, store, energy=EnergyMonitor(rapl=None, gpu=lambda: FakeGpus()))
    slow = wait_for_end(restarted, ids[1])
    assert slow.state == JobState.SUCCEEDED
    assert slow.energy_method == "declared" and "restarted" in (slow.energy_note or "")
    for process in first.local.children.values():  # a real restart would not hold these handles
        process.wait()
