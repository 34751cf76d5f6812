"""Secrets never travel as values: a git context behind HTTP basic auth (issue 8, contract 7).

A real git server: git's own `git http-backend` CGI behind a small threaded HTTP server that
answers 401 unless the request carries the right Basic credentials. Builds go through the
CLI as a user runs them, and then the test looks for the token everywhere it used to leak:
the pushed image's labels and the index annotations, the CLI's output, what the Prefect
server stored (parameters, logs, state messages, artifacts), `ps` during the build, and
the error of a failing run.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
)

from multiarch.credentials import ENV_CREDENTIALS, ENV_CREDENTIALS_FILE
from tests.integration.conftest import skopeo_raw, tag_digest
from tests.integration.prefect_queries import artifact_data

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
USER = "builder"
SECRET = "SECRETTOKEN"
SOURCE_LABEL = "org.opencontainers.image.source"
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    "PATH": "/usr/bin:/bin",
}  # fmt: skip


# --- a git server with basic auth ---------------------------------------------------------

@dataclass
class GitServer:
    root: Path
    secret: str
    port: int = 0
    authorised: int = 0  # requests that carried the right credentials
    refused: int = 0  # requests answered 401
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def clean_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/repo.git"

    def url_with(self, token: str) -> str:
        return f"http://{USER}:{token}@127.0.0.1:{self.port}/repo.git"


def handler_for(server: GitServer) -> type[BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{USER}:{server.secret}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            self.cgi()

        def do_POST(self) -> None:
            self.cgi()

        def cgi(self) -> None:
            if self.headers.get("Authorization") != expected:
                with server.lock:
                    server.refused += 1
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with server.lock:
                server.authorised += 1
            path, _, query = self.path.partition("?")
            env = {
                "PATH": "/usr/bin:/bin",
                "GIT_PROJECT_ROOT": str(server.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command,
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REMOTE_USER": USER,
                "REMOTE_ADDR": "127.0.0.1",
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            body = self.read_body()
            env["CONTENT_LENGTH"] = str(len(body))
            done = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True,
                                  check=False, timeout=60)
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            status, headers = 200, []
            for line in head.decode().split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    return Handler


@pytest.fixture
def git_server(tmp_path: Path, playground) -> Iterator[GitServer]:
    """A bare repo (main: a Containerfile FROM the playground's busybox) served over HTTP
    with basic auth; partial clone allowed, so the fetch step's lazy blob fetch is tested
    with credentials too."""
    work = tmp_path / "src"
    work.mkdir()
    (work / "Containerfile").write_text(
        f"FROM {playground.base}\nCOPY message /message\nRUN cat /message\n"
    )
    (work / "message").write_text("from the private repository\n")
    root = tmp_path / "served"
    root.mkdir()
    bare = root / "repo.git"

    def git(*args: str, cwd: Path) -> None:
        subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                       env={**GIT_ENV, "HOME": str(tmp_path)})

    git("init", "-q", "-b", "main", cwd=work)
    git("add", ".", cwd=work)
    git("commit", "-qm", "one", cwd=work)
    git("clone", "-q", "--bare", str(work), str(bare), cwd=tmp_path)
    for key in ("uploadpack.allowFilter", "uploadpack.allowAnySHA1InWant"):
        git("config", key, "true", cwd=bare)
    server = GitServer(root=root, secret=SECRET)
    http = ThreadingHTTPServer(("127.0.0.1", 0), handler_for(server))
    server.port = http.server_address[1]
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        http.shutdown()
        http.server_close()


# --- running the CLI and looking for the token ----------------------------------------------

@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    ps_samples: list[str]

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(*args: str, api_url: str, env_extra: dict[str, str] | None = None,
            sample_ps: bool = False) -> CliRun:
    """`multiarch build` as a user runs it; `ps` sampled every 50 ms while it runs."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PREFECT_API") and k not in (ENV_CREDENTIALS,
                                                              ENV_CREDENTIALS_FILE)}
    env.update({"PREFECT_API_URL": api_url, **(env_extra or {})})
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "build", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or []), daemon=True)
    reader.start()
    samples: list[str] = []
    if sample_ps:
        # The CLI re-execs itself without the token at once; sample from its notice on.
        end = time.monotonic() + 60
        while not any("moved into this run's environment" in line for line in stderr):
            assert process.poll() is None or time.monotonic() < end, "".join(stderr)[-3000:]
            time.sleep(0.01)
        while process.poll() is None:
            samples.append(subprocess.run(["ps", "-eo", "pid,args", "--no-headers"],
                                          capture_output=True, text=True, check=False).stdout)
            time.sleep(0.05)
    stdout = process.stdout.read() if process.stdout else ""
    process.wait(timeout=600)
    reader.join(timeout=10)
    return CliRun(process.returncode, stdout, "".join(stderr), samples)


