"""Publish under registry faults: tags move all together or not at all, and say so.

Every scenario runs `multiarch build` as a user would (a subprocess, `--json`) against a
fault proxy in front of a real registry, then checks what a user would check: the exit
status and its one-line error, what every tag holds (all the result digest, or all what
they held before), that nothing is left under the work directory, and that no process of
the run is left. The build is tiny (FROM the playground busybox, one COPY, linux/amd64).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools import postgres, serve
from devtools.registry import free_port, start_registry, stop_registry
from devtools.serve_config import Settings
from tests.faults.fault_proxy import Answer, Delay, FaultProxy, Hook, Reset
from tests.faults.hoststate import processes_with
from tests.integration.conftest import tag_digest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
TAG_PUT = r"/manifests/(?!sha256[:-])"  # under a tag, not by digest nor a referrers tag
BY_DIGEST = r"/manifests/sha256:"  # a manifest by digest (the index, a platform)
BLOB_UPLOAD = r"/blobs/uploads/."  # an upload session's PATCH/PUT (not the POST opening it)
TASK_RETRY_LOG = re.compile(r"Retry \d+/\d+ will start")  # Prefect retrying a task
VERIFIED_LOG = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) .*\[publish\] verified", re.MULTILINE)
TAGS_BEFORE_LOG = re.compile(r"^(\d\d:\d\d:\d\d\.\d+) .*\[publish\] tags before",
                             re.MULTILINE)


@dataclass
class Outcome:
    """What `multiarch build --json` reported: exit code, result (if any), error line."""

    code: int
    result: dict | None
    error: str
    output: str

    @property
    def digest(self) -> str | None:
        return self.result["index_digest"] if self.result else None

    @property
    def last_verified(self) -> str:
        """Clock time (HH:MM:SS.mmm, from the run's log) of its last tag verification."""
        times = VERIFIED_LOG.findall(self.output)
        return times[-1] if times else ""

    @property
    def tag_window(self) -> tuple[str, str] | None:
        """(first tag record, last verification) clock times: the span that must not overlap."""
        starts = TAGS_BEFORE_LOG.findall(self.output)
        return (starts[0], self.last_verified) if starts and self.last_verified else None


@dataclass
class Run:
    """A running `multiarch build`; its log (stderr) is a file others can watch."""

    process: subprocess.Popen[str]
    log: Path


def context_dir(tmp_path: Path, base: str) -> Path:
    """A new one-COPY context: its content (and so the index digest) is unique."""
    context = tmp_path / f"context-{uuid.uuid4().hex[:8]}"
    context.mkdir()
    (context / "stamp").write_text(uuid.uuid4().hex)
    (context / "Containerfile").write_text(f"FROM {base}\nCOPY stamp /stamp\n")
    return context


def start_cli(*, image: str, tags: list[str], context: Path, work: Path,
              api_url: str | None, prefect_home: Path | None = None) -> Run:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["COLUMNS"] = "500"  # Prefect's console log must not wrap: the tests read its lines
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if prefect_home:  # a temporary server with its own database
        env["PREFECT_HOME"] = str(prefect_home)
    extra = [arg for tag in tags[1:] for arg in ("--tag", tag)]
    log = context.parent / f"{context.name}.log"
    with log.open("w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "build", "--image", f"{image}:{tags[0]}",
             *extra, "--platform", "linux/amd64", "--context", str(context),
             "--insecure-registry", "--work-dir", str(work), "--json"],
            stdout=subprocess.PIPE, stderr=stderr, text=True, env=env, cwd=REPO_ROOT,
        )
    return Run(process=process, log=log)


def finish(run: Run, timeout: float = 600) -> Outcome:
    stdout, _ = run.process.communicate(timeout=timeout)
    stderr = run.log.read_text()
    code = run.process.returncode
    result = json.loads(stdout.strip().splitlines()[-1]) if code == 0 else None
    errors = [line for line in stderr.splitlines() if line.startswith("multiarch: ")]
    return Outcome(code=code, result=result, error=errors[-1] if errors else "",
                   output=stderr)


