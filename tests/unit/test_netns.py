"""The network-namespace helper (testkit.netns): hosts reach each other and nothing else, a
cut drops exactly one link until it is healed, and nothing it made outlives it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testkit.netns import (
    NetnsError,
    Network,
    list_namespaces,
    namespace_pids,
    network,
    sweep_leftovers,
    unavailable_reason,
)

REASON = unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"network namespaces unavailable: {REASON}")

PORT = 7000


def listen(net: Network, host: str, port: int = PORT) -> socket.socket:
    """A listening TCP socket inside `host` (opened by a thread that entered it)."""
    return net.call(host, lambda: socket.create_server((net.ip(host), port)))


@pytest.fixture
def net() -> Iterator[Network]:
    with network(["a", "b", "c"]) as made:
        yield made


def test_hosts_reach_each_other_and_a_cut_drops_only_that_link(net: Network) -> None:
    servers = [listen(net, "b"), listen(net, "c")]
    assert net.connects("a", net.ip("b"), PORT)

    net.cut("a", "b")
    assert net.cuts() == {frozenset(("a", "b"))}
    assert not net.connects("a", net.ip("b"), PORT)
    assert net.connects("c", net.ip("b"), PORT), "a third host's link to b must stay up"
    assert net.connects("a", net.ip("c"), PORT), "a's link to a third host must stay up"

    net.heal("a", "b")
    assert net.cuts() == set()
    assert net.connects("a", net.ip("b"), PORT)
    net.heal("a", "b")  # healing a healed link is a no-op
    for server in servers:
        server.close()


def test_a_cut_stalls_an_open_connection_which_resumes_on_heal(net: Network) -> None:
    server = listen(net, "b")
    client = net.call("a", lambda: socket.create_connection((net.ip("b"), PORT), timeout=5))
    peer, _ = server.accept()
    client.settimeout(0.5)

    net.cut("a", "b")
    peer.sendall(b"during the cut")
    with pytest.raises(TimeoutError):
        client.recv(100)  # silently dropped, not refused: the connection is still open

    net.heal("a", "b")
    client.settimeout(30)  # TCP retransmits with backoff; the bytes arrive once it does
    assert client.recv(100) == b"during the cut"
    for sock in (client, peer, server):
        sock.close()


def test_partition_heals_when_leaving_even_on_error(net: Network) -> None:
    server = listen(net, "b")
    with net.partition("a", "b", seconds=0.2) as cut:
        assert not net.connects("a", net.ip("b"), PORT)
    assert cut.healed is not None and cut.healed >= cut.started
    assert net.connects("a", net.ip("b"), PORT)

    with pytest.raises(RuntimeError), net.partition("a", "b", seconds=60):
        raise RuntimeError("the test failed mid-partition")
    assert net.cuts() == set()
    assert net.connects("a", net.ip("b"), PORT)
    server.close()


def test_processes_run_inside_their_host(net: Network, tmp_path: Path) -> None:
    code = f"import socket,time; s=socket.create_server(('{net.ip('b')}', {PORT})); time.sleep(600)"
    server = net.process("b", "server", [sys.executable, "-c", code], dict(os.environ), tmp_path, tmp_path)
    server.start()
    try:
        reached = False
        for _ in range(100):
            reached = net.connects("a", net.ip("b"), PORT, timeout_s=0.5)
            if reached:
                break
        assert reached, server.tail()
        result = net.run("a", ["ip", "-o", "-4", "addr", "show", "dev", "eth0"])
        assert net.ip("a") in result.stdout
    finally:
        server.stop(timeout_s=5)


def test_hosts_are_isolated_from_the_machine(net: Network) -> None:
    # Nothing routes out of the subnet: no default route in a host...
    routes = net.run("a", ["ip", "-4", "route", "show"]).stdout
    assert "default" not in routes, routes
    # ...the machine's loopback services are out of a host's reach (its 127.0.0.1 is its own)...
    with socket.create_server(("127.0.0.1", 0)) as outside:
        assert not net.connects("a", "127.0.0.1", outside.getsockname()[1], timeout_s=0.5)
    # ...and the root namespace cannot reach a host: the switch has no port in it. (Whatever
    # the machine's own default route leads to may answer for that address; b never hears.)
    server = listen(net, "b")
    server.settimeout(0.5)
    with socket.socket() as probe:
        probe.settimeout(0.5)
        probe.connect_ex((net.ip("b"), PORT))
        with pytest.raises(TimeoutError):
            server.accept()
    server.close()


def test_sysctl_changes_the_hosts_own_copy_only(net: Network) -> None:
    key = Path("/proc/sys/net/ipv4/tcp_rto_max_ms")
    if not key.exists():
        pytest.skip("this kernel has no net.ipv4.tcp_rto_max_ms")
    machine = key.read_text()
    net.sysctl("a", "net.ipv4.tcp_rto_max_ms", 5000)
    assert net.call("a", key.read_text).strip() == "5000"
    assert net.call("b", key.read_text) == machine
    assert key.read_text() == machine


def test_teardown_deletes_every_namespace_and_process_also_on_failure(tmp_path: Path) -> None:
    sleeper = None
    with pytest.raises(RuntimeError), network(["x", "y"]) as net:
        made = net.namespaces()
        assert len(made) == 3  # two hosts and the switch
        sleeper = net.process("x", "sleeper", ["sleep", "600"], dict(os.environ), tmp_path, tmp_path)
        sleeper.start()
        raise RuntimeError("the test failed")
    assert not set(made) & set(list_namespaces())
    assert sleeper is not None and not sleeper.running()


def test_sweeper_deletes_the_namespaces_of_dead_runs_only(net: Network) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    leftover = f"onbt-{gone.pid}-1-switch"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    orphan = subprocess.Popen(["ip", "netns", "exec", leftover, "sleep", "600"])
    try:
        for _ in range(200):
            if orphan.pid in namespace_pids(leftover):
                break
            time.sleep(0.05)
        swept = sweep_leftovers()
        assert leftover in swept
        assert leftover not in list_namespaces()
        # What still ran inside was ended (and reaped, so /proc no longer lists it).
        assert not Path(f"/proc/{orphan.pid}").exists()
        assert set(net.namespaces()) == {net.switch, *(h.netns for h in net.hosts.values())}, "a live run's stay"
    finally:
        orphan.kill()
        subprocess.run(["ip", "netns", "delete", leftover], capture_output=True)


def test_bad_host_names_are_refused() -> None:
    for hosts in (["a", "a"], ["Upper"], ["switch"], ["waytoolongforaport"], []):
        with pytest.raises(NetnsError):
            Network(hosts)
