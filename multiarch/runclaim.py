"""Who owns a run's files on this machine, and sweeping what dead runs left behind.

A run that is killed (SIGKILL, OOM, a power cut) cannot clean up after itself: its build
directories, container storage, handoff layouts, the CLI's temporary Prefect server and a
flow run stuck "Running" stay behind. So every run claims its directories with a record
under `<work>/runs/` and holds an exclusive `flock` on that record for its whole life. The
kernel drops the lock when the process dies, however it dies, so "the lock can be taken"
means exactly "the owner is gone": the next run on this machine (or `multiarch gc`) takes
it and removes everything the record names. No pid guessing, no timeouts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from multiarch.errors import MultiarchError
from multiarch.netsweep import sweep_dead_networks
from multiarch.process import capture

RUNS_DIR = "runs"
# The CLI sets this to the pid of the temporary Prefect server it started, so that a sweep
# can stop that server should the CLI be killed.
TEMP_SERVER_PID_ENV = "MULTIARCH_TEMP_SERVER_PID"
BUILDS_DIR = "builds"
API_TIMEOUT_S = 5.0
_TEMP_SERVER_MARKERS = ("uvicorn", "prefect.server.api.server:create_app")


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """What a run owns: the directories to remove and the Prefect run to close."""

    run_id: str
    pid: int
    scratch: str  # the run's build directories (container storage, checkouts)
    shared: str | None  # the run's handoff directory; None when kept or not on this machine
    flow_run_id: str | None = None
    api_url: str | None = None  # Prefect API holding the flow run
    server_pid: int | None = None  # the CLI's temporary Prefect server, if it started one
    started: float = field(default_factory=time.time)


@dataclass(frozen=True, kw_only=True)
class Swept:
    """One thing `sweep` removed or closed, for the log and for `multiarch gc`."""

    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.what}: {self.detail}"


def record_path(work: Path, run_id: str) -> Path:
    return work / RUNS_DIR / f"{run_id}.json"


@contextlib.contextmanager
def claim_run(work: Path, record: RunRecord) -> Iterator[RunRecord]:
    """Hold the run's record locked while the run lives; drop the record when it ends.

    The caller removes the directories itself on a normal end; the record only matters
    when this process dies without reaching the `finally`.
    """
    path = record_path(work, record.run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written and locked under a name `sweep` ignores, then renamed: a sweeper never sees
    # a record that is not both complete and locked.
    staging = path.with_name(f".{path.name}.new")
    fd = os.open(staging, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, json.dumps(asdict(record)).encode())
        os.fsync(fd)
        os.replace(staging, path)
        yield record
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def sweep(work: Path, *, emit: Callable[[str], None] = lambda _: None) -> list[Swept]:
    """Remove what dead runs under `work` left behind; returns what was removed.

    Build directories that no record names (a crash before the record was written, an
    older version) are removed when no live run claims them. RUN containers killed with
    their run hold CNI addresses and iptables rules machine-wide; those are released too.
    """
    swept: list[Swept] = []
    live: set[str] = set()
    records = [p for p in (work / RUNS_DIR).glob("*.json") if not p.name.endswith(".tags.json")]
    for path in sorted(records):  # (a run's tag journal sits next to its record)
        owned = _take_if_dead(path)
        if owned is None:
            live.add(path.stem)
            continue
        record, fd = owned
        try:
            swept += restore_tags_of_dead_run(work, path, emit=emit)
            swept += _sweep_record(record, emit=emit)
            path.unlink(missing_ok=True)
        finally:
            os.close(fd)
    swept += _sweep_unclaimed_builds(work, live=live, emit=emit)
    for released in sweep_dead_networks(emit=emit):
        swept.append(Swept(what="network of a dead RUN container released", detail=released))
    return swept


def restore_tags_of_dead_run(work: Path, record: Path, *,
                             emit: Callable[[str], None]) -> list[Swept]:
    """A run killed between two tag writes left a journal: put its tags back.

    Under the repository's publish lock, so that no publish on this machine runs at the
    same time; only tags that still hold the dead run's index are touched.
    """
    from multiarch.publish import describe, restore_tags
    from multiarch.publish_lock import publish_lock
    from multiarch.registry_api import read_manifest, registry_client
    from multiarch.tagjournal import journal_path, read_journal

    path = journal_path(record.parent, record.stem)
    journal = read_journal(path)
    if journal is None:
        path.unlink(missing_ok=True)
        return []
    name = f"{journal.registry}/{journal.repository}"
    before = journal.recorded()
    try:
        with publish_lock(work, name, emit=emit), \
                registry_client(journal.registry, insecure=journal.insecure) as client:
            now = {tag: read_manifest(client, journal.repository, tag) for tag in before}
            moved = [tag for tag, held in now.items()
                     if held is not None and held.digest == journal.index_digest
                     and (before[tag] is None or before[tag].digest != journal.index_digest)]
            outcome = restore_tags(client, journal.repository, moved, before,
                                   index_digest=journal.index_digest,
                                   index_is_new=journal.index_is_new)
    except Exception as exc:  # the registry is down: keep the journal for the next sweep
        emit(f"could not put back the tags of {name} a dead run was writing: {exc}")
        return [Swept(what="tags NOT put back (kept for the next sweep)",
                      detail=f"{name}: {exc}")]
    path.unlink(missing_ok=True)
    if not moved:
        return []
    item = Swept(what="tags put back", detail=f"{name}: {', '.join(moved)}: {outcome}"
                 if "INCOMPLETE" in outcome else f"{name}: {describe(before)}")
    emit(f"swept after a dead run: {item}")
    return [item]


def _take_if_dead(path: Path) -> tuple[RunRecord | None, int] | None:
    """The record and its locked fd when its owner is gone, else None (still running)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    try:
        record = RunRecord(**json.loads(path.read_text() or "{}"))
    except (TypeError, ValueError):
        record = None  # written half-way when its owner died: only the file is left
    return record, fd