def build(image: str, tags: list[str], *, tmp_path: Path, base: str, work: Path,
          api_url: str | None) -> Outcome:
    context = context_dir(tmp_path, base)
    return finish(start_cli(image=image, tags=tags, context=context, work=work,
                            api_url=api_url))


def held(image: str, tags: list[str]) -> dict[str, str | None]:
    """What each tag holds, read straight from the registry (not through the proxy)."""
    return {tag: tag_digest(f"{image}:{tag}") for tag in tags}


def leftovers(work: Path) -> list[str]:
    """Build directories, handoff directories and run records a finished run must not leave."""
    return [str(p) for sub in ("builds", "shared", "runs") if (work / sub).is_dir()
            for p in (work / sub).iterdir()]



def assert_clean(work: Path) -> None:
    assert leftovers(work) == []
    assert processes_with(str(work)) == []


def repository(proxy_or_address: str, name: str) -> tuple[str, str]:
    """(image through the proxy, the same image on the registry itself)."""
    path = f"faults/{name}-{uuid.uuid4().hex[:6]}"
    return f"{proxy_or_address}/{path}", path


def test_503_once_on_the_second_tag_is_retried_and_every_tag_moves(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "retry")
    direct = f"{playground.address}/{path}"
    proxy.add("PUT", TAG_PUT, Answer(503), nth=2)
    outcome = build(image, ["a", "b", "c"], tmp_path=tmp_path, base=playground.base, work=work,
                    api_url=prefect_server)
    assert outcome.code == 0, outcome.output[-3000:]
    assert held(direct, ["a", "b", "c"]) == dict.fromkeys("abc", outcome.digest)
    assert any("-> Answer(status=503" in line for line in proxy.seen)
    assert_clean(work)
    record_scenario(
        "503 once on the 2nd tag PUT",
        "the tag write is retried after 0.5 s and succeeds; the run reports the index digest",
        "all three tags hold the result digest; nothing under the work directory",
    )


def test_503_always_on_one_tag_puts_every_tag_back_and_says_so(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "rollback")
    direct = f"{playground.address}/{path}"
    first = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base, work=work,
                  api_url=prefect_server)
    assert first.code == 0, first.output[-3000:]
    proxy.add("PUT", TAG_PUT + "b$", Answer(503))
    # the new tag `new` is written first, `a` second, then `b` fails for good
    second = build(image, ["new", "a", "b"], tmp_path=tmp_path, base=playground.base,
                   work=work, api_url=prefect_server)
    assert second.code != 0
    assert held(direct, ["new", "a", "b"]) == {"new": None, "a": first.digest, "b": first.digest}
    error = second.error
    assert "\n" not in error and f"{image}:b" in error and "503" in error, second.output[-3000:]
    assert "every tag is back where it was" in error
    assert sum(line.startswith(f"PUT /v2/{path}/manifests/b -> Answer(status=503")
               for line in proxy.seen) == 4  # tried, retried three times, given up
    assert f"a -> {first.digest}" in error and "new absent" in error
    assert_clean(work)
    record_scenario(
        "503 on every PUT of the 2nd existing tag (a new tag and another written before it)",
        "4 attempts fail; the moved tag is PUT back to its recorded bytes, the new tag is "
        "removed (its index deleted by digest: DELETE by tag is refused by distribution 2.8); "
        f"exit {second.code}, one line: `{error[:160]}...`",
        "every tag holds what it held before, the new tag is absent; nothing under the work "
        "directory",
    )


