"""Measure each job's energy: NVIDIA GPUs through NVML, CPU package and DRAM through RAPL.

The daemon owns one ``EnergyMonitor``: ``start`` when a job launches, ``sample`` every tick,
``stop`` when the job is reaped. Each call closes the interval since the previous one and
hands that interval's energy to the jobs running in it:

- RAPL (``/sys/class/powercap``) counts the whole host. One job alone gets all of it;
  overlapping jobs split it by the CPU time their process trees used in the interval.
- A GPU counts everything on it. Its energy goes to the jobs that can see it
  (``CUDA_VISIBLE_DEVICES``, default all), split evenly when several can. Where the
  total-energy counter is unsupported, the power samples taken at each call are
  integrated (trapezoids).
- Nothing measured (no meter, a meter failed, a job started by a daemon that has since
  restarted, a job launched on another machine): declared power x wall time.

Measurement never touches the job's processes except to read their CPU times, and never
raises: a meter that fails is switched off, logged once, and the affected jobs fall back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import psutil

from scheduler.units import JOULES_PER_KWH

log = logging.getLogger("gridshift.energy")

DEFAULT_POWERCAP_ROOT = Path("/sys/class/powercap")

METHOD_NVML = "nvml"
METHOD_RAPL = "rapl"
METHOD_BOTH = "nvml+rapl"
METHOD_DECLARED = "declared"


class MeterError(Exception):
    """A meter cannot be read (missing, unreadable, or failing)."""


@dataclass(frozen=True)
class Measurement:
    """A job's energy and how it was obtained (stored as energy_kwh/method/note)."""

    energy_kwh: float | None
    method: str
    note: str


def declared_energy(power_watts: float, started_at: datetime | None, ended_at: datetime | None,
                    reason: str) -> Measurement:
    """Declared power x wall time; energy unknown when the run interval is unknown."""
    if started_at is None or ended_at is None:
        return Measurement(None, METHOD_DECLARED, f"{reason}; the run's end time is unknown")
    seconds = max((ended_at - started_at).total_seconds(), 0.0)
    return Measurement(power_watts * seconds / JOULES_PER_KWH, METHOD_DECLARED,
                       f"declared {power_watts:g} W x {seconds:.0f} s wall time ({reason})")


# RAPL ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RaplDomain:
    """One powercap zone counted for the host: a CPU package or DRAM."""

    path: Path
    name: str
    max_energy_range_uj: int


def _read_int(path: Path) -> int:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except PermissionError:
        raise MeterError(f"{path}: permission denied (since Linux 5.10 only root may read "
                         f"RAPL counters)") from None
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise MeterError(f"{path}: unreadable: {error}") from None


def find_rapl_domains(root: Path) -> list[RaplDomain]:
    """Package and DRAM zones under ``root``; raise MeterError when there is none readable.

    Core/uncore sit inside a package and ``psys`` covers the platform (package included),
    and ``intel-rapl-mmio`` repeats the package: counting only package and DRAM zones
    avoids counting the same energy twice.
    """
    if not root.is_dir():
        raise MeterError(f"no RAPL powercap tree at {root}")
    domains = []
    for zone in sorted(root.glob("intel-rapl:*")):
        try:
            name = (zone / "name").read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            continue  # not a zone (or a vanished one)
        if not (name.startswith("package") or name == "dram"):
            continue
        _read_int(zone / "energy_uj")  # readable now, or say why not
        domains.append(RaplDomain(zone, name, _read_int(zone / "max_energy_range_uj")))
    if not domains:
        raise MeterError(f"no RAPL package or DRAM zone under {root}")
    return domains


def counter_delta(before: int, after: int, max_range: int) -> int:
    """Energy between two readings of a counter that wraps to zero past ``max_range``."""
    if after >= before:
        return after - before
    return max_range - before + after


class RaplMeter:
    """The host's CPU package + DRAM energy counters, in joules since the previous read."""

    def __init__(self, root: Path = DEFAULT_POWERCAP_ROOT) -> None:
        self.domains = find_rapl_domains(root)
        self._last = self._read()

    def _read(self) -> list[int]:
        return [_read_int(d.path / "energy_uj") for d in self.domains]

    def joules_since_last(self) -> float:
        current = self._read()
        total_uj = sum(counter_delta(before, after, d.max_energy_range_uj)
                       for before, after, d in zip(self._last, current, self.domains,
                                                   strict=True))
        self._last = current
        return total_uj / 1e6