def build_args(server: GitServer, context: str, image: str, work: Path, *extra: str
               ) -> list[str]:
    return ["--image", image, "--platform", "linux/amd64", "--context", context,
            "--git-ref", "main", "--insecure-registry", "--work-dir", str(work), "--json",
            *extra]


def flow_runs_of(image_repository: str) -> list:
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[f"image:{image_repository}"])))


def stored_by_prefect(flow_run_id: UUID) -> str:
    """Everything the Prefect server keeps about a flow run, as one text."""
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs of an in-process run are shipped in the background
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        end = time.monotonic() + 20
        while True:
            logs = client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if logs or time.monotonic() > end:
                break
            time.sleep(0.5)
        states = client.read_flow_run_states(flow_run_id)
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id={"any_": [flow_run_id]}))
        task_states = [s for t in task_runs for s in client.read_task_run_states(t.id)]
    parts = [
        json.dumps(run.parameters), run.name, json.dumps(run.tags),
        *(log.message for log in logs),
        *(f"{s.name}: {s.message}" for s in [*states, *task_states]),
        *(t.name for t in task_runs),
        *artifact_data(flow_run_id),
    ]
    assert logs, "the run logged nothing: the check would be empty"
    return "\n".join(str(part) for part in parts)


def image_texts(image_ref: str) -> tuple[dict, list[dict]]:
    """(the index, each platform's image config) of a pushed tag."""
    index = json.loads(skopeo_raw(image_ref))
    name = image_ref.rsplit(":", 1)[0]
    configs = []
    for entry in index["manifests"]:
        configs.append(json.loads(subprocess.run(
            ["skopeo", "inspect", "--config", "--raw", "--tls-verify=false",
             f"docker://{name}@{entry['digest']}"],
            check=True, capture_output=True, timeout=60).stdout))
    return index, configs


def leftover_stores() -> list[str]:
    return sorted(str(p) for p in Path("/dev/shm").glob("multiarch-git-*"))


def assert_nothing_left(work: Path) -> None:
    builds = work / "builds"
    assert not builds.exists() or not any(builds.iterdir()), list(builds.rglob("*"))[:10]
    assert not list(work.rglob("*.git-credentials"))


def assert_published_clean(image_ref: str, server: GitServer) -> None:
    index, configs = image_texts(image_ref)
    assert index["annotations"][SOURCE_LABEL] == server.clean_url
    assert SECRET not in json.dumps(index)
    for config in configs:
        assert config["config"]["Labels"][SOURCE_LABEL] == server.clean_url
        assert SECRET not in json.dumps(config)


# --- scenarios --------------------------------------------------------------------------------

def test_token_in_the_context_url_reaches_git_and_nothing_else(
    playground, prefect_server, git_server, tmp_path, record_scenario
):
    repository = f"tests/creds-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"
    work = tmp_path / "work"
    stores_before = leftover_stores()
    run = run_cli(*build_args(git_server, git_server.url_with(SECRET), image, work),
                  api_url=prefect_server, sample_ps=True)

    assert run.returncode == 0, run.output[-3000:]
    assert git_server.authorised > 0, "git never authenticated: the credential was lost"
    assert json.loads(run.stdout)["index_digest"] == tag_digest(image)
    assert "moved into this run's environment" in run.stderr
    assert SECRET not in run.output
    assert_published_clean(image, git_server)
    (flow_run,) = flow_runs_of(repository)
    assert flow_run.parameters["context"] == git_server.clean_url
    assert SECRET not in stored_by_prefect(flow_run.id)
    assert run.ps_samples, "the build ended before ps was sampled"
    assert any("buildah" in sample for sample in run.ps_samples), "ps missed the build"
    leaked = [line for sample in run.ps_samples for line in sample.splitlines()
              if SECRET in line]
    assert not leaked, leaked[:3]
    assert_nothing_left(work)
    assert leftover_stores() == stores_before
    record_scenario(
        "git context URL with a token (CLI)",
        f"the CLI moves the token into the run's environment and re-execs itself; git gets it "
        f"from a 0600 credential-store file ({git_server.authorised} authenticated requests); "
        f"labels, index annotations, CLI output, Prefect parameters/logs/states and "
        f"{len(run.ps_samples)} ps samples hold only {git_server.clean_url}",
        "nothing: the credential files went with the run's scratch",
    )


