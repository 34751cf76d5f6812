"""Run a step's tools from another Debian release's root filesystem, in a private mount namespace.

The builders use Debian 13's buildah (1.39), skopeo (1.18), runc and netavark. Those
packages need glibc 2.38 and cannot be installed on a Debian 12 host, so on one machine
they run from a trixie root filesystem (multiarch/toolchain_rootfs.py builds and caches it):
`enter_argv` turns a step's argv, e.g. `("buildah", "--root", R, ..., "build", ...)`, into
an argv that runs the same command inside that rootfs. Nothing here starts a process; the
result is an argv like every other step's (multiarch.plan) and runs through `run_step`.

The wrapped argv starts a tiny fixed helper, `ENTER_SCRIPT`, with the host's Python
(`python -I -S -c ENTER_SCRIPT ROOTFS SCRATCH [options] -- argv...`). Every value (paths,
the step's own argv) arrives as a separate argv element, never spliced into code. The
helper, in this order:

1. unshares its mount namespace and makes every mount in it private, so nothing it mounts
   propagates to the host's mount table;
2. mounts a tmpfs on SCRATCH and an overlay over the rootfs (the rootfs is the read-only
   lower layer: the cache is never written, concurrent steps share it, and the mount
   points it creates for host paths, or anything a tool writes outside a bound path, go
   to the tmpfs and vanish with the namespace);
3. mounts a fresh /proc (of the caller's PID namespace: under `run_step`, the step's own),
   binfmt_misc on /proc/sys/fs/binfmt_misc when asked, recursive binds of /dev and /sys
   (with /sys/fs/cgroup, which runc needs), a private tmpfs on /run (network namespace
   files: gone with the namespace), one host directory over /run/containers/networks and
   /run/lock (netavark's IPAM, firewall state and lock, shared by every toolchain step:
   NETWORK_STATE), binds of /tmp, /var/tmp and every path given with --bind at the same
   path, and the host's registry trust and auth (HOST_CONFIG) read-only where they exist;
   /etc/resolv.conf and /etc/hosts are copied from the host, and a containers.conf drop-in
   caps the RUN steps' rlimits at ours (buildah 1.39 asks for more than root without
   CAP_SYS_RESOURCE may set);
4. pivot_roots into the overlay and detaches the old root, so the host's file system is
   unreachable except through the binds, then execs the step with a fixed PATH.

The helper execs the step: no process of ours stays between the caller and the tool.
A mount namespace is freed with its last process, so its mounts go when the step ends or
is killed (proved by tests/integration/test_toolchain.py). The helper creates no PID
namespace: `run_step` already gives each step its own (with an init as PID 1 that a plain
SIGTERM reaches), which also kills what the step leaves behind. Run the argv through
`run_step`: started bare, a process the step leaves in the background keeps the namespace
(and its mounts, invisible to the host) alive until it exits.

Network: a RUN step's default network is netavark's bridge `podman0` on the subnet the
rootfs's containers.conf names (10.89.0.0/16: the host's buildah 1.28 keeps its CNI bridge
on 10.88.0.0/16, and two bridges on one subnet lose the replies), NATed by nftables rules
in the host's network namespace; `--network host` reaches the worker's 127.0.0.1.

QEMU: a foreign-arch RUN step runs inside runc's container, whose root is the image's, not
ours. The kernel finds the qemu interpreter there only when its binfmt_misc entry has the
F (fix binary) flag, which opens the interpreter when the entry is registered (Debian's
qemu-user-static registers with F). `emulation_problem` checks the flag; binfmt_misc itself
is mounted inside for tools that read it (the kernel's handlers do not need the mount).
"""

from __future__ import annotations

import posixpath
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from multiarch.errors import ConfigurationError
from multiarch.process import Step