# NVML ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuDevice:
    index: int
    uuid: str


class GpuApi(Protocol):
    """The few NVML calls gridshift needs. ``NvmlApi`` is the real one; tests use a fake.

    Every method raises MeterError when the device cannot be read.
    """

    def devices(self) -> list[GpuDevice]:
        """Every GPU on this machine, in NVML order."""

    def energy_mj(self, index: int) -> int | None:
        """The total-energy counter in millijoules; None when the GPU does not support it."""

    def power_mw(self, index: int) -> int:
        """The current power draw in milliwatts."""


class NvmlApi:
    """``GpuApi`` over nvidia-ml-py (the ``gpu`` extra), imported only when first used."""

    def __init__(self) -> None:
        try:
            import pynvml
        except ImportError:
            raise MeterError("nvidia-ml-py is not installed (pip install "
                             "'gridshift[gpu]')") from None
        self._nvml: Any = pynvml
        try:
            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._devices = [GpuDevice(i, _text(pynvml.nvmlDeviceGetUUID(h)))
                             for i, h in enumerate(self._handles)]
        except pynvml.NVMLError as error:
            raise MeterError(f"NVML: {error}") from None

    def devices(self) -> list[GpuDevice]:
        return list(self._devices)

    def energy_mj(self, index: int) -> int | None:
        try:
            return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handles[index]))
        except self._nvml.NVMLError_NotSupported:
            return None
        except self._nvml.NVMLError as error:
            raise MeterError(f"NVML GPU {index}: {error}") from None

    def power_mw(self, index: int) -> int:
        try:
            return int(self._nvml.nvmlDeviceGetPowerUsage(self._handles[index]))
        except self._nvml.NVMLError as error:
            raise MeterError(f"NVML GPU {index}: {error}") from None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def visible_gpus(devices: list[GpuDevice], cuda_visible_devices: str | None) -> list[GpuDevice]:
    """The GPUs a job with this ``CUDA_VISIBLE_DEVICES`` can use (CUDA's rules).

    Unset: all. Entries are indices or (unique prefixes of) UUIDs; like CUDA, the list
    stops at the first entry that names no device, so "" or "-1" hides every GPU.
    Indices are NVML's (PCI bus) order, which is CUDA's with CUDA_DEVICE_ORDER=PCI_BUS_ID.
    """
    if cuda_visible_devices is None:
        return list(devices)
    chosen: list[GpuDevice] = []
    for entry in (e.strip() for e in cuda_visible_devices.split(",")):
        if entry.isdigit():
            matches = [d for d in devices if d.index == int(entry)]
        elif entry.startswith("GPU-"):
            matches = [d for d in devices if d.uuid.startswith(entry)]
        else:
            matches = []
        if len(matches) != 1 or matches[0] in chosen:
            break
        chosen.append(matches[0])
    return chosen


# Process trees ------------------------------------------------------------------------------


def tree_cpu_seconds(root_pid: int) -> float | None:
    """CPU seconds used so far by a process tree; None when the root cannot be read.

    Summing each live process's own and waited-for children's times counts every process
    of the tree once: an exited child moves into its parent's children times when reaped.
    """
    try:
        root = psutil.Process(root_pid)
        processes = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


# The monitor --------------------------------------------------------------------------------


@dataclass
class _GpuState:
    device: GpuDevice
    last_energy_mj: int | None
    last_power_w: float


@dataclass
class _JobMeter:
    pid: int
    gpus: list[int]
    uses_rapl: bool
    cpu_seconds: float
    rapl_joules: float = 0.0
    gpu_joules: float = 0.0
    rapl_shared: bool = False
    gpu_shared: bool = False
    gpu_power_sampled: bool = False
    lost: list[str] = field(default_factory=list)  # meters that failed during the run
    unmeasured: str | None = None  # why no local meter can see this job


