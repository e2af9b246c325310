"""SpillingFeatureStore: exact round trips, the memory bound, clean-up and a full disk."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vsrblocks.recurrent.spilling_feature_store as spilling
from tests.strategies import seeded_randn, seeds
from vsrblocks.recurrent import FeatureStore, SpillDiskFullError, SpillingFeatureStore

DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.uint8, torch.int64, torch.bool]

operations = st.lists(
    st.tuples(
        st.sampled_from(["put", "get", "discard"]),
        st.sampled_from(["backward", "forward", "flows"]),
        st.integers(0, 5),
        st.integers(0, 40),  # elements of a put tensor
        st.sampled_from(DTYPES),
    ),
    max_size=40,
)


def _tensor(numel: int, dtype: torch.dtype, seed: int) -> torch.Tensor:
    values = seeded_randn((numel,), seed) * 100
    return (values > 0) if dtype == torch.bool else values.to(dtype)


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations, budget=st.integers(0, 400), seed=seeds)
def test_behaves_like_the_in_memory_store_and_stays_in_budget(tmp_path, ops, budget, seed) -> None:
    reference = FeatureStore()
    with SpillingFeatureStore(budget, directory=tmp_path) as store:
        for step, (op, key, index, numel, dtype) in enumerate(ops):
            if op == "put":
                value = _tensor(numel, dtype, seed + step).reshape(1, numel, 1)
                reference.put(key, index, value)
                store.put(key, index, value.clone())
            elif op == "discard":
                reference.discard(key, index)
                store.discard(key, index)
            elif (key, index) in reference._items:
                want, got = reference.get(key, index), store.get(key, index)
                assert got.dtype == want.dtype and got.shape == want.shape and got.device == want.device
                assert torch.equal(got, want)
            else:
                with pytest.raises(KeyError, match=key):
                    store.get(key, index)
            assert store.resident_bytes <= budget
            assert len(store) == len(reference)
        folder = store.folder
        assert store.peak_resident_bytes <= budget
    assert folder is None or not folder.exists()


@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(dtype=st.sampled_from(DTYPES), seed=seeds, shape=st.lists(st.integers(0, 4), min_size=1, max_size=4))
def test_round_trip_through_disk_is_exact(tmp_path, dtype, seed, shape) -> None:
    numel = 1
    for size in shape:
        numel *= size
    value = _tensor(numel, dtype, seed).reshape(shape)
    with SpillingFeatureStore(0, directory=tmp_path) as store:  # budget 0: everything goes to disk
        store.put("spatial", 7, value)
        assert store.resident_bytes == 0 and store.disk_bytes == value.numel() * value.element_size()
        back = store.get("spatial", 7)
    assert back.dtype == value.dtype and back.shape == value.shape and torch.equal(back, value)


def test_non_contiguous_and_special_values_round_trip(tmp_path) -> None:
    value = torch.tensor([[float("nan"), float("inf")], [-0.0, 1e-45]]).t()
    with SpillingFeatureStore(0, directory=tmp_path) as store:
        store.put("x", 0, value)
        back = store.get("x", 0)
    assert torch.equal(back.view(torch.int32), value.contiguous().view(torch.int32))


def test_least_recently_used_spills_first_and_reads_back_once(tmp_path) -> None:
    frames = [torch.full((4, 4), float(i)) for i in range(4)]  # 64 bytes each
    with SpillingFeatureStore(128, directory=tmp_path) as store:
        for i, frame in enumerate(frames):
            store.put("backward", i, frame)
        assert set(store._items) == {("backward", 2), ("backward", 3)}  # the last written stay
        assert torch.equal(store.get("backward", 0), frames[0])  # read back: resident again
        assert ("backward", 0) in store._items and store.resident_bytes == 128
        files = len(list(store.folder.iterdir()))
        store.get("backward", 1)  # evicts 2 or 3; 0's file is kept, so re-evicting it writes nothing
        store.get("backward", 2)
        assert len(list(store.folder.iterdir())) == files + 1
        for i in range(4):
            store.discard("backward", i)
        assert store.disk_bytes == 0 and not list(store.folder.iterdir())


def test_folder_removed_on_exception_and_on_garbage_collection(tmp_path) -> None:
    with pytest.raises(KeyboardInterrupt):
        with SpillingFeatureStore(0, directory=tmp_path) as store:
            store.put("a", 0, torch.ones(3))
            assert store.folder.exists()
            raise KeyboardInterrupt
    assert not list(tmp_path.iterdir())
    store = SpillingFeatureStore(0, directory=tmp_path)
    store.put("a", 0, torch.ones(3))
    assert list(tmp_path.iterdir())
    del store
    gc.collect()
    assert not list(tmp_path.iterdir())


def test_folder_of_a_killed_process_is_removed_by_the_next_store(tmp_path) -> None:
    script = textwrap.dedent(
        f"""
        import os, torch
        from vsrblocks.recurrent import SpillingFeatureStore
        store = SpillingFeatureStore(0, directory={str(tmp_path)!r})
        store.put("a", 0, torch.ones(3))
        os._exit(0)  # no clean-up, as after SIGKILL
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ})
    assert len(list(tmp_path.iterdir())) == 1
    with SpillingFeatureStore(0, directory=tmp_path) as store:
        store.put("a", 0, torch.ones(3))
        assert list(tmp_path.iterdir()) == [store.folder]


def test_full_disk_names_the_folder_and_the_bytes(tmp_path, monkeypatch) -> None:
    def full_disk(path, mode="r", buffering=-1):
        if "w" in mode:
            open(path, "wb").close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return open(path, mode, buffering)

    monkeypatch.setattr(spilling, "open", full_disk, raising=False)
    with SpillingFeatureStore(0, directory=tmp_path) as store:
        with pytest.raises(SpillDiskFullError, match="400 more bytes needed") as info:
            store.put("backward", 3, torch.zeros(100))
        assert str(store.folder) in str(info.value) and info.value.errno == errno.ENOSPC
        assert not list(store.folder.iterdir())  # no half-written file left


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_spills_to_pinned_memory_then_disk(tmp_path) -> None:
    values = [seeded_randn((1, 2, 8, 8), i).cuda() for i in range(6)]  # 512 bytes each
    with SpillingFeatureStore(1024, pinned_bytes=1024, directory=tmp_path) as store:
        for i, value in enumerate(values):
            store.put("f", i, value)
        assert store.resident_bytes == 1024 and store.pinned_bytes_used == 1024 and store.disk_bytes == 1024
        for i, value in enumerate(values):
            back = store.get("f", i)
            assert back.device == value.device and torch.equal(back, value)