# What the helper always binds from the host, at the same path.
DEFAULT_BINDS = ("/tmp", "/var/tmp")  # noqa: S108 (bound as they are, not used as files)
# Copied (not bound) from the host: the rootfs may hold them as symlinks, and a bind onto a
# symlink would resolve in the host's tree.
COPIED_FILES = ("/etc/resolv.conf", "/etc/hosts")
# Host configuration the containers tools read, bound read-only when it exists, so the
# trixie tools trust and authenticate like the host's (containers-certs.d(5),
# containers-registries.d(5), containers-auth.json(5) as root without XDG_RUNTIME_DIR).
HOST_CONFIG = (
    "/etc/containers/certs.d",
    "/etc/docker/certs.d",
    "/etc/containers/registries.d",
    "/etc/ssl/certs",
    "/root/.config/containers",
    "/run/containers/0",
)
# netavark's state, shared by every toolchain step on the machine (a host directory bound
# over the private /run): its IPAM database (two concurrent builds with a private one each
# give two RUN containers the same address on the same bridge), firewall bookkeeping and
# lock. Under /run: on most hosts a tmpfs, emptied at boot with the bridge it describes.
NETWORK_STATE_DIR = "/run/multiarch-toolchain"
NETWORK_STATE = (
    (f"{NETWORK_STATE_DIR}/networks", "/run/containers/networks"),
    (f"{NETWORK_STATE_DIR}/lock", "/run/lock"),
)
# The helper mounts these itself; a bind at or under them is refused.
RESERVED = ("/proc", "/sys", "/dev")
# The helper's PATH inside the rootfs: the host's PATH (a venv's bin) means nothing there.
TOOLCHAIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SCRATCH_SIZE = "1g"
# The helper's exit code for its own failures (a mount, a missing tool): like runc's 125.
HELPER_FAILED = 125
# Characters that the overlay's mount options cannot carry in a path.
_OVERLAY_UNSAFE = frozenset(",:\\\n")

BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")

