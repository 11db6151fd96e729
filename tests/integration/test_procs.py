"""`make dev`'s process runner: one process dying leaves the others running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.integration.harness import ROOT, alive, wait_until


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



# Runs procs.py with a second SIGTERM delivered at the worst moment: while the first one's
# handler is inside a threading lock (threading.Event.set holds one around Condition.notify_all).
# A handler that takes a lock deadlocks there, leaving the whole stack running (issue 13).
SECOND_SIGNAL_INSIDE_HANDLER = """
import os, runpy, signal, sys
sent = []
def profile(frame, event, arg):
    if sent or event != "call" or frame.f_code.co_name not in ("notify", "notify_all"):
        return
    handler = getattr(signal.getsignal(signal.SIGTERM), "__code__", None)
    f = frame.f_back
    while f is not None and f.f_code is not handler:
        f = f.f_back
    if f is not None:
        sent.append(True)
        os.kill(os.getpid(), signal.SIGTERM)
        sum(range(1000))  # a few bytecodes: the nested handler runs here
sys.argv = sys.argv[1:]
sys.setprofile(profile)
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def start_runner(tmp_path, procfile_text: str, wrapper: str | None = None, **env: str):
    procfile = tmp_path / "Procfile"
    procfile.write_text(procfile_text)
    out = tmp_path / "out.log"
    prefix = [sys.executable, "-c", wrapper] if wrapper else [sys.executable]
    with open(out, "wb") as sink:
        runner = subprocess.Popen([*prefix, str(ROOT / "deploy/procs.py"), str(procfile)],
                                  stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, **env})
    return runner, out


def pids_in(tmp_path, *names: str) -> list[int]:
    """The pids the Procfile's processes wrote to <name>.pid, once each has."""

    def pid(name: str) -> int:
        return int(wait_until(lambda: (tmp_path / f"{name}.pid").read_text().strip(), timeout=10,
                              what=f"{name} to start"))

    return [pid(name) for name in names]


def test_a_second_signal_inside_the_first_ones_handler_still_stops_everything(tmp_path):
    # Given procs.py running two processes, with a second SIGTERM armed to land inside the handler
    runner, out = start_runner(
        tmp_path, "".join(f"{n}: sh -c 'echo $$ > {tmp_path}/{n}.pid; exec sleep 60'\n" for n in "ab"),
        SECOND_SIGNAL_INSIDE_HANDLER)
    try:
        pids = pids_in(tmp_path, "a", "b")
        # When its process group gets SIGTERM
        os.killpg(runner.pid, signal.SIGTERM)
        # Then procs.py exits and both processes are gone
        assert runner.wait(timeout=20) == 0, out.read_text()
        wait_until(lambda: not any(map(alive, pids)), timeout=5, what="a and b to stop")
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_or_at_a_second_signal(tmp_path):
    for second_signal in (False, True):
        # Given a process that ignores SIGTERM, and one child of it in its group
        (tmp_path / "stubborn.pid").unlink(missing_ok=True)
        runner, out = start_runner(
            tmp_path,
            f"stubborn: sh -c 'trap \"\" TERM; echo $$ > {tmp_path}/stubborn.pid; sleep 60 & wait; wait'\n",
            PROCS_GRACE_S="60" if second_signal else "1")
        try:
            (pid,) = pids_in(tmp_path, "stubborn")
            # When procs.py gets SIGINT (and, with a 60 s grace, a second one)
            runner.send_signal(signal.SIGINT)
            if second_signal:
                wait_until(lambda o=out: "stopping everything" in o.read_text(), timeout=10, what="the stop")
                runner.send_signal(signal.SIGINT)
            # Then it kills the group and says so, well before a 60 s grace
            assert runner.wait(timeout=20) == 0, out.read_text()
            assert not alive(pid)
            text = out.read_text()
            assert "did not stop in time: killed" in text
            assert ("asked again" in text) == second_signal
        finally:
            if runner.poll() is None:
                os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()


def test_closing_the_terminal_sighup_stops_everything(tmp_path):
    # Given procs.py running one process (in a session of its own, out of the terminal's reach)
    runner, out = start_runner(tmp_path, f"a: sh -c 'echo $$ > {tmp_path}/a.pid; exec sleep 60'\n")
    try:
        (pid,) = pids_in(tmp_path, "a")
        # When the terminal goes away (SIGHUP to procs.py's group)
        os.killpg(runner.pid, signal.SIGHUP)
        # Then procs.py stops it and exits
        assert runner.wait(timeout=20) == 0, out.read_text()
        wait_until(lambda: not alive(pid), timeout=5, what="a to stop")
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