@pytest.mark.parametrize(
    ("case", "token", "extra", "expected"),
    [
        ("unknown ref", SECRET, ("--git-ref", "no-such-branch"),
         "git_ref 'no-such-branch' was not found in http://127.0.0.1:"),
        ("wrong token", "WRONGTOKEN", (), "Authentication failed for 'http://127.0.0.1:"),
    ],
)  # fmt: skip
def test_a_failing_run_names_the_clean_url_only(
    playground, prefect_server, git_server, tmp_path, record_scenario, case, token, extra,
    expected,
):
    repository = f"tests/creds-fail-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"
    work = tmp_path / "work"
    run = run_cli(*build_args(git_server, git_server.url_with(token), image, work), *extra,
                  api_url=prefect_server)

    assert run.returncode != 0
    reasons = [line for line in run.stderr.splitlines() if line.startswith("multiarch: ")
               and "moved into" not in line]
    assert len(reasons) == 1, run.stderr[-3000:]
    assert expected in reasons[0]
    assert token not in run.output
    (flow_run,) = flow_runs_of(repository)
    stored = stored_by_prefect(flow_run.id)
    assert token not in stored
    assert expected in stored  # the failed state says why, with the clean URL
    assert tag_digest(image) is None
    assert not (work / "builds").exists() or not any((work / "builds").iterdir())
    record_scenario(
        f"git context URL with a token, {case}",
        f"fails before any build: `{reasons[0]}`; the token is in neither the error, the CLI "
        "output nor Prefect's stored run",
        "nothing: no build started, no tag written",
    )


def test_credentials_file_with_a_clean_url(
    playground, prefect_server, git_server, tmp_path, record_scenario
):
    store = tmp_path / "git-credentials"
    store.write_text(f"# team CI\n{git_server.url_with(SECRET).removesuffix('/repo.git')}\n")
    store.chmod(0o600)
    repository = f"tests/creds-file-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"
    work = tmp_path / "work"
    run = run_cli(*build_args(git_server, git_server.clean_url, image, work),
                  api_url=prefect_server, env_extra={ENV_CREDENTIALS_FILE: str(store)})

    assert run.returncode == 0, run.output[-3000:]
    assert git_server.authorised > 0 and git_server.refused > 0  # asked, then answered
    assert "moved into" not in run.stderr
    assert SECRET not in run.output
    assert_published_clean(image, git_server)
    (flow_run,) = flow_runs_of(repository)
    assert SECRET not in stored_by_prefect(flow_run.id)
    assert_nothing_left(work)
    record_scenario(
        "git credentials from a credentials file",
        f"{ENV_CREDENTIALS_FILE} names a git-credential-store file; pin, Containerfile read "
        "and fetch authenticate through it; the URL never carries the token",
        "nothing: the per-run copies went with the run's scratch",
    )


def test_secret_block_with_a_clean_url_and_without_it(
    playground, prefect_server, git_server, tmp_path, record_scenario
):
    from prefect.blocks.system import Secret

    block = f"git-creds-{uuid.uuid4().hex[:8]}"
    Secret(value=git_server.url_with(SECRET).removesuffix("/repo.git")).save(block)
    repository = f"tests/creds-block-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"
    run = run_cli(*build_args(git_server, git_server.clean_url, image, tmp_path / "work",
                              "--git-credentials-block", block), api_url=prefect_server)

    assert run.returncode == 0, run.output[-3000:]
    assert git_server.authorised > 0
    assert SECRET not in run.output
    assert_published_clean(image, git_server)
    (flow_run,) = flow_runs_of(repository)
    assert flow_run.parameters["runner"]["git_credentials_block"] == block
    assert SECRET not in stored_by_prefect(flow_run.id)
    assert_nothing_left(tmp_path / "work")

    without = run_cli(*build_args(git_server, git_server.clean_url,
                                  f"{playground.address}/{repository}:2", tmp_path / "w2"),
                      api_url=prefect_server)
    assert without.returncode != 0
    assert "could not read Username" in without.stderr or "Authentication" in without.stderr
    record_scenario(
        "git credentials from a Prefect Secret block",
        "runner.git_credentials_block names the block; the flow run stores only its name; "
        "without it the same URL fails at pinning with git's own reason",
        "nothing",
    )


