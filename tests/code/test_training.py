"""Unit tests of the training side's building blocks, on constructed inputs with known answers.

metrics vs scikit-learn, ECE, temperature scaling, thresholds, the LR schedule, the optimizer groups,
early-stopping comparison, device/bf16 selection, loader sharding and the checkpoint format.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from catsdogs.data.loaders import ArrayLoader, SplitData
from catsdogs.release.calibrate import fit_temperature, pet_threshold, unsure_threshold
from catsdogs.training.checkpoint import FORMAT_VERSION, Checkpoint, TrainState, load_model
from catsdogs.training.loop import build_optimizer, improved, warmup_cosine
from catsdogs.training.metrics import classification_metrics, expected_calibration_error, log_loss, softmax
from catsdogs.training.runtime import cpu_has_fast_bf16, is_catsdogs_cli, select_device, use_bf16

# --- metrics ---------------------------------------------------------------------------------


def _predictions(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    p_dog = np.clip(0.35 * labels + rng.uniform(0.05, 0.7, n), 0.01, 0.99)  # informative but imperfect
    return np.stack([1 - p_dog, p_dog], axis=1), labels


def test_classification_metrics_match_scikit_learn():
    from sklearn import metrics as skm

    probs, labels = _predictions()
    pred = probs.argmax(1)
    m = classification_metrics(probs, labels)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, pred))
    assert m["precision"] == pytest.approx(skm.precision_score(labels, pred, pos_label=1))
    assert m["recall"] == pytest.approx(skm.recall_score(labels, pred, pos_label=1))
    assert m["f1"] == pytest.approx(skm.f1_score(labels, pred, pos_label=1))
    assert m["loss"] == pytest.approx(skm.log_loss(labels, probs, labels=[0, 1]), rel=1e-9)
    assert 0.5 < m["accuracy"] < 1.0  # the constructed predictions are neither trivial nor perfect


def test_classification_metrics_with_no_predicted_positive_are_zero_not_nan():
    probs = np.array([[0.9, 0.1], [0.8, 0.2]])
    m = classification_metrics(probs, np.array([0, 1]))
    assert m["precision"] == m["recall"] == m["f1"] == 0.0 and m["accuracy"] == 0.5


def test_expected_calibration_error_on_constructed_inputs():
    # 10 answers at confidence 0.8, 8 right: perfectly calibrated
    conf = np.full(10, 0.8)
    labels = np.array([1] * 8 + [0] * 2)
    probs = np.stack([1 - conf, conf], axis=1)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-12)
    # half at 0.9 (all right), half at 0.6 (all wrong): |1 - 0.9| / 2 + |0 - 0.6| / 2
    conf = np.array([0.9] * 5 + [0.6] * 5)
    probs = np.stack([1 - conf, conf], axis=1)
    labels = np.array([1] * 5 + [0] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.05 + 0.3)


def test_log_loss_and_softmax_agree_with_torch():
    rng = np.random.default_rng(1)
    logits, labels = rng.normal(size=(64, 2)) * 3, rng.integers(0, 2, 64)
    expected = torch.nn.functional.cross_entropy(torch.from_numpy(logits / 2.0), torch.from_numpy(labels)).item()
    assert log_loss(softmax(logits, 2.0), labels) == pytest.approx(expected, rel=1e-9)


# --- calibration -------------------------------------------------------------------------------


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(20_000, 2)) * 3
    # labels drawn from softmax(logits / T): the NLL-optimal temperature is T
    p_dog = softmax(logits, true_t)[:, 1]
    labels = (rng.uniform(size=len(p_dog)) < p_dog).astype(int)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.07)


def test_pet_threshold_rejects_at_most_the_allowed_share():
    scores = np.random.default_rng(3).uniform(size=1000)
    t = pet_threshold(scores, 0.003)
    rejected = (scores < t).sum()
    assert rejected <= 3  # at most 0.3 % of real pets are turned away
    assert rejected >= 2  # and the threshold is not needlessly low (one sample of slack, method="lower")
    assert pet_threshold(scores, 0.0) == scores.min()  # nothing rejected


def _lowest_confident_threshold(conf: np.ndarray, correct: np.ndarray, target: float) -> float:
    ok = [t for t in sorted(conf) if correct[conf >= t].mean() >= target]
    return float(min(ok)) if ok else 1.0


@pytest.mark.parametrize("target", [0.9, 0.97, 1.0])
def test_unsure_threshold_is_the_lowest_confidence_that_reaches_the_accuracy(target):
    rng = np.random.default_rng(4)
    conf = rng.permutation(np.linspace(0.5, 0.999, 400))  # distinct confidences
    correct = rng.uniform(size=400) < conf  # more confident answers are right more often
    labels = np.where(correct, 1, 0)
    probs = np.stack([1 - conf, conf], axis=1)  # always predicts "dog"
    expected = _lowest_confident_threshold(conf, correct, target)
    assert unsure_threshold(probs, labels, target) == pytest.approx(expected)
    kept = conf >= expected
    if expected < 1.0:
        assert correct[kept].mean() >= target


def test_unsure_threshold_when_no_answer_is_good_enough():
    probs = np.array([[0.4, 0.6], [0.3, 0.7]])
    assert unsure_threshold(probs, np.array([0, 0]), 0.99) == 1.0  # every answer is "not sure"


# --- schedule, optimizer, early stopping -----------------------------------------------------


def _lrs(steps: int, warmup: int) -> list[float]:
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, steps, warmup)
    out = []
    for _ in range(steps + 1):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_values_at_key_steps():
    lrs = _lrs(100, 10)
    assert lrs[0] == pytest.approx(0.1)  # first warm-up step: 1/10 of the peak
    assert lrs[4] == pytest.approx(0.5)
    assert lrs[9] == pytest.approx(1.0) and lrs[10] == pytest.approx(1.0)  # the peak
    assert lrs[55] == pytest.approx(0.01 + 0.99 * 0.5)  # halfway through the cosine
    assert lrs[100] == pytest.approx(0.01)  # ends at 1 % of the peak
    decay = lrs[10:]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    no_warmup = _lrs(10, 0)
    assert no_warmup[0] == pytest.approx(1.0)
    assert no_warmup[5] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 2)))


def test_build_optimizer_groups_decay_and_skips_frozen_parameters():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))  # materialise the lazy layer
    frozen = model[0]
    frozen.requires_grad_(False)
    opt = build_optimizer(model, lr=0.01, weight_decay=0.05)
    groups = {g["weight_decay"]: {id(p) for p in g["params"]} for g in opt.param_groups}
    assert set(groups) == {0.05, 0.0}
    assert groups[0.05] == {id(model[3].weight)}  # the only trainable matrix
    assert groups[0.0] == {id(model[1].weight), id(model[1].bias), id(model[3].bias)}  # norms and biases
    optimised = set().union(*groups.values())
    assert id(frozen.weight) not in optimised and id(frozen.bias) not in optimised
    assert all(g["lr"] == 0.01 for g in opt.param_groups) and isinstance(opt, torch.optim.AdamW)


def test_build_optimizer_with_only_biases_has_one_group():
    model = nn.Linear(4, 2)
    model.weight.requires_grad_(False)
    opt = build_optimizer(model, lr=0.1, weight_decay=0.5)
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.0


@pytest.mark.parametrize(
    ("watch", "val", "expected"),
    [
        ("val_loss", {"loss": 0.49, "accuracy": 0.1}, True),
        ("val_loss", {"loss": 0.5, "accuracy": 0.99}, False),  # equal is not better
        ("val_accuracy", {"loss": 9.0, "accuracy": 0.81}, True),
        ("val_accuracy", {"loss": 0.01, "accuracy": 0.8}, False),
    ],
)
def test_improved_watches_the_configured_metric(watch, val, expected):
    state = TrainState(best_val_loss=0.5, best_val_accuracy=0.8)
    assert improved(state, val, watch) is expected


def test_a_fresh_state_improves_on_any_first_epoch():
    assert improved(TrainState(), {"loss": 1e9, "accuracy": 0.0}, "val_loss")
    assert improved(TrainState(), {"loss": 1e9, "accuracy": 0.0}, "val_accuracy")


# --- device and bf16 selection ---------------------------------------------------------------

SAPPHIRE_RAPIDS = "processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw avx512_bf16 amx_bf16 amx_tile\n"
ICE_LAKE = "processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
ZEN4 = "flags : fpu avx2 avx512f avx512_bf16\n"


@pytest.mark.parametrize(
    ("cpuinfo", "fast"),
    [(SAPPHIRE_RAPIDS, True), (ZEN4, True), (ICE_LAKE, False), ("", False), ("flags : xavx512_bf16x", False)],
)
def test_cpu_has_fast_bf16_reads_the_flags(cpuinfo, fast):
    assert cpu_has_fast_bf16(cpuinfo) is fast


def test_use_bf16_follows_the_preference_then_the_cpu_flags():
    cpu = torch.device("cpu")
    assert use_bf16("auto", cpu, cpuinfo=SAPPHIRE_RAPIDS) is True
    assert use_bf16("auto", cpu, cpuinfo=ICE_LAKE) is False
    assert use_bf16("on", cpu, cpuinfo=ICE_LAKE) is True  # the user's choice wins
    assert use_bf16("off", cpu, cpuinfo=SAPPHIRE_RAPIDS) is False


def test_only_the_catsdogs_cli_restarts_itself_with_malloc_tunables():
    """`python -m pytest` (or any other -m) also runs a __main__.py: re-executing it as catsdogs would be wrong."""
    from pathlib import Path

    import catsdogs

    assert is_catsdogs_cli("/opt/venv/bin/catsdogs")
    assert is_catsdogs_cli(str(Path(catsdogs.__file__).with_name("__main__.py")))
    assert not is_catsdogs_cli(str(Path(pytest.__file__).with_name("__main__.py")))
    assert not is_catsdogs_cli("/usr/bin/python3") and not is_catsdogs_cli("")


def test_select_device_on_fixed_inputs():
    assert select_device("auto", cuda_available=False) == torch.device("cpu")
    assert select_device("auto", cuda_available=True) == torch.device("cuda")
    assert select_device("cpu", cuda_available=True) == torch.device("cpu")
    assert select_device("cuda", cuda_available=True) == torch.device("cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        select_device("cuda", cuda_available=False)


# --- loader sharding --------------------------------------------------------------------------


def _data(n: int) -> SplitData:
    pixels = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(3, axis=3)  # pixel value = index
    return SplitData(pixels, np.arange(n, dtype=np.int64))


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 3), (7, 2), (2, 4)])
def test_evaluation_shards_cover_every_item_exactly_once(n, world):
    seen = []
    for rank in range(world):
        loader = ArrayLoader(_data(n), 3, shuffle=False, rank=rank, world_size=world)
        seen += [int(v) for _, labels in loader for v in labels]
    assert sorted(seen) == list(range(n))


def test_training_shards_are_equal_disjoint_and_reshuffled_each_epoch():
    data, world = _data(11), 2
    loaders = [ArrayLoader(data, 2, shuffle=True, seed=7, rank=r, world_size=world) for r in range(world)]

    def epoch_items(epoch: int) -> list[list[int]]:
        for loader in loaders:
            loader.set_epoch(epoch)
        return [[int(v) for _, labels in loader for v in labels] for loader in loaders]

    first = epoch_items(1)
    assert [len(s) for s in first] == [5, 5] and len({len(loader) for loader in loaders}) == 1  # same step count
    assert not set(first[0]) & set(first[1])  # disjoint
    assert epoch_items(1) == first  # deterministic per epoch
    second = epoch_items(2)
    assert second != first  # re-shuffled
    pixels, labels = next(iter(loaders[0]))
    assert torch.equal(pixels[:, 0, 0, 0].long(), labels)  # pixels and labels stay paired


# --- checkpoint -------------------------------------------------------------------------------


def _checkpoint(model: nn.Module) -> Checkpoint:
    return Checkpoint(
        model_name="simple_cnn",
        dropout=0.3,
        model_state=model.state_dict(),
        preprocess={"image_size": 32, "mean": [0.5] * 3, "std": [0.25] * 3, "class_names": ["cat", "dog"]},
        params={"model": {"name": "simple_cnn"}},
        git_commit="abc123",
        data_hash="f" * 64,
        state=TrainState(
            epoch=3,
            best_epoch=2,
            best_val_accuracy=0.75,
            best_val_loss=0.4,
            stale=1,
            history=[{"epoch": 1.0, "val_loss": 0.5}],
            run_id="run1",
        ),
        optimizer_state={"state": {}, "param_groups": []},
        scheduler_state={"last_epoch": 3},
    )


def test_checkpoint_round_trip(tmp_path):
    from catsdogs.models.architectures import create_model

    torch.manual_seed(0)
    model = create_model("simple_cnn", dropout=0.3).eval()
    ckpt = _checkpoint(model)
    ckpt.save(tmp_path / "last.pt")
    loaded = Checkpoint.load(tmp_path / "last.pt")
    assert loaded.state == ckpt.state and loaded.params == ckpt.params
    assert (loaded.git_commit, loaded.data_hash, loaded.dropout) == ("abc123", "f" * 64, 0.3)
    assert loaded.optimizer_state == ckpt.optimizer_state and loaded.scheduler_state == {"last_epoch": 3}
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.build_model()(x), model(x))
    ckpt.save(tmp_path / "best.pt", with_optimizer=False)
    best = Checkpoint.load(tmp_path / "best.pt")
    assert best.optimizer_state is None and best.scheduler_state is None and best.state == ckpt.state
    assert not list(tmp_path.glob("*.tmp"))
    net, cfg, _ = load_model(tmp_path / "best.pt", image_size=64)
    assert cfg.image_size == 64 and cfg.mean == (0.5, 0.5, 0.5) and not net.training


def test_checkpoint_format_is_checked(tmp_path):
    with pytest.raises(FileNotFoundError, match="catsdogs train"):
        Checkpoint.load(tmp_path / "missing.pt")
    torch.save({"model_state": {}, "format": FORMAT_VERSION - 1}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=f"format {FORMAT_VERSION - 1}, expected {FORMAT_VERSION}"):
        Checkpoint.load(tmp_path / "old.pt")
    torch.save({"model_state": {}}, tmp_path / "untyped.pt")  # the pre-restructure dict
    with pytest.raises(ValueError, match="retrain"):
        Checkpoint.load(tmp_path / "untyped.pt")
