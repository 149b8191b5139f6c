"""The EE framework on a real narrow network and the digits data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advisor.data import load_dataset
from training import (Augmentation, BaseAlgorithm, Callbacks, Checkpointer, EEConfig, Schedule, TrainData, TrainingConfigError,
                      make_transition, run_base, run_ee, train_framework)
from training.features import DOMINANCE_MARGIN, build_feature_map, certify, dominant_bandwidth
from training.loop import RandomStreams, steps_per_epoch, train_epochs


@pytest.fixture(scope="module")
def digits_subset() -> TrainData:
    dataset = load_dataset("digits", seed=0)
    x, targets = torch.from_numpy(dataset.x_train[:400]), torch.from_numpy(dataset.targets_train[:400])
    return TrainData(x_train=x, targets_train=targets, x_test=torch.from_numpy(dataset.x_test),
                     targets_test=torch.from_numpy(dataset.targets_test), classification=True)


def narrow_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 10))


def test_certified_run_obeys_bound_every_step(digits_subset):
    model = narrow_model()
    algorithm = BaseAlgorithm()
    config = EEConfig(epochs=4, explore_epochs=3, mode="certified", certified_steps=150, certified_target=1e-6)
    base, snapshot = run_base(model, digits_subset, algorithm, config, seed=0, callbacks=Callbacks())
    ee = run_ee(model, digits_subset, algorithm, config, snapshot, base.epochs, seed=0, head_name="5", callbacks=Callbacks())

    assert ee.certificate.sigma_min > 0.01
    assert ee.bound_violations == 0
    for previous, current in zip(ee.steps, ee.steps[1:]):
        assert current.certified_factor is not None
        assert 0 < current.certified_factor < 1
        assert current.loss <= current.certified_factor * previous.loss * (1 + 1e-5)
    assert ee.steps[-1].loss <= 1e-4 * ee.steps[0].loss


def small_residual_cnn() -> nn.Module:
    from advisor.models.default import ResidualCNN

    torch.manual_seed(0)
    return ResidualCNN(width=8, n_blocks=1)


def test_certified_bound_on_residual_cnn(digits_subset):
    """BatchNorm, skips and convolutions: the product of certified factors bounds the loss at every step."""
    data = TrainData(x_train=digits_subset.x_train[:300], targets_train=digits_subset.targets_train[:300],
                     x_test=digits_subset.x_test, targets_test=digits_subset.targets_test, classification=True)
    config = EEConfig(epochs=3, explore_epochs=2, mode="certified", certified_steps=40, certified_target=1e-6)
    ee = train_framework(small_residual_cnn(), data, BaseAlgorithm(), config, framework="ee", seed=0, head_name="head",
                         callbacks=Callbacks())

    assert ee.bound_violations == 0
    bound = ee.steps[0].loss
    ratio = (ee.certificate.sigma_min / ee.certificate.sigma_max) ** 2
    for step in ee.steps[1:]:
        # With c = 1/2 and η_V = 1/σ_max², the factor is 1 − s_V·σ_min²/σ_max².
        assert step.certified_factor == pytest.approx(1 - step.step_scale * ratio)
        bound *= step.certified_factor
        assert step.loss <= bound * (1 + 1e-4)
    assert ee.steps[-1].loss <= 1e-6 * ee.steps[0].loss


def test_exploration_equals_base_epochs(digits_subset):
    model = narrow_model()
    config = EEConfig(epochs=3, explore_epochs=2)
    base, snapshot = run_base(model, digits_subset, BaseAlgorithm(), config, seed=0, callbacks=Callbacks())
    ee = run_ee(model, digits_subset, BaseAlgorithm(), config, snapshot, base.epochs, seed=0, head_name="5", callbacks=Callbacks())

    assert [r.train_loss for r in ee.epochs[:3]] == [r.train_loss for r in base.epochs[:3]]
    # V starts at zero, so the EE model equals the base model at the transition.
    assert ee.loss_at_transition == pytest.approx(base.epochs[2].train_loss, rel=1e-6)


@pytest.mark.parametrize("feature_lr", [None, 0.3])
def test_practical_feature_rate(digits_subset, feature_lr):
    # Practical mode is the base algorithm on f̃: V gets its rate unless --feature-lr sets one.
    algorithm = BaseAlgorithm(lr=0.02)
    config = EEConfig(epochs=3, explore_epochs=2, feature_lr=feature_lr)
    base, snapshot = run_base(narrow_model(), digits_subset, algorithm, config, seed=0, callbacks=Callbacks())
    ee = run_ee(narrow_model(), digits_subset, algorithm, config, snapshot, base.epochs, seed=0, head_name="5",
                callbacks=Callbacks())

    expected = algorithm.lr if feature_lr is None else feature_lr
    assert ee.feature_lr == expected
    assert bool(ee.model.V.detach().abs().sum() > 0)


def test_seed_reproduces_run(digits_subset):
    config = EEConfig(epochs=2, explore_epochs=1)
    first, _ = run_base(narrow_model(), digits_subset, BaseAlgorithm(), config, seed=3, callbacks=Callbacks())
    second, _ = run_base(narrow_model(), digits_subset, BaseAlgorithm(), config, seed=3, callbacks=Callbacks())
    assert [r.train_loss for r in first.epochs] == [r.train_loss for r in second.epochs]


@pytest.mark.parametrize(("make", "option"), [
    (lambda: BaseAlgorithm(optimizer="lion"), "--optimizer"),
    (lambda: BaseAlgorithm(lr=-0.1), "--lr"),
    (lambda: BaseAlgorithm(loss="hinge"), "--loss"),
    (lambda: EEConfig(epochs=3, explore_epochs=3), "--explore-epochs"),
    (lambda: EEConfig(mode="fast"), "--mode"),
    (lambda: BaseAlgorithm(lr=float("inf")), "--lr"),
    (lambda: BaseAlgorithm(momentum=1.0), "--momentum"),
    (lambda: BaseAlgorithm(batch_size=0), "--batch-size"),
    (lambda: Schedule(name="linear"), "--schedule"),
    (lambda: Schedule(name="one-cycle", warmup_epochs=1), "--warmup-epochs"),
    (lambda: Schedule(gamma=0), "--lr-gamma"),
    (lambda: Schedule(warmup_epochs=10).check_fits(10), "--warmup-epochs"),
    (lambda: Schedule(name="step", step_epochs=12).check_fits(10), "--lr-step-epochs"),
    (lambda: Augmentation(crop_padding=-1), "--crop-padding"),
    (lambda: EEConfig(certified_target=0), "--certified-target"),
    (lambda: EEConfig(feature_lr=-0.5), "--feature-lr"),
])
def test_invalid_configuration_names_option(make, option):
    with pytest.raises(TrainingConfigError) as caught:
        make()
    assert caught.value.option == option
    assert option in str(caught.value)


# ---------------------------------------------------------------------------
# Schedules and augmentation.

STEPS_PER_EPOCH = 10
TOTAL_STEPS = 100


@pytest.mark.parametrize(("schedule", "step", "expected"), [
    (Schedule(), 57, 1.0),
    (Schedule(name="step", step_epochs=3, gamma=0.5), 29, 1.0),
    (Schedule(name="step", step_epochs=3, gamma=0.5), 30, 0.5),
    (Schedule(name="step", step_epochs=3, gamma=0.5), 65, 0.25),
    (Schedule(name="cosine"), 0, 1.0),
    (Schedule(name="cosine"), 50, 0.5),
    (Schedule(name="cosine", final_factor=0.1), 100, 0.1),
    (Schedule(name="cosine", warmup_epochs=2), 0, 1 / 20),
    (Schedule(name="cosine", warmup_epochs=2), 19, 1.0),
    (Schedule(name="cosine", warmup_epochs=2), 20, 1.0),
    (Schedule(name="cosine", warmup_epochs=2), 60, 0.5),
    (Schedule(name="one-cycle", one_cycle_div=25), 0, 1 / 25),
    (Schedule(name="one-cycle", peak_fraction=0.3), 30, 1.0),
    (Schedule(name="one-cycle", peak_fraction=0.3), 65, 0.5),
])
def test_schedule_factor(schedule, step, expected):
    assert schedule.factor(step, STEPS_PER_EPOCH, TOTAL_STEPS) == pytest.approx(expected)


def test_crop_keeps_shape_and_pixels():
    x = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5) + 1
    augmented = Augmentation(crop_padding=2).apply(x, torch.Generator().manual_seed(0))

    assert augmented.shape == x.shape
    # Every kept pixel is a pixel of the same image and channel; the rest is zero padding.
    for image in range(2):
        for channel in range(3):
            values = set(augmented[image, channel].flatten().tolist()) - {0.0}
            assert values <= set(x[image, channel].flatten().tolist())


def test_crop_with_zero_offset_is_identity():
    x = torch.randn(4, 1, 6, 6)
    augmented = Augmentation(crop_padding=0, flip=False).apply(x, torch.Generator().manual_seed(0))
    assert torch.equal(augmented, x)


def test_flip_mirrors_some_images():
    x = torch.randn(64, 1, 4, 4)
    augmented = Augmentation(flip=True).apply(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(a, b.flip(-1)) for a, b in zip(augmented, x)]
    kept = [torch.equal(a, b) for a, b in zip(augmented, x)]

    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_augmentation_is_seeded():
    x = torch.randn(8, 1, 8, 8)
    augmentation = Augmentation(crop_padding=1, flip=True)
    first = augmentation.apply(x, torch.Generator().manual_seed(5))
    second = augmentation.apply(x, torch.Generator().manual_seed(5))
    assert torch.equal(first, second)


def test_augmentation_rejects_flat_inputs():
    with pytest.raises(TrainingConfigError) as caught:
        Augmentation(flip=True).check_inputs(torch.zeros(3, 64))
    assert caught.value.option == "--flip"


def test_phase_continues_global_schedule(digits_subset):
    """A phase that starts at epoch 2 of 3 uses the rates of the run's last third, not a fresh schedule."""
    algorithm = BaseAlgorithm(schedule=Schedule(name="cosine"))
    model = narrow_model()
    optimizer = algorithm.make_optimizer([{"params": list(model.parameters())}])
    train_epochs(model, optimizer, digits_subset, algorithm, first_epoch=2, n_epochs=1, total_epochs=3,
                 streams=RandomStreams.seeded(0), phase="exploit", callbacks=Callbacks())

    n_steps = steps_per_epoch(digits_subset.n_train, algorithm.batch_size)
    last = algorithm.schedule.factor(3 * n_steps - 1, n_steps, 3 * n_steps)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(algorithm.lr * last)
    assert last < 0.01