class EnergyMonitor:
    """Per-job energy from the meters this machine has; see the module docstring."""

    def __init__(
        self,
        rapl: Callable[[], RaplMeter] | None = None,
        gpu: Callable[[], GpuApi] | None = None,
        cpu_seconds: Callable[[int], float | None] = tree_cpu_seconds,
    ) -> None:
        """``rapl`` and ``gpu`` build a meter on first use (raising MeterError when there
        is none); None leaves that meter out."""
        self._rapl_factory = rapl
        self._gpu_factory = gpu
        self._cpu_seconds = cpu_seconds
        self._rapl: RaplMeter | None = None
        self._gpu: GpuApi | None = None
        self._gpu_states: dict[int, _GpuState] = {}
        self._unavailable: dict[str, str] = {}
        self._opened = False
        self._jobs: dict[int, _JobMeter] = {}
        self._last_at: datetime | None = None

    @classmethod
    def for_host(cls, powercap_root: Path = DEFAULT_POWERCAP_ROOT) -> EnergyMonitor:
        return cls(rapl=lambda: RaplMeter(powercap_root), gpu=NvmlApi)

    def start(self, job_id: int, pid: int, env: Mapping[str, str], now: datetime,
              remote: str | None = None) -> None:
        """Begin measuring a job launched as process tree ``pid``. ``remote`` says why the
        local meters cannot see the job (it runs elsewhere); it then gets declared power."""
        try:
            if remote is not None:
                self._jobs[job_id] = _JobMeter(pid, [], uses_rapl=False, cpu_seconds=0.0,
                                               unmeasured=remote)
                return
            self._open()
            self.sample(now)
            visible = visible_gpus([s.device for s in self._gpu_states.values()],
                                   env.get("CUDA_VISIBLE_DEVICES"))
            cpu = self._cpu_seconds(pid) if self._rapl is not None else None
            self._jobs[job_id] = _JobMeter(pid, [d.index for d in visible],
                                           uses_rapl=self._rapl is not None,
                                           cpu_seconds=cpu or 0.0)
        except Exception as error:  # measuring must never stop a job from running
            self._fault(error)
            self._jobs[job_id] = _JobMeter(pid, [], uses_rapl=False, cpu_seconds=0.0,
                                           unmeasured=f"the meters failed: {error!r}")

    def sample(self, now: datetime) -> None:
        """Close the interval since the last call and hand its energy to the running jobs."""
        try:
            previous, self._last_at = self._last_at, now
            if previous is None or not self._opened:
                return
            seconds = max((now - previous).total_seconds(), 0.0)
            if self._rapl is not None:
                self._share_rapl()
            for index in list(self._gpu_states):
                self._share_gpu(index, seconds)
        except Exception as error:
            self._fault(error)

    def stop(self, job_id: int, now: datetime, power_watts: float,
             started_at: datetime | None, ended_at: datetime | None) -> Measurement:
        """Finish measuring a job and return its energy: measured where a meter saw the
        whole run, else declared ``power_watts`` x wall time with the reason in the note."""
        self.sample(now)
        meter = self._jobs.pop(job_id, None)
        if meter is None:
            return declared_energy(power_watts, started_at, ended_at,
                                   "not measured: the daemon that launched it has restarted")
        if meter.unmeasured is not None:
            return declared_energy(power_watts, started_at, ended_at, meter.unmeasured)
        try:
            measured = self._measured(meter)
        except Exception as error:
            self._fault(error)
            measured = None
        if measured is None:
            return declared_energy(power_watts, started_at, ended_at, self._why_unmeasured())
        return measured

    def _measured(self, meter: _JobMeter) -> Measurement | None:
        methods, joules, notes = [], 0.0, []
        if meter.gpus and METHOD_NVML not in meter.lost:
            methods.append(METHOD_NVML)
            joules += meter.gpu_joules
            how = "integrated power samples" if meter.gpu_power_sampled else "energy counter"
            notes.append(f"NVML GPU {','.join(map(str, meter.gpus))} ({how})"
                         + (", split evenly with jobs sharing a GPU" if meter.gpu_shared else ""))
        elif self._gpu is not None and not meter.gpus:
            notes.append("no GPU visible to the job")
        if meter.uses_rapl and METHOD_RAPL not in meter.lost:
            methods.append(METHOD_RAPL)
            joules += meter.rapl_joules
            notes.append("RAPL CPU package+DRAM of the whole host"
                         + (", split by CPU-time share with jobs that overlapped it"
                            if meter.rapl_shared else ""))
        for name in (METHOD_NVML, METHOD_RAPL):
            if name not in methods and name in self._unavailable:
                what = "failed during the run" if name in meter.lost else "not measured"
                notes.append(f"{name} {what}: {self._unavailable[name]}")
        if not methods:
            return None
        return Measurement(joules / JOULES_PER_KWH, "+".join(methods), "; ".join(notes))

    def _why_unmeasured(self) -> str:
        reasons = [f"{name}: {why}" for name, why in self._unavailable.items()]
        return "no meter saw the job: " + ("; ".join(reasons) if reasons else "none configured")

    def _fault(self, error: Exception) -> None:
        """An unexpected error: switch every meter off (logged once) rather than risk jobs."""
        for meter in (METHOD_RAPL, METHOD_NVML):
            self._switch_off(meter, f"unexpected error: {error!r}")

    # Meters ----------------------------------------------------------------------------------

    def _open(self) -> None:
        """Build the meters once; a missing meter is logged once and left out."""
        if self._opened:
            return
        self._opened = True
        if self._rapl_factory is not None:
            try:
                self._rapl = self._rapl_factory()
            except MeterError as error:
                self._switch_off(METHOD_RAPL, str(error), logging.INFO)
        if self._gpu_factory is not None:
            try:
                self._gpu = self._gpu_factory()
                for device in self._gpu.devices():
                    self._gpu_states[device.index] = _GpuState(
                        device, self._gpu.energy_mj(device.index),
                        self._gpu.power_mw(device.index) / 1000.0)
            except MeterError as error:
                self._switch_off(METHOD_NVML, str(error), logging.INFO)

    def _switch_off(self, meter: str, reason: str, level: int = logging.WARNING) -> None:
        if meter not in self._unavailable:
            log.log(level, "energy meter %s off, jobs fall back to declared power: %s",
                    meter, reason)
        self._unavailable[meter] = reason
        if meter == METHOD_RAPL:
            self._rapl = None
        else:
            self._gpu, self._gpu_states = None, {}
        for job in self._jobs.values():
            if (meter == METHOD_RAPL and job.uses_rapl) or (meter == METHOD_NVML and job.gpus):
                job.lost.append(meter)

    def _share_rapl(self) -> None:
        assert self._rapl is not None
        try:
            joules = self._rapl.joules_since_last()
        except MeterError as error:
            self._switch_off(METHOD_RAPL, str(error))
            return
        users = {job_id: job for job_id, job in self._jobs.items() if job.uses_rapl}
        if not users:
            return
        used: dict[int, float] = {}
        for job_id, job in users.items():
            current = self._cpu_seconds(job.pid)
            if current is not None:
                used[job_id] = max(current - job.cpu_seconds, 0.0)
                job.cpu_seconds = current
        total = sum(used.values())
        for job_id, job in users.items():
            share = used.get(job_id, 0.0) / total if total > 0 else 1.0 / len(users)
            job.rapl_joules += joules * share
            job.rapl_shared = job.rapl_shared or len(users) > 1

    def _share_gpu(self, index: int, seconds: float) -> None:
        state = self._gpu_states.get(index)
        if self._gpu is None or state is None:
            return  # NVML was switched off earlier in this sample
        try:
            power_w = self._gpu.power_mw(index) / 1000.0
            energy = self._gpu.energy_mj(index) if state.last_energy_mj is not None else None
        except MeterError as error:
            self._switch_off(METHOD_NVML, str(error))
            return
        if energy is not None and state.last_energy_mj is not None:
            joules = max(energy - state.last_energy_mj, 0) / 1000.0
            sampled = False
        else:
            joules = (state.last_power_w + power_w) / 2.0 * seconds
            sampled = True
        state.last_energy_mj, state.last_power_w = energy, power_w
        users = [job for job in self._jobs.values() if index in job.gpus]
        for job in users:
            job.gpu_joules += joules / len(users)
            job.gpu_shared = job.gpu_shared or len(users) > 1
            job.gpu_power_sampled = job.gpu_power_sampled or sampled
