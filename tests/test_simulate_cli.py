"""``gridshift simulate`` through the real CLI as a subprocess, and the archive converters."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest

from scheduler.simulate.results import JSON_KEYS
from tests.conftest import CliResult, Workspace

FIXTURES = Path(__file__).parent / "fixtures" / "simulate"

Cli = Callable[..., CliResult]


@pytest.fixture
def workspace(make_workspace: Callable[..., Workspace]) -> Workspace:
    return make_workspace("")


def _actuals(folder: Path, **series: list[float]) -> Path:
    folder.mkdir(exist_ok=True)
    for name, values in series.items():
        lines = ["time,value"] + [f"2023-03-06T{h:02d}:00Z,{v}" for h, v in enumerate(values)]
        (folder / f"{name}.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def _jobs(path: Path, *rows: str) -> Path:
    path.write_text("id,submit_time,duration,deadline,regions,power_w\n" + "\n".join(rows)
                    + "\n", encoding="utf-8")
    return path


def test_demo_runs_offline_and_prints_the_fixed_json_keys(workspace: Workspace) -> None:
    result = workspace.cli("simulate", "--demo", "--json")
    assert result.returncode == 0, result.stderr
    document = result.json()
    assert list(document) == ["results"]
    rows = document["results"]
    assert all(list(row) == list(JSON_KEYS) for row in rows)
    assert {(r["policy"], r["region"]) for r in rows} == {
        (p, g) for p in ("now", "once", "gridshift", "oracle")
        for g in ("GB", "DE-LU", "US-CAL-CISO", "all")}
    for group in ("GB", "DE-LU", "US-CAL-CISO", "all"):
        by_policy = {r["policy"]: r for r in rows if r["region"] == group}
        assert by_policy["now"]["saving_pct"] == 0
        assert by_policy["oracle"]["oracle_share_pct"] == pytest.approx(100)
        assert by_policy["oracle"]["emissions_g"] <= min(
            r["emissions_g"] for r in by_policy.values()) + 1e-6
        assert by_policy["oracle"]["saving_pct"] > 0
        assert by_policy["gridshift"]["deadline_misses"] == 0


def test_demo_table_and_plot(workspace: Workspace, tmp_path: Path) -> None:
    plot = tmp_path / "savings.png"
    result = workspace.cli("simulate", "--demo", "--policy", "gridshift", "--policy", "oracle",
                           "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "Electricity Maps" in lines[0]
    assert sum(line.startswith("gridshift") for line in lines) == 4
    assert not any(line.startswith("once") for line in lines)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {plot}\n" in result.stderr  # as report says it of its files


def test_demo_shows_what_replanning_on_forecast_revisions_adds(workspace: Workspace) -> None:
    result = workspace.cli("simulate", "--demo", "--policy", "once", "--policy", "gridshift")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "revised hourly" in lines[0]
    rows = {tuple(line.split()[:2]): float(line.split()[4].replace(",", ""))
            for line in lines if line.startswith(("once", "gridshift"))}
    groups = ("GB", "DE-LU", "US-CAL-CISO", "all")
    # Every group's jobs emit differently when plans follow the revisions, and less overall.
    assert all(rows["once", g] != rows["gridshift", g] for g in groups)
    assert sum(rows["gridshift", g] for g in groups) < sum(rows["once", g] for g in groups)
    assert lines[-1].startswith("now: starts at submission; once: plans once at submission")
    assert "gridshift: re-plans on every forecast revision" in lines[-1]


def test_a_jobs_file_gives_hand_computed_emissions(workspace: Workspace, tmp_path: Path) -> None:
    actuals = _actuals(tmp_path / "actuals", GB=[100, 50, 10, 80], FR=[30, 30, 30, 30])
    jobs = _jobs(tmp_path / "jobs.csv",
                 "1,2023-03-06T00:00Z,1h,2023-03-06T04:00Z,GB,1000",
                 "2,2023-03-06T00:00Z,3600,2023-03-06T02:00Z,GB;FR,2000")
    result = workspace.cli("simulate", "--actuals", str(actuals), "--jobs", str(jobs), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # a quick run shows no progress bar
    rows = {(r["policy"], r["region"]): r for r in result.json()["results"]}
    # GB job: now 100 g, best 10 g (02:00). Two-region job: now 2 kW x 100 g in GB, best
    # 2 kW x 30 g in FR.
    assert rows[("now", "GB")]["emissions_g"] == pytest.approx(100)
    assert rows[("oracle", "GB")]["emissions_g"] == pytest.approx(10)
    assert rows[("gridshift", "GB")]["mean_delay_s"] == pytest.approx(7200)
    assert rows[("now", "all")]["emissions_g"] == pytest.approx(200)
    assert rows[("gridshift", "all")]["emissions_g"] == pytest.approx(60)
    assert rows[("gridshift", "all")]["saving_pct"] == pytest.approx(70)
    assert rows[("gridshift", "all")]["energy_kwh"] == pytest.approx(2)


def test_forecast_archive_through_the_cli(workspace: Workspace, tmp_path: Path) -> None:
    actuals = _actuals(tmp_path / "actuals", GB=[100, 90, 60, 20])
    forecasts = tmp_path / "forecasts.csv"
    forecasts.write_text(
        "issued_at,start,end,gco2_per_kwh,region\n"
        + "".join(f"2023-03-05T23:00Z,2023-03-06T0{h}:00Z,2023-03-06T0{h + 1}:00Z,{v},GB\n"
                  for h, v in enumerate([100, 90, 30, 70]))
        + "".join(f"2023-03-06T01:00Z,2023-03-06T0{h}:00Z,2023-03-06T0{h + 1}:00Z,{v},GB\n"
                  for h, v in zip((1, 2, 3), (90, 60, 20), strict=True)),
        encoding="utf-8")
    jobs = _jobs(tmp_path / "jobs.csv", "1,2023-03-06T00:10Z,1h,2023-03-06T04:00Z,GB,1000")
    result = workspace.cli("simulate", "--actuals", str(actuals), "--forecasts", str(forecasts),
                           "--jobs", str(jobs), "--json")
    assert result.returncode == 0, result.stderr
    emissions = {r["policy"]: r["emissions_g"] for r in result.json()["results"]}
    assert emissions == pytest.approx({"now": 100 * 50 / 60 + 90 * 10 / 60, "once": 60,
                                       "gridshift": 20, "oracle": 20})


@pytest.mark.parametrize(("args", "message"), [
    (["--actuals", "missing-folder", "--workload", "ml-workday"], "no such file or folder"),
    (["--actuals", "GB.csv", "--workload", "weekly"], "unknown workload 'weekly'"),
    (["--actuals", "GB.csv", "--workload", "nightly", "--policy", "later"],
     "unknown policy 'later'"),
    (["--actuals", "GB.csv", "--workload", "nightly", "--region", "FR"], "unknown region 'FR'"),
    (["--actuals", "bad.csv", "--workload", "nightly"], "unknown columns"),
    (["--actuals", "GB.csv", "--jobs", "outside.csv"], "do not cover"),
    (["--actuals", "GB.csv", "--jobs", "outside.csv", "--interruptible"],
     "--interruptible is for --workload jobs"),
    (["--actuals", "GB.csv", "--workload", "nightly", "--min-chunk", "1h"],
     "--min-chunk needs --interruptible"),
    (["--actuals", "GB.csv", "--workload", "nightly", "--interruptible", "--min-chunk", "soon"],
     "--min-chunk: "),
    (["--actuals", "GB.csv", "--workload", "nightly", "--compare-whole"],
     "--compare-whole needs interruptible jobs"),
])
def test_bad_input_is_one_line_and_exit_2(workspace: Workspace, args: list[str],
                                          message: str) -> None:
    _actuals(workspace.root / "data", GB=[100.0] * 24)
    (workspace.root / "GB.csv").write_text(
        (workspace.root / "data" / "GB.csv").read_text(encoding="utf-8"), encoding="utf-8")
    (workspace.root / "bad.csv").write_text("when,what\n1,2\n", encoding="utf-8")
    _jobs(workspace.root / "outside.csv", "1,2023-03-06T20:00Z,2h,2023-03-07T02:00Z,GB,100")
    result = workspace.cli("simulate", *args, "--plot", "out.png")
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    assert not (workspace.root / "out.png").exists()


def test_interruptible_jobs_file_under_every_policy_beside_the_same_jobs_whole(
        workspace: Workspace, tmp_path: Path) -> None:
    actuals = _actuals(tmp_path / "actuals", GB=[10, 100, 100, 10])
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("id,submit_time,duration,deadline,regions,power_w,interruptible,min_chunk\n"
                    "1,2023-03-06T00:00Z,2h,2023-03-06T04:00Z,GB,1000,checkpoint,1h\n",
                    encoding="utf-8")
    result = workspace.cli("simulate", "--actuals", str(actuals), "--jobs", str(jobs),
                           "--compare-whole", "--json")
    assert result.returncode == 0, result.stderr
    rows = result.json()["results"]
    assert [(r["policy"], r["kind"]) for r in rows] == [
        (p, k) for p in ("now", "once", "gridshift", "oracle")
        for k in ("whole", "interruptible")]
    by = {(r["policy"], r["kind"]): r for r in rows}
    # now runs both kinds 00:00-02:00 (110 g); whole at best 110 g; interruptible runs
    # 00:00-01:00 and 03:00-04:00 (20 g).
    for kind in ("whole", "interruptible"):
        assert by[("now", kind)]["emissions_g"] == pytest.approx(110)
        assert by[("now", kind)]["mean_runs"] == 1
    for policy in ("once", "gridshift", "oracle"):
        assert by[(policy, "whole")]["emissions_g"] == pytest.approx(110)
        assert by[(policy, "interruptible")]["emissions_g"] == pytest.approx(20)
        assert by[(policy, "interruptible")]["saving_pct"] == pytest.approx(100 * 90 / 110)
        assert by[(policy, "interruptible")]["mean_runs"] == 2
        assert by[(policy, "interruptible")]["energy_kwh"] == pytest.approx(2)
        assert by[(policy, "interruptible")]["deadline_misses"] == 0


def test_an_interruptible_workload_beside_the_same_workload_whole(workspace: Workspace) -> None:
    data = Path(__file__).resolve().parent.parent / "scheduler" / "data"
    result = workspace.cli("simulate", "--actuals", str(data), "--region", "GB",
                           "--workload", "ml-workday", "--count", "40", "--interruptible",
                           "--min-chunk", "1h", "--compare-whole", "--forecast-error", "0.05")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1].split()[:3] == ["policy", "region", "kind"]
    assert lines[1].split()[-1] == "runs"
    rows = [line.split() for line in lines[3:-1]]  # title, header, rule ... meanings
    assert [(r[0], r[2]) for r in rows] == [(p, k) for p in ("now", "once", "gridshift", "oracle")
                                            for k in ("whole", "interruptible")]
    saved = {(r[0], r[2]): float(r[7].rstrip("%")) for r in rows}
    assert saved[("oracle", "interruptible")] >= saved[("oracle", "whole")] > 0
    assert all(r[9] == "0" for r in rows)  # no deadline missed


# Converters on slices of the real archives --------------------------------------------


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_uk_fw48h_converter_on_the_real_archive(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "uk"
    result = workspace.cli("simulate", "convert", "uk-fw48h",
                           str(FIXTURES / "uk_fw48h_slice.csv"), str(out))
    assert result.returncode == 0, result.stderr
    assert "zero-lead" in result.stderr and "2 of 24 windows" in result.stderr
    actuals = {row["start"]: row for row in _read(out / "actuals" / "GB.csv")}
    assert len(actuals) == 24
    assert actuals["2023-03-17T00:00:00Z"]["gco2_per_kwh"] == "97.0"  # lead 0
    assert actuals["2023-03-17T00:30:00Z"]["gco2_per_kwh"] == "103.0"  # lead 0.5: no lead 0
    assert actuals["2023-03-17T00:00:00Z"]["end"] == "2023-03-17T00:30:00Z"
    vintages = _read(out / "forecasts.csv")
    # The 07:30 window's value at lead 0.5 h was captured at 07:01.
    cells = [r for r in vintages if r["start"] == "2023-03-17T07:30:00Z"
             and r["issued_at"] == "2023-03-17T07:01:00Z"]
    assert [c["gco2_per_kwh"] for c in cells] == ["140.0"]
    assert {r["region"] for r in vintages} == {"GB"}
    assert len(vintages) == sum(92 for _ in range(23)) + 93

    jobs = _jobs(tmp_path / "jobs.csv",
                 "1,2023-03-17T00:10Z,1h,2023-03-17T07:00Z,GB,1000",
                 "2,2023-03-16T21:05Z,2h,2023-03-17T08:00Z,GB,1000")
    simulated = workspace.cli("simulate", "--actuals", str(out / "actuals"), "--forecasts",
                              str(out / "forecasts.csv"), "--jobs", str(jobs), "--json")
    assert simulated.returncode == 0, simulated.stderr
    rows = {r["policy"]: r for r in simulated.json()["results"]}
    assert rows["oracle"]["emissions_g"] <= rows["gridshift"]["emissions_g"] + 1e-6
    assert rows["oracle"]["emissions_g"] < rows["now"]["emissions_g"]


def test_watttime_converter_on_the_real_archive(workspace: Workspace, tmp_path: Path) -> None:
    out = tmp_path / "wt"
    result = workspace.cli("simulate", "convert", "watttime",
                           str(FIXTURES / "watttime_actual_slice.csv"),
                           str(FIXTURES / "watttime_forecast_slice.csv"), str(out))
    assert result.returncode == 0, result.stderr
    assert "marginal" in result.stderr
    actuals = _read(out / "actuals" / "CAISO_NORTH.csv")
    assert len(actuals) == 36
    assert actuals[0] == {"start": "2023-06-08T00:00:00Z", "end": "2023-06-08T00:05:00Z",
                          "gco2_per_kwh": "425.01605069"}
    assert actuals[-1]["end"] == "2023-06-08T03:00:00Z"
    vintages = _read(out / "forecasts.csv")
    assert len(vintages) == 169
    assert vintages[0] == {"issued_at": "2023-06-08T00:00:00Z",
                           "start": "2023-06-08T00:05:00Z", "end": "2023-06-08T00:10:00Z",
                           "gco2_per_kwh": "412.406182804", "region": "CAISO_NORTH"}


def test_converter_rejects_a_file_of_the_wrong_shape(workspace: Workspace) -> None:
    result = workspace.cli("simulate", "convert", "uk-fw48h",
                           str(FIXTURES / "watttime_actual_slice.csv"), "out")
    assert result.returncode == 2
    assert "not a fw48h summary" in result.stderr
    assert not (workspace.root / "out").exists()
