"""Real signals to real processes: Ctrl-C (SIGINT) exits 130 with one line and no partial
file, for `mlnc-jax solve`, `mlnc-jax sweep` and `python -m experiments`; a sweep killed with
SIGKILL and rerun gives results bitwise equal to an uninterrupted run, and a second sweep on
the same directory meanwhile is locked out."""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlnc_jax.app import sweep as sw
from mlnc_jax.app.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
# A shell runs background jobs with SIGINT ignored and children inherit that, so the child
# restores Python's Ctrl-C handler first (in the child: a preexec_fn would run Python code
# between fork and exec of this multithreaded process).
_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
CLI = [sys.executable, "-c", _SIGINT + "from mlnc_jax.app.cli import console_main; console_main()"]
# the children of the Ctrl-C test say when their imports are done: a SIGINT during `import`
# is Python's own business (a traceback), not the package's
_READY = "import sys; print('ready', file=sys.stderr, flush=True); "
CLI_READY = [sys.executable, "-c", _SIGINT + "from mlnc_jax.app.cli import console_main; "
             + _READY + "console_main()"]
EXPERIMENTS = [sys.executable, "-c", _SIGINT + "import runpy, sys; sys.argv[0] = 'experiments'; "
               "import experiments.__main__, mlnc_jax; " + _READY
               + "runpy.run_module('experiments', run_name='__main__')"]