def test_a_tag_the_registry_refuses_is_not_retried_and_nothing_moves(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "denied")
    direct = f"{playground.address}/{path}"
    first = build(image, ["stable"], tmp_path=tmp_path, base=playground.base, work=work,
                  api_url=prefect_server)
    assert first.code == 0, first.output[-3000:]
    proxy.add("PUT", TAG_PUT + "stable$", Answer(403, "tag stable is immutable"))
    second = build(image, ["1.1", "stable"], tmp_path=tmp_path, base=playground.base,
                   work=work, api_url=prefect_server)
    assert second.code != 0
    assert held(direct, ["1.1", "stable"]) == {"1.1": None, "stable": first.digest}
    assert "403 UNKNOWN: tag stable is immutable" in second.error, second.output[-3000:]
    assert "every tag is back where it was" in second.error
    assert sum("manifests/stable -> Answer(status=403" in line for line in proxy.seen) == 1
    assert TASK_RETRY_LOG.search(second.output) is None
    assert_clean(work)
    record_scenario(
        "403 on the PUT of an existing tag (an immutable-tag policy), a new tag written before",
        "a permanent answer: no retry; the new tag is removed again; "
        f"exit {second.code}: `{second.error[:150]}...`",
        "the existing tag keeps its digest, the new tag is absent; nothing under the work "
        "directory",
    )


def test_500_once_on_a_blob_upload_is_retried(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "blob500")
    direct = f"{playground.address}/{path}"
    proxy.add("PATCH", BLOB_UPLOAD, Answer(500), nth=1)
    proxy.add("PUT", BLOB_UPLOAD, Answer(500), nth=1)
    outcome = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base, work=work,
                    api_url=prefect_server)
    assert outcome.code == 0, outcome.output[-3000:]
    assert any("Answer(status=500" in line for line in proxy.seen), proxy.seen
    assert held(direct, ["a", "b"]) == dict.fromkeys("ab", outcome.digest)
    assert_clean(work)
    record_scenario(
        "500 once on a blob upload (PATCH and PUT of the upload session)",
        "the by-digest push is retried (skopeo or the publish task) and succeeds",
        "both tags hold the result digest; nothing under the work directory",
    )


def test_429_on_manifest_puts_is_waited_out(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "toomany")
    direct = f"{playground.address}/{path}"
    proxy.add("PUT", TAG_PUT, Answer(429), times=2)
    proxy.add("PUT", BY_DIGEST, Answer(429), nth=1)
    outcome = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base, work=work,
                    api_url=prefect_server)
    assert outcome.code == 0, outcome.output[-3000:]
    assert sum("Answer(status=429" in line for line in proxy.seen) >= 3, proxy.seen
    assert held(direct, ["a", "b"]) == dict.fromkeys("ab", outcome.digest)
    assert_clean(work)
    record_scenario(
        "429 TOOMANYREQUESTS on the first manifest PUT by digest and the first two tag PUTs",
        "classified transient: the push and the tag writes are retried with backoff and succeed",
        "both tags hold the result digest; nothing under the work directory",
    )


def test_connection_reset_mid_blob_is_retried(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "reset")
    direct = f"{playground.address}/{path}"
    proxy.add("PATCH", BLOB_UPLOAD, Reset(after_bytes=32 * 1024), nth=1)
    proxy.add("PUT", BLOB_UPLOAD, Reset(after_bytes=32 * 1024), nth=1)
    outcome = build(image, ["a"], tmp_path=tmp_path, base=playground.base, work=work,
                    api_url=prefect_server)
    assert outcome.code == 0, outcome.output[-3000:]
    assert any("Reset(" in line for line in proxy.seen), proxy.seen
    assert held(direct, ["a"]) == {"a": outcome.digest}
    assert_clean(work)
    retried = len(TASK_RETRY_LOG.findall(outcome.output))
    record_scenario(
        "connection reset (RST) 32 KiB into a blob upload",
        "skopeo ends on `connection reset by peer` or `use of closed network connection`, both "
        f"transient; the push is retried (publish task retries: {retried}) and succeeds",
        "the tag holds the result digest; nothing under the work directory",
    )


