import random

import numpy as np
import pytest
import torch

from maskclf.training.engine import batches_per_epoch
from maskclf.utils.runtime import Dist, autocast, grad_scaler, memory_format, resolve_device, seed_everything, shard


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_seed_everything_repeats_python_numpy_and_torch_draws():
    seed_everything(7)
    a = _draws()
    seed_everything(7)
    assert _draws() == a
    seed_everything(8)
    assert _draws() != a


def test_deterministic_switch_is_set_and_cleared():
    try:
        seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        seed_everything(0, deterministic=False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto").type in ("cpu", "mps")
        with pytest.raises(ValueError, match="asked for CUDA but torch sees no GPU"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="is not a device"):
        resolve_device("gpu0")


def test_cpu_precision_helpers_are_no_ops():
    cpu = torch.device("cpu")
    with autocast(cpu, True):
        y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert not grad_scaler(cpu, True).is_enabled()


def test_memory_format_follows_the_setting_on_every_device():
    assert memory_format(True) == torch.channels_last
    assert memory_format(False) == torch.contiguous_format


def test_shard_gives_every_rank_as_many_samples_and_no_sample_twice():
    order = np.random.default_rng(0).permutation(31)
    shares = [shard(order, Dist(rank, 2)) for rank in range(2)]
    # 31 samples split 16/15 would give batch-8 ranks 2 and 1 steps: DistributedDataParallel would wait forever.
    assert [len(s) for s in shares] == [15, 15]
    assert [batches_per_epoch(len(s), 8) for s in shares] == [1, 1]
    assert not set(shares[0]) & set(shares[1]) and set(shares[0]) | set(shares[1]) == set(order[:30])
    assert shard(order, Dist()) is order
