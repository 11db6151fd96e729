"""The node's supervisor launcher: one warm process per agent that forks each attempt's
supervisor (workers/supervisor.py) instead of the agent starting a new interpreter for it.

Started by the agent (workers/attempts.py ``Launcher``) as ``python -m workers.launcher
<fd>``, in a session of its own, with the supervisor's environment (nothing secret) and
one end of a socket pair the agent keeps the other end of: no path, no permissions, and
no other process can ask it anything. It has imported what a supervisor needs
(workers.supervisor: the standard library and workers.cgroups, no Celery, SQLAlchemy or
Flask: .importlinter), so a fork of it is a supervisor ready to run: a few milliseconds
from the agent's request to its answer, where a new interpreter costs about a hundred of
CPU (bench/supervisor_start.py measures both).

The protocol, one datagram each way (SOCK_SEQPACKET): the agent sends an attempt
directory's absolute path; the launcher forks, and answers ``ok <pid> <start time>`` (the
supervisor's pid and its start in clock ticks, which name it even after the pid is reused)
or ``error <why>``. The child calls setsid (its own session: it outlives the agent and
this process, as a supervisor started by exec does), sends its output to the directory's
``supervisor.err`` and waits for one byte from the launcher before it runs
``supervisor.main``: the launcher writes it only once the agent has its answer, so a
launcher that dies in between leaves no supervisor the agent does not know of, and the
agent may start that attempt another way.

The launcher is single-threaded (a fork of it is safe), holds no database connection or
secret, reaps its children as they end (their CPU time counts in its own, and so in the
agent's tree), and exits when the agent's end of the socket closes: an agent that dies,
even by SIGKILL, takes its launcher with it, and never its supervisors.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import traceback
from typing import NoReturn

from workers import supervisor

MAX_REQUEST = 4096
GO = b"g"


def serve(sock: socket.socket) -> int:
    """Answer the agent's requests until it closes its end (or dies)."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)  # a SIGCHLD wakes the poll below: children are reaped as they end
    signal.signal(signal.SIGCHLD, lambda *_: None)
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    inherited = (sock.fileno(), wake_r, wake_w)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                while _drained(wake_r):
                    pass
                continue
            try:
                request = sock.recv(MAX_REQUEST)
                if not request:
                    return 0  # the agent is gone
                launch(sock, os.fsdecode(request), inherited)
            except (BrokenPipeError, ConnectionResetError):
                return 0
        reap()


def launch(sock: socket.socket, directory: str, inherited: tuple[int, ...]) -> None:
    """Fork the supervisor of ``directory``, answer the agent, then let the child run."""
    if not os.path.isabs(directory) or not os.path.isdir(directory):
        sock.send(f"error not an attempt directory: {directory!r}".encode())
        return
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError as e:
        os.close(go_r)
        os.close(go_w)
        sock.send(f"error cannot fork: {e}".encode())
        return
    if pid == 0:
        os.close(go_w)
        _child(directory, go_r, inherited)
    os.close(go_r)
    try:
        sock.send(f"ok {pid} {supervisor.start_time(pid)}".encode())
        os.write(go_w, GO)  # only once the agent knows the supervisor: else it exits unstarted
    except OSError:
        pass  # the agent is gone: the child reads EOF and exits without running the attempt
    finally:
        os.close(go_w)


def _child(directory: str, go_r: int, inherited: tuple[int, ...]) -> NoReturn:
    """The forked supervisor: its own session, the launcher's things closed, then main()."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in inherited:
            os.close(fd)
        if os.read(go_r, 1) != GO:
            os._exit(1)  # the launcher died before the agent had its answer
        os.close(go_r)
        err = os.open(os.path.join(directory, "supervisor.err"),
                      os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        os.dup2(err, 1)
        os.dup2(err, 2)
        os.close(err)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        code = supervisor.main(["workers.supervisor", directory])
    except BaseException:  # printed to supervisor.err: never back into the launcher's loop
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def reap() -> None:
    """Reap every child that has ended (the supervisors this launcher forked)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _drained(fd: int) -> bool:
    try:
        return bool(os.read(fd, 512))
    except BlockingIOError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m workers.launcher <socket fd> (started by the agent)", file=sys.stderr)
        return 2
    with socket.socket(fileno=int(argv[1])) as sock:
        return serve(sock)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
