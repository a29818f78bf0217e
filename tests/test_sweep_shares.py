"""One sweep shared by workers (`--worker I/N`) and by `jax.distributed` processes (gloo on
CPU): results equal a one-process sweep's, a killed worker resumes at another worker count,
unrelated sweeps still collide, a dead peer is one line (`mlnc_jax.app.sweep_shares`)."""

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from mlnc_jax.app import sweep as sw
from mlnc_jax.app.sweep_shares import Share, SharedLock, parse_share, share_from_environment
from mlnc_jax.model.errors import InputError

CONFIG = {"distributions": [{"generator": "random_correlated", "num_classes": 4,
                             "seed": {"range": [0, 12]}}],
          "losses": ["mse", "pal"], "dim": 4, "lambda_w": 0.01, "lambda_h": 0.01,
          "chunk_size": 3}                                         # 8 chunks


def _env():
    return {**os.environ, "JAX_PLATFORMS": "cpu", "MLNC_CACHE_DIR": "off"}


def _sweep(cfg, out, *args):
    return subprocess.Popen([sys.executable, "-m", "mlnc_jax.app.cli", "sweep", "--config",
                             str(cfg), "--out", str(out), "--no-progress", *args],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _done(p, timeout=300):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted one-process sweep."""
    d = tmp_path_factory.mktemp("ref")
    (d / "sweep.json").write_text(json.dumps(CONFIG))
    sw.run_sweep(d / "sweep.json", d / "out", progress=False)
    return d / "sweep.json", sw.load_sweep(d / "out")


def _same(a, b):
    assert not a["missing_chunks"] and not b["missing_chunks"]
    for k in ("objective", "W", "H", "b", "certified", "steps", "status"):
        assert np.array_equal(a[k], b[k]), k


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_workers_then_a_plain_run_find_everything(tmp_path, reference):
    cfg, ref = reference
    ps = [_sweep(cfg, tmp_path / "out", "--worker", f"{i}/2") for i in range(2)]
    for p in ps:
        rc, out, err = _done(p)
        assert rc == 0, err[-2000:]
        assert "4 computed" in out
    rc, out, _ = _done(_sweep(cfg, tmp_path / "out"))
    assert rc == 0 and "0 computed, 8 already done" in out
    _same(sw.load_sweep(tmp_path / "out"), ref)


def test_two_jax_distributed_processes(tmp_path, reference):
    cfg, ref = reference
    port = _free_port()
    ps = [_sweep(cfg, tmp_path / "out", "--distributed", "--coordinator", f"127.0.0.1:{port}",
                 "--num-processes", "2", "--process-id", str(i), "--timeout", "120")
          for i in range(2)]
    outs = [_done(p) for p in ps]
    for rc, _, err in outs:
        assert rc == 0, err[-2000:]
    assert "(worker 0/2): 4 computed" in outs[0][1] and "not done" not in outs[0][1]
    _same(sw.load_sweep(tmp_path / "out"), ref)


def test_killed_worker_resumes_at_another_worker_count(tmp_path, reference):
    cfg, ref = reference
    out = tmp_path / "out"
    p = _sweep(cfg, out, "--worker", "0/2")
    t0 = time.time()
    while not (out / "chunk-00000.json").exists() and time.time() - t0 < 240:
        time.sleep(0.05)
    p.kill()                                               # mid-run: chunk 2 or later running
    p.wait()
    done = sorted(out.glob("chunk-*.json"))
    assert 1 <= len(done) < 4
    for i in range(3):                                     # resume as three workers, in turn
        rc, text, err = _done(_sweep(cfg, out, "--worker", f"{i}/3"))
        assert rc == 0, err[-2000:]
    rc, text, _ = _done(_sweep(cfg, out))
    assert rc == 0 and "0 computed, 8 already done" in text
    assert not list(out.glob(".chunk-*.tmp*"))            # the plain run removed the strays
    _same(sw.load_sweep(out), ref)


def test_unrelated_sweep_and_a_second_copy_of_a_share_are_refused(tmp_path, reference):
    cfg, _ = reference
    out = tmp_path / "out"
    rc, _, err = _done(_sweep(cfg, out, "--worker", "0/4"))
    assert rc == 0, err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**CONFIG, "lambda_w": 0.02}))
    rc, _, err = _done(_sweep(other, out, "--worker", "1/4"))
    assert rc == 2 and "different sweep" in err and len(err.strip().splitlines()) == 1
    with SharedLock(out, Share(1, 4), sw.LOCK_NAME):
        rc, _, err = _done(_sweep(cfg, out, "--worker", "1/4"))
        assert rc == 2 and "another worker 1/4 is running" in err
        rc, _, err = _done(_sweep(cfg, out))
        assert rc == 2 and "another sweep" in err                # a plain run waits for workers


def test_a_peer_that_never_comes_is_one_line(tmp_path, reference):
    cfg, _ = reference
    t = time.time()
    rc, _, err = _done(_sweep(cfg, tmp_path / "out", "--distributed", "--coordinator",
                              f"127.0.0.1:{_free_port()}", "--num-processes", "2",
                              "--process-id", "0", "--timeout", "5"), timeout=120)
    lines = [ln for ln in err.splitlines() if ln.startswith("mlnc-jax")]
    assert rc == 1 and len(lines) == 1 and "timeout 5 s" in lines[0], err[-2000:]
    assert "Check failure" not in err and "Traceback" not in err
    assert time.time() - t < 60
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_share_parsing_and_slurm_arrays():
    assert parse_share("2/5") == Share(2, 5)
    for bad in ("5/5", "-1/2", "a/b", "3"):
        with pytest.raises(InputError):
            parse_share(bad)
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "4"}
    assert share_from_environment(env) == Share(2, 4)
    assert share_from_environment({}) is None


_BATCH = r"""
import sys, jax, numpy as np
from mlnc_jax.app.sweep_shares import initialize_distributed
initialize_distributed(sys.argv[1], 2, int(sys.argv[2]), 120)
import mlnc_jax as mj
dists = [mj.random_correlated(4, s) for s in range(10)]
r = mj.solve_batch(dists, mj.UFMConfig("pal", 4, 0.01, 0.01), seeds=list(range(10)), progress=False)
np.save(sys.argv[3], np.stack([r.objective, r.certified, r.steps]))
"""


def test_solve_batch_splits_problems_across_processes(tmp_path):
    """Both processes return the whole result, equal to one process's (each problem is solved
    by one process on its own device, the same program as in one process)."""
    import mlnc_jax as mj

    port = _free_port()
    ps = [subprocess.Popen([sys.executable, "-c", _BATCH, f"127.0.0.1:{port}", str(i),
                            str(tmp_path / f"r{i}.npy")], env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in ps:
        rc, _, err = _done(p)
        assert rc == 0, err[-2000:]
    dists = [mj.random_correlated(4, s) for s in range(10)]
    ref = mj.solve_batch(dists, mj.UFMConfig("pal", 4, 0.01, 0.01), seeds=list(range(10)),
                         progress=False)
    for i in range(2):
        obj, cert, steps = np.load(tmp_path / f"r{i}.npy")
        assert cert.all() and np.array_equal(steps, ref.steps)
        np.testing.assert_allclose(obj, ref.objective, rtol=1e-12)