def test_a_deployment_passing_a_token_in_context_is_warned_and_redacted(
    playground, prefect_server, git_server, tmp_path, record_scenario, monkeypatch
):
    """Deployments pass parameters straight to the flow: Prefect stored the token before
    our code ran. The build still works, everything after it is clean, and the run says so."""
    from flows.build import build_multiarch_image
    from multiarch.request import RunnerOptions

    monkeypatch.setenv(ENV_CREDENTIALS, "")  # restored afterwards: the flow writes it
    repository = f"tests/creds-param-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"
    state = build_multiarch_image(
        image=image, platforms=["linux/amd64"], context=git_server.url_with(SECRET),
        git_ref="main", insecure_registry=True,
        runner=RunnerOptions(work_dir=str(tmp_path / "work")), return_state=True,
    )
    assert state.is_completed(), state.message
    assert_published_clean(image, git_server)
    (flow_run,) = flow_runs_of(repository)
    stored = stored_by_prefect(flow_run.id)
    assert "Prefect has already stored" in stored
    parameters = json.dumps(flow_run.parameters)
    assert stored.replace(parameters, "").count(SECRET) == 0  # only the stored parameter
    assert_nothing_left(tmp_path / "work")
    record_scenario(
        "deployment passes a git URL with a token as `context`",
        "the build works; labels, annotations, logs and states carry the clean URL; the run "
        "logs a warning that Prefect already stored the parameter and to use a Secret block",
        "the token in the flow run's stored parameters (Prefect wrote it before the flow ran)",
    )


def test_kubernetes_fetch_gets_the_token_only_from_its_mounted_secret(
    playground, prefect_server, git_server, tmp_path, record_scenario, monkeypatch, kube_builder
):
    """The fetch pod's git reads a Secret mounted only into that container; the Job spec
    carries the Secret's name. (The worker's own git calls use a credentials file.)"""
    from flows.build import build_multiarch_image
    from multiarch.runners.kubernetes.manifests import GIT_CREDENTIALS_KEY

    line = git_server.url_with(SECRET).removesuffix("/repo.git")
    store = tmp_path / "worker-credentials"
    store.write_text(f"{line}\n")
    monkeypatch.setenv(ENV_CREDENTIALS_FILE, str(store))
    repository = f"tests/creds-kube-{uuid.uuid4().hex[:8]}"
    image = f"{playground.address}/{repository}:1"
    cluster = kube_builder
    cluster.create_secret("git-creds", data={GIT_CREDENTIALS_KEY: f"{line}\n"})
    try:
        before = git_server.authorised
        state = build_multiarch_image(
            image=image, platforms=["linux/amd64"], context=git_server.clean_url,
            git_ref="main", insecure_registry=True, return_state=True,
            runner={"kind": "kubernetes", "timeout_s": 600, "kubernetes": {
                "kubeconfig": str(cluster.kubeconfig), "namespace": cluster.namespace,
                "builder_image": cluster.builder_image, "unschedulable_grace_s": 2,
                "git_credentials_secret": "git-creds"}},
        )
        assert state.is_completed(), state.message
        assert cluster.jobs() == []
        without = build_multiarch_image(
            image=f"{image[:-2]}:2", platforms=["linux/amd64"], context=git_server.clean_url,
            git_ref="main", insecure_registry=True, return_state=True,
            runner={"kind": "kubernetes", "timeout_s": 600, "kubernetes": {
                "kubeconfig": str(cluster.kubeconfig), "namespace": cluster.namespace,
                "builder_image": cluster.builder_image, "unschedulable_grace_s": 2}},
        )
        assert without.is_failed()  # the worker's file never reaches a pod
        assert "step fetch" in without.message or "fetch" in without.message, without.message
        assert SECRET not in without.message
        assert cluster.jobs() == []
    finally:
        cluster.delete_secret("git-creds")
    assert git_server.authorised > before
    assert_published_clean(image, git_server)
    runs = flow_runs_of(repository)
    assert len(runs) == 2
    for flow_run in runs:
        assert SECRET not in stored_by_prefect(flow_run.id)
    record_scenario(
        "kubernetes runner, git credentials from a Secret",
        "the fetch init container mounts runner.kubernetes.git_credentials_secret read-only "
        "and git reads it through the store helper; no other container mounts it, and no "
        "Job arg or env value holds the token; without the Secret the fetch step fails with "
        "git's own reason (no credentials for the host) even though the worker has them",
        "nothing: Jobs deleted, the Secret stays the cluster's",
    )
