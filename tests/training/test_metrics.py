import numpy as np
import pytest

from bpclip_core.training.evaluation import fit_logistic, quality_metrics, summarise


def test_perfect_and_reversed_rankings():
    predictions = np.linspace(-5, 5, 20)
    truth = 1 / (1 + np.exp(-predictions))
    perfect = quality_metrics(predictions, truth)
    assert perfect["srcc"] == pytest.approx(1) and perfect["krcc"] == pytest.approx(1)
    assert perfect["plcc_raw"] < 0.99 < perfect["plcc"]  # the logistic fit straightens a logistic curve
    reversed_ = quality_metrics(-truth, truth)
    assert reversed_["srcc"] == pytest.approx(-1) and reversed_["plcc"] < 0


def test_rmse_is_in_mos_units_after_the_fit():
    rng = np.random.default_rng(0)
    truth = np.linspace(0, 1, 50)
    mos = 1 + 4 * truth
    metrics = quality_metrics(truth + rng.normal(0, 0.05, 50), truth, mos)
    assert 0.05 < metrics["rmse"] < 0.5
    assert metrics["count"] == 50


def test_constant_predictions_give_zero_correlation_not_nan():
    metrics = quality_metrics(np.ones(10), np.linspace(0, 1, 10))
    assert metrics["srcc"] == 0 and metrics["plcc"] == 0


def test_too_few_or_mismatched_inputs_are_errors():
    with pytest.raises(ValueError):
        quality_metrics([1, 2], [1, 2])
    with pytest.raises(ValueError):
        quality_metrics([1, 2, 3], [1, 2])


def test_logistic_fit_recovers_a_logistic():
    x = np.linspace(-3, 3, 40)
    y = 1 + 4 / (1 + np.exp(-x / 0.7))
    assert np.allclose(fit_logistic(x, y), y, atol=1e-3)


def test_summary_is_mean_and_std_over_splits():
    runs = [{"srcc": 0.8, "plcc": 0.9, "count": 5}, {"srcc": 0.6, "plcc": 0.7, "count": 5}]
    summary = summarise(runs)
    assert summary["srcc"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1)}
    assert "count" not in summary
