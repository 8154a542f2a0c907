"""Hosts on one machine: Linux network namespaces on a private switch, for partition tests.

`network(["redis", "api", "listener"])` makes one network namespace per host
(`onbt-<pid>-<n>-<host>`, loopback up, `eth0` with its own address on a private subnet)
and one more for the switch (`onbt-<pid>-<n>-switch`): a bridge with one veth port per
host. Nothing is created in the root namespace and no route leads out of the subnet
(no default route, no NAT), so the hosts reach each other and their own loopback, and
nothing else; the machine's own services (127.0.0.1 in the root namespace) are out of
their reach, and the same subnet can serve several networks at once.

    with network(["redis", "listener"]) as net:
        redis = net.process("redis", "redis", ["redis-server", "--bind", "0.0.0.0"], env, run, logs)
        redis.start()
        net.cut("listener", "redis")          # only this link: every other stays up
        net.heal("listener", "redis")
        with net.partition("listener", "redis", seconds=30) as cut:
            ...                               # healed on leaving, `seconds` after the cut
        net.call("listener", some_function)   # run Python with its sockets inside a host

A cut drops every IPv4 packet between the two hosts silently, in the switch (a classic
BPF filter on each host's switch port; iproute2's `tc` is all it needs, no netem or
iptables): an open TCP connection stalls and retransmits, a new one hangs in SYN, as on a
real partition, and both resume on `heal`. ARP still passes (the filter matches IPv4
only), so a healed link carries traffic at once.

Teardown is guaranteed by the context manager (also when the body raises or pytest turns
a SIGTERM into KeyboardInterrupt): every process still inside a host is ended, every
namespace deleted (with it every veth). A run killed with SIGKILL leaves its namespaces
behind; `sweep_leftovers()` (called by every `network()`) deletes those of dead pids.

Needs root, `ip` and `tc` (iproute2), and a kernel with network namespaces, veth, bridge,
the clsact qdisc and the bpf classifier; `unavailable_reason()` says what is missing.
"""

from __future__ import annotations

import contextlib
import ctypes
import ipaddress
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from onboarding.errors import OnboardingError
from stack.processes import ManagedProcess

PREFIX = "onbt"
DEFAULT_SUBNET = "10.213.0.0/24"
NETNS_DIR = Path("/var/run/netns")
_HOST_NAME = re.compile(r"^[a-z][a-z0-9]{0,11}$")  # port names ("p-" + host) must fit IFNAMSIZ
_OURS = re.compile(rf"^{PREFIX}-(\d+)-")
_CLONE_NEWNET = 0x40000000
_CUT_PREF_BASE = 100  # tc filter preference of the cut towards host i: base + i
_sequence = itertools.count(1)
_T = TypeVar("_T")


class NetnsError(OnboardingError):
    """A namespace, link or cut could not be made, or a host is unknown."""


@dataclass(frozen=True)
class Host:
    """One host: its network namespace, its address and its port on the switch."""

    name: str
    netns: str
    ip: str
    port: str  # the veth end in the switch namespace

    def url(self, scheme: str, port: int, path: str = "") -> str:
        return f"{scheme}://{self.ip}:{port}{path}"


@dataclass
class Cut:
    """One partition: when it began and (once healed) ended, in `time.monotonic()` seconds."""

    a: str
    b: str
    started: float
    healed: float | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.healed is None else self.healed - self.started