def test_slow_registry_still_publishes(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "slow")
    direct = f"{playground.address}/{path}"
    rules = [proxy.add(method, r"/v2/", Delay(0.3))
             for method in ("GET", "HEAD", "PUT", "PATCH", "POST", "DELETE")]
    outcome = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base, work=work,
                    api_url=prefect_server)
    assert outcome.code == 0, outcome.output[-3000:]
    delayed = sum(rule.applied for rule in rules)
    assert delayed >= 10
    assert held(direct, ["a", "b"]) == dict.fromkeys("ab", outcome.digest)
    assert_clean(work)
    record_scenario(
        "every registry call answered 0.3 s late",
        f"{delayed} calls delayed; the publish is slower but succeeds",
        "both tags hold the result digest; nothing under the work directory",
    )


@pytest.fixture
def own_registry(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A registry of this scenario's own (it gets restarted), not the session one."""
    state, port = tmp_path / "registry", free_port()
    start_registry(state_dir=state, port=port)
    yield state, port
    stop_registry(state_dir=state)


def test_registry_restarted_mid_publish(
    playground, prefect_server, own_registry, tmp_path, work, record_scenario
):
    state, port = own_registry
    restarts: list[float] = []

    def restart() -> None:
        stop_registry(state_dir=state)
        restarts.append(time.monotonic())
        threading.Timer(1.0, start_registry, kwargs={"state_dir": state, "port": port}).start()

    fault_proxy = FaultProxy(upstream=f"127.0.0.1:{port}").start()
    try:
        fault_proxy.add("PUT", TAG_PUT, Hook(restart), nth=1)
        image, path = repository(fault_proxy.address, "restart")
        outcome = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base,
                        work=work, api_url=prefect_server)
    finally:
        fault_proxy.stop()
    assert restarts, "the registry was never restarted"
    assert outcome.code == 0, outcome.output[-3000:]
    assert any("upstream down" in line for line in fault_proxy.seen), fault_proxy.seen
    assert held(f"127.0.0.1:{port}/{path}", ["a", "b"]) == dict.fromkeys("ab", outcome.digest)
    assert_clean(work)
    record_scenario(
        "the registry stopped at the first tag PUT and started again 1 s later",
        "tag writes get 502 from the proxy while it is down, are retried with backoff and "
        "succeed once it is back (its storage survives the restart)",
        "both tags hold the result digest; nothing under the work directory",
    )