# ---------------------------------------------------------------------------
# Checkpoints and resume.


class Interrupt(Exception):
    pass


class InterruptAt(Callbacks):
    """Raises Interrupt at the end of epoch `epoch` of `phase`, or at certified step `step`."""

    def __init__(self, phase: str, epoch: int | None = None, step: int | None = None) -> None:
        self.phase, self.epoch, self.step = phase, epoch, step

    def on_epoch_end(self, phase, epoch, model):
        if phase == self.phase and epoch == self.epoch:
            raise Interrupt
        return {}

    def on_step(self, phase, step, total_steps, loss):
        if phase == self.phase and step == self.step:
            raise Interrupt


def final_figures(result) -> list[tuple]:
    return [(r.epoch, r.train_loss, r.train_accuracy, r.test_loss, r.test_accuracy) for r in result.epochs]


@pytest.mark.parametrize(("framework", "mode", "interrupt"), [
    ("base", "practical", InterruptAt("base", epoch=3)),
    ("ee", "practical", InterruptAt("explore", epoch=2)),
    ("ee", "practical", InterruptAt("exploit", epoch=3)),
    ("ee", "certified", InterruptAt("exploit (certified)", step=4)),
])
def test_resume_matches_uninterrupted(tmp_path, digits_subset, framework, mode, interrupt):
    algorithm = BaseAlgorithm(schedule=Schedule(name="cosine", warmup_epochs=1))
    config = EEConfig(epochs=4, explore_epochs=2, mode=mode, certified_steps=8)
    run = dict(framework=framework, seed=1, head_name="5")
    whole = train_framework(narrow_model(), digits_subset, algorithm, config, callbacks=Callbacks(), **run)

    checkpointer = Checkpointer(tmp_path, {"test": 1})
    with pytest.raises(Interrupt):
        train_framework(narrow_model(), digits_subset, algorithm, config, callbacks=interrupt, checkpointer=checkpointer, **run)
    resumed = train_framework(narrow_model(), digits_subset, algorithm, config, callbacks=Callbacks(),
                              checkpointer=checkpointer, resume=True, **run)

    assert final_figures(resumed) == final_figures(whole)
    if mode == "certified":
        assert [s.loss for s in resumed.steps] == [s.loss for s in whole.steps]