def _popen(argv, cwd):
    return subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _cpu_seconds(pid) -> float:
    """User + system CPU time of a live process (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_computing(p, cpu_s, limit_s=120):
    """Until the child has said its imports are done and then spent `cpu_s` CPU seconds: it
    is computing."""
    assert p.stderr.readline() == "ready\n", p.communicate()
    t0, cpu0 = time.time(), _cpu_seconds(p.pid)
    while _cpu_seconds(p.pid) < cpu0 + cpu_s:
        assert p.poll() is None, p.communicate()
        assert time.time() - t0 < limit_s, "child never started computing"
        time.sleep(0.2)


SWEEP = {"distributions": [{"generator": "random_correlated", "num_classes": 4, "seed": {"range": [0, 4]}}],
         "losses": ["mse", "pal"], "dim": 4, "lambda_w": [0.01], "lambda_h": 0.01, "seeds": [0],
         "chunk_size": 2}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_ctrl_c_exits_130_with_one_line(tmp_path):
    long_sweep = {"distributions": [{"generator": "random_correlated", "num_classes": 6,
                                     "seed": {"range": [0, 40]}}],
                  "losses": ["pal", "bce"], "dim": 6, "lambda_w": [0.001, 0.002, 0.003],
                  "lambda_h": 0.001, "seeds": [0], "chunk_size": 8}
    (tmp_path / "sweep.json").write_text(json.dumps(long_sweep))
    for d in ("solve", "sweep", "exp"):
        (tmp_path / d).mkdir()
    procs = {
        "solve": (_popen(CLI_READY + ["solve", "--labels", "enron", "--loss", "pal", "--dim", "40",
                                "--lambda-w", "1e-4", "--lambda-h", "1e-4", "--tol", "1e-14",
                                "--out", str(tmp_path / "solve" / "r.npz")], tmp_path),
                  "mlnc-jax: interrupted", 1.5),
        "sweep": (_popen(CLI_READY + ["sweep", "--config", str(tmp_path / "sweep.json"), "--no-progress",
                                "--out", str(tmp_path / "sweep" / "o")], tmp_path),
                  "mlnc-jax: interrupted", 1.5),
        "experiments": (_popen(EXPERIMENTS + ["--quick",
                                "--results-dir", str(tmp_path / "exp" / "res"),
                                "--figures-dir", str(tmp_path / "exp" / "figs")], ROOT),
                        "python -m experiments: interrupted", 2.0),
    }
    for p, _, cpu in procs.values():
        _wait_computing(p, cpu)
        p.send_signal(signal.SIGINT)
    for name, (p, line, _) in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 130, (name, p.returncode, err[-2000:])  # not -11 (segfault)
        assert "Traceback" not in err and "Fatal Python error" not in err, (name, err[-2000:])
        assert err.strip().splitlines()[-1] == line, (name, err[-500:])
    assert list((tmp_path / "solve").iterdir()) == []  # no result, no temporary
    o = tmp_path / "sweep" / "o"
    assert not [f for f in os.listdir(o) if "tmp" in f]
    for f in o.glob("chunk-*.json"):  # every chunk marked complete is complete
        assert sw.chunk_problem(o, int(f.stem[6:]), json.loads((o / "manifest.json").read_text())) is None
    for f in (tmp_path / "exp").rglob("*"):
        assert "tmp" not in f.name, f


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_sigkill_then_rerun_is_bitwise_equal_and_locked_meanwhile(tmp_path, capsys):
    (tmp_path / "s.json").write_text(json.dumps(SWEEP))
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    argv = lambda out: CLI + ["sweep", "--config", str(tmp_path / "s.json"), "--out", str(out), "--no-progress"]
    a = _popen(argv(killed), tmp_path)
    r = _popen(argv(ref), tmp_path)
    t0 = time.time()
    while not (killed / "chunk-00000.json").exists():
        assert a.poll() is None, a.communicate()
        assert time.time() - t0 < 300
        time.sleep(0.05)
    # meanwhile a second sweep on the same directory is refused, naming the holder
    code = main(["sweep", "--config", str(tmp_path / "s.json"), "--out", str(killed), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"another sweep (PID {a.pid})" in err and len(err.splitlines()) == 1
    time.sleep(random.uniform(0.0, 1.0))  # land the kill at some point of a later chunk
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=60)
    n_done = len(list(killed.glob("chunk-*.json")))
    manifest = json.loads((killed / "manifest.json").read_text())
    assert 1 <= n_done < len(manifest["chunks"]), "the sweep finished before it was killed"
    (killed / ".chunk-00007.npz.tmp999999").write_bytes(b"half")  # what a kill can leave
    rerun = subprocess.run(argv(killed), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"{n_done} already done" in rerun.stdout or "recomputed" in rerun.stdout, rerun.stdout
    out_r, err_r = r.communicate(timeout=600)
    assert r.returncode == 0, err_r[-2000:]
    got, want = sw.load_sweep(killed), sw.load_sweep(ref)
    assert got["missing_chunks"] == want["missing_chunks"] == []
    assert set(got) == set(want)
    for k in want:
        if k in ("manifest", "missing_chunks"):
            continue
        assert np.array_equal(np.asarray(got[k]), np.asarray(want[k])), k  # bitwise
    np.testing.assert_array_equal(got["problem"], np.arange(len(manifest["problems"])))
    assert not [f for f in os.listdir(killed) if "tmp" in f]
    shutil.rmtree(killed)


class _SignalsInFinalizer:
    """A finalizer during which SIGINT arrives: Python raises it inside `__del__`, prints
    "Exception ignored" and drops it."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # bytecode for the pending handler to run on
            pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_interrupt_swallowed_by_a_finalizer_is_raised_at_the_next_check():
    from mlnc_jax.engine import interrupts

    # as in the subprocesses above: a background run starts with SIGINT ignored
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.guard():
                _SignalsInFinalizer()  # dropped at once: its __del__ swallows the interrupt
                interrupts.check()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        interrupts.check()  # nothing pending after the guard
    finally:
        signal.signal(signal.SIGINT, before)


def test_interrupt_inside_a_collection_is_recorded_not_raised(capsys):
    """A SIGINT that lands in a gc callback (JAX registers one) must not print "Exception
    ignored … Traceback": the handler records it and `check` raises it at the step boundary."""
    import gc

    from mlnc_jax.engine import interrupts

    seen = []

    def signals_during_collection(phase, info):
        if phase == "start" and not seen:
            seen.append(phase)
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupts.guard():
                gc.callbacks.append(signals_during_collection)
                try:
                    gc.collect()
                finally:
                    gc.callbacks.remove(signals_during_collection)
                assert seen
                interrupts.check()
        assert "Traceback" not in capsys.readouterr().err
        assert interrupts._gc_started not in gc.callbacks
        assert interrupts._gc_stopped not in gc.callbacks
    finally:
        signal.signal(signal.SIGINT, before)
