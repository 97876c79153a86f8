"""heliox_orchestration/devserver.py with stand-in programs (real processes, no Dagster): Ctrl-C
ends the whole process group, a process that outlives the grace is killed, an exit is passed on.
The same with `dagster dev` itself: test_deploy.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from heliox_orchestration.devserver import GRACE_SECONDS, group_alive

# A stand-in for dagster dev: a child that ignores SIGINT (as a process busy in its teardown
# would), then "ready" on stdout; on SIGINT the parent itself exits at once.
STUBBORN = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    ignore = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print(flush=True)"
    child = subprocess.Popen([sys.executable, "-c", ignore + "; time.sleep(60)"], stdout=subprocess.PIPE)
    child.stdout.readline()
    print(child.pid, flush=True)
    try:
        time.sleep(60)
    except KeyboardInterrupt:
        sys.exit(0)
    """
)


def _devserver(program: str, tmp_path: Path) -> subprocess.Popen[str]:
    script = tmp_path / "program.py"
    script.write_text(program)
    code = (
        "import sys; from heliox_orchestration import devserver; "
        f"sys.exit(devserver.serve([sys.executable, {str(script)!r}]))"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_ends_the_group_and_kills_what_outlives_the_grace(tmp_path: Path) -> None:
    wrapper = _devserver(STUBBORN, tmp_path)
    assert wrapper.stdout is not None
    grandchild = int(wrapper.stdout.readline())
    group = os.getpgid(grandchild)
    assert group not in (wrapper.pid, os.getpgid(0))  # a group of its own, led by the child
    interrupted = time.monotonic()
    os.killpg(wrapper.pid, signal.SIGINT)  # the terminal's Ctrl-C: the wrapper's group only
    assert wrapper.wait(timeout=GRACE_SECONDS + 10) == -signal.SIGINT  # ended by it, as make expects
    elapsed = time.monotonic() - interrupted
    assert not group_alive(group), "a process of dagster dev's group outlived the wrapper"
    assert elapsed >= GRACE_SECONDS - 0.5  # the grandchild ignored SIGINT: it was killed, not asked


def test_a_child_that_exits_by_itself_passes_its_exit_code_on(tmp_path: Path) -> None:
    wrapper = _devserver("import sys; sys.exit(3)", tmp_path)
    assert wrapper.wait(timeout=30) == 3
