"""``make run``'s UI: ``dagster dev`` in a process group of its own, all of it ended within seconds
of Ctrl-C.

``python -m heliox_orchestration.devserver -w workspace.yaml -p 3000`` runs ``dagster dev`` with
those arguments. Ctrl-C (or SIGTERM, SIGHUP) sends SIGINT to the group, the signal ``dagster dev``
and its processes shut down on, and SIGKILLs whatever is left of the group ``GRACE_SECONDS``
later; a second Ctrl-C SIGKILLs at once.

Why not wait for them: Dagster's own shutdown is done within about a second, and then each of its
Python processes (``dagster dev``, the webserver, the daemon, the code server and its proxy)
spends seconds in interpreter teardown, garbage-collecting a few hundred thousand objects, and
``dagster dev`` only begins its own teardown after the webserver's and the daemon's processes
have ended: 8-30 s on a busy 2-core machine. A run launched at the moment of Ctrl-C holds the code
server until its new worker has imported the code location (20-30 s there). Nothing is left to
save by then: a run that did not end is ended by run monitoring at its bound (docs/operations.md,
*Run limits*), as after any crash.

Standard library only: it must not add the code location's imports to ``make run``'s start.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from types import FrameType

GRACE_SECONDS = 3.0  # from the SIGINT to the SIGKILL of what is left of the group
POLL_SECONDS = 0.1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def group_alive(pgid: int) -> bool:
    """Whether a process of the group is still running: zombies (ended, not yet reaped by their
    parent or by init) do not count."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: a zombie counts as a member
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (command)"
        except (OSError, IndexError):  # ended meanwhile
            continue
        state, group = fields[0], int(fields[2])
        if group == pgid and state not in ("Z", "X"):
            return True
    return False


class DevServer:
    """``dagster dev`` as the leader of a new process group, and the signals that stop it."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.requested: int | None = None  # the first stop signal received
        self.forced = False  # a second one: SIGKILL now

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested is None:
            self.requested = signum
        else:
            self.forced = True

    def run(self) -> int:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        # process_group=0: the terminal's Ctrl-C reaches this process only; it decides when.
        child = subprocess.Popen(self.argv, process_group=0, stdin=subprocess.DEVNULL)
        while self.requested is None and child.poll() is None:
            time.sleep(POLL_SECONDS)
        self.stop(child)
        if self.requested is not None:
            return 128 + self.requested
        return child.returncode if child.returncode is not None else 1

    def stop(self, child: subprocess.Popen[bytes]) -> None:
        """SIGINT the group, wait up to GRACE_SECONDS for it to empty, SIGKILL the rest."""
        pgid = child.pid
        signal_group(pgid, signal.SIGINT)
        deadline = time.monotonic() + GRACE_SECONDS
        while not self.forced and time.monotonic() < deadline and group_alive(pgid):
            time.sleep(POLL_SECONDS)
        if group_alive(pgid):
            signal_group(pgid, signal.SIGKILL)
        child.wait()


def signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):  # every member has ended meanwhile
        os.killpg(pgid, signum)


def command(args: Sequence[str]) -> list[str]:
    """``dagster dev`` with ``args``, from this interpreter's environment."""
    return [sys.executable, "-m", "dagster", "dev", *args]


def serve(argv: Sequence[str]) -> int:
    """Run ``argv`` as above; stopped by a signal, end by that signal (as an interrupted command
    should: ``make`` then reports "Interrupt", a shell script stops)."""
    server = DevServer(argv)
    code = server.run()
    if server.requested is not None:
        signal.signal(server.requested, signal.SIG_DFL)
        os.kill(os.getpid(), server.requested)
    return code


def main(args: Sequence[str] | None = None) -> int:
    return serve(command(sys.argv[1:] if args is None else args))


if __name__ == "__main__":
    sys.exit(main())
