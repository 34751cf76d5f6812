"""Build secrets, --ssh and --build-context: parsing, the request's rules, preflight, the
plan's argv and the Job, and that a value is never where a reference belongs."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from multiarch import build_secrets
from multiarch.build_secrets import (
    BuildSecret,
    SshSource,
    build_arg_warnings,
    check_build_secrets,
    check_mounts,
    check_secret_blocks,
    local_secrets,
    looks_secret,
    mount_uses,
)
from multiarch.cli import build_parser, request_from_args
from multiarch.errors import ConfigurationError, StepFailed
from multiarch.parameters import flow_signature
from multiarch.plan import PlanPaths, plan_build
from multiarch.platforms import Platform
from multiarch.provenance import REDACTED, redact_build_args
from multiarch.request import BuildRequest, RunnerOptions, describe_validation_error
from multiarch.runners.kubernetes.manifests import platform_job
from multiarch.runners.kubernetes.options import KubernetesOptions
from multiarch.source import PinnedSource
from multiarch.supplychain import SupplyChainOptions

VALUE = "s3cr3t-Value-Zq9!"  # never in argv, a parameter, a manifest or a log line
SHA = "0123456789abcdef0123456789abcdef01234567"
GIT_URL = "https://git.example.com/team/app.git"
PATHS = PlanPaths(checkout="/s/src", storage_root="/s/root", storage_runroot="/s/run",
                  layout="/shared/r/linux-amd64")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Containerfile").write_text(
        "FROM scratch\nRUN --mount=type=secret,id=tok cat /run/secrets/tok\n")
    return directory


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(VALUE)
    return path


def request_for(context: str, **fields: Any) -> BuildRequest:
    return BuildRequest.model_validate({"image": "127.0.0.1:5000/team/app:1",
                                        "platforms": ["linux/amd64"], "context": context,
                                        **fields})


def refusal(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        BuildRequest.model_validate({"image": "r.example.com/a:1", "platforms": ["linux/amd64"],
                                     "context": GIT_URL, **fields})
    return describe_validation_error(caught.value)


# --- parsing ------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "kind", "source", "written"), [
    ("id=tok,src=/run/tok", "src", "/run/tok", "id=tok,src=/run/tok"),
    ("id=tok,source=rel/tok", "src", "rel/tok", "id=tok,src=rel/tok"),
    ("type=file,id=tok,src=/t", "src", "/t", "id=tok,src=/t"),
    ("id=npm.rc,env=NPM_TOKEN", "env", "NPM_TOKEN", "id=npm.rc,env=NPM_TOKEN"),
    ("type=env,id=a,env=A", "env", "A", "id=a,env=A"),
    ("id=tok,block=npm-token", "block", "npm-token", "id=tok,block=npm-token"),
])
def test_the_buildkit_forms_and_a_block_are_read(text, kind, source, written):
    secret = BuildSecret.model_validate(text)
    assert (secret.kind, secret.source) == (kind, source)
    assert str(secret) == written
    assert BuildSecret.model_validate(str(secret)) == secret


@pytest.mark.parametrize(("text", "says"), [
    ("src=/t", "has no id="),
    ("id=tok", "names no source"),
    ("id=tok,src=/t,env=T", "names 2 sources"),
    ("id=tok,value=hunter2", "unknown value="),
    ("id=tok,env=not a name", "not an environment variable name"),
    ("id=tok,env=", "env= is empty"),
    ("id=../x,src=/t", "secret id '../x' is invalid"),
    ("id=t,id=u,src=/t", "id= is given twice"),
    ("type=env,id=t,src=/t", "type=env does not go with src="),
    ("tok", "is not KEY=VALUE"),
])
def test_a_malformed_secret_is_refused_with_the_forms(text, says):
    message = refusal(secrets=[text], runner={"kind": "local"}, context="/")
    assert message.startswith("secrets.0: ") and says in message
    assert "\n" not in message


def test_the_cli_flags_become_the_request_and_the_parameters_hold_references(context,
                                                                           token_file):
    args = build_parser().parse_args([
        "build", "--image", "127.0.0.1:5000/a:1", "--platform", "linux/amd64",
        "--context", str(context), "--secret", f"id=tok,src={token_file}",
        "--secret", "id=npm,env=NPM_TOKEN", "--secret", "id=blk,block=npm-token",
        "--ssh", "default", "--ssh", "git=/home/me/.ssh/id_ed25519",
        "--build-context", "extra=../extra", "--build-context",
        "tools=docker-image://r.example.com/tools:1"])
    request = request_from_args(args)
    assert [str(s) for s in request.secrets] == [
        f"id=tok,src={token_file}", "id=npm,env=NPM_TOKEN", "id=blk,block=npm-token"]
    assert [str(s) for s in request.ssh] == ["default", "git=/home/me/.ssh/id_ed25519"]
    assert request.build_contexts == {"extra": "../extra",
                                      "tools": "docker-image://r.example.com/tools:1"}
    parameters = request.model_dump(mode="json")  # what Prefect stores as the flow run's
    assert parameters["secrets"] == [f"id=tok,src={token_file}", "id=npm,env=NPM_TOKEN",
                                     "id=blk,block=npm-token"]
    assert parameters["ssh"] == ["default", "git=/home/me/.ssh/id_ed25519"]
    assert VALUE not in json.dumps(parameters)
    assert BuildRequest.model_validate(parameters) == request
    signature = flow_signature(BuildRequest).parameters
    assert signature["secrets"].annotation == list[str] | None


def test_ssh_forms():
    assert SshSource.model_validate("default") == SshSource(id="default")
    assert SshSource.model_validate("k=/a,/b").paths == ("/a", "/b")
    with pytest.raises(ValidationError, match="empty path"):
        SshSource.model_validate("k=/a,")


# --- the request's rules ------------------------------------------------------------------

def test_where_each_source_can_work_and_nowhere_else():
    kube = {"kind": "kubernetes"}
    message = refusal(secrets=["id=tok,env=T"], runner=kube)
    assert message.startswith("secrets: the kubernetes runner builds in pods")
    assert "runner.kubernetes.build_secrets (--kube-secret ID=SECRET[/KEY])" in message
    message = refusal(runner={"kind": "local", "kubernetes": {"build_secrets": {"t": "s"}}},
                      context="/")
    assert message.startswith("runner.kubernetes.build_secrets: set, but the runner is local")
    assert refusal(ssh=["default"], runner=kube).startswith("ssh: the kubernetes runner's")
    assert refusal(build_contexts={"extra": "/srv/extra"}, runner=kube).startswith(
        "build_contexts: extra=/srv/extra is a directory of this machine")
    assert refusal(secrets=["id=t,env=A", "id=t,src=/b"], context="/").startswith(
        "secrets: id 't' is given twice")
    assert refusal(ssh=["default", "default=/k"], context="/").startswith(
        "ssh: id 'default' is given twice")
    assert refusal(build_contexts={"x": "docker-image://a/b:1"}, rebuild="if-changed",
                   runner=kube).startswith("build_contexts: rebuild if-changed cannot tell")
    assert refusal(build_contexts={"bad name": "/d"}, context="/").startswith(
        "build_contexts: name 'bad name' is invalid")
    # what does work there
    BuildRequest(image="r.example.com/a:1", platforms=("linux/amd64",), context=GIT_URL,
                 build_contexts={"tools": "docker-image://r.example.com/tools:1"},
                 runner=RunnerOptions(kind="kubernetes", kubernetes=KubernetesOptions(
                     build_secrets={"tok": "npm-token/token", "other": "other"})))


@pytest.mark.parametrize(("secrets", "says"), [
    ({"../x": "s"}, "secret id '../x' is invalid"),
    ({"tok": "Not_A_Name"}, "is not a valid Secret name"),
    ({"tok": "s/a key"}, "is not a valid Secret key"),
])
def test_kubernetes_build_secrets_are_names(secrets, says):
    with pytest.raises(ValidationError, match=says):
        KubernetesOptions(build_secrets=secrets)


def test_secret_build_arg_is_refused_in_one_line_naming_the_fix():
    message = refusal(supply_chain={"secret_build_args": ["NPM_TOKEN"]}, context="/")
    assert message.startswith("supply_chain.secret_build_args: removed:")
    assert "--secret id=NPM_TOKEN,env=NPM_TOKEN" in message
    assert "\n" not in message
    assert SupplyChainOptions().secret_build_args == ()  # the default still validates
    args = build_parser().parse_args(["build", "--image", "r.example.com/a:1", "--platform",
                                      "linux/amd64", "--context", GIT_URL,
                                      "--secret-build-arg", "TOKEN"])
    with pytest.raises(ValidationError, match="secret_build_args"):
        request_from_args(args)


# --- secret-looking build args ------------------------------------------------------------

@pytest.mark.parametrize(("name", "secret"), [
    ("GITHUB_TOKEN", True), ("API_KEY", True), ("apiKey", True), ("KEY", True),
    ("DB_PASSWORD", True), ("DB_PASS", True), ("MYSQL_PWD", True), ("NPM_AUTH", True),
    ("aws_secret_access_key", True), ("GH_PAT", True), ("AWS_CREDENTIALS", True),
    ("SSH_PRIVATE_KEY", True), ("OAUTH_CLIENT", True), ("APIKEY", True),
    ("KEYBOARD", False), ("KEYBOARD_LAYOUT", False), ("MONKEY", False), ("AUTHOR", False),
    ("PASSPORT_ID", False), ("PATH_PREFIX", False), ("VERSION", False), ("BASE", False),
    ("SOURCE_DATE_EPOCH", False),
])
def test_secret_looking_names_are_warned_about_and_redacted(name, secret):
    assert looks_secret(name) is secret
    if secret:  # the provenance never shows what preflight warned about
        assert redact_build_args({name: "v"})[name] == REDACTED


def test_the_warning_is_one_line_pointing_at_secret():
    assert build_arg_warnings(["BASE", "VERSION"]) == []
    (line,) = build_arg_warnings(["NPM_TOKEN", "BASE", "API_KEY"])
    assert line.startswith("build_args: WARNING: API_KEY, NPM_TOKEN look like secrets")
    assert "image's history" in line and "Prefect's stored flow-run parameters" in line
    assert "--secret id=API_KEY,env=API_KEY" in line
    assert "RUN --mount=type=secret,id=API_KEY" in line


# --- the Containerfile's mounts -----------------------------------------------------------

CONTAINERFILE = """\
FROM scratch AS base
RUN --mount=type=secret,id=tok \\
    --mount=type=cache,target=/c cat /run/secrets/tok
