"""Agents on hosts of their own: node-a and node-b each run in a network namespace of
their own and reach Postgres and Redis only over a veth link to the root namespace.

Postgres, Redis, the API, the scheduler and beat stay in the root namespace. The stores
here listen on 127.0.0.1 only and others use them, so they are not reconfigured: a small
TCP relay in this test listens on each link's root-side address and forwards to them.
Each node has its own link and its own relays, so cutting one link (``ip link set … down``)
cuts that node off and nothing else, as a pulled cable or a dead switch port would.

Needs root and iproute2; skipped elsewhere, but fails in CI (CI=true) rather than skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import select
from sqlalchemy.engine import URL, make_url

from overlay.store import jobs as job_store
from overlay.store.tables import GpuAllocationRow
from tests.integration.harness import (
    GANG_RENDEZVOUS,
    TERMINAL,
    Stack,
    alive,
    job,
    logs,
    nodes,
    submit,
    wait_until,
)

pytestmark = pytest.mark.slow
PREFIX = "ovlt"  # namespaces ovlt-<pid>-<node>; veths ovlt<pid><n>h (root side) / …n (node side)
TTL_S = 4  # the Stack's NODE_TTL_S


# -- hosts: a namespace and a veth link each --------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class Host:
    """A network namespace joined to the root namespace by one veth pair (a /30)."""

    node: str
    netns: str
    root_if: str
    host_if: str
    root_addr: str
    host_addr: str

    def exec_argv(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def set_link(self, up: bool) -> None:
        ip("link", "set", self.root_if, "up" if up else "down")

    def netns_id(self) -> str:
        """What ``readlink /proc/self/ns/net`` says inside this host."""
        return f"net:[{os.stat(f'/run/netns/{self.netns}').st_ino}]"


def ip(*args: str) -> str:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def why_no_namespaces() -> str | None:
    """Why this machine cannot make the test's hosts, or None if it can."""
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    probe = f"{PREFIX}-{os.getpid()}-probe"
    try:
        ip("netns", "add", probe)
        ip("netns", "del", probe)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns add` does not work here: {e}"
    return None


def remove_stale_hosts() -> None:
    """Namespaces an earlier run of this test left behind when it was killed outright."""
    for line in ip("netns", "list").splitlines():
        name = line.split()[0] if line.strip() else ""
        parts = name.split("-")
        if len(parts) == 3 and parts[0] == PREFIX and parts[1].isdigit() and not alive(int(parts[1])):
            with contextlib.suppress(RuntimeError):
                ip("netns", "del", name)


def free_subnet() -> ipaddress.IPv4Network:
    """A /29 of 10.213.0.0/16 no interface here uses (room for two /30 links)."""
    used = ip("-4", "-o", "addr", "show")
    for k in range(256):
        third = (os.getpid() + k) % 256
        net = ipaddress.ip_network(f"10.213.{third}.0/29")
        if not any(f" {a}/" in used for a in net):
            return net
    raise RuntimeError("no free /29 in 10.213.0.0/16")


def make_host(node: str, link: ipaddress.IPv4Network, index: int) -> Host:
    root_addr, host_addr = (str(a) for a in list(link.hosts())[:2])
    tag = f"{PREFIX}{os.getpid()}{index}"
    host = Host(node=node, netns=f"{PREFIX}-{os.getpid()}-{node}", root_if=f"{tag}h", host_if=f"{tag}n",
                root_addr=root_addr, host_addr=host_addr)
    ip("netns", "add", host.netns)
    ip("link", "add", host.root_if, "type", "veth", "peer", "name", host.host_if)
    ip("link", "set", host.host_if, "netns", host.netns)
    ip("addr", "add", f"{root_addr}/30", "dev", host.root_if)
    ip("link", "set", host.root_if, "up")
    for args in (("addr", "add", f"{host_addr}/30", "dev", host.host_if),
                 ("link", "set", host.host_if, "up"), ("link", "set", "lo", "up")):
        ip("netns", "exec", host.netns, "ip", *args)
    return host


def remove_host(host: Host) -> None:
    """Kill what still runs in the namespace (our agent's job processes), then delete it all."""
    with contextlib.suppress(RuntimeError):
        for pid in ip("netns", "pids", host.netns).split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
    for args in (("link", "del", host.root_if), ("netns", "del", host.netns)):
        with contextlib.suppress(RuntimeError):
            ip(*args)


@pytest.fixture
def hosts() -> Iterator[dict[str, Host]]:
    """node-a and node-b, each on a host of its own; removed afterwards, pass or fail."""
    why = why_no_namespaces()
    if why is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the network-namespace test, but {why}")
        pytest.skip(f"cannot make network namespaces: {why}")
    remove_stale_hosts()
    subnet = free_subnet()
    links = list(subnet.subnets(new_prefix=30))
    made: dict[str, Host] = {}
    try:
        for i, node in enumerate(("node-a", "node-b")):
            made[node] = make_host(node, links[i], i)
        yield made
    finally:
        for host in made.values():
            remove_host(host)
        leftover = [h.netns for h in made.values() if h.netns in ip("netns", "list")]
        assert not leftover, f"namespaces left behind: {leftover}"


# -- a relay: the stores, reachable at a link's root-side address ------------------------------

class Relay:
    """Accepts TCP connections on ``listen`` (any port) and pipes each to ``target``."""

    def __init__(self, listen: str, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server((listen, 0))
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True, name=f"relay-{listen}").start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        for s in [self.server, *self.sockets]:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


@pytest.fixture
def relays(hosts, database_url, redis_url) -> Iterator[dict[str, tuple[str, str]]]:
    """Per node: (DATABASE_URL, REDIS_URL) that reach the stores over its link only."""
    pg, rd = make_url(database_url), make_url(redis_url)
    made: list[Relay] = []
    urls = {}
    try:
        for node, host in hosts.items():
            to_pg = Relay(host.root_addr, (pg.host or "127.0.0.1", pg.port or 5432))
            to_redis = Relay(host.root_addr, (rd.host or "127.0.0.1", rd.port or 6379))
            made += [to_pg, to_redis]
            urls[node] = (via(pg, host.root_addr, to_pg.port), via(rd, host.root_addr, to_redis.port))
        yield urls
    finally:
        for relay in made:
            relay.close()


def via(url: URL, address: str, port: int) -> str:
    return url.set(host=address, port=port).render_as_string(hide_password=False)


def can_connect(host: Host, address: str, port: int) -> bool:
    """Whether a TCP connect from inside ``host`` to address:port succeeds."""
    code = f"import socket; socket.create_connection(({address!r}, {port}), timeout=2).close()"
    return subprocess.run(host.exec_argv([sys.executable, "-c", code]), capture_output=True,
                          timeout=30).returncode == 0


@pytest.fixture
def cluster(hosts, relays, stack: Stack, database_url, redis_url) -> Stack:
    """The API, scheduler and beat here; node-a and node-b each inside its own host."""
    return start_cluster(hosts, relays, stack, database_url, redis_url)


def start_cluster(hosts: dict[str, Host], relays: dict[str, tuple[str, str]], stack: Stack, database_url: str,
                  redis_url: str, agent_env: dict[str, dict[str, str]] | None = None) -> Stack:
    """Start the API, scheduler and beat here and each node's agent in its host (with
    ``agent_env`` of that node), once each host is seen to reach the stores over its link only."""
    for node, host in hosts.items():
        # The host reaches each store over its link, and cannot reach it any other way
        for direct, relayed in zip((database_url, redis_url), relays[node], strict=True):
            store, relay = make_url(direct), make_url(relayed)
            assert can_connect(host, host.root_addr, relay.port or 0), f"{node} cannot reach its relay"
            assert not can_connect(host, store.host or "127.0.0.1", store.port or 0), \
                f"{node} reaches {store.host}:{store.port} directly"
    stack.start_api()
    stack.start_scheduler()
    for node, host in hosts.items():
        database, broker = relays[node]
        queues = f"assign:{node},overlay.heartbeat"
        stack.start(node, host.exec_argv(stack.worker(node, queues, concurrency=4)),
            NODE_NAME=node, NODE_LABELS=f"host={node}", DATABASE_URL=database, REDIS_URL=broker,
            AGENT_PORT="8001", **(agent_env or {}).get(node, {}))
        stack.wait_ready(node)
    stack.start_beat()
    wait_until(lambda: set(nodes(stack)) == {"node-a", "node-b"}, timeout=30, what="both agents online")
    return stack


def peer_link(hosts: dict[str, Host]) -> dict[str, str]:
    """A veth pair straight between node-a's and node-b's hosts (their cluster network, which
    the root namespace is not on); each node's address on it. Removed with the hosts."""
    # Only the two hosts are on it (not the root namespace), so no address here can clash.
    net = ipaddress.ip_network("10.214.0.0/30")
    a, b = hosts["node-a"], hosts["node-b"]
    tag = f"{PREFIX}{os.getpid()}p"
    ip("link", "add", f"{tag}a", "netns", a.netns, "type", "veth", "peer", "name", f"{tag}b",
       "netns", b.netns)
    addresses = dict(zip(("node-a", "node-b"), (str(x) for x in net.hosts()), strict=True))
    for node, end in (("node-a", f"{tag}a"), ("node-b", f"{tag}b")):
        host = hosts[node]
        ip("netns", "exec", host.netns, "ip", "addr", "add", f"{addresses[node]}/30", "dev", end)
        ip("netns", "exec", host.netns, "ip", "link", "set", end, "up")
    return addresses


# -- the tests ----------------------------------------------------------------------------------

def test_jobs_run_done_on_agents_in_namespaces_of_their_own(hosts, cluster):
    # Given each agent on its own host; when a job is sent to each
    for node in hosts:
        submit(cluster, job_id=f"where-{node}", gpus=1, node_selector={"host": node},
               cmd=["sh", "-c", "echo ns=$(readlink /proc/self/ns/net)"])
    for node, host in hosts.items():
        done = wait_until(lambda n=node: (j := job(cluster, f"where-{n}"))["state"] in TERMINAL and j,
                          timeout=60, what=f"the job on {node} to end")
        # Then it ran DONE there, inside that host's network namespace, not the root one
        assert (done["state"], done["node"], done["exit_code"]) == ("DONE", node, 0)
        output = logs(cluster, f"where-{node}")
        assert f"ns={host.netns_id()}" in output, output
        assert f"ns={os.readlink('/proc/self/ns/net')}" not in output


def test_a_cut_link_moves_the_job_and_the_stale_attempt_changes_nothing(hosts, cluster, sessions, tmp_path):
    # Given a one-GPU job, retried once if its node is lost, that runs until told to stop
    # (each attempt notes when it starts and ends, on this host's one clock)
    release, times = tmp_path / "release", tmp_path / "times"
    submit(cluster, job_id="moves", gpus=1, max_retries=1, cmd=[
        "sh", "-c", f'echo "attempt $OVERLAY_ATTEMPT ns=$(readlink /proc/self/ns/net)"; '
                    f'echo "start $OVERLAY_ATTEMPT $(date +%s.%N)" >> {times}; '
                    f'trap \'echo "end $OVERLAY_ATTEMPT $(date +%s.%N)" >> {times}; exit 143\' TERM; '
                    f'while [ ! -e {release} ]; do sleep 0.2; done; '
                    f'echo "end $OVERLAY_ATTEMPT $(date +%s.%N)" >> {times}'])
    first = wait_until(lambda: (j := job(cluster, "moves"))["state"] == "RUNNING" and j,
                       timeout=60, what="the job to run")
    lost = first["node"]
    other = next(n for n in hosts if n != lost)

    # When its node's link goes down (the agent and the job's process keep running)
    hosts[lost].set_link(up=False)
    try:
        # Then the node goes offline within the TTL and the job runs again on the other node
        wait_until(lambda: lost not in nodes(cluster), timeout=TTL_S + 10, what=f"{lost} to go offline")
        second = wait_until(lambda: (j := job(cluster, "moves"))["state"] == "RUNNING" and j["attempt"] == 2
                            and j, timeout=30, what="the retry to run")
        assert second["node"] == other
        assert agent_pid_alive(cluster, lost), "the cut-off agent must still be running"
        # and the stale attempt was stopped (fenced: its lease ran out) before the retry began,
        # not after the link came back
        wait_until(lambda: "start 2" in times.read_text(), timeout=30, what="the retry to start")
        marks = {tuple(line.split()[:2]): float(line.split()[2]) for line in times.read_text().splitlines()}
        assert ("end", "1") in marks and marks[("end", "1")] <= marks[("start", "2")], marks
    finally:
        # When the link comes back
        hosts[lost].set_link(up=True)

    # Then the node rejoins, and its agent reports the fenced attempt, too late to change anything
    wait_until(lambda: lost in nodes(cluster), timeout=90, what=f"{lost} to rejoin")
    wait_until(lambda: "attempt 1 ended (exit 143, fenced" in cluster.output(lost), timeout=60,
               what=f"{lost}'s agent to report the stale attempt fenced")
    # And that stale end changed nothing: the job still runs its second attempt on the other node
    now = job(cluster, "moves")
    assert (now["state"], now["attempt"], now["node"]) == ("RUNNING", 2, other)
    release.touch()
    done = wait_until(lambda: (j := job(cluster, "moves"))["state"] in TERMINAL and j,
                      timeout=60, what="the retry to end")
    assert (done["state"], done["attempt"], done["node"], done["exit_code"]) == ("DONE", 2, other, 0)
    output = logs(cluster, "moves")
    assert f"attempt 1 ns={hosts[lost].netns_id()}" in output
    assert f"attempt 2 ns={hosts[other].netns_id()}" in output
    with sessions() as s:
        events = [(e.to_state, e.attempt, e.node) for e in job_store.events(s, "moves")]
        held = s.scalars(select(GpuAllocationRow).where(GpuAllocationRow.job_id == "moves")).all()
    assert events == [("QUEUED", 0, None), ("PLACED", 1, lost), ("RUNNING", 1, lost), ("QUEUED", 1, lost),
                      ("PLACED", 2, other), ("RUNNING", 2, other), ("DONE", 2, other)], events
    assert not held, "every GPU of both attempts is free again"


def agent_pid_alive(stack: Stack, node: str) -> bool:
    return not stack.dead(node) and alive(stack.procs[node].pid)





def test_a_gangs_two_parts_run_on_two_hosts_and_meet_at_rank_0s_address(hosts, relays, stack, database_url,
                                                                       redis_url):
    # Given node-a and node-b on hosts of their own, joined by a cluster link whose addresses
    # their agents report (NODE_ADDRESS)
    addresses = peer_link(hosts)
    cluster = start_cluster(hosts, relays, stack, database_url, redis_url,
                            {node: {"NODE_ADDRESS": address} for node, address in addresses.items()})
    # When a 2-node job runs the rendezvous
    submit(cluster, job_id="gang-hosts", nodes=2, gpus=1, timeout_s=120,
           cmd=["python3", "-c", GANG_RENDEZVOUS])
    done = wait_until(lambda: (j := job(cluster, "gang-hosts"))["state"] in TERMINAL and j,
                      timeout=120, what="the gang to end")
    # Then it is DONE, one part on each host, meeting at rank 0's node's reported address
    assert done["state"] == "DONE", done
    assert [(p["node"], p["exit_code"]) for p in done["parts"]] == [("node-a", 0), ("node-b", 0)]
    assert done["master_addr"] == addresses["node-a"]
    for part, (node, other) in enumerate((("node-a", 1), ("node-b", 0))):
        output = requests.get(f"{cluster.api}/api/jobs/gang-hosts/logs", params={"part": part},
                              timeout=10).text
        # each part ran inside its own host's namespace and met the other
        assert f"rank {part} ns={hosts[node].netns_id()}" in output, output
        assert f"rank {part} met rank {other}" in output, output
