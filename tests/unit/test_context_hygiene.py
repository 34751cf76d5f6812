"""Context hygiene, the pure parts: what looks secret, what COPY/ADD covers, buildah's
ignore semantics, symlink resolution; and the local check on a temporary directory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from multiarch import context_hygiene as hygiene
from multiarch.context_hygiene import Entry
from multiarch.context_links import LinkLoop, resolve_in_tree
from multiarch.copy_sources import CopySources, copy_sources
from multiarch.errors import ConfigurationError
from multiarch.ignore_rules import IgnoreRules, find_ignore_rules
from multiarch.preflight import check_context
from multiarch.rebuild import fingerprint, read_containerfile
from multiarch.request import BuildRequest
from multiarch.source import PinnedSource

TOKEN = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"


def request_for(context: Path, **overrides: Any) -> BuildRequest:
    fields: dict[str, Any] = {"image": "127.0.0.1:5000/team/app:1",
                              "platforms": ["linux/amd64"], "context": str(context)}
    return BuildRequest.model_validate({**fields, **overrides})


# --- what looks secret ---------------------------------------------------------------------


@pytest.mark.parametrize("path", [
    ".env", "app/.env", ".env.production", ".npmrc", ".netrc", ".pypirc", ".git-credentials",
    "id_rsa", "home/.ssh/id_ed25519", "etc/ssh/ssh_host_rsa_key", "tls/server.pem",
    "certs/site.KEY", "store.p12", ".docker/config.json", "x/.aws/credentials", ".kube/config",
    ".pgpass", ".htpasswd", "putty.ppk",
])
def test_secret_looking_files(path: str) -> None:
    assert hygiene.looks_secret(path)


@pytest.mark.parametrize("path", [
    ".env.example", ".env.sample", "id_rsa.pub", "README.md", "keys.py", ".gitignore",
    "docker/config.json", "kube/config", "ssh_host_rsa_key.pub", "app/environment.py",
])
def test_ordinary_files(path: str) -> None:
    assert not hygiene.looks_secret(path)


def test_git_directories_look_secret_and_files_named_git_do_not() -> None:
    assert hygiene.looks_secret(".git", is_dir=True)
    assert hygiene.looks_secret("vendor/lib/.git", is_dir=True)
    assert not hygiene.looks_secret(".github", is_dir=True)
    assert not hygiene.looks_secret(".git")  # a worktree's `gitdir:` pointer


@pytest.mark.parametrize(("config", "secret"), [
    (f'[remote "origin"]\n\turl = https://alice:{TOKEN}@github.com/o/r.git\n', True),
    (f'[remote "origin"]\n\turl = https://{TOKEN}@github.com/o/r.git\n', True),
    ('[remote "origin"]\n\turl = https://x-access-token:abc123@github.com/o/r\n', True),
    (f'[url "https://u:{TOKEN}@git.example.com/"]\n\tinsteadOf = https://git.example.com/\n',
     True),
    ('[http "https://github.com/"]\n\textraheader = AUTHORIZATION: basic eC1hY2Nlc3M=\n', True),
    ('[remote "origin"]\n\turl = https://github.com/o/r.git\n', False),
    ('[remote "origin"]\n\turl = https://alice@bitbucket.org/o/r.git\n', False),
    ('[remote "origin"]\n\turl = ssh://git@host/o/r.git\n', False),
    ('[remote "origin"]\n\turl = git@github.com:o/r.git\n', False),
])
def test_credentials_in_a_git_config(config: str, secret: bool) -> None:
    assert hygiene.git_config_has_credentials(config) is secret


# --- ignore files --------------------------------------------------------------------------


@pytest.mark.parametrize(("lines", "path", "excluded"), [
    ([".git"], ".git", True),
    ([".git"], ".git/config", True),  # a directory's pattern covers what is under it
    (["/.git/"], ".git/config", True),  # slashes trimmed at both ends
    ([".git"], "sub/.git/config", False),  # patterns are anchored at the root
    (["**/.git"], "sub/.git/config", True),
    (["**/.env"], ".env", True),  # ** matches zero directories too
    (["*.pem"], "a.pem", True),
    (["*.pem"], "certs/a.pem", False),  # * does not cross /
    (["*/*.pem"], "certs/a.pem", True),
    (["certs", "!certs/ca.pem"], "certs/ca.pem", False),  # an exception, last match wins
    (["certs", "!certs/ca.pem"], "certs/key.pem", True),
    (["!certs/ca.pem", "certs"], "certs/ca.pem", True),
    (["# .env"], ".env", False),  # a comment
    ([" # .env"], "# .env", True),  # a comment only in column 1: else a pattern
    (["  .env  "], ".env", True),  # trimmed
    ([".env\r"], ".env", True),  # CRLF files work
    (["a/../.env"], ".env", True),  # cleaned
    (["./.env"], ".env", True),
    (["env?"], "env1", True),
    (["[ab].key"], "b.key", True),
    (["[ab].key"], "c.key", False),
    (["x.env"], "xaenv", False),  # . is literal
])
def test_ignore_patterns_as_buildah_reads_them(lines: list[str], path: str,
                                               excluded: bool) -> None:
    rules = IgnoreRules.from_text("\n".join(lines))
    assert rules.excludes(path) is excluded


def test_the_ignore_file_buildah_picks() -> None:
    files = {"Containerfile.containerignore": b"a\n", "Containerfile.dockerignore": b"b\n",
             ".containerignore": b"c\n", ".dockerignore": b"d\n"}

    def pick(present: set[str]) -> str | None:
        read = {k: v for k, v in files.items() if k in present}.get
        return find_ignore_rules("Containerfile", read).source

    assert pick(set(files)) == "Containerfile.dockerignore"  # 1.28.2: the second stat wins
    assert pick({"Containerfile.containerignore", ".containerignore"}) == \
        "Containerfile.containerignore"
    assert pick({".containerignore", ".dockerignore"}) == ".containerignore"
    assert pick({".dockerignore"}) == ".dockerignore"
    assert pick(set()) is None
    read = {"build/app.cf.containerignore": b"x\n"}.get
    assert find_ignore_rules("build/app.cf", read).source == \
        "build/app.cf.containerignore"


# --- COPY/ADD ------------------------------------------------------------------------------


def sources(text: str, **build_args: str) -> CopySources:
    return copy_sources(text, build_args)


@pytest.mark.parametrize("step", ["COPY . /src", "COPY ./ /src", "ADD / /src",
                                  'COPY ["./", "/src"]', "COPY --chown=1:1 . /src",
                                  "COPY app/../ /src"])
def test_the_whole_context(step: str) -> None:
    assert sources(f"FROM scratch\n{step}\n").everything


def test_a_directory_covers_what_is_under_it_only() -> None:
    found = sources("FROM scratch\nCOPY app/ /app\n")
    assert found.covers("app/.env")
    assert found.covers("app/config/.npmrc")
    assert not found.covers(".env")
    assert not found.covers("application/.env")


def test_globs_match_one_level_each() -> None:
    found = sources("FROM scratch\nCOPY *.txt src/*/conf /dst/\n")
    assert found.covers("a.txt")
    assert not found.covers("d/a.txt")
    assert found.covers("src/x/conf/.env")
    assert not found.covers("src/conf/.env")


def test_what_sends_nothing_from_the_context() -> None:
    text = ("FROM scratch AS build\nCOPY --from=build /x /y\nADD https://example.com/a.tgz /\n"
            "ADD git@github.com:o/r.git /r\nCOPY <<EOF /etc/x\n")
    assert sources(text).empty


def test_no_copy_no_coverage() -> None:
    assert sources("FROM busybox\nRUN true\n").empty


def test_variables_are_substituted_and_unknown_ones_cover_everything() -> None:
    text = "ARG DIR=app\nFROM scratch\nARG DIR\nENV CONF=$DIR/conf\nCOPY ${CONF} /c\n"
    assert sources(text).patterns == ("app/conf",)
    assert sources(text, DIR="web").patterns == ("web/conf",)
    assert sources("FROM scratch\nCOPY $NOWHERE /x\n").everything
    assert sources("FROM scratch\nARG TARGETARCH\nCOPY bin/$TARGETARCH /x\n").everything


def test_a_stage_sees_a_global_arg_only_when_it_declares_it() -> None:
    assert sources("ARG DIR=app\nFROM scratch\nCOPY $DIR /x\n").everything
    assert sources("ARG DIR=app\nFROM scratch\nARG DIR\nCOPY $DIR /x\n").patterns == ("app",)


def test_flagged_entries_pass_the_coverage_and_the_ignore_file() -> None:
    entries = [Entry(path=".git", is_dir=True), Entry(path=".env"), Entry(path="app/.env")]
    everything = CopySources(everything=True)
    assert [e.shown for e in hygiene.flagged(entries, everything, IgnoreRules())] == \
        [".env", ".git/", "app/.env"]
    rules = IgnoreRules.from_text(".git\n**/.env\n!app/.env\n")
    assert [e.shown for e in hygiene.flagged(entries, everything, rules)] == ["app/.env"]
    # excluding only part of .git still sends its config
    rules = IgnoreRules.from_text(".git/objects\n")
    assert ".git/" in [e.shown for e in hygiene.flagged(entries, everything, rules)]
    rules = IgnoreRules.from_text(".git/*\n")
    assert ".git/" not in [e.shown for e in hygiene.flagged(entries, everything, rules)]
    app = CopySources(patterns=("app",))
    assert [e.shown for e in hygiene.flagged(entries, app, IgnoreRules())] == ["app/.env"]


# --- symlinks ------------------------------------------------------------------------------


def links(table: dict[str, str]) -> Any:
    return table.get


def test_paths_without_links_resolve_to_themselves() -> None:
    assert resolve_in_tree("a/b/Containerfile", links({})).path == "a/b/Containerfile"


def test_links_at_any_level_are_followed_inside_the_tree() -> None:
    table = {"Containerfile": "build/Containerfile", "build": "deploy/build",
             "deploy/build/Containerfile": "../real"}
    assert resolve_in_tree("Containerfile", links(table)).path == "deploy/real"


def test_dotdot_after_a_link_applies_where_the_link_led() -> None:
    table = {"a": "x/y/z"}
    assert resolve_in_tree("a/../f", links(table)).path == "x/y/f"


@pytest.mark.parametrize(("table", "path", "link", "escape"), [
    ({"Containerfile": "/etc/passwd"}, "Containerfile", "Containerfile", "/etc/passwd"),
    ({"Containerfile": "../outside"}, "Containerfile", "Containerfile", "../outside"),
    ({"d/up": "../.."}, "d/up/x", "d/up", "../.."),
    ({"b": "sub/../../x"}, "b", "b", "sub/../../x"),
    ({"a": "x", "x": "/abs"}, "a", "x", "/abs"),
])
def test_links_that_leave_the_tree(table: dict[str, str], path: str, link: str,
                                   escape: str) -> None:
    resolution = resolve_in_tree(path, links(table))
    assert (resolution.path, resolution.link, resolution.escape) == (None, link, escape)


def test_a_link_loop() -> None:
    with pytest.raises(LinkLoop):
        resolve_in_tree("a", links({"a": "b", "b": "a"}))


# --- the local check -----------------------------------------------------------------------


@pytest.fixture
def context(tmp_path: Path) -> Path:
    directory = tmp_path / "ctx"
    directory.mkdir()
    (directory / "Containerfile").write_text("FROM scratch\nCOPY . /src\n")
    return directory


def test_a_clean_context_has_no_note(context: Path) -> None:
    (context / "main.py").write_text("print(1)\n")
    assert check_context(request_for(context), None) == []


def test_a_committed_env_is_warned_about(context: Path) -> None:
    (context / ".env").write_text("SECRET=1\n")
    assert check_context(request_for(context), None) == [
        "context: WARNING: the Containerfile's COPY/ADD would copy 1 path that looks secret "
        "into the image: .env (no .containerignore or .dockerignore excludes it): list it in "
        f"{context}/.containerignore, or remove it from the context"]


def test_the_warning_is_bounded(context: Path) -> None:
    for n in range(15):
        (context / f"k{n:02}.pem").write_text("x")
    (line,) = check_context(request_for(context), None)
    assert "copy 15 paths" in line
    assert "k09.pem and 5 more" in line
    assert "k10.pem" not in line


def test_an_ignore_file_that_misses_names_itself(context: Path) -> None:
    (context / ".env").write_text("SECRET=1\n")
    (context / "id_rsa").write_text("key\n")
    (context / ".dockerignore").write_text("id_rsa\n")
    (line,) = check_context(request_for(context), None)
    assert ": .env (.dockerignore does not exclude it): list it in " \
        f"{context}/.dockerignore" in line


def test_a_copy_of_a_subdirectory_does_not_send_the_root_env(context: Path) -> None:
    (context / "Containerfile").write_text("FROM scratch\nCOPY app/ /app\n")
    (context / "app").mkdir()
    (context / "app" / "main.py").write_text("")
    (context / ".env").write_text("SECRET=1\n")
    (context / ".git").mkdir()
    (context / ".git" / "config").write_text(f"url = https://u:{TOKEN}@h/r\n")
    assert check_context(request_for(context), None) == []


def credentialed_git(context: Path) -> None:
    (context / ".git").mkdir()
    (context / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (context / ".git" / "config").write_text(
        f'[remote "origin"]\n\turl = https://alice:{TOKEN}@github.com/o/r.git\n')


def test_a_credentialed_git_config_is_refused(context: Path) -> None:
    credentialed_git(context)
    with pytest.raises(ConfigurationError) as info:
        check_context(request_for(context), None)
    assert str(info.value) == (
        "context: .git/config holds a credential in a URL (not shown) and the Containerfile's "
        f"COPY/ADD would copy it into the image: add .git to {context}/.containerignore, or "
        "pass --allow-secret-files (allow_secret_files: true) to build anyway")
    assert TOKEN not in str(info.value)


def test_a_submodules_credentialed_config_is_refused(context: Path) -> None:
    (context / ".git" / "modules" / "lib").mkdir(parents=True)
    (context / ".git" / "config").write_text("[core]\n\tbare = false\n")
    (context / ".git" / "modules" / "lib" / "config").write_text(f"url = https://u:{TOKEN}@h/r\n")
    with pytest.raises(ConfigurationError, match=r"^context: \.git/modules/lib/config holds"):
        check_context(request_for(context), None)


def test_the_opt_out_builds_with_a_warning(context: Path) -> None:
    credentialed_git(context)
    (line,) = check_context(request_for(context, allow_secret_files=True), None)
    assert ": .git/ (no .containerignore or .dockerignore excludes it; .git/config holds a " \
        "credential (not shown), copied as allow_secret_files is set)" in line
    assert TOKEN not in line


def test_an_ignored_git_directory_is_fine(context: Path) -> None:
    credentialed_git(context)
    (context / ".containerignore").write_text(".git\n")
    assert check_context(request_for(context), None) == []


def test_a_clean_git_config_is_only_warned_about(context: Path) -> None:
    (context / ".git").mkdir()
    (context / ".git" / "config").write_text('[remote "o"]\n\turl = https://h/r.git\n')
    (line,) = check_context(request_for(context), None)
    assert "image: .git/ (" in line


def test_a_containerfile_link_out_of_the_context_is_refused(tmp_path: Path,
                                                            context: Path) -> None:
    host = tmp_path / "host-Containerfile"
    host.write_text("FROM scratch\n")
    (context / "Containerfile").unlink()
    (context / "Containerfile").symlink_to(host)
    with pytest.raises(ConfigurationError) as info:
        check_context(request_for(context), None)
    assert str(info.value) == (
        f"containerfile: Containerfile resolves through a symlink outside the context "
        f"{context} (it points to {host}), so buildah would read that file from the machine "
        "that builds: replace the link by the file itself, or point it at a file inside the "
        "context")


def test_a_directory_link_out_of_the_context_is_refused(tmp_path: Path,
                                                        context: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "Containerfile").write_text("FROM scratch\n")
    (context / "build").symlink_to(outside)
    with pytest.raises(ConfigurationError, match=r"^containerfile: build/Containerfile "
                       r"resolves through a symlink outside the context .* \(it points to "
                       f"{outside}/Containerfile\\)"):
        check_context(request_for(context, containerfile="build/Containerfile"), None)


def test_links_inside_the_context_are_fine(context: Path) -> None:
    (context / "deploy").mkdir()
    (context / "deploy" / "Containerfile.real").write_text("FROM scratch\n")
    (context / "build").symlink_to("deploy")
    (context / "Absolute").symlink_to(context / "deploy" / "Containerfile.real")
    assert check_context(request_for(context, containerfile="build/Containerfile.real"),
                         None) == []
    assert check_context(request_for(context, containerfile="Absolute"), None) == []


def test_the_digest_is_of_the_bytes_buildah_reads(context: Path) -> None:
    """Through a link, CRLF kept: the provenance's digest is the file's own sha256."""
    real = b"FROM scratch\r\nCOPY . /src\r\n"
    (context / "deploy").mkdir()
    (context / "deploy" / "Containerfile").write_bytes(real)
    (context / "Containerfile").unlink()
    (context / "Containerfile").symlink_to("deploy/Containerfile")
    request = request_for(context)
    source = PinnedSource(kind="local", location=str(context))
    assert fingerprint(request, source).containerfile_digest == \
        "sha256:" + hashlib.sha256(real).hexdigest()
    assert read_containerfile(request, source) == "FROM scratch\nCOPY . /src\n"  # as before


def test_a_large_uncovered_directory_is_not_listed(context: Path, monkeypatch) -> None:
    (context / "Containerfile").write_text("FROM scratch\nCOPY app/ /app\n")
    (context / "app").mkdir()
    (context / "node_modules" / "x").mkdir(parents=True)
    listed: list[str] = []
    walk = os.walk

    def recording(top: Any, *args: Any, **kwargs: Any) -> Any:
        for root, dirs, files in walk(top, *args, **kwargs):
            listed.append(root)
            yield root, dirs, files

    monkeypatch.setattr(hygiene.os, "walk", recording)
    sources = copy_sources((context / "Containerfile").read_text(), {})
    list(hygiene.local_entries(context, sources))
    assert not any("node_modules" in root for root in listed)