def test_503_on_every_index_push_fails_transient_and_moves_no_tag(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, path = repository(proxy.address, "pushfail")
    direct = f"{playground.address}/{path}"
    first = build(image, ["a"], tmp_path=tmp_path, base=playground.base, work=work,
                  api_url=prefect_server)
    assert first.code == 0, first.output[-3000:]
    proxy.add("PUT", BY_DIGEST, Answer(503))
    second = build(image, ["a", "b"], tmp_path=tmp_path, base=playground.base, work=work,
                   api_url=prefect_server)
    assert second.code != 0
    assert held(direct, ["a", "b"]) == {"a": first.digest, "b": None}
    assert "503" in second.error, second.output[-3000:]
    retried = len(TASK_RETRY_LOG.findall(second.output))
    assert retried >= 1, second.output[-3000:]
    assert_clean(work)
    record_scenario(
        "503 on every manifest PUT by digest (the by-digest push never completes)",
        "skopeo's error line names the 503, so the failure is transient and the publish task "
        f"is retried ({retried + 1} attempts) before the run fails: `{second.error[:140]}...`",
        "no tag moved (a keeps its digest, b absent); nothing under the work directory",
    )


PAIRS = 5
RENDEZVOUS_S = 120.0  # the other run's build, and perhaps its temporary server, start
WAITING_LOG = "[publish] waiting for another publish of"


class Rendezvous:
    """Hold a run's first publish request (made inside the limit and the lock) until the
    other run's arrives, or the other run says it waits for this one.

    Both arrive (nothing serialises them): both go on at the same moment, so their tag
    writes interleave. The other run logs that it waits for another publish (the Prefect
    limit or the lock held it): this one goes on alone.
    """

    def __init__(self, logs: list[Path]) -> None:
        self.logs = logs
        self.arrived = 0
        self.met = False
        self.closed = False  # met or given up: later requests pass straight through
        self.lock = threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            if self.closed:
                return
            self.arrived += 1
        self.met = self._wait()
        self.closed = True

    def _wait(self) -> bool:
        deadline = time.monotonic() + RENDEZVOUS_S
        while time.monotonic() < deadline:
            if self.arrived >= 2:
                return True
            if any(WAITING_LOG in log.read_text() for log in self.logs):
                return False
            time.sleep(0.05)
        return False


def pair_setup(pair: int, *, prefect_server: str, work: Path) -> tuple[str | None, list[Path]]:
    """(Prefect API, work directory of each run) of a pair: which serialisation it tests.

    Pairs 0-2 share both; pair 3 shares the Prefect server (the limit) but not the work
    directory (the lock); pair 4 shares the work directory, each run with its own temporary
    Prefect server and its own PREFECT_HOME (temporary servers of one PREFECT_HOME share a
    database, and with it the limit).
    """
    if pair == PAIRS - 2:
        separate = [work.parent / f"work-{pair}-{i}" for i in range(2)]
        for path in separate:
            path.mkdir()
        return prefect_server, separate
    return (prefect_server if pair < PAIRS - 1 else None), [work, work]


def overlaps(first: tuple[str, str], second: tuple[str, str]) -> bool:
    return first[0] <= second[1] and second[0] <= first[1]


def check_pair(pair: int, *, image: str, tags: list[str], api_url: str | None,
               works: list[Path], proxy, tmp_path: Path, base: str) -> int:
    """Two runs publishing `tags` of `image` at once: the tags never split, the publishes
    never overlap, one run waits for the other. Returns how many runs succeeded."""
    direct = image.replace(proxy.address, proxy.upstream, 1)
    proxy.clear()
    runs = [
        start_cli(image=image, tags=tags, context=context_dir(tmp_path, base),
                  work=run_work, api_url=api_url,
                  prefect_home=None if api_url else tmp_path / f"prefect-{pair}-{i}")
        for i, run_work in enumerate(works)
    ]
    rendezvous = Rendezvous([run.log for run in runs])
    proxy.add("GET", BY_DIGEST, Hook(rendezvous))  # publish's first call: index new?
    proxy.add("PUT", TAG_PUT, Delay(0.3))  # a wide window between the tag writes
    outcomes = [finish(run) for run in runs]
    holding = held(direct, tags)
    digests = set(holding.values())
    assert len(digests) == 1, f"pair {pair}: tags split {holding}"
    reported = {o.digest for o in outcomes if o.code == 0}
    assert digests <= reported, f"pair {pair}: tags hold {holding}, runs said {outcomes}"
    last = max(outcomes, key=lambda o: o.last_verified)  # the later publish
    if last.code == 0:
        assert last.digest in digests, f"pair {pair}: the last run's digest is not on the tags"
    windows = [o.tag_window for o in outcomes]
    assert all(windows), f"pair {pair}: a run did not verify its tags: " + " | ".join(
        o.error or o.output[-1500:] for o in outcomes)
    assert not overlaps(*windows), f"pair {pair}: both runs wrote tags at once: {windows}"
    assert not rendezvous.met, f"pair {pair}: both runs published at once"
    assert any(WAITING_LOG in o.output for o in outcomes), f"pair {pair}: none waited"
    for run_work in works:
        assert_clean(run_work)
    return len(reported)


def test_five_pairs_of_concurrent_runs_on_the_same_three_tags_never_split_them(
    playground, prefect_server, proxy, tmp_path, work, record_scenario
):
    image, _ = repository(proxy.address, "pairs")
    tags = ["a", "b", "c"]
    successes = 0
    for pair in range(PAIRS):
        api_url, works = pair_setup(pair, prefect_server=prefect_server, work=work)
        successes += check_pair(pair, image=image, tags=tags, api_url=api_url, works=works,
                                proxy=proxy, tmp_path=tmp_path, base=playground.base)
    record_scenario(
        f"{PAIRS} pairs of concurrent runs publishing the same three tags (3 pairs on one "
        "Prefect server and work directory; 1 pair on one server with two work directories: "
        "only the Prefect limit serialises; 1 pair sharing a work directory, each with its own "
        "temporary Prefect server and PREFECT_HOME: only the lock serialises); the proxy holds "
        "each run's first publish request until the other run's arrives (or that run says "
        "it waits), and slows tag writes by 0.3 s",
        "publishes never overlap (Prefect limit `publish:<repository>` and the work "
        f"directory's lock): the second run waits; {successes} of {2 * PAIRS} runs succeeded, "
        "one after the other",
        "after every pair all three tags hold one digest, that of the run that published "
        "last; nothing under the work directory",
    )


@pytest.fixture(scope="module")
def postgres_prefect_server() -> Iterator[str]:
    """A Prefect server on PostgreSQL, as `make serve DB=postgres` starts it (its cluster
    and server only: no worker); yields its API URL. The session's `prefect_server` is
    Prefect's test harness, on SQLite."""
    state_dir = Path(tempfile.mkdtemp(prefix="multiarch-faults-pg-"))
    state_dir.chmod(0o711)  # as root PostgreSQL runs as the postgres user: it passes through
    settings = Settings(
        state_dir=state_dir, port=free_port(), prefect=Path(sys.executable).parent / "prefect",
        work_dir=state_dir / "work", registry_port=5000, timeout_s=300, database="postgres",
        postgres_port=free_port(),
    )
    settings.serve_dir.mkdir(parents=True)
    settings.prefect_home.mkdir(parents=True)
    try:
        serve.ensure_server(settings, postgres.ensure(settings))
        yield settings.api_url
    finally:
        serve.stop(settings)
        assert processes_with(str(state_dir)) == [], "left running after stop"
        shutil.rmtree(state_dir, ignore_errors=True)


def test_concurrent_runs_on_a_postgresql_backed_server_never_split_tags(
    playground, postgres_prefect_server, proxy, tmp_path, work, record_scenario
):
    """The five pairs' checks with the server on PostgreSQL: one pair sharing the work
    directory, one with a directory each, where only the Prefect limit, and so the
    database's concurrency leases, serialises the two publishes."""
    image, _ = repository(proxy.address, "pairs-pg")
    tags = ["a", "b", "c"]
    separate = [work.parent / f"work-pg-{i}" for i in range(2)]
    for path in separate:
        path.mkdir()
    successes = 0
    for pair, works in enumerate([[work, work], separate]):
        successes += check_pair(pair, image=image, tags=tags, api_url=postgres_prefect_server,
                                works=works, proxy=proxy, tmp_path=tmp_path,
                                base=playground.base)
    record_scenario(
        "2 pairs of concurrent runs publishing the same three tags on a Prefect server backed "
        "by PostgreSQL (`make serve DB=postgres`'s cluster): one pair sharing the work "
        "directory, one with a work directory each (only the Prefect limit serialises); "
        "the same proxy rendezvous and slowed tag writes as the five pairs",
        "publishes never overlap: the second run waits for the limit `publish:<repository>`; "
        f"{successes} of 4 runs succeeded, one after the other",
        "after every pair all three tags hold one digest, that of the run that published "
        "last; nothing under the work directories; no PostgreSQL or Prefect process after stop",
    )
