"""The EE framework on a real narrow network and the digits data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advisor.data import load_dataset
from training import BaseAlgorithm, Callbacks, EEConfig, TrainData, TrainingConfigError, run_base, run_ee


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


def test_exploration_equals_base_epochs(digits_subset):
    model = narrow_model()
    config = EEConfig(epochs=3, explore_epochs=2)
    base, snapshot = run_base(model, digits_subset, BaseAlgorithm(), config, seed=0, callbacks=Callbacks())
    ee = run_ee(model, digits_subset, BaseAlgorithm(), config, snapshot, base.epochs, seed=0, head_name="5", callbacks=Callbacks())

    assert [r.train_loss for r in ee.epochs[:3]] == [r.train_loss for r in base.epochs[:3]]
    # V starts at zero, so the EE model equals the base model at the transition.
    assert ee.loss_at_transition == pytest.approx(base.epochs[2].train_loss, rel=1e-6)


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
])
def test_invalid_configuration_names_option(make, option):
    with pytest.raises(TrainingConfigError) as caught:
        make()
    assert caught.value.option == option
    assert option in str(caught.value)
