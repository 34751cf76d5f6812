"""Run records: a live run's directories are never swept, a dead run's always are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from multiarch.runclaim import RunRecord, claim_run, record_path, sweep


def record(work: Path, run_id: str, **extra: object) -> RunRecord:
    scratch = work / "builds" / run_id
    shared = work / "shared" / run_id
    for directory in (scratch / "linux-amd64", shared / "linux-amd64"):
        directory.mkdir(parents=True)
        (directory / "blob").write_bytes(b"x")
    return RunRecord(run_id=run_id, pid=os.getpid(), scratch=str(scratch), shared=str(shared),
                     **extra)


def test_a_live_run_is_left_alone(tmp_path):
    live = record(tmp_path, "live")
    with claim_run(tmp_path, live):
        assert sweep(tmp_path) == []
        assert Path(live.scratch).is_dir()
        assert Path(live.shared).is_dir()


def test_a_finished_run_leaves_no_record(tmp_path):
    with claim_run(tmp_path, record(tmp_path, "done")):
        assert record_path(tmp_path, "done").is_file()
    assert not record_path(tmp_path, "done").exists()


def test_the_directories_of_a_killed_run_are_swept(tmp_path):
    dead = record(tmp_path, "dead")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from multiarch.runclaim import *; "
         "r = RunRecord(**__import__('json').loads(sys.argv[2])); "
         "cm = claim_run(Path(sys.argv[1]), r); cm.__enter__(); print('held', flush=True); "
         "time.sleep(300)",
         str(tmp_path), json.dumps(dead.__dict__)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert sweep(tmp_path) == []  # still alive in another process
        holder.kill()
        holder.wait()
    finally:
        holder.kill()
    swept = sweep(tmp_path)
    assert {item.detail for item in swept} == {dead.scratch, dead.shared}
    assert not Path(dead.scratch).exists()
    assert not Path(dead.shared).exists()
    assert not record_path(tmp_path, "dead").exists()


def test_build_directories_nobody_claims_are_swept(tmp_path):
    orphan = tmp_path / "builds" / "orphan" / "linux-arm64"
    orphan.mkdir(parents=True)
    live = record(tmp_path, "live")
    with claim_run(tmp_path, live):
        swept = sweep(tmp_path)
    assert [item.detail for item in swept] == [str(tmp_path / "builds" / "orphan")]
    assert Path(live.scratch).is_dir()


def test_a_half_written_record_is_removed(tmp_path):
    path = record_path(tmp_path, "torn")
    path.parent.mkdir(parents=True)
    path.write_text('{"run_id": "to')
    assert sweep(tmp_path) == []
    assert not path.exists()


def test_an_unrelated_process_with_a_recorded_server_pid_is_not_stopped(tmp_path):
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        dead = record(tmp_path, "dead", server_pid=bystander.pid)
        record_path(tmp_path, "dead").parent.mkdir(parents=True, exist_ok=True)
        record_path(tmp_path, "dead").write_text(json.dumps(dead.__dict__))
        swept = sweep(tmp_path)
        time.sleep(0.2)
        assert bystander.poll() is None
        assert "temporary Prefect server stopped" not in {item.what for item in swept}
    finally:
        bystander.kill()
        bystander.wait()
