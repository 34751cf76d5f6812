"""The per-repository publish lock: one holder at a time, released however the holder ends."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from multiarch.publish_lock import lock_path, publish_lock
from tasks.publish import limit_name

REPOSITORY = "127.0.0.1:5000/team/app"


def test_the_lock_file_is_named_after_registry_and_repository(tmp_path):
    assert lock_path(tmp_path, REPOSITORY) == tmp_path / "locks" / "127.0.0.1:5000_team_app.lock"


def test_the_prefect_limit_is_named_after_the_repository_without_slashes():
    assert limit_name(REPOSITORY) == "publish:127.0.0.1:5000|team|app"


def test_a_second_publish_waits_until_the_first_is_done_and_says_so(tmp_path):
    order: list[str] = []
    said: list[str] = []
    first_holds = threading.Event()

    def first() -> None:
        with publish_lock(tmp_path, REPOSITORY):
            first_holds.set()
            time.sleep(0.5)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    first_holds.wait(5)
    with publish_lock(tmp_path, REPOSITORY, emit=said.append):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]
    assert said == [f"[publish] waiting for another publish of {REPOSITORY} "
                    f"({lock_path(tmp_path, REPOSITORY)})"]


def test_other_repositories_do_not_wait(tmp_path):
    with publish_lock(tmp_path, REPOSITORY), publish_lock(tmp_path, REPOSITORY + "-other"):
        pass


def test_a_killed_holder_releases_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; "
         "from multiarch.publish_lock import publish_lock\n"
         f"with publish_lock(Path({str(tmp_path)!r}), {REPOSITORY!r}):\n"
         "    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2],
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    started = time.monotonic()
    with publish_lock(tmp_path, REPOSITORY):
        pass
    assert time.monotonic() - started < 1
