"""``certify suite``: instance lists, the results file, resume, and surviving dead workers.

The instances are built here: a tiny ReLU net exported with torch, a property that holds
(``Y_0 >= 1000`` is unreachable on a small box) and one that is violated everywhere
(``Y_0 >= -1000``).  Runs that must last use ``engine="fuzz"`` on the holding property: the
falsifier never proves, so it works until its timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from certify.cli import main
from certify.errors import UsageError
from certify.suite import (
    KILLED_REASON,
    ResultsStore,
    SuiteEvent,
    SuiteOptions,
    read_instances,
    run_suite,
    vnncomp_result,
    write_vnncomp_csv,
)
from tests import zoo

HOLDS = """(declare-const X_0 Real)
(declare-const X_1 Real)
(declare-const Y_0 Real)
(declare-const Y_1 Real)
(assert (>= X_0 -0.1))
(assert (<= X_0 0.1))
(assert (>= X_1 -0.1))
(assert (<= X_1 0.1))
(assert (>= Y_0 1000))
"""
VIOLATED = HOLDS.replace("(>= Y_0 1000)", "(>= Y_0 -1000)")


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("bench")
    zoo.export(zoo.dense(0, [2, 8, 2]), (2,), folder / "net.onnx")
    (folder / "holds.vnnlib").write_text(HOLDS)
    (folder / "violated.vnnlib").write_text(VIOLATED)
    (folder / "broken.onnx").write_bytes((folder / "net.onnx").read_bytes()[:40])  # truncated
    return folder


def write_list(folder: Path, rows: list[str], name: str = "list.csv") -> Path:
    path = folder / name
    path.write_text("".join(r + "\n" for r in rows))
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def keys(records: list[dict]) -> list[tuple[str, str, int]]:
    return [(r["onnx"], r["vnnlib"], r["occurrence"]) for r in records]


# ----------------------------------------------------------------------------- no workers


def test_instance_list_header_duplicates_and_relative_paths(bench: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(bench, tmp_path / "data")
    (tmp_path / "lists").mkdir()
    csv = write_list(tmp_path / "lists", ["onnx,vnnlib,timeout", "", "# a comment",
                                          "../data/net.onnx,../data/holds.vnnlib,10",
                                          f"{bench}/net.onnx,{bench}/violated.vnnlib,2.5",
                                          "../data/net.onnx,../data/holds.vnnlib,10"])
    entries = read_instances(csv)
    assert [e.line for e in entries] == [4, 5, 6]
    assert [e.occurrence for e in entries] == [0, 0, 1]
    assert entries[0].key != entries[2].key and entries[0].onnx == "../data/net.onnx"
    assert entries[1].timeout == 2.5
    assert all(e.onnx_path.is_file() and e.vnnlib_path.is_file() for e in entries)


@pytest.mark.parametrize("rows, message", [
    (["net.onnx,holds.vnnlib,10", "net.onnx,holds.vnnlib"], ":2: expected 'onnx,vnnlib,timeout'"),
    (["net.onnx,holds.vnnlib,10", "net.onnx,holds.vnnlib,soon"], ":2: timeout 'soon' is not a number"),
    (["net.onnx,holds.vnnlib,-1"], ":1: timeout must be a positive number"),
    (["missing.onnx,holds.vnnlib,10"], ":1: onnx file"),
    ([], "no instances"),
])
def test_bad_instance_lists_name_the_line(bench: Path, rows: list[str], message: str) -> None:
    csv = write_list(bench, rows, "bad.csv")
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        read_instances(csv)


def test_cli_bad_input_exits_2(bench: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", str(tmp_path / "nope.csv")]) == 2
    assert "no such instance list" in capsys.readouterr().err
    csv = write_list(bench, ["net.onnx,holds.vnnlib,10", "net.onnx"], "bad_cli.csv")
    assert main(["suite", str(csv), "--results", str(tmp_path / "r.jsonl")]) == 2
    assert "bad_cli.csv:2:" in capsys.readouterr().err


def _record(onnx: str, occurrence: int = 0) -> dict:
    return {"onnx": onnx, "vnnlib": "p.vnnlib", "occurrence": occurrence, "timeout": 1.0, "status": "holds",
            "seconds": 0.5, "engine": "crown", "reason": "", "counterexample": None}


def test_results_store_cuts_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    good = [json.dumps(_record("a.onnx")), json.dumps(_record("b.onnx"))]
    path.write_text("\n".join(good) + "\n" + '{"onnx": "c.onnx", "vnnl')
    with pytest.raises(UsageError, match="--resume"):
        ResultsStore.open(path)
    with ResultsStore.open(path, resume=True) as store:
        assert sorted(k[0] for k in store.records) == ["a.onnx", "b.onnx"]
        store.append(_record("c.onnx"))
    assert [r["onnx"] for r in read_lines(path)] == ["a.onnx", "b.onnx", "c.onnx"]
    # a complete record that lost only its newline is kept
    path.write_text(json.dumps(_record("a.onnx")) + "\n" + json.dumps(_record("b.onnx")))
    with ResultsStore.open(path, resume=True) as store:
        store.append(_record("c.onnx"))
    assert [r["onnx"] for r in read_lines(path)] == ["a.onnx", "b.onnx", "c.onnx"]
    # damage before the last line is not a torn write: refuse rather than guess
    path.write_text(good[0] + "\n{garbage\n" + good[1] + "\n")
    with pytest.raises(UsageError, match=r"r.jsonl:2:"):
        ResultsStore.open(path, resume=True)
    with ResultsStore.open(path, overwrite=True) as store:
        assert store.records == {}
    assert path.read_text() == ""


def test_vnncomp_words() -> None:
    base = _record("a.onnx")
    assert vnncomp_result(base) == "holds"
    assert vnncomp_result({**base, "status": "violated"}) == "violated"
    assert vnncomp_result({**base, "status": "unknown", "reason": "bab: timeout"}) == "timeout"
    assert vnncomp_result({**base, "status": "unknown", "reason": KILLED_REASON}) == "timeout"
    assert vnncomp_result({**base, "status": "unknown", "reason": "crown: inconclusive"}) == "unknown"
    assert vnncomp_result({**base, "status": "error", "reason": "bad onnx"}) == "error"


# ----------------------------------------------------------------------------- with workers


def test_suite_records_every_instance_and_resume_repeats_none(bench: Path, tmp_path: Path) -> None:
    preset = tmp_path / "quick.yaml"
    preset.write_text("name: quick\nstages:\n  - engine: fuzz\n    share: 0.3\n  - engine: crown\n")
    csv = write_list(bench, ["net.onnx,violated.vnnlib,5", "net.onnx,holds.vnnlib,5",
                             "net.onnx,holds.vnnlib,5", "broken.onnx,holds.vnnlib,5"], "records.csv")
    entries = read_instances(csv)
    results = tmp_path / "r.jsonl"
    events: list[SuiteEvent] = []
    with ResultsStore.open(results) as store:
        report = run_suite(entries, store, SuiteOptions(solver=str(preset), device="cpu"), events.append)
    lines = read_lines(results)
    assert sorted(keys(lines)) == sorted(e.key for e in entries)
    by_key = {(r["onnx"], r["vnnlib"], r["occurrence"]): r for r in lines}
    viol, h0, h1, broken = (by_key[e.key] for e in entries)
    assert viol["status"] == "violated" and viol["counterexample"]["replayed"]
    assert len(viol["counterexample"]["x"]) == 2 and len(viol["counterexample"]["y"]) == 2
    assert h0["status"] == h1["status"] == "holds" and h0["counterexample"] is None
    assert broken["status"] == "error" and "broken.onnx" in broken["reason"]
    for r in lines:
        assert {"onnx", "vnnlib", "timeout", "status", "seconds", "engine", "reason", "counterexample"} <= set(r)
        assert r["timeout"] == 5.0 and r["seconds"] >= 0
    s = report.summary
    assert (s.holds, s.violated, s.unknown, s.error, s.ran) == (2, 1, 0, 1, 4)
    assert [ev.tally.done for ev in events if ev.kind == "done"] == [1, 2, 3, 4]

    vnn = tmp_path / "vnn.csv"
    write_vnncomp_csv(report.records, vnn)
    rows = [line.split(",") for line in vnn.read_text().splitlines()]
    assert [r[2] for r in rows] == ["violated", "holds", "holds", "error"]

    before = results.read_text()
    with ResultsStore.open(results, resume=True) as store:
        again = run_suite(entries, store, SuiteOptions(solver=str(preset), device="cpu"))
    assert results.read_text() == before
    assert again.summary.ran == 0 and again.records == report.records


def test_dead_and_stuck_workers_cost_only_their_instance(bench: Path, tmp_path: Path) -> None:
    csv = write_list(bench, ["net.onnx,violated.vnnlib,30", "net.onnx,holds.vnnlib,120",
                             "net.onnx,holds.vnnlib,1", "net.onnx,violated.vnnlib,30"], "crash.csv")
    entries = read_instances(csv)
    crash, stuck = entries[1].key, entries[2].key
    pids: dict[tuple[str, str, int], int] = {}

    def sabotage(event: SuiteEvent) -> None:
        if event.kind == "start" and event.entry is not None and event.pid is not None:
            pids[event.entry.key] = event.pid
            if event.entry.key == crash:
                os.kill(event.pid, signal.SIGKILL)  # a crash: as the OOM killer would
            elif event.entry.key == stuck:
                os.kill(event.pid, signal.SIGSTOP)  # a hang: the wall-clock guard must end it

    results = tmp_path / "r.jsonl"
    with ResultsStore.open(results) as store:
        report = run_suite(entries, store, SuiteOptions(engine="fuzz", device="cpu", grace=1.0), sabotage)
    by_key = {(r["onnx"], r["vnnlib"], r["occurrence"]): r for r in read_lines(results)}
    assert len(by_key) == 4
    assert by_key[crash]["status"] == "error" and "SIGKILL" in by_key[crash]["reason"]
    assert by_key[stuck]["status"] == "unknown" and by_key[stuck]["reason"] == KILLED_REASON
    assert by_key[stuck]["seconds"] < 10
    assert by_key[entries[0].key]["status"] == by_key[entries[3].key]["status"] == "violated"
    assert len(set(pids.values())) == 3  # a fresh worker after each kill
    assert report.summary.error == 1 and report.summary.unknown == 1


def _wait_for(predicate, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_sigkilled_suite_resumes_without_losing_or_repeating(bench: Path, tmp_path: Path) -> None:
    rows = ["net.onnx,violated.vnnlib,30"] * 3 + ["net.onnx,holds.vnnlib,120"] * 3 + ["net.onnx,violated.vnnlib,30"] * 2
    csv = write_list(bench, rows, "killme.csv")
    results = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "certify.cli", "suite", str(csv), "--results", str(results), "--engine", "fuzz",
           "--device", "cpu", "--no-progress"]
    # the package is importable from this checkout whether or not it is pip-installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, cwd=tmp_path, start_new_session=True, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        written = lambda: proc.poll() is not None or (  # noqa: E731
            results.exists() and results.read_text().count("\n") >= 3)
        assert _wait_for(written, 180), "no results"
        assert proc.poll() is None, proc.stderr.read().decode()  # still running, 3 results written
        time.sleep(0.5)  # now busy with a 120 s instance
        os.kill(proc.pid, signal.SIGKILL)  # the parent only: its worker must notice and go
        proc.wait(timeout=30)
        finished = results.read_text().splitlines()
        worker = json.loads(finished[0])["worker"]
        assert _wait_for(lambda: _gone(worker), 15), "orphaned worker kept running"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.stderr.close()
    assert len(finished) == 3
    with open(results, "a") as fh:  # as if killed in the middle of writing a fourth record
        fh.write('{"onnx": "net.onnx", "vnnlib": "holds.vn')
    done = subprocess.run(cmd + ["--resume", "--timeout", "1"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    lines = results.read_text().splitlines()
    assert lines[:3] == finished  # finished results untouched
    records = [json.loads(line) for line in lines]
    assert sorted(keys(records)) == sorted(e.key for e in read_instances(csv))  # each once, none lost
    for r in records[3:]:  # fuzz never proves: the property that holds stays unknown; the other is found
        assert r["status"] == ("violated" if r["vnnlib"] == "violated.vnnlib" else "unknown"), r
    assert sorted(r["vnnlib"] for r in records[3:]) == ["holds.vnnlib"] * 3 + ["violated.vnnlib"] * 2
    assert "total           8" in done.stdout  # the final table counts resumed results too


def test_fuzz_first_records_violations_before_proving(bench: Path, tmp_path: Path) -> None:
    csv = write_list(bench, ["net.onnx,violated.vnnlib,20", "net.onnx,holds.vnnlib,20",
                             "net.onnx,violated.vnnlib,20"], "fuzzfirst.csv")
    entries = read_instances(csv)
    with ResultsStore.open(tmp_path / "r.jsonl") as store:
        report = run_suite(entries, store, SuiteOptions(engine="crown", device="cpu", fuzz_first=2.0))
    statuses = [(r["status"], r["engine"]) for r in report.records]
    assert statuses == [("violated", "fuzz"), ("holds", "crown"), ("violated", "fuzz")]
    assert all(r["counterexample"]["replayed"] for r in report.records if r["status"] == "violated")


# ----------------------------------------------------------------------------- VNN-COMP's gzipped layout


def test_gzipped_files_are_read_beside_their_names(bench: Path, tmp_path: Path) -> None:
    """Rows name ``onnx/X.onnx`` while only ``onnx/X.onnx.gz`` exists (the competition's layout):
    the .gz is read in memory, nothing is unpacked, and the records carry load, wall and error
    details."""
    import gzip

    from onnx import helper

    comp = tmp_path / "comp"
    for sub in ("onnx", "vnnlib"):
        (comp / sub).mkdir(parents=True)
    (comp / "onnx" / "net.onnx.gz").write_bytes(gzip.compress((bench / "net.onnx").read_bytes()))
    odd = zoo.onnx_helper_model([helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
                                {"x": [1, 2]}, {"y": [1, 2]})
    (comp / "onnx" / "odd.onnx.gz").write_bytes(gzip.compress(odd.SerializeToString()))
    for name in ("holds", "violated"):
        (comp / "vnnlib" / f"{name}.vnnlib.gz").write_bytes(gzip.compress((bench / f"{name}.vnnlib").read_bytes()))
    csv = write_list(comp, ["onnx/net.onnx,vnnlib/violated.vnnlib,10", "onnx/net.onnx.gz,vnnlib/holds.vnnlib.gz,10",
                            "onnx/odd.onnx,vnnlib/holds.vnnlib,10"], "instances.csv")
    entries = read_instances(csv)
    assert entries[0].onnx == "onnx/net.onnx"  # results stay keyed by the CSV's names
    assert entries[0].onnx_path == comp / "onnx" / "net.onnx.gz"
    assert entries[0].vnnlib_path == comp / "vnnlib" / "violated.vnnlib.gz"
    before = sorted(comp.rglob("*"))
    preset = tmp_path / "quick.yaml"
    preset.write_text("name: quick\nstages:\n  - engine: fuzz\n    share: 0.3\n  - engine: crown\n")
    with ResultsStore.open(tmp_path / "r.jsonl") as store:
        report = run_suite(entries, store, SuiteOptions(solver=str(preset), device="cpu"))
    assert sorted(comp.rglob("*")) == before
    viol, holds, odd_rec = report.records
    assert (viol["status"], holds["status"], odd_rec["status"]) == ("violated", "holds", "error")
    assert viol["counterexample"]["replayed"] and viol["counterexample"]["precision"] == "float32"
    assert viol["net_loaded"] and holds["net_loaded"] and odd_rec["net_loaded"] is False
    assert odd_rec["error_type"] == "UnsupportedOp" and odd_rec["op"] == "Frobnicate"
    assert all(r["wall_seconds"] >= r["seconds"] for r in report.records)

    missing = write_list(comp, ["onnx/none.onnx,vnnlib/holds.vnnlib,10"], "missing.csv")
    with pytest.raises(UsageError, match="none.onnx.*not found"):
        read_instances(missing)


def test_suite_keeps_one_checked_certificate_per_instance(bench: Path, tmp_path: Path) -> None:
    """Names that differ only after a dot (``p_0.03`` / ``p_0.05``, as MNIST-FC's) get a file
    each, gzipped names lose only ``.gz`` and the extension, and each file re-checks."""
    import gzip

    for name in ("p_0.03.vnnlib", "p_0.05.vnnlib"):
        (tmp_path / name).write_text(HOLDS)
    (tmp_path / "net.onnx.gz").write_bytes(gzip.compress((bench / "net.onnx").read_bytes()))
    csv = write_list(tmp_path, ["net.onnx,p_0.03.vnnlib,20", "net.onnx,p_0.05.vnnlib,20"])
    out = tmp_path / "certs"
    code = main(["suite", str(csv), "--results", str(tmp_path / "r.jsonl"), "--workers", "1",
                 "--certificates", str(out)])
    assert code == 0
    assert all(r["status"] == "holds" and r["proof"]["checked"] for r in read_lines(tmp_path / "r.jsonl"))
    files = sorted(p.name for p in out.iterdir())
    assert files == ["net__p_0.03.npz", "net__p_0.05.npz"]
    for f, spec in zip(files, ("p_0.03.vnnlib", "p_0.05.vnnlib")):
        assert main(["proof", "check", str(out / f), str(bench / "net.onnx"), str(tmp_path / spec)]) == 0