ENTER_SCRIPT = r"""
import ctypes, os, platform, resource, stat, sys
NAME = "multiarch-toolchain"
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MS_UNBINDABLE = 1 << 17
CLONE_NEWNS, MNT_DETACH = 0x20000, 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203,
                  "s390x": 217, "i686": 217, "armv7l": 218}

def fail(what, errno=0):
    detail = f": {os.strerror(errno)}" if errno else ""
    os.write(2, f"{NAME}: {what}{detail}\n".encode(errors="replace"))
    os._exit(125)

def check(rc, what):
    if rc != 0:
        fail(what, ctypes.get_errno())

def mount(source, target, fstype, flags, data=None, what=None):
    enc = lambda s: None if s is None else os.fsencode(s)
    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
          what or f"mount {fstype or source} on {target}")

def target_fd(root, path, directory):
    # Walk `path` below `root` without following a symlink (the rootfs's /var/run is one,
    # and it would resolve in the host's tree), creating what is missing: the overlay's
    # upper layer is a tmpfs, so the rootfs itself never changes.
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    parts = [p for p in path.split("/") if p]
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        try:
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            if last and not directory:
                os.close(os.open(part, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644,
                                 dir_fd=fd))
            else:
                os.mkdir(part, 0o755, dir_fd=fd)
            st = os.stat(part, dir_fd=fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            fail(f"cannot bind {path}: /{'/'.join(parts[:index + 1])} is a symlink inside")
        flags = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
        if not last or directory:
            flags |= os.O_DIRECTORY
        next_fd = os.open(part, flags, dir_fd=fd)
        os.close(fd)
        fd = next_fd
    return fd

def bind(root, path, target, readonly, optional):
    # A read-write bind that does not exist yet is made on the host first, as the tool
    # would make it (buildah's --root); a read-only one must exist, or is skipped (-try).
    # The mount point is checked first: a refused bind changes nothing on the host.
    try:
        directory = stat.S_ISDIR(os.stat(path).st_mode)
        missing = False
    except OSError as error:
        if optional:
            return
        if readonly or os.path.lexists(path):
            fail(f"cannot bind {path}", error.errno)
        directory, missing = True, True
    fd = target_fd(root, target, directory)
    if missing:
        try:
            os.makedirs(path, 0o755, exist_ok=True)
        except OSError as error:
            fail(f"cannot create {path}", error.errno)
    mount(path, f"/proc/self/fd/{fd}", None, MS_BIND | MS_REC, what=f"bind {path}")
    os.close(fd)
    if readonly:
        # A remount names the new mount's root: open the path again, now through the bind.
        fd = target_fd(root, target, directory)
        check(libc.mount(None, f"/proc/self/fd/{fd}".encode(), None,
                         MS_REMOUNT | MS_BIND | MS_RDONLY, None),
              f"make the bind of {path} read-only")
        os.close(fd)

args = sys.argv[1:]
if "--" not in args[2:]:
    fail("usage: ROOTFS SCRATCH [options] -- COMMAND...")
rootfs, scratch = args[0], args[1]
binds, copies, cwd, binfmt, ulimits, size = [], [], "/", False, False, "1g"
i = 2
while args[i] != "--":
    option = args[i]
    if option in ("--binfmt", "--ulimits"):
        binfmt = binfmt or option == "--binfmt"
        ulimits = ulimits or option == "--ulimits"
        i += 1
        continue
    value = args[i + 1]
    i += 2
    if option in ("--bind", "--ro-bind", "--ro-bind-try"):
        binds.append((value, value, option != "--bind", option == "--ro-bind-try"))
    elif option == "--bind-to":
        binds.append((value, args[i], False, False))
        i += 1
    elif option == "--copy":
        copies.append(value)
    elif option == "--cwd":
        cwd = value
    elif option == "--size":
        size = value
    else:
        fail(f"unknown option {option}")
command = args[i + 1:]
if not command:
    fail("no command given")

check(libc.unshare(CLONE_NEWNS), "unshare the mount namespace")
mount(None, "/", None, MS_REC | MS_PRIVATE)
mount(NAME, scratch, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=0755,size={size}")
for sub in ("upper", "work", "root"):
    os.mkdir(f"{scratch}/{sub}", 0o755)
new = f"{scratch}/root"
mount(NAME, new, "overlay", 0,
      f"lowerdir={rootfs},upperdir={scratch}/upper,workdir={scratch}/work",
      what=f"mount an overlay of {rootfs}")
# Unbindable until the pivot: a recursive bind of a host directory above SCRATCH (a cache
# under /var/tmp) then prunes the new root instead of copying the tree into itself.
mount(None, new, None, MS_UNBINDABLE)
mount("proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
if binfmt:
    # The same registrations as the host's (one instance per user namespace). Not fatal: a
    # kernel without binfmt_misc still runs native steps (emulation_problem says why not).
    libc.mount(b"binfmt_misc", os.fsencode(f"{new}/proc/sys/fs/binfmt_misc"), b"binfmt_misc",
               MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
mount("/dev", f"{new}/dev", None, MS_BIND | MS_REC)
mount("/sys", f"{new}/sys", None, MS_BIND | MS_REC)
mount("tmpfs", f"{new}/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755")
for path in copies:
    try:
        with open(path, "rb") as handle:
            content = handle.read()
    except OSError:
        continue
    parent = target_fd(new, os.path.dirname(path), True)
    name = os.path.basename(path)
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    out = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                  0o644, dir_fd=parent)
    os.write(out, content)
    os.close(out)
    os.close(parent)
if ulimits:
    # buildah 1.39 gives a RUN step RLIMIT_NOFILE and RLIMIT_NPROC of 1048576 when it runs as
    # root, which fails ("error setting rlimit type 7") without CAP_SYS_RESOURCE above our
    # hard limit: a containers.conf drop-in in the overlay sets our own hard limits instead.
    limits = []
    for name, kind in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        hard = resource.getrlimit(kind)[1]
        if hard != resource.RLIM_INFINITY:
            limits.append(f'"{name}={hard}:{hard}"')
    parent = target_fd(new, "/etc/containers/containers.conf.d", True)
    out = os.open("50-multiarch-toolchain-ulimits.conf",
                  os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                  dir_fd=parent)
    os.write(out, f"[containers]\ndefault_ulimits = [{', '.join(limits)}]\n".encode())
    os.close(out)
    os.close(parent)
for path, target, readonly, optional in binds:
    bind(new, path, target, readonly, optional)
os.chdir(new)
number = SYS_PIVOT_ROOT.get(platform.machine())
if number is None:
    fail(f"no pivot_root system call number known for {platform.machine()}")
check(libc.syscall(number, b".", b"."), "pivot_root into the toolchain rootfs")
check(libc.umount2(b".", MNT_DETACH), "detach the host's root")
mount(None, "/", None, MS_PRIVATE)
os.chdir("/")
try:
    os.chdir(cwd)
except OSError as error:
    fail(f"cannot change to {cwd} inside the toolchain", error.errno)
# The host's Python library is out of reach now: no import may happen below (os.execvpe
# would import one), so the command is looked up here.
path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
env = dict(os.environ, PATH=path)
candidates = [command[0]] if "/" in command[0] else [f"{d}/{command[0]}" for d in path.split(":")]
errno = 2
for candidate in candidates:
    try:
        os.execve(candidate, command, env)
    except OSError as error:
        if error.errno != 2:
            errno = error.errno
fail(f"cannot run {command[0]} in the toolchain rootfs {rootfs}", errno)
"""


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    """A toolchain root filesystem and the empty directory its steps mount a tmpfs on.

    `scratch` is only ever a mount point inside a step's private mount namespace; it stays
    empty on the host, so any number of steps share it at once.
    """

    rootfs: str
    scratch: str