def test_resume_rejects_other_settings(tmp_path, digits_subset):
    config = EEConfig(epochs=2, explore_epochs=1)
    train_framework(narrow_model(), digits_subset, BaseAlgorithm(), config, framework="base", seed=0, head_name="5",
                    callbacks=Callbacks(), checkpointer=Checkpointer(tmp_path, {"lr": 0.05}))
    with pytest.raises(TrainingConfigError) as caught:
        train_framework(narrow_model(), digits_subset, BaseAlgorithm(), config, framework="base", seed=0, head_name="5",
                        callbacks=Callbacks(), checkpointer=Checkpointer(tmp_path, {"lr": 0.1}), resume=True)
    assert caught.value.option == "--resume"
    assert "lr" in str(caught.value)


# ---------------------------------------------------------------------------
# The certificate.


def test_certificate_exact_vs_lobpcg():
    generator = torch.Generator().manual_seed(0)
    z = torch.randn(150, 6, generator=generator, dtype=torch.float64)
    feature_map = build_feature_map(z, 300, generator)
    exact = certify(feature_map, z)
    estimate = certify(feature_map, z, gram_budget_bytes=8 * 150 * 150 - 1)

    assert exact.method == "exact"
    assert estimate.method == "lobpcg"
    assert estimate.sigma_min == pytest.approx(exact.sigma_min, rel=1e-5)
    assert estimate.sigma_max == pytest.approx(exact.sigma_max, rel=1e-5)
    # A Rayleigh quotient never falls below the smallest eigenvalue.
    assert estimate.sigma_min >= exact.sigma_min * (1 - 1e-9)


