"""Base training against the EE framework on real data, for several seeds.

Reproduces the claim of Kawaguchi, Zhang and Deng, "Understanding Dynamics of
Nonlinear Representation Learning and Its Application" (Neural Computation
2022): the EE run keeps the base run's test accuracy while its training loss
goes to the global minimum. For each dataset and seed it trains the default
residual CNN with the base algorithm and with EE in practical mode, and
records the final training loss, the test accuracy and the wall time per
epoch of each. With `--certified` it also runs certified exploitation on a
training subset and records how far the squared loss fell after the
transition.

Progress goes to `--log` and results to `--out` (JSON, rewritten after every
run), so the script can run in the background:

    nohup python benchmarks/ee_vs_base.py --log ee.log --out ee.json &

Run it from the repository root with the repository on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from advisor.data import load_dataset
from advisor.models import build_model
from training import BaseAlgorithm, Callbacks, EEConfig, Schedule, TrainData, run_base, run_ee

logger = logging.getLogger("ee_vs_base")


class StepLog(Callbacks):
    """Logs the end of every epoch, and every 50th certified step, with its phase."""

    def on_step(self, phase: str, step: int, total_steps: int, loss: float) -> None:
        if phase.startswith("exploit (certified)") and step % 50 == 0:
            logger.info("  %s step %d of at most %d: mean loss %.3e", phase, step, total_steps, loss)

    def on_epoch_end(self, phase: str, epoch: int, model: torch.nn.Module) -> dict[str, float]:
        logger.info("  %s epoch %d done", phase, epoch)
        return {}


def train_data(dataset, limit: int | None = None) -> TrainData:
    x_train = torch.from_numpy(dataset.x_train[:limit])
    targets_train = torch.from_numpy(dataset.targets_train[:limit])
    return TrainData(x_train=x_train, targets_train=targets_train, x_test=torch.from_numpy(dataset.x_test),
                     targets_test=torch.from_numpy(dataset.targets_test), classification=True)


def default_model(dataset, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    loaded = build_model(None, input_shape=dataset.input_shape, n_outputs=dataset.n_outputs, model_args={})
    return loaded.module.float()


def compare(spec: str, seed: int, algorithm: BaseAlgorithm, config: EEConfig) -> dict:
    """Run the base algorithm and practical EE from the same initialization and seed."""
    dataset = load_dataset(spec, seed=seed)
    data = train_data(dataset)
    model = default_model(dataset, seed)
    base, snapshot = run_base(model, data, algorithm, config, seed=seed, callbacks=StepLog())
    ee = run_ee(model, data, algorithm, config, snapshot, base.epochs, seed=seed, head_name="head", callbacks=StepLog())
    exploit = [r for r in ee.epochs if r.epoch > config.explore_epochs]
    base_same_epochs = [r for r in base.epochs if r.epoch > config.explore_epochs]
    return {
        "dataset": spec, "seed": seed, "n_train": data.n_train, "n_test": int(data.x_test.shape[0]),
        "base": {"final_train_loss": base.epochs[-1].train_loss, "test_accuracy": base.epochs[-1].test_accuracy,
                 "train_accuracy": base.epochs[-1].train_accuracy,
                 "seconds_per_epoch": base.seconds_per_epoch,
                 "seconds_per_epoch_after_transition": sum(r.seconds for r in base_same_epochs) / len(base_same_epochs)},
        "ee": {"final_train_loss": ee.final_train_loss, "test_accuracy": ee.epochs[-1].test_accuracy,
               "train_accuracy": ee.epochs[-1].train_accuracy,
               "loss_at_transition": ee.loss_at_transition, "seconds_per_epoch": ee.seconds_per_epoch,
               "transition_seconds": ee.transition_seconds, "p": ee.width,
               "sigma_min": ee.certificate.sigma_min, "certificate_method": ee.certificate.method,
               "exploit_epochs": [{"epoch": r.epoch, "train_loss": r.train_loss, "test_accuracy": r.test_accuracy} for r in exploit]},
    }


def certified(spec: str, seed: int, limit: int | None, algorithm: BaseAlgorithm, config: EEConfig) -> dict:
    """Run certified EE on the first `limit` training examples."""
    dataset = load_dataset(spec, seed=seed)
    data = train_data(dataset, limit)
    model = default_model(dataset, seed)
    explored, snapshot = run_base(model, data, algorithm, config, seed=seed, callbacks=StepLog(),
                                  n_epochs=config.explore_epochs, phase="explore")
    start = time.perf_counter()
    ee = run_ee(model, data, algorithm, config, snapshot, explored.epochs, seed=seed, head_name="head", callbacks=StepLog())
    return {"dataset": spec, "seed": seed, "n_train": data.n_train, "loss_at_transition_sum": ee.steps[0].loss,
            "final_loss_sum": ee.steps[-1].loss, "ratio": ee.steps[-1].loss / ee.steps[0].loss, "steps": len(ee.steps) - 1,
            "bound_violations": ee.bound_violations, "sigma_min": ee.certificate.sigma_min, "sigma_max": ee.certificate.sigma_max,
            "test_accuracy_at_transition": explored.epochs[-1].test_accuracy,
            "test_accuracy": ee.epochs[-1].test_accuracy, "seconds": time.perf_counter() - start}


def summarize(results: list[dict]) -> str:
    """Markdown table of means over seeds per dataset."""
    lines = ["| dataset | run | final train loss (mean) | test accuracy % (mean) | s/epoch (mean) |",
             "| --- | --- | --- | --- | --- |"]
    for spec in dict.fromkeys(r["dataset"] for r in results):
        rows = [r for r in results if r["dataset"] == spec]
        for run in ("base", "ee"):
            loss = statistics.mean(r[run]["final_train_loss"] for r in rows)
            accuracy = 100 * statistics.mean(r[run]["test_accuracy"] for r in rows)
            seconds = statistics.mean(r[run]["seconds_per_epoch"] for r in rows)
            lines.append(f"| {spec} | {run} | {loss:.3g} | {accuracy:.2f} | {seconds:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="digits,mnist:../shared/datasets/mnist-t10k", help="comma-separated dataset specs")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each run")
    parser.add_argument("--explore-epochs", type=int, default=3, help="epochs before the EE transition")
    parser.add_argument("--schedule", default="constant", help="learning-rate schedule of the base algorithm")
    parser.add_argument("--certified", action="store_true", help="also run certified exploitation on --certified-limit examples")
    parser.add_argument("--certified-limit", type=int, default=2000, help="training examples of the certified runs")
    parser.add_argument("--certified-steps", type=int, default=1500, help="step budget of a certified run")
    parser.add_argument("--skip-compare", action="store_true", help="run only the certified part")
    parser.add_argument("--log", type=Path, default=Path("ee_vs_base.log"), help="progress log file")
    parser.add_argument("--out", type=Path, default=Path("ee_vs_base.json"), help="results file (JSON)")
    args = parser.parse_args()

    logging.basicConfig(filename=args.log, level=logging.INFO, format="%(asctime)s %(message)s")
    algorithm = BaseAlgorithm(schedule=Schedule(name=args.schedule))
    config = EEConfig(epochs=args.epochs, explore_epochs=args.explore_epochs)
    results: dict = {"command": sys.argv, "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                                                      "platform": platform.platform(), "torch": torch.__version__,
                                                      "load_average_start": os.getloadavg()},
                     "algorithm": str(algorithm), "config": str(config), "compare": [], "certified": []}

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2))

    specs = [s for s in args.datasets.split(",") if s]
    seeds = [int(s) for s in args.seeds.split(",")]
    if not args.skip_compare:
        for spec in specs:
            for seed in seeds:
                logger.info("compare %s seed %d", spec, seed)
                row = compare(spec, seed, algorithm, config)
                logger.info("  %s", json.dumps(row))
                results["compare"].append(row)
                save()
        logger.info("summary\n%s", summarize(results["compare"]))
    if args.certified:
        certified_config = EEConfig(epochs=args.epochs, explore_epochs=args.explore_epochs, mode="certified",
                                    certified_steps=args.certified_steps, certified_target=1e-7)
        for spec in specs:
            logger.info("certified %s seed %d", spec, seeds[0])
            row = certified(spec, seeds[0], args.certified_limit, algorithm, certified_config)
            logger.info("  %s", json.dumps(row))
            results["certified"].append(row)
            save()
    results["machine"]["load_average_end"] = os.getloadavg()
    save()
    logger.info("done")


if __name__ == "__main__":
    main()
