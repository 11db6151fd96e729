"""`make dev`'s process runner: one process dying leaves the others running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.integration.stack import ROOT, wait_until


def test_a_dead_process_leaves_the_others_running_and_sigterm_stops_all(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        f"short: sh -c 'echo bye; exit 3'\nlong: sh -c 'echo $$ > {tmp_path}/long.pid; sleep 60'\n"
    )
    out = tmp_path / "out.log"
    with open(out, "wb") as sink:
        runner = subprocess.Popen([sys.executable, str(ROOT / "deploy/procs.py"), str(procfile)],
                                  stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: "short exited with code 3" in out.read_text(), timeout=10, what="short to exit")
        long_pid = int(wait_until(lambda: (tmp_path / "long.pid").read_text().strip(), timeout=5,
                                  what="long to start"))
        time.sleep(0.5)
        assert runner.poll() is None
        os.kill(long_pid, 0)  # still alive
        assert "short | bye" in out.read_text()
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=15) == 0
        wait_until(lambda: not alive(long_pid), timeout=5, what="long to stop")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False
