"""The Ray executor against a real local Ray instance (started once for this module, on loopback)."""

from __future__ import annotations

import importlib
import sys

import pytest
import torch
from test_executors import FAULTY_WORKERS, Recorder, created_at, rounds_of, serial_reference

from mmal_core import MmalError
from mmal_core.runtime.executors import RayExecutor
from mmal_core.loop import run_experiment

ray = pytest.importorskip("ray")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def local_ray():
    from mmal_core.runtime.executors import start_local_ray

    if ray.is_initialized():
        ray.shutdown()
    start_local_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return serial_reference(tmp_path_factory)


def test_the_local_instance_listens_on_loopback_only(local_ray):
    psutil = pytest.importorskip("psutil")  # ships with Ray
    assert [node["NodeManagerAddress"] for node in ray.nodes()] == ["127.0.0.1"]
    ours = {p.pid for p in psutil.Process().children(recursive=True)} | {psutil.Process().pid}
    listening = [c for c in psutil.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN and c.pid in ours]
    assert listening, "found no Ray server socket to check"
    assert {c.laddr.ip.removeprefix("::ffff:") for c in listening} == {"127.0.0.1"}


@pytest.mark.parametrize("lockstep", [True, False])
def test_ray_tasks_give_the_serial_result_and_share_the_pool(tmp_path, local_ray, reference, monkeypatch, lockstep):
    cfg, expected = reference
    puts = []
    real_put = ray.put
    monkeypatch.setattr(ray, "put", lambda value, **kw: puts.append(type(value).__name__) or real_put(value, **kw))
    recorder = Recorder()
    db = tmp_path / "ray.db"
    outcomes = run_experiment(cfg, str(db), recorder, executor=RayExecutor(workers=2, lockstep=lockstep))
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert rounds_of(db) == expected
    assert sorted(recorder.rounds) == sorted(expected)
    # one (dataset, seed): put once and read by both tasks, or loaded by the one lockstep group task
    assert puts == ([] if lockstep else ["MultimodalDataset"])
    assert ray.is_initialized()  # a session it did not start is left running


def test_a_killed_ray_worker_is_retried_and_its_rounds_are_kept(tmp_path, local_ray, reference, monkeypatch):
    from ray import cloudpickle  # Ray's own copy serialises the tasks' arguments

    cfg, expected = reference
    folder = tmp_path / "faulty"
    folder.mkdir()
    (folder / "mmal_faulty_ray_workers.py").write_text(FAULTY_WORKERS)
    monkeypatch.syspath_prepend(str(folder))
    sys.modules.pop("mmal_faulty_ray_workers", None)
    faulty = importlib.import_module("mmal_faulty_ray_workers")
    cloudpickle.register_pickle_by_value(faulty)  # Ray workers cannot import it by name
    try:
        recorder = Recorder()
        db = tmp_path / "ray-killed.db"
        executor = RayExecutor(workers=2, retries=1, worker=faulty.killed_on_first_attempt, lockstep=False)
        outcomes = run_experiment(cfg, str(db), recorder, executor=executor)
    finally:
        cloudpickle.unregister_pickle_by_value(faulty)
    assert [o.status for o in outcomes] == ["finished", "finished"]
    assert rounds_of(db) == expected
    assert sorted((f[0], f[1], f[3]) for f in recorder.failures) == [("margin", 1, True), ("random", 1, True)]
    for outcome in outcomes:
        killed_at = float((folder / "marks" / f"{outcome.spec.key}-1").read_text())
        assert created_at(db, outcome.spec.key, 0) < killed_at < created_at(db, outcome.spec.key, 1)


def test_a_gpu_fraction_on_a_cluster_without_gpu_is_a_one_line_error(tmp_path, local_ray, reference):
    cfg, _ = reference
    with pytest.raises(MmalError, match=r"--gpu-fraction 0\.5: the Ray cluster has no GPU"):
        run_experiment(cfg, str(tmp_path / "gpu.db"), executor=RayExecutor(gpu_fraction=0.5))