def _sweep_record(record: RunRecord | None, *, emit: Callable[[str], None]) -> list[Swept]:
    if record is None:
        return []
    swept = []
    if record.flow_run_id and record.api_url and mark_crashed(record.api_url, record.flow_run_id):
        swept.append(Swept(what="flow run marked crashed", detail=record.flow_run_id))
    if record.server_pid and stop_temporary_server(record.server_pid):
        swept.append(Swept(what="temporary Prefect server stopped",
                           detail=f"pid {record.server_pid}"))
    for directory in (record.scratch, record.shared):
        if directory and Path(directory).exists():
            remove_tree(Path(directory))
            swept.append(Swept(what="directory removed", detail=directory))
    for item in swept:
        emit(f"swept after dead run {record.run_id} (pid {record.pid}): {item}")
    return swept


def _sweep_unclaimed_builds(work: Path, *, live: set[str],
                            emit: Callable[[str], None]) -> list[Swept]:
    swept = []
    builds = work / BUILDS_DIR
    for directory in sorted(builds.iterdir()) if builds.is_dir() else []:
        if directory.name in live:
            continue
        remove_tree(directory)
        swept.append(Swept(what="directory removed", detail=str(directory)))
        emit(f"swept unclaimed build directory {directory}")
    return swept


def mark_crashed(api_url: str, flow_run_id: str) -> bool:
    """Close a flow run its dead process left Running/Pending/Cancelling; True if changed."""
    base = api_url.rstrip("/")
    try:
        with httpx.Client(timeout=API_TIMEOUT_S) as client:
            run = client.get(f"{base}/flow_runs/{flow_run_id}")
            if run.status_code != 200:
                return False
            state = (run.json().get("state") or {}).get("type")
            if state not in ("RUNNING", "PENDING", "CANCELLING", "SCHEDULED"):
                return False
            done = client.post(
                f"{base}/flow_runs/{flow_run_id}/set_state",
                json={"state": {"type": "CRASHED", "name": "Crashed",
                                "message": "its process died; found and closed by the next "
                                           "run's sweep (multiarch gc)"},
                      "force": True},
            )
            return done.status_code in (200, 201)
    except httpx.HTTPError:
        return False  # the server is gone with its runs: nothing to close


def stop_temporary_server(pid: int) -> bool:
    """Stop an orphaned temporary Prefect server, only if the pid still runs one."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    if not all(marker in cmdline for marker in _TEMP_SERVER_MARKERS):
        return False  # the pid was reused by something else: leave it alone
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists() or _is_zombie(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def remove_tree(path: Path) -> None:
    """Delete a directory, first unmounting what container storage left mounted below it.

    buildah's overlay driver bind-mounts its own directory; removing the tree without
    unmounting would leak one mount per build (and fail on busy files).
    """
    for mount_point in mounts_under(path):
        with contextlib.suppress(MultiarchError):
            capture(["umount", "--lazy", mount_point], what=f"unmounting {mount_point}",
                    timeout_s=60)
    shutil.rmtree(path, ignore_errors=True)


def mounts_under(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points at or below `path`, deepest first (mountinfo field 5, octal-escaped)."""
    prefix = str(path).rstrip("/")
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        point = fields[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return sorted(found, key=len, reverse=True)
