"""devtools.supervisor with real processes: python's http.server on a free port.

What a developer relies on: `make up`/`make serve` twice never starts a second copy,
`make down`/`make stop` leave nothing running (helpers a service forked included), a
service that never listens fails with the lines it logged, and a stale pid file never
gets an unrelated process killed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtools import procfs, supervisor
from devtools.registry import free_port

pytestmark = pytest.mark.integration

# Forks a helper that ignores SIGTERM (so stopping needs the group's SIGKILL), waits until
# it does, writes the helper's pid to argv[1], then serves HTTP on 127.0.0.1:argv[2].
SERVER_WITH_HELPER = """
import http.server, pathlib, subprocess, sys
helper = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); "
    "time.sleep(600)"], stdout=subprocess.PIPE)
helper.stdout.readline()
pathlib.Path(sys.argv[1]).write_text(str(helper.pid))
print("serving with helper", helper.pid, flush=True)
http.server.ThreadingHTTPServer(
    ("127.0.0.1", int(sys.argv[2])), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def http_server(state_dir: Path, port: int, name: str = "web") -> supervisor.Service:
    argv = (sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port))
    return supervisor.Service(
        name=name,
        argv=argv,
        state_dir=state_dir,
        label=f"the test server {name}",
        port=port,
        cwd=state_dir,
    )


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A state dir whose services are always stopped, even when the test fails."""
    yield tmp_path
    for pid_file in tmp_path.glob("*.pid"):
        supervisor.stop(name=pid_file.stem, state_dir=tmp_path, grace_s=2)


def test_second_start_of_a_live_service_is_refused(state_dir):
    port = free_port()
    service = http_server(state_dir, port)
    record = supervisor.start(service, timeout_s=30)
    assert supervisor.port_answers("127.0.0.1", port)
    recorded = service.pid_file.read_text()

    with pytest.raises(supervisor.AlreadyRunning, match=f"already runs \\(pid {record.pid}"):
        supervisor.start(service, timeout_s=30)

    assert service.pid_file.read_text() == recorded, "the record of the live copy changed"
    assert supervisor.running(name="web", state_dir=state_dir) == record
    assert str(supervisor.status(name="web", state_dir=state_dir, port=port)) == (
        f"web: running (pid {record.pid}), port answers"
    )


def test_stop_kills_the_whole_process_tree(state_dir):
    port = free_port()
    helper_file = state_dir / "helper.pid"
    service = supervisor.Service(
        name="tree",
        argv=(sys.executable, "-c", SERVER_WITH_HELPER, str(helper_file), str(port)),
        state_dir=state_dir,
        label="the test server with a helper",
        port=port,
    )
    record = supervisor.start(service, timeout_s=30)
    helper = int(helper_file.read_text())
    assert procfs.is_alive(record.pid) and procfs.is_alive(helper)

    stopped = supervisor.stop(name="tree", state_dir=state_dir, grace_s=2)

    assert stopped.stopped and str(stopped) == f"stopped pid {record.pid} (SIGKILL)"
    assert not procfs.is_alive(record.pid), "the service still runs"
    assert not procfs.is_alive(helper), "the helper it forked (ignoring SIGTERM) still runs"
    assert not supervisor.port_answers("127.0.0.1", port)
    assert not service.pid_file.exists()
    assert str(supervisor.stop(name="tree", state_dir=state_dir)) == "not running"


def test_a_service_whose_port_never_opens_fails_with_its_log_tail(state_dir):
    port = free_port()
    quiet = (
        "import time\n"
        "print('loading a huge config', flush=True)\n"
        "print('still loading', flush=True)\n"
        "time.sleep(600)\n"
    )
    service = supervisor.Service(
        name="quiet",
        argv=(sys.executable, "-c", quiet),
        state_dir=state_dir,
        label="the quiet server",
        port=port,
    )

    with pytest.raises(supervisor.StartFailed) as failure:
        supervisor.start(service, timeout_s=2)

    message = str(failure.value)
    assert message.startswith("the quiet server (pid ")
    assert f"was not yet accepting connections on 127.0.0.1:{port} after 2 s" in message
    assert message.endswith("loading a huge config\nstill loading")
    assert failure.value.timed_out
    assert not service.pid_file.exists()
    assert not _processes_running(quiet), "the silent service was left running"


def test_a_service_that_exits_at_once_fails_with_its_exit_code_and_log(state_dir):
    crash = "import sys; print('bad config: no storage', flush=True); sys.exit(3)"
    service = supervisor.Service(
        name="crash",
        argv=(sys.executable, "-c", crash),
        state_dir=state_dir,
        label="the crashing server",
        port=free_port(),
    )
    (state_dir / "crash.log").write_text("an older attempt's line\n")

    with pytest.raises(supervisor.StartFailed) as failure:
        supervisor.start(service, timeout_s=30)

    assert str(failure.value) == (
        f"the crashing server exited with code 3 before accepting connections on "
        f"127.0.0.1:{service.port}; last lines of {service.log_file}:\nbad config: no storage"
    )
    assert not failure.value.timed_out


def test_a_foreign_listener_on_the_port_is_refused_not_taken_for_ready(state_dir):
    port = free_port()
    foreign = http_server(state_dir, port, name="foreign")
    supervisor.start(foreign, timeout_s=30)

    with pytest.raises(supervisor.PortTaken, match=f"127.0.0.1:{port} is already used"):
        supervisor.start(http_server(state_dir, port, name="web"), timeout_s=30)

    assert not (state_dir / "web.pid").exists()


def test_a_script_ready_at_once_is_not_taken_for_dead(state_dir):
    # Right after a fork+exec the kernel may not have set the new command line yet (like
    # `prefect worker start`, a script run by its shebang): it must still count as ours.
    script = state_dir / "ready-at-once"
    script.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(600)\n")
    script.chmod(0o755)
    service = supervisor.Service(
        name="script", argv=(str(script),), state_dir=state_dir, label="the script"
    )
    for _ in range(20):
        record = supervisor.start(service, timeout_s=10, ready=lambda: True)
        assert supervisor.stop(name="script", state_dir=state_dir).detail == (
            f"stopped pid {record.pid} (SIGTERM)"
        )


def test_a_stale_pid_file_never_gets_another_process_killed(state_dir):
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        # A record naming the unrelated pid, as after a reboot reused the number.
        ticks = procfs.start_ticks(unrelated.pid)
        (state_dir / "web.pid").write_text(
            f'{unrelated.pid}\n{{"argv": ["docker-registry", "serve"], "start": {ticks}}}\n'
        )

        stopped = supervisor.stop(name="web", state_dir=state_dir)

        assert not stopped.stopped
        assert str(stopped) == (
            f"pid {unrelated.pid} no longer runs the recorded command, nothing signalled"
        )
        assert unrelated.poll() is None, "an unrelated process was signalled"
        assert not (state_dir / "web.pid").exists()
    finally:
        unrelated.kill()
        unrelated.wait()


def _processes_running(script: str) -> list[int]:
    """Live processes whose command line carries `script` (ours, started by the test)."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit()
        and int(entry.name) != os.getpid()
        and script in procfs.cmdline(int(entry.name))
        and procfs.is_alive(int(entry.name))
    ]
