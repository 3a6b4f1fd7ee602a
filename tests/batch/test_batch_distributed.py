"""The same batch on a 2-worker dask LocalCluster (processes) equals the serial run; failed regions are retried."""

import pytest

from geodiff.batch import finalise, run_batch, status
from tests.batch.conftest import assert_same_store
from tests.batch.helpers import RUN, FlakyJob, reconstruct_job


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  worker_dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.mark.distributed
def test_two_worker_cluster_equals_serial(client, bundle, reference, tmp_path):
    from distributed import get_task_stream

    store = tmp_path / "cluster.zarr"
    with get_task_stream(client) as stream:
        run_batch(reconstruct_job(bundle), store, client=client, **RUN)
    finalise(store)
    assert_same_store(store, reference)
    region_tasks = [task for task in stream.data if task["key"].startswith("_region_task")]
    assert len(region_tasks) == 12 and len({task["worker"] for task in region_tasks}) == 2  # both workers worked
    from geodiff.batch.workers import allocator_tuned

    assert set(client.run(allocator_tuned).values()) == {True}  # activations reuse freed memory (glibc)


@pytest.mark.distributed
def test_failed_regions_are_retried_on_the_cluster(client, tmp_path):
    store = tmp_path / "flaky.zarr"
    run_batch(FlakyJob(str(tmp_path)), store, client=client, retries=1, time_chunk=2, progress=False)
    assert status(store).complete
    ds = finalise(store).load()
    assert ds["v"].isel(member=1, x=0).values.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert sorted(p.name for p in tmp_path.glob("attempt-*")) == ["attempt-0", "attempt-2", "attempt-4"]


@pytest.mark.distributed
def test_without_retries_a_failure_is_raised(client, tmp_path):
    with pytest.raises(OSError, match="transient failure"):
        run_batch(FlakyJob(str(tmp_path)), tmp_path / "s.zarr", client=client, retries=0, time_chunk=2,
                  progress=False)
    assert not status(tmp_path / "s.zarr").complete