def enter_argv(
    argv: Sequence[str],
    *,
    toolchain: Toolchain,
    binds: Iterable[str] = (),
    ro_binds: Iterable[str] = (),
    host_config: bool = True,
    binfmt: bool = True,
    ulimits: bool = True,
    network_state: bool = True,
    cwd: str | None = None,
    python: str | None = None,
    scratch_size: str = SCRATCH_SIZE,
) -> tuple[str, ...]:
    """`argv` wrapped to run inside `toolchain` with its own mount namespace.

    `binds` (read-write) and `ro_binds` are host paths the step needs (its work dir,
    storage, context, shared dir), mounted at the same path; /tmp and /var/tmp always
    are, and a path under one of them or under another bind adds nothing. `host_config`
    adds the HOST_CONFIG paths read-only where they exist. `binfmt` mounts binfmt_misc
    inside (pass False on a host without it). `ulimits` caps the RUN steps' RLIMIT_NOFILE
    and RLIMIT_NPROC at the caller's hard limits (buildah 1.39 asks for 1048576, which fails
    without CAP_SYS_RESOURCE). `network_state` shares netavark's state between every
    toolchain step on the machine (NETWORK_STATE). `cwd` must be bound (default /).
    """
    if not argv:
        raise ConfigurationError("toolchain: no command to run")
    _check_toolchain(toolchain)
    read_write = normalise_binds([*DEFAULT_BINDS, *binds])
    # A read-only path inside a read-write one is kept (it becomes read-only), and so is a
    # read-write one inside a read-only one; the same path in both stays read-write.
    read_only = [path for path in _unique(ro_binds) if path not in read_write]
    ordered = sorted([(path, "--bind") for path in read_write]
                     + [(path, "--ro-bind") for path in read_only],
                     key=lambda item: (item[0].count("/"), item[0]))
    wrapped: list[str] = [
        python or sys.executable, "-I", "-S", "-c", ENTER_SCRIPT,
        toolchain.rootfs, toolchain.scratch, "--size", scratch_size,
    ]
    if binfmt:
        wrapped.append("--binfmt")
    if ulimits:
        wrapped.append("--ulimits")
    for path in COPIED_FILES:
        wrapped += ["--copy", path]
    for path, option in ordered:  # parents first: a bind inside another goes on top of it
        wrapped += [option, path]
    if network_state:
        for source, target in NETWORK_STATE:
            wrapped += ["--bind-to", source, target]
    if host_config:
        taken = [*read_write, *read_only]
        for path in HOST_CONFIG:
            if not _covered(path, taken):
                wrapped += ["--ro-bind-try", path]
    if cwd is not None:
        cwd = _absolute(cwd)
        if not _covered(cwd, [*read_write, *read_only]):
            raise ConfigurationError(
                f"toolchain: the working directory {cwd} is not bound into the toolchain")
        wrapped += ["--cwd", cwd]
    return (*wrapped, "--", *argv)