RUN --mount=type=secret,target=/run/secrets/npmrc,required=true cp /run/secrets/npmrc /x
RUN "--mount=type=ssh" git clone git@host:a
RUN --mount=type=ssh,id=deploy,required=false true
RUN --mount=type=secret,id=${WHICH} true
RUN echo --mount=type=secret,id=not-a-flag
"""


def test_mount_uses_reads_ids_targets_and_required():
    found = [(u.line, u.kind, u.id, u.required) for u in mount_uses(CONTAINERFILE)]
    assert found == [(2, "secret", "tok", None), (4, "secret", "npmrc", True),
                     (5, "ssh", "default", None), (6, "ssh", "deploy", False),
                     (7, "secret", "${WHICH}", None)]


def test_a_mount_without_a_source_is_refused_before_any_build():
    with pytest.raises(ConfigurationError) as caught:
        check_mounts(CONTAINERFILE, secrets=["tok"], ssh=["default"])
    message = str(caught.value)
    assert message.startswith("secrets: Containerfile line 4: RUN --mount=type=secret,id=npmrc "
                              "needs secret 'npmrc', which this build does not give")
    assert "--secret id=npmrc,src=FILE" in message and "required=false" in message
    with pytest.raises(ConfigurationError, match=r"^ssh: Containerfile line 5: .*--ssh default"):
        check_mounts(CONTAINERFILE, secrets=["tok", "npmrc"], ssh=[])
    notes = check_mounts(CONTAINERFILE, secrets=["tok", "npmrc", "spare"], ssh=["default"])
    assert any("id=deploy is not given, and the mount says required=false" in n for n in notes)
    assert any("names its id through an ARG" in n for n in notes)
    assert "secrets: spare given, but no RUN step of Containerfile mounts it" in notes


def test_preflight_checks_the_sources_of_a_local_build(context, token_file, monkeypatch,
                                                       tmp_path):
    monkeypatch.delenv("MULTIARCH_TEST_UNSET", raising=False)
    ok = request_for(str(context), secrets=[f"id=tok,src={token_file}"],
                     build_args={"NPM_TOKEN": "x"})
    notes = check_build_secrets(ok)
    assert notes[0].startswith("build_args: WARNING: NPM_TOKEN looks like a secret")
    assert f"secrets: tok from file {token_file}" in notes

    def refused(**fields: Any) -> str:
        with pytest.raises(ConfigurationError) as caught:
            check_build_secrets(request_for(str(context), **fields))
        assert "\n" not in str(caught.value)
        return str(caught.value)

    missing = tmp_path / "nope"
    assert refused(secrets=[f"id=tok,src={missing}"]).startswith(
        f"secrets.0: id=tok,src={missing}: cannot read {missing} (No such file or directory)")
    assert refused(secrets=[f"id=tok,src={tmp_path}"]).startswith(
        f"secrets.0: id=tok,src={tmp_path}: cannot read")
    assert refused(secrets=["id=tok,env=MULTIARCH_TEST_UNSET"]).startswith(
        "secrets.0: id=tok,env=MULTIARCH_TEST_UNSET: the environment variable "
        "MULTIARCH_TEST_UNSET is not set")
    assert refused().startswith("secrets: Containerfile line 2: RUN --mount=type=secret,id=tok")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    assert refused(secrets=[f"id=tok,src={token_file}"], ssh=["default"]).startswith(
        "ssh.0: default: SSH_AUTH_SOCK is not set")
    assert refused(secrets=[f"id=tok,src={token_file}"], ssh=[f"k={missing}"]).startswith(
        f"ssh.0: k={missing}: cannot read")
    assert refused(secrets=[f"id=tok,src={token_file}"],
                   build_contexts={"extra": str(missing)}).startswith(
        f"build_contexts: extra={missing} is not a directory")


def test_an_agent_socket_is_accepted(context, token_file, monkeypatch, tmp_path):
    path = tmp_path / "agent.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("SSH_AUTH_SOCK", str(path))
        request = request_for(str(context), secrets=[f"id=tok,src={token_file}"],
                              ssh=["default", f"other={path}"])
        assert "ssh: default forwarded" in check_build_secrets(request)


def test_a_git_context_is_checked_once_pinned():
    request = BuildRequest(image="r.example.com/a:1", platforms=("linux/amd64",),
                           context=GIT_URL, secrets=("id=tok,env=HOME",))
    assert check_build_secrets(request)[-1].endswith("checked once the git source is pinned")


def test_a_missing_secret_block_is_refused_naming_the_field(monkeypatch, context):
    def missing(name, *, field, holds):
        raise ConfigurationError(f"{field}: no Secret block named {name!r}: create one "
                                 f"holding {holds}")

    monkeypatch.setattr("multiarch.credentials.secret_block_value", missing)
    request = request_for(str(context), secrets=["id=tok,block=npm-token"])
    with pytest.raises(ConfigurationError, match=r"^secrets.0 \(id=tok,block=npm-token\): no "
                       r"Secret block named 'npm-token'"):
        check_secret_blocks(request)


# --- the plan's argv ----------------------------------------------------------------------

def test_the_build_argv_names_sources_never_values(context, token_file, monkeypatch):
    monkeypatch.setenv("NPM_TOKEN", VALUE)
    request = request_for(
        str(context), secrets=[f"id=tok,src={token_file}", "id=npm,env=NPM_TOKEN",
                               "id=blk,block=npm-token"],
        ssh=["default", "git=/keys/id_ed25519"],
        build_contexts={"extra": "/srv/extra", "tools": "docker-image://r.example.com/t:1"})
    source = PinnedSource(kind="local", location=str(context))
    paths = PlanPaths(checkout="/s/src", storage_root="/s/root", storage_runroot="/s/run",
                      layout="/shared/r/linux-amd64",
                      secret_files=(("blk", "/s/secrets/blk"),))
    build = plan_build(request, source, Platform.parse("linux/amd64"), paths,
                       run_id="r").steps[0]
    assert build.argv == (
        "buildah", "--root", "/s/root", "--runroot", "/s/run", "--storage-driver", "overlay",
        "build", "--isolation", "oci", "--runtime", "runc", "--platform", "linux/amd64",
        "--format", "oci",
        "--secret", f"id=tok,src={token_file}", "--secret", "id=npm,env=NPM_TOKEN",
        "--secret", "id=blk,src=/s/secrets/blk",
        "--ssh", "default", "--ssh", "git=/keys/id_ed25519",
        "--build-context", "extra=/srv/extra",
        "--build-context", "tools=docker-image://r.example.com/t:1",
        "--runtime-flag", "root=/s/run/runc", "--tag", "localhost/multiarch/linux-amd64:r",
        str(context),
    )  # fmt: skip
    assert VALUE not in repr(build)  # neither argv nor env
    assert build.env == {"BUILDAH_ISOLATION": "oci", "TMPDIR": "/s/run/buildah-tmp"}


def test_an_ssh_build_gets_a_short_tmpdir_for_the_agent_socket(context, token_file):
    request = request_for(str(context), secrets=[f"id=tok,src={token_file}"], ssh=["default"])
    with build_secrets.ssh_tmpdir(request) as short:
        assert short is not None and stat.S_IMODE(short.stat().st_mode) == 0o700
        link = f"{short}/{build_secrets.SHORT_TMP_LINK}"
        # what buildah 1.28 binds: TMPDIR/.buildah-ssh-sockNNNNNNNNN/ssh_auth_sock
        assert len(f"{link}/.buildah-ssh-sock1234567890/ssh_auth_sock") < 108
        paths = PlanPaths(checkout="/s/src", storage_root="/s/root", storage_runroot="/s/run",
                          layout="/l", tmpdir=link)
        source = PinnedSource(kind="local", location=str(context))
        build = plan_build(request, source, Platform.parse("linux/amd64"), paths,
                           run_id="r").steps[0]
        assert build.env["TMPDIR"] == link
    assert not short.exists()
    with build_secrets.ssh_tmpdir(request_for(str(context),
                                              secrets=[f"id=tok,src={token_file}"])) as none:
        assert none is None


def test_a_block_secret_without_its_file_never_reaches_buildah(context):
    request = request_for(str(context), secrets=["id=blk,block=b"])
    source = PinnedSource(kind="local", location=str(context))
    with pytest.raises(ConfigurationError, match="wrote no file"):
        plan_build(request, source, Platform.parse("linux/amd64"), PATHS, run_id="r")


def test_a_build_without_secrets_keeps_its_argv(context):
    request = request_for(str(context))
    source = PinnedSource(kind="local", location=str(context))
    build = plan_build(request, source, Platform.parse("linux/amd64"), PATHS,
                       run_id="r").steps[0]
    assert not {"--secret", "--ssh", "--build-context"} & set(build.argv)


# --- Kubernetes: a projected Secret in the build container only ---------------------------

def test_kubernetes_build_secrets_reach_the_build_step_only_by_path():
    request = BuildRequest(
        image="registry.example.com/team/hello:1.0", platforms=("linux/arm64",),
        context=GIT_URL, runner=RunnerOptions(kind="kubernetes", kubernetes=KubernetesOptions(
            build_secrets={"tok": "npm-token/token", "netrc": "netrc"})))
    source = PinnedSource(kind="git", location=GIT_URL, revision=SHA, ref="main")
    manifest = platform_job(request, source, Platform.parse("linux/arm64"), run_id="r",
                            flow_run_id="f")
    pod = manifest["spec"]["template"]["spec"]
    steps = {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}
    mount = {"name": "build-secrets", "mountPath": "/run/multiarch/build-secrets",
             "readOnly": True}
    assert [name for name, c in steps.items() if mount in c["volumeMounts"]] == ["build"]
    volume = next(v for v in pod["volumes"] if v["name"] == "build-secrets")
    assert volume == {"name": "build-secrets", "projected": {"defaultMode": 0o400, "sources": [
        {"secret": {"name": "npm-token", "items": [{"key": "token", "path": "tok"}]}},
        {"secret": {"name": "netrc", "items": [{"key": "netrc", "path": "netrc"}]}}]}}
    args = steps["build"]["args"]
    flags = [args[i + 1] for i, arg in enumerate(args) if arg == "--secret"]
    assert flags == ["id=tok,src=/run/multiarch/build-secrets/tok",
                     "id=netrc,src=/run/multiarch/build-secrets/netrc"]
    assert all("valueFrom" not in e for c in steps.values() for e in c["env"])
    import kubernetes_validate

    kubernetes_validate.validate(manifest, "1.30.0", strict=True)


# --- the local runner's files and masking -------------------------------------------------

def test_block_secrets_are_private_files_gone_after_the_build(context, tmp_path, token_file,
                                                              monkeypatch):
    monkeypatch.setenv("NPM_TOKEN", "env-value-1234")
    request = request_for(str(context), secrets=["id=blk,block=b", "id=npm,env=NPM_TOKEN",
                                                 f"id=tok,src={token_file}"])
    directory = tmp_path / "scratch" / "secrets"
    assert build_secrets.block_secret_files(request, directory) == (
        ("blk", str(directory / "blk")),)
    with local_secrets(request, directory,
                       read_block=lambda name, field: "block-value\nsecond-line") as secrets:
        written = directory / "blk"
        assert written.read_text() == "block-value\nsecond-line"
        assert stat.S_IMODE(written.stat().st_mode) == 0o600
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert secrets.mask(f"echo {VALUE} env-value-1234 block-value second-line ok") == \
            "echo *** *** *** *** ok"
        failure = StepFailed(f"[linux/amd64] step build exited with 1: {VALUE}", step="build",
                             exit_code=1, tail=["x", f"got {VALUE}"])
        masked = secrets.masked(failure)
        assert isinstance(masked, StepFailed) and VALUE not in str(masked)
        assert masked.tail == ["x", "got ***"] and masked.exit_code == 1
        secrets.forget()
        assert not directory.exists()
    with pytest.raises(RuntimeError), local_secrets(request, directory,
                                                    read_block=lambda n, f: "v2-value"):
        assert directory.exists()
        raise RuntimeError("the build failed")
    assert not directory.exists()
    assert not os.listdir(tmp_path / "scratch")


def test_a_build_context_name_is_not_a_base_image(tmp_path):
    from multiarch.rebuild import fingerprint

    context = tmp_path / "bc"
    context.mkdir()
    (context / "Containerfile").write_text("FROM scratch\nCOPY --from=extra a /a\n")
    (tmp_path / "extra").mkdir()
    request = request_for(str(context), build_contexts={"extra": str(tmp_path / "extra")})
    source = PinnedSource(kind="local", location=str(context))
    assert fingerprint(request, source).bases == {}