def _run(argv: Sequence[str], what: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise NetnsError(f"{what} failed ({' '.join(argv)}): {(result.stderr or result.stdout).strip()}")
    return result


def _drop_to(ip: str) -> str:
    """Classic BPF for the bpf classifier in direct-action mode: an IPv4 packet (Ethernet
    type 0x0800 at byte 12) whose destination (byte 30) is `ip` is shot (TC_ACT_SHOT, 2);
    anything else goes on to the next filter (TC_ACT_UNSPEC, -1)."""
    dst = int(ipaddress.IPv4Address(ip))
    return f"6,40 0 0 12,21 0 3 2048,32 0 0 30,21 0 1 {dst},6 0 0 2,6 0 0 4294967295"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise NetnsError(f"setns failed: {os.strerror(errno)}")


@contextlib.contextmanager
def _in_netns(path: Path) -> Iterator[None]:
    """The calling thread (only it) in the namespace at `path`, back where it was afterwards."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Every named network namespace on the machine (`ip netns list`)."""
    out = _run(["ip", "netns", "list"], "listing namespaces").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(netns: str) -> list[int]:
    """The processes whose network namespace is `netns` (`ip netns pids`)."""
    result = _run(["ip", "netns", "pids", netns], f"listing the processes in {netns}", check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def _end_processes(netns: str, grace_s: float) -> None:
    pids = [pid for pid in namespace_pids(netns) if pid != os.getpid()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            pids = [pid for pid in pids if _pid_alive(pid) and not _zombie(pid)]
            time.sleep(0.05)
        if not pids:
            return


def _zombie(pid: int) -> bool:
    try:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def _delete_namespace(netns: str, grace_s: float = 5.0) -> None:
    _end_processes(netns, grace_s)
    _run(["ip", "netns", "delete", netns], f"deleting namespace {netns}", check=False)


def sweep_leftovers() -> list[str]:
    """Delete the `onbt-<pid>-*` namespaces whose creating process is gone (a run killed
    with SIGKILL), ending what still runs inside them. Returns the names deleted."""
    swept = []
    for netns in list_namespaces():
        match = _OURS.match(netns)
        if match and not _pid_alive(int(match.group(1))):
            _delete_namespace(netns)
            swept.append(netns)
    return swept


class Network:
    """Hosts joined by one switch; build it with `network()`, which also tears it down."""

    def __init__(self, hosts: Sequence[str], subnet: str = DEFAULT_SUBNET) -> None:
        if len(set(hosts)) != len(hosts) or not hosts:
            raise NetnsError(f"host names must be given, each once: {list(hosts)}")
        for name in hosts:
            if not _HOST_NAME.match(name) or name == "switch":
                raise NetnsError(f"host name {name!r}: 1-12 lowercase letters and digits, not 'switch'")
        net = ipaddress.IPv4Network(subnet)
        addresses = list(itertools.islice(net.hosts(), len(hosts)))
        if len(addresses) < len(hosts):
            raise NetnsError(f"subnet {subnet} has room for {len(addresses)} hosts, not {len(hosts)}")
        self.id = f"{PREFIX}-{os.getpid()}-{next(_sequence)}"
        self.subnet = str(net)
        self.prefixlen = net.prefixlen
        self.switch = f"{self.id}-switch"
        self.hosts: dict[str, Host] = {
            name: Host(name, f"{self.id}-{name}", str(ip), f"p-{name}")
            for name, ip in zip(hosts, addresses, strict=True)
        }
        self._index = {name: i for i, name in enumerate(hosts)}
        self._cuts: set[frozenset[str]] = set()
        self._made: list[str] = []  # namespaces created, in order

    # -- building and tearing down ----------------------------------------------------

    def up(self) -> None:
        """Create the switch and every host. On failure, whatever was made is deleted."""
        try:
            self._add_namespace(self.switch)
            _run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"], "creating the bridge")
            _run(["ip", "-n", self.switch, "link", "set", "br0", "up"], "starting the bridge")
            for host in self.hosts.values():
                self._add_host(host)
        except BaseException:
            self.down()
            raise

    def _add_namespace(self, netns: str) -> None:
        _run(["ip", "netns", "add", netns], f"creating namespace {netns}")
        self._made.append(netns)

    def _add_host(self, host: Host) -> None:
        ns, sw = host.netns, self.switch
        self._add_namespace(ns)
        steps = [
            # Both ends are created directly in their namespaces: nothing appears in the root one.
            ["ip", "link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", host.port, "netns", sw],
            ["ip", "-n", sw, "link", "set", host.port, "master", "br0"],
            ["ip", "-n", sw, "link", "set", host.port, "up"],
            ["tc", "-n", sw, "qdisc", "add", "dev", host.port, "clsact"],
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            # No IPv6 link-local address: the hosts speak IPv4 only, which is what a cut drops.
            ["ip", "-n", ns, "link", "set", "eth0", "addrgenmode", "none"],
            ["ip", "-n", ns, "addr", "add", f"{host.ip}/{self.prefixlen}", "dev", "eth0"],
            ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ]
        for argv in steps:
            _run(argv, f"setting up host {host.name}")

    def down(self, grace_s: float = 5.0) -> None:
        """End every process left in the hosts, delete every namespace (and so every veth)."""
        for netns in reversed(self._made):
            _delete_namespace(netns, grace_s)
        self._made.clear()
        self._cuts.clear()

    def namespaces(self) -> list[str]:
        """The namespaces of this network that exist now."""
        mine = {self.switch, *(h.netns for h in self.hosts.values())}
        return [ns for ns in list_namespaces() if ns in mine]

    # -- hosts ------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise NetnsError(f"no host {name!r} in this network (hosts: {', '.join(self.hosts)})") from None

    def ip(self, name: str) -> str:
        return self.host(name).ip

    def argv(self, host: str, argv: Sequence[str]) -> list[str]:
        """`argv` run inside `host`."""
        return ["ip", "netns", "exec", self.host(host).netns, *argv]

    def run(
        self,
        host: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout_s: float = 600,
        **kwargs: Any,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside `host` and wait for it (output captured as text; not checked)."""
        return subprocess.run(
            self.argv(host, argv),
            env=dict(env) if env is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            **kwargs,
        )

    def process(
        self,
        host: str,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        run_dir: Path,
        log_dir: Path,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        """A background process inside `host` (not started): `start()`, `stop()`, `tail()` as
        any ManagedProcess; `ip netns exec` execs the command, so the pid is the command's."""
        return ManagedProcess(name, self.argv(host, argv), dict(env), run_dir, log_dir, cwd)

    @contextlib.contextmanager
    def entered(self, host: str) -> Iterator[None]:
        """The calling thread inside `host`: every socket it opens meanwhile lives there
        (and stays there). Only this thread moves; a client that opens connections lazily
        (a connection pool) must be used from such a thread only: see `call` and `thread`."""
        with _in_netns(NETNS_DIR / self.host(host).netns):
            yield

    def call(self, host: str, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        """`fn(*args, **kwargs)` on a new thread inside `host`; its result, or its exception."""
        outcome: dict[str, Any] = {}

        def target() -> None:
            try:
                with self.entered(host):
                    outcome["value"] = fn(*args, **kwargs)
            except BaseException as err:
                outcome["error"] = err

        worker = threading.Thread(target=target, name=f"netns-{host}", daemon=True)
        worker.start()
        worker.join()
        if "error" in outcome:
            raise outcome["error"]
        return cast(_T, outcome["value"])

    def thread(self, host: str, target: Callable[[], object], name: str | None = None) -> threading.Thread:
        """A started daemon thread running `target` inside `host`."""

        def run() -> None:
            with self.entered(host):
                target()

        worker = threading.Thread(target=run, name=name or f"netns-{host}", daemon=True)
        worker.start()
        return worker

    def sysctl(self, host: str, key: str, value: str | int) -> None:
        """Set a per-namespace network sysctl inside `host` (e.g. net.ipv4.tcp_rto_max_ms):
        written by a thread inside the host, so the host's own copy changes, not the machine's."""
        path = Path("/proc/sys", *key.split("."))

        def write() -> None:
            path.write_text(f"{value}\n")

        try:
            self.call(host, write)
        except OSError as err:
            raise NetnsError(f"setting {key}={value} on {host} failed: {err}") from err

    def connects(self, src: str, ip: str, port: int, timeout_s: float = 1.0) -> bool:
        """Whether a TCP connection from `src` to ip:port is accepted within `timeout_s`."""

        def attempt() -> bool:
            try:
                socket.create_connection((ip, port), timeout=timeout_s).close()
                return True
            except OSError:
                return False

        return self.call(src, attempt)

    # -- links ------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        """Drop every packet between hosts a and b (both ways); their other links stay up."""
        ha, hb = self.host(a), self.host(b)
        if a == b:
            raise NetnsError(f"cannot cut {a} from itself")
        for src, dst in ((ha, hb), (hb, ha)):
            _run(
                [
                    "tc", "-n", self.switch, "filter", "replace", "dev", src.port, "ingress",
                    "prio", str(_CUT_PREF_BASE + self._index[dst.name]), "handle", "1",
                    "bpf", "da", "bytecode", _drop_to(dst.ip),
                ],
                f"cutting {src.name} -> {dst.name}",
            )  # fmt: skip
        self._cuts.add(frozenset((a, b)))

    def heal(self, a: str, b: str) -> None:
        """Restore the link between a and b (a no-op if it was not cut)."""
        ha, hb = self.host(a), self.host(b)
        for src, dst in ((ha, hb), (hb, ha)):
            pref = str(_CUT_PREF_BASE + self._index[dst.name])
            present = _run(
                ["tc", "-n", self.switch, "filter", "show", "dev", src.port, "ingress", "prio", pref],
                f"reading the filters of {src.name}",
            ).stdout.strip()
            if present:
                _run(
                    ["tc", "-n", self.switch, "filter", "del", "dev", src.port, "ingress", "prio", pref],
                    f"healing {src.name} -> {dst.name}",
                )
        self._cuts.discard(frozenset((a, b)))

    def cuts(self) -> set[frozenset[str]]:
        """The links cut now, each as the pair of host names."""
        return set(self._cuts)

    @contextlib.contextmanager
    def partition(self, a: str, b: str, seconds: float) -> Iterator[Cut]:
        """Cut a from b; on leaving, wait until `seconds` have passed since the cut, then heal.
        The link is healed whatever happens in the body (an exception heals it at once)."""
        self.cut(a, b)
        cut = Cut(a, b, time.monotonic())
        try:
            yield cut
            remaining = cut.started + seconds - time.monotonic()
            if remaining > 0:
                time.sleep(remaining)
        finally:
            self.heal(a, b)
            cut.healed = time.monotonic()


@contextlib.contextmanager
def network(hosts: Sequence[str], subnet: str = DEFAULT_SUBNET) -> Iterator[Network]:
    """A `Network` of `hosts`, up for the duration of the block; deleted afterwards, with
    every process still running inside it. Sweeps the leftovers of dead runs first."""
    reason = unavailable_reason()
    if reason:
        raise NetnsError(f"network namespaces are not available: {reason}")
    sweep_leftovers()
    net = Network(hosts, subnet)
    net.up()
    try:
        yield net
    finally:
        net.down()


_probe_result: list[str | None] = []


def unavailable_reason() -> str | None:
    """Why `network()` cannot work here (not root, no iproute2, a kernel without namespaces,
    veth, bridge, clsact or the bpf classifier), or None. Probed once per process."""
    if _probe_result:
        return _probe_result[0]
    reason: str | None = None
    if os.geteuid() != 0:
        reason = "needs root (ip netns add)"
    elif not (shutil.which("ip") and shutil.which("tc")):
        reason = "needs iproute2 (ip, tc)"
    else:
        probe = f"{PREFIX}-{os.getpid()}-probe"
        try:
            _run(["ip", "netns", "add", probe], "creating a namespace")
            _run(["ip", "-n", probe, "link", "add", "br0", "type", "bridge"], "creating a bridge")
            _run(
                ["ip", "-n", probe, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
                "creating a veth pair",
            )
            _run(["tc", "-n", probe, "qdisc", "add", "dev", "probe0", "clsact"], "adding the clsact qdisc")
            _run(
                [
                    "tc",
                    "-n",
                    probe,
                    "filter",
                    "add",
                    "dev",
                    "probe0",
                    "ingress",
                    "bpf",
                    "da",
                    "bytecode",
                    _drop_to("10.0.0.1"),
                ],
                "adding a bpf filter",
            )
        except (NetnsError, OSError) as err:
            reason = str(err)
        finally:
            _run(["ip", "netns", "delete", probe], "deleting the probe namespace", check=False)
    _probe_result.append(reason)
    return reason