def wrap_step(
    step: Step,
    *,
    toolchain: Toolchain,
    binds: Iterable[str] = (),
    ro_binds: Iterable[str] = (),
    **options: object,
) -> Step:
    """The same step (name, environment) with its argv run inside `toolchain`.

    Without explicit binds, the paths `guess_binds` finds in the argv and environment are
    bound (read-write).
    """
    binds = list(binds)
    if not binds and not list(ro_binds):
        binds = guess_binds(step.argv, step.env)
    argv = enter_argv(step.argv, toolchain=toolchain, binds=binds, ro_binds=ro_binds,
                      **options)  # type: ignore[arg-type]
    return replace(step, argv=argv)


# Flags whose value is a host directory, and those whose value is a file (its directory
# is bound: the file may not exist yet, an --iidfile), as `--flag VALUE` or `--flag=VALUE`.
_DIR_FLAGS = frozenset({"--root", "--runroot", "--cert-dir", "--src-cert-dir",
                        "--dest-cert-dir", "-C"})
_FILE_FLAGS = frozenset({"--file", "-f", "--authfile", "--src-authfile", "--dest-authfile",
                         "--iidfile", "--digestfile", "--signature-policy",
                         "--registries-conf"})
_NAMED_PATH_FLAGS = frozenset({"--build-context", "--ssh"})
_DIR_ENV = ("TMPDIR", "SSL_CERT_DIR")
_FILE_ENV = ("REGISTRY_AUTH_FILE", "SSL_CERT_FILE", "CONTAINERS_REGISTRIES_CONF",
             "CONTAINERS_STORAGE_CONF", "CONTAINERS_CONF", "GIT_CONFIG_GLOBAL")
# Transports whose reference starts with a path.
_PATH_TRANSPORTS = ("oci:", "oci-archive:", "dir:", "docker-archive:")


