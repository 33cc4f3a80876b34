"""Run a command as two local processes of one ``jax.distributed`` job (tests only)."""

import socket
import subprocess


def run_on_two_processes(command, out, env, timeout=600):
    """``command --out OUT --coordinator 127.0.0.1:PORT --num-processes 2 --process-id i`` for
    i = 0, 1 at once; asserts both exit 0."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([*command, "--out", str(out), "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=timeout) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    return outs