def test_certificate_vs_svd_of_features():
    generator = torch.Generator().manual_seed(1)
    z = torch.randn(80, 4, generator=generator, dtype=torch.float64)
    feature_map = build_feature_map(z, 200, generator)
    singular_values = torch.linalg.svdvals(feature_map(z))  # Φ as (N, p)
    certificate = certify(feature_map, z)

    assert certificate.sigma_min == pytest.approx(float(singular_values.min()), rel=1e-8)
    assert certificate.sigma_max == pytest.approx(float(singular_values.max()), rel=1e-8)


def dense_core_points(seed: int) -> torch.Tensor:
    """60 points in a tight core inside 240 spread ones (8 dimensions), standardized.

    The median nearest-neighbour distance reflects the spread points, so a
    bandwidth derived from it gives every pair of core points a kernel value
    near 1.
    """
    generator = torch.Generator().manual_seed(seed)
    core = 0.1 * torch.randn(60, 8, generator=generator, dtype=torch.float64)
    spread = torch.randn(240, 8, generator=generator, dtype=torch.float64)
    points = torch.cat([core, spread])
    return (points - points.mean(dim=0)) / points.std(dim=0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dominant_bandwidth_kernel_spectrum(seed):
    z = dense_core_points(seed)
    bandwidth = dominant_bandwidth(z, torch.Generator().manual_seed(seed))

    # The explicit float64 kernel matrix at that bandwidth and slightly above it.
    squared = torch.cdist(z, z).square()
    kernel = torch.exp(-squared / (2 * bandwidth**2))
    off_diagonal = kernel.sum(dim=1) - 1
    wider = torch.exp(-squared / (2 * (1.01 * bandwidth) ** 2)).sum(dim=1) - 1
    eigenvalues = torch.linalg.eigvalsh(kernel)

    # N ≤ BANDWIDTH_QUERIES, so every row was sampled and Gershgorin applies to all of them.
    assert float(off_diagonal.max()) <= DOMINANCE_MARGIN + 1e-9
    assert float(wider.max()) > DOMINANCE_MARGIN
    assert float(eigenvalues.min()) >= 1 - DOMINANCE_MARGIN - 1e-9
    assert float(eigenvalues.max()) <= 1 + DOMINANCE_MARGIN + 1e-9


def test_dominant_rule_dense_core():
    z = dense_core_points(3)
    ratios = {}
    for rule in ("median", "dominant"):
        feature_map = build_feature_map(z, 8 * 300, torch.Generator().manual_seed(0), bandwidth_rule=rule)
        certificate = certify(feature_map, z)
        ratios[rule] = certificate.sigma_min / certificate.sigma_max

    # Measured: about 0.002 with the median rule, 0.48 with the dominant one.
    assert ratios["median"] < 0.05
    assert ratios["dominant"] > 0.3


def test_unknown_bandwidth_rule():
    with pytest.raises(ValueError, match="bandwidth_rule"):
        build_feature_map(torch.zeros(4, 2), 8, torch.Generator(), bandwidth_rule="silverman")


def test_cached_forward_matches_full_forward(digits_subset):
    config = EEConfig(epochs=2, explore_epochs=1)
    base, snapshot = run_base(narrow_model(), digits_subset, BaseAlgorithm(), config, seed=0, callbacks=Callbacks())
    transition = make_transition(narrow_model(), snapshot, digits_subset, config, seed=0, head_name="5")
    model = transition.model.eval()
    with torch.no_grad():
        model.V.normal_()
        indices = torch.tensor([3, 0, 17, 399])
        cached = model.forward_indexed(digits_subset.x_train[indices], indices)
        full = model(digits_subset.x_train[indices])
    torch.testing.assert_close(cached, full)


@pytest.mark.parametrize("mode", ["practical", "certified"])
def test_test_split_changes_no_decision(digits_subset, mode):
    """Replacing the test split by noise changes only the test figures: no step, stop or transition reads it."""
    generator = torch.Generator().manual_seed(0)
    noisy = TrainData(x_train=digits_subset.x_train, targets_train=digits_subset.targets_train,
                      x_test=torch.randn(50, *digits_subset.x_test.shape[1:], generator=generator),
                      targets_test=torch.rand(50, 10, generator=generator), classification=True)
    config = EEConfig(epochs=3, explore_epochs=1, mode=mode, certified_steps=6)
    run = dict(framework="ee", seed=2, head_name="5", callbacks=Callbacks())
    clean = train_framework(narrow_model(), digits_subset, BaseAlgorithm(), config, **run)
    altered = train_framework(narrow_model(), noisy, BaseAlgorithm(), config, **run)

    assert [r.train_loss for r in altered.epochs] == [r.train_loss for r in clean.epochs]
    assert [s.loss for s in altered.steps] == [s.loss for s in clean.steps]
    assert altered.certificate.sigma_min == clean.certificate.sigma_min
    assert [r.test_loss for r in altered.epochs] != [r.test_loss for r in clean.epochs]