def guess_binds(argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The host paths a step names: directory flags' values, the directory of file flags'
    values, `root=` of a runtime flag, `src=` of a secret or mount, a layout's parent,
    containers-storage's `[driver@ROOT+RUNROOT]`, an absolute positional (a build
    context), and path-valued environment variables.

    The result is normalised (see `normalise_binds`). Pure: nothing is checked on disk, so
    a `src=` or positional path with a dot in its last component is taken for a file and
    its directory bound.
    """
    found: list[str] = []
    previous = ""
    for arg in argv:
        flag, _, value = arg.partition("=")
        if previous in _DIR_FLAGS:
            found.append(arg)
        elif previous in _FILE_FLAGS:
            found.append(posixpath.dirname(arg))
        elif previous in _NAMED_PATH_FLAGS and "=" in arg:
            # `--build-context NAME=DIR`, `--ssh ID=SOCKET_OR_KEY`: a directory, or a file
            path = arg.split("=", 1)[1]
            found.append(posixpath.dirname(path) if previous == "--ssh" else path)
        elif value and flag in _DIR_FLAGS:
            found.append(value)
        elif value and flag in _FILE_FLAGS:
            found.append(posixpath.dirname(value))
        elif arg.startswith(_PATH_TRANSPORTS):
            # The layout's parent: skopeo makes (and a prepare step removes) the layout.
            found.append(posixpath.dirname(arg.split(":", 1)[1].split(":", 1)[0]))
        elif arg.startswith("containers-storage:["):
            spec = arg[len("containers-storage:["):].split("]", 1)[0]
            found += spec.split("@", 1)[-1].split("+")
        elif flag == "root" and value:
            found.append(value)
        elif arg.startswith("/"):
            found.append(_directory_of(arg))
        for part in arg.split(","):
            key, _, source = part.partition("=")
            if key in ("src", "source") and source:
                found.append(_directory_of(source))
        previous = arg
    env = env or {}
    found += [env[name] for name in _DIR_ENV if env.get(name)]
    found += [posixpath.dirname(env[name]) for name in _FILE_ENV if env.get(name)]
    return normalise_binds(path for path in found if path.startswith("/"))


def normalise_binds(paths: Iterable[str]) -> list[str]:
    """Absolute, normalised, without duplicates, none under another; parents first.

    Refuses relative paths, `/` and the paths the helper mounts itself (/proc, /sys, /dev).
    """
    kept: list[str] = []
    for path in _unique(paths):
        if not _covered(path, kept):
            kept.append(path)
    return kept


def _unique(paths: Iterable[str]) -> list[str]:
    """Checked, normalised and deduplicated, parents first."""
    cleaned = sorted({_absolute(path) for path in paths}, key=lambda p: (p.count("/"), p))
    for path in cleaned:
        if path == "/":
            raise ConfigurationError("toolchain: refusing to bind the host's / into it")
        if _covered(path, RESERVED):
            raise ConfigurationError(
                f"toolchain: {path} cannot be bound: the toolchain mounts {', '.join(RESERVED)} "
                "itself")
    return cleaned


def emulation_problem(arch_qemu_name: str, *, binfmt_dir: Path = BINFMT_DIR) -> str | None:
    """Why a foreign-arch RUN step would fail inside the toolchain, or None.

    `arch_qemu_name` is qemu's name (aarch64; multiarch.emulation.qemu_name). The entry
    must be registered, enabled and carry the F flag: runc's container has the image's
    root, where the kernel would otherwise look the interpreter up.
    """
    entry = binfmt_dir / f"qemu-{arch_qemu_name}"
    try:
        lines = entry.read_text().splitlines()
    except OSError:
        return f"no qemu-{arch_qemu_name} entry is registered in {binfmt_dir}"
    if not lines or lines[0].strip() != "enabled":
        return f"the qemu-{arch_qemu_name} entry in {binfmt_dir} is disabled"
    flags = next((line.split(":", 1)[1].strip() for line in lines
                  if line.startswith("flags:")), "")
    if "F" not in flags:
        interpreter = next((line.split(" ", 1)[1] for line in lines
                            if line.startswith("interpreter ")), "its interpreter")
        return (f"the qemu-{arch_qemu_name} entry has no F (fix binary) flag (flags: "
                f"{flags or 'none'}): a RUN step's container cannot see {interpreter}; "
                "re-register it with F (Debian's qemu-user-static does)")
    return None


def _check_toolchain(toolchain: Toolchain) -> None:
    for what, path in (("rootfs", toolchain.rootfs), ("scratch", toolchain.scratch)):
        if not path.startswith("/"):
            raise ConfigurationError(f"toolchain: the {what} path {path!r} is not absolute")
        bad = sorted(set(path) & _OVERLAY_UNSAFE)
        if bad:
            raise ConfigurationError(
                f"toolchain: the {what} path {path!r} holds {''.join(bad)!r}, which an "
                "overlay mount cannot take: put the cache elsewhere (XDG_CACHE_HOME)")


def _absolute(path: str) -> str:
    if not path.startswith("/"):
        raise ConfigurationError(f"toolchain: {path!r} is not an absolute path")
    return posixpath.normpath(path).replace("//", "/")


def _covered(path: str, parents: Iterable[str]) -> bool:
    return any(path == parent or path.startswith(parent.rstrip("/") + "/")
               for parent in parents)


def _directory_of(path: str) -> str:
    """A path's directory when its last component looks like a file (has a dot, or is a
    Containerfile/Dockerfile), else the path itself."""
    path = posixpath.normpath(path)
    last = posixpath.basename(path)
    if "." in last.lstrip(".") or last in ("Containerfile", "Dockerfile"):
        return posixpath.dirname(path) or "/"
    return path


__all__ = [
    "COPIED_FILES", "DEFAULT_BINDS", "ENTER_SCRIPT", "HOST_CONFIG", "Toolchain",
    "emulation_problem", "enter_argv", "guess_binds", "normalise_binds", "wrap_step",
]
