import numpy as np
import pytest
import torch

from maskclf.config import ModelCfg, NamedCfg, PrepareCfg
from maskclf.data.crops import cached_crops, to_cropset
from maskclf.data.scan import scan_train
from maskclf.inference.forward import predict_outputs
from maskclf.training.engine import StepParts, batches_per_epoch, train_one_epoch
from maskclf.data.loader import CropSet, epoch_order, iterate
from maskclf.training.losses import build_criterion
from maskclf.models.network import build_model
from maskclf.training.optim import build_optimizer
from maskclf.models.heads import head_spec, make_targets
from maskclf.data.transforms import build_eval_transform

SPEC = head_spec("single", "classes")


@pytest.fixture(scope="module")
def crops(tiny_data, tmp_path_factory) -> CropSet:
    """16 real face crops (48 px, no detector) from the tiny train set, two per class 0-5 plus others."""
    torch.set_num_threads(1)
    scan = scan_train(tiny_data)
    records = scan.records[::10][:16]
    images, kept, skipped = cached_crops(records, tiny_data, PrepareCfg(size=48, detector="none"),
                                         tmp_path_factory.getbasetemp() / "tiny-crops", progress=False)
    assert not skipped and len(kept) == 16
    return to_cropset(images, kept)


class CountingSchedule:
    def __init__(self):
        self.steps = 0

    def step_batch(self):
        self.steps += 1


def _parts(model, lr: float, batch_size: int, accum_steps: int = 1) -> StepParts:
    plain = build_eval_transform(32, model.data_config["mean"], model.data_config["std"])
    return StepParts(
        criterion=build_criterion(SPEC.heads, NamedCfg(name="ce"), {}, {"mask": 1.0, "gender": 1.0, "age": 1.0}, {}, False, False),
        optimizer=build_optimizer(model, NamedCfg(name="adam", params={"lr": lr, "weight_decay": 0.0})),
        schedule=CountingSchedule(),
        make_targets=lambda labels, ages: make_targets(labels, ages, SPEC),
        augment=lambda x, generator=None: plain(x),
        batch_size=batch_size,
        accum_steps=accum_steps,
    )


def _model(seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelCfg(backbone="test_resnet", pretrained=""), SPEC.heads)


def test_training_lowers_the_loss_on_a_fixed_batch(crops):
    model = _model()
    parts = _parts(model, lr=3e-3, batch_size=16)
    order = np.arange(len(crops))  # one batch of 16, the same every step
    gen = torch.Generator().manual_seed(0)
    losses = [train_one_epoch(model, crops, order, parts, torch.device("cpu"), gen, desc=None)["loss"]
              for _ in range(15)]
    assert parts.schedule.steps == 15
    assert losses[0] > 2.0  # about ln(18) at random init
    assert losses[-1] < 0.5 * losses[0], losses


def test_zero_learning_rate_leaves_weights_alone(crops):
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    parts = _parts(model, lr=0.0, batch_size=8)
    stats = train_one_epoch(model, crops, np.arange(len(crops)), parts, torch.device("cpu"),
                            torch.Generator().manual_seed(0), desc=None)
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
    assert set(stats) >= {"loss", "loss_cls", "images_per_s", "seconds", "lr"} and stats["lr"] == 0.0


def test_gradient_accumulation_steps_once_per_group_including_the_last(crops):
    model = _model()
    parts = _parts(model, lr=1e-3, batch_size=4, accum_steps=2)
    # 14 images, batch 4: three full batches (the partial 4th is dropped) -> steps after batch 2 and batch 3.
    train_one_epoch(model, crops, np.arange(14), parts, torch.device("cpu"), torch.Generator().manual_seed(0),
                    desc=None)
    assert parts.schedule.steps == 2
    assert all(p.grad is None for p in model.parameters())  # nothing left over for the next epoch


def test_batches_per_epoch_matches_what_runs():
    assert [batches_per_epoch(n, 4) for n in (0, 1, 3, 4, 5, 8, 11)] == [0, 1, 1, 1, 1, 2, 2]


def test_predict_outputs_are_in_order_and_match_a_direct_forward(crops):
    model = _model().eval()
    transform = build_eval_transform(32, model.data_config["mean"], model.data_config["std"])
    out = predict_outputs(model, crops, transform, torch.device("cpu"), batch_size=5, desc=None)
    with torch.no_grad():
        direct = model(transform(torch.from_numpy(crops.images)))
    assert out["cls"].shape == (16, 18) and out["cls"].dtype == torch.float32
    torch.testing.assert_close(out["cls"], direct["cls"], rtol=1e-5, atol=1e-5)


def _toy(n: int) -> CropSet:
    images = np.arange(n, dtype=np.uint8)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    return CropSet(images, np.arange(n) % 18, np.full(n, np.nan, np.float32), [str(i) for i in range(n)])


def test_iterate_yields_each_index_once_in_batches():
    data = _toy(10)
    order = np.random.default_rng(0).permutation(10)
    batches = list(iterate(data, order, 4))
    assert [len(b[0]) for b in batches] == [4, 4, 2]
    seen = np.concatenate([b[0][:, 0, 0, 0].numpy() for b in batches])
    assert sorted(seen) == list(range(10))
    assert set(batches[0][0][:, 0, 0, 0].tolist()) == set(order[:4].tolist())
    assert [len(b[0]) for b in iterate(data, order, 4, drop_last=True)] == [4, 4]


def test_iterate_raises_a_gather_error_instead_of_hanging():
    with pytest.raises(IndexError):
        list(iterate(_toy(4), np.array([0, 1, 9]), 2))


def test_iterate_stopped_early_ends_its_worker_thread():
    import threading

    before = threading.active_count()
    it = iterate(_toy(40), np.arange(40), 2)
    next(it)
    it.close()
    assert threading.active_count() == before


def test_epoch_order_depends_only_on_seed_and_epoch():
    a, b = epoch_order(50, 3, 2), epoch_order(50, 3, 2)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, 3, 3))
