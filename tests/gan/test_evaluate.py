"""dreamsuite.gan.evaluate, .distances and .features: the distances against reference
implementations, their behaviour on identical and shifted sets, the bootstrap, and the two entry
points on tiny inputs with the real embedded networks."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from dreamsuite.errors import InvalidArgument, UnknownName
from dreamsuite.gan.distances import (
    FrechetDistance,
    KernelDistance,
    SlicedWasserstein,
    estimate,
    frechet_distance,
    kid,
    memorisation_rate,
    ones,
    precision_recall,
    resample_counts,
    run,
)
from dreamsuite.gan.evaluate import (
    JOB_METRICS,
    PAIRS,
    evaluate_sets,
    job_evaluation,
    sliced_wasserstein,
)
from dreamsuite.gan.features import VIEWS, extract, feature_module, pyramid_patches
from dreamsuite.images import sample_image

# --- reference implementations (numpy / scipy) ----------------------------------------------


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with KID's kernel k(a, b) = (a.b / d + 1)^3, sets of any sizes."""
    d, m, n = x.shape[1], len(x), len(y)

    def k(a, b):
        return (a @ b.T / d + 1) ** 3

    kxx, kyy = k(x, x), k(y, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                 + (kyy.sum() - np.trace(kyy)) / (n * (n - 1)) - 2 * k(x, y).mean())


def _frechet(x: np.ndarray, y: np.ndarray) -> float:
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(cx @ cy).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx + cy - 2 * root))


class _Given(nn.Module):
    """A torchmetrics feature module for features computed already."""

    def __init__(self, dims: int):
        super().__init__()
        self.num_features = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _features(n: int, d: int = 16, *, seed: int, shift: float = 0.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=torch.float64) + shift


@pytest.fixture(scope="module")
def crops() -> torch.Tensor:
    """24 crops of 32 px from the four sample photos, ``[24, 3, 32, 32]``."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        image = sample_image(name, size=96)
        for _ in range(6):
            top = int(torch.randint(image.shape[1] - 32, (1,), generator=gen))
            left = int(torch.randint(image.shape[2] - 32, (1,), generator=gen))
            out.append(image[:, top:top + 32, left:left + 32])
    return torch.stack(out)


def _brighter(x: torch.Tensor, amount: float = 0.3) -> torch.Tensor:
    return (x + amount).clamp(0, 1)


# --- KID and Fréchet distance -----------------------------------------------------------------


@pytest.mark.parametrize(("m", "n"), [(40, 40), (30, 45)])
def test_kid_is_the_unbiased_mmd_of_the_reference(m, n):
    x, y = _features(m, seed=1), _features(n, seed=2, shift=0.2)
    assert kid(x, y) == pytest.approx(_mmd2_unbiased(x.numpy(), y.numpy()), abs=1e-6)


def test_kid_and_frechet_equal_torchmetrics_on_equal_sets():
    x, y = _features(40, seed=3), _features(40, seed=4, shift=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KID warns that it keeps every feature
        metric = KernelInceptionDistance(feature=_Given(16), subsets=1, subset_size=40)
    metric.update(x, real=True)
    metric.update(y, real=False)
    assert kid(x, y) == pytest.approx(float(metric.compute()[0]), abs=1e-6)
    fid = FrechetInceptionDistance(feature=_Given(16))
    fid.update(x, real=True)
    fid.update(y, real=False)
    assert frechet_distance(x, y) == pytest.approx(float(fid.compute()), rel=1e-6)


@pytest.mark.parametrize(("m", "n"), [(50, 50), (60, 40)])
def test_frechet_distance_matches_scipy_sqrtm(m, n):
    x, y = _features(m, seed=5), _features(n, seed=6, shift=0.5) * 1.3
    assert frechet_distance(x, y) == pytest.approx(_frechet(x.numpy(), y.numpy()), rel=1e-6)


def test_counts_weigh_like_repeated_images():
    x, y = _features(30, seed=7), _features(25, seed=8, shift=0.2)
    [wx] = resample_counts([30], 1, seed=3)
    rows = torch.repeat_interleave(torch.arange(30), wx[1].long())
    weighted = FrechetDistance(x, y)(wx[1:], ones(25))
    assert float(weighted[0]) == pytest.approx(frechet_distance(x[rows], y), rel=1e-9)
    # KID's U-statistic treats copies of one image as one point: no self-pairs come back.
    assert torch.allclose(KernelDistance(x, y)(ones(30), ones(25)), torch.tensor([kid(x, y)],
                          dtype=torch.float64))


def test_kid_and_fid_are_near_zero_on_a_set_and_grow_when_it_is_brightened(crops):
    views, images = ["lite0_mid", "lite0_head"], crops[::2]
    same, bright = extract(images, views), extract(_brighter(images), views)
    mid, head = same["lite0_mid"], same["lite0_head"]
    # 12 images in 80 dimensions: rank-deficient covariances leave a little rounding.
    assert frechet_distance(mid, mid) == pytest.approx(0, abs=1e-3)
    assert frechet_distance(mid, bright["lite0_mid"]) > 1.0
    # Against itself the unbiased estimate is below 0 by 2 / (n - 1) times (mean k(x, x) less
    # mean k(x, y)): its cross term keeps the pairs of an image with itself. That is the 1 / n
    # term that vanishes with more images (the next test); a brighter copy scores higher.
    gram = (head @ head.T / head.shape[1] + 1) ** 3
    itself = kid(head, head)
    assert itself == pytest.approx(-2 / (len(head) - 1) * (gram.diagonal().mean() - gram.mean()))
    assert kid(head, bright["lite0_head"]) > itself


def test_kid_averages_zero_between_samples_of_one_distribution_and_not_after_a_shift():
    draws = _features(2 * 100 * 20, 32, seed=20).view(200, 20, 32)
    same = np.array([kid(draws[2 * i], draws[2 * i + 1]) for i in range(100)])
    shifted = np.array([kid(draws[2 * i], draws[2 * i + 1] + 0.3) for i in range(20)])
    error = same.std() / np.sqrt(len(same))
    assert abs(same.mean()) < 3 * error
    assert shifted.mean() > 10 * error


def test_feature_module_is_a_torchmetrics_feature(crops):
    module = feature_module("lite0_head", device="cpu")
    assert module.num_features == VIEWS["lite0_head"].dims == 1280
    x, y = crops[:4], _brighter(crops[:4])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        metric = KernelInceptionDistance(feature=module, subsets=1, subset_size=4, normalize=True)
    metric.update(x, real=True)
    metric.update(y, real=False)
    real, fake = metric.real_features[0].double(), metric.fake_features[0].double()
    assert float(metric.compute()[0]) == pytest.approx(kid(real, fake), rel=1e-4)  # float32
    torch.testing.assert_close(real, extract(x, ["lite0_head"])["lite0_head"])
    as_bytes = module((x * 255).round().byte()).double()  # what normalize=False would give
    assert torch.cosine_similarity(as_bytes, real).min() > 0.99


def test_mid_views_stay_well_below_a_few_hundred_images():
    assert VIEWS["lite0_mid"].dims == 80 and VIEWS["lite2_mid"].dims == 88
    assert VIEWS["lite2_head"].backbone == "efficientnet_lite2" and VIEWS["lite2_head"].side == 260
    with pytest.raises(UnknownName, match="lite0_mid"):
        extract(torch.zeros(2, 3, 32, 32), ["lite9_head"])


# --- precision / recall and memorisation -------------------------------------------------------


def test_precision_and_recall_are_one_for_identical_sets_and_lower_for_disjoint_ones():
    real = _features(60, seed=9)
    assert precision_recall(real, real) == (1.0, 1.0)
    far = _features(60, seed=10, shift=4.0)
    precision, recall = precision_recall(far, real)
    assert precision < 0.2 and recall < 0.2
    half = torch.cat([_features(30, seed=11), _features(30, seed=12, shift=6.0)])
    precision, recall = precision_recall(half, real)
    assert 0.3 < precision < 0.7 and recall > 0.7


def test_memorisation_counts_copies_and_spares_new_samples():
    train, holdout = _features(80, seed=13), _features(40, seed=14)
    assert memorisation_rate(train[:25] + 1e-9, train, holdout) == 1.0
    fresh = _features(400, seed=15)
    assert memorisation_rate(fresh, train, holdout) < 0.1


# --- the network-free distance ------------------------------------------------------------


def test_sliced_wasserstein_is_zero_for_identical_sets_and_grows_with_a_shift(crops):
    assert sliced_wasserstein(crops, crops.clone()) == pytest.approx(0, abs=1e-6)
    small, large = (sliced_wasserstein(crops, _brighter(crops, a)) for a in (0.1, 0.3))
    assert 0.01 < small < large
    other = sliced_wasserstein(crops[:12], crops[12:])
    assert other > 0


def test_pyramid_patches_shapes_and_seed():
    images = torch.rand(5, 3, 64, 64)
    levels = pyramid_patches(images, per_level=16, seed=3)
    assert [tuple(p.shape) for p in levels] == [(5, 16, 147)] * 3
    assert all(torch.equal(a, b) for a, b in zip(levels, pyramid_patches(images, per_level=16, seed=3),
                                                   strict=True))
    assert len(pyramid_patches(torch.rand(2, 3, 16, 16))) == 1


# --- the bootstrap ----------------------------------------------------------------------------


@pytest.mark.parametrize("statistic", ["kid", "fid", "swd"])
def test_bootstrap_interval_holds_the_estimate_and_repeats_under_a_seed(statistic, crops):
    x, y = _features(40, seed=16), _features(50, seed=17, shift=0.3)
    if statistic == "swd":
        px = pyramid_patches(crops[:12], seed=0)
        py = pyramid_patches(_brighter(crops[12:], 0.1), seed=0)
        stat, sizes = SlicedWasserstein(px, py), [12, 12]
    else:
        stat, sizes = (KernelDistance if statistic == "kid" else FrechetDistance)(x, y), [40, 50]
    first = estimate(run(stat, *resample_counts(sizes, 100, seed=4)))
    again = estimate(run(stat, *resample_counts(sizes, 100, seed=4)))
    other = estimate(run(stat, *resample_counts(sizes, 100, seed=5)))
    assert first == again and first != other
    assert first.low <= first.value <= first.high
    assert first.value == other.value
    assert first.high - first.low > 0


def test_estimate_without_replicates_has_no_interval():
    value = estimate(torch.tensor([0.5]))
    assert value.value == 0.5 and math.isnan(value.low) and math.isnan(value.high)


# --- the entry points, with the real embedded networks ------------------------------------------


def test_job_evaluation_returns_every_metric_finite(crops):
    metrics = job_evaluation(crops[:4], crops[4:10], crops[10:14], device="cpu", seed=1)
    assert set(metrics) == set(JOB_METRICS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()), metrics
    assert 0 <= metrics["precision"] <= 1 and 0 <= metrics["memorisation"] <= 1


def test_evaluate_sets_reports_every_pair_and_the_claims(crops):
    # The same G, Dtr and Dho as the test above: their features are kept between the calls.
    sets = {"S": _brighter(crops[:4], 0.4), "Dtr": crops[4:10], "Dho": crops[10:14],
            "G": crops[:4]}
    report = evaluate_sets(sets, device="cpu", bootstrap=30, seed=2)
    assert list(report.metrics) == [f"{x},{y}" for x, y in PAIRS]
    for metrics in report.metrics.values():
        assert {"kid_lite0", "kid_lite2", "fid_lite0_mid", "swd", "precision", "recall"} <= set(metrics)
    assert set(report.claims) == {f"{c}/{m}" for c in ("nearer_dreams_than_photos",
                                                       "learned_dream_not_photos")
                                  for m in ("kid_lite2", "swd")}
    claim = report.claims["nearer_dreams_than_photos/swd"]
    assert claim.difference.value == pytest.approx(
        report.metrics["S,Dho"]["swd"].value - report.metrics["G,Dho"]["swd"].value)
    assert claim.holds == (claim.difference.low > 0)
    assert set(report.floor) == {"kid_lite2", "swd"}
    json.dumps(report.to_dict(), allow_nan=False)
    table = report.table()
    for x, y in PAIRS:
        assert f"({x},{y})" in table
    assert "learned the dream, not the photos" in table and "memorisation" in table

    bare = evaluate_sets(sets, device="cpu", bootstrap=0, seed=2)  # the features are kept
    assert bare.metrics["G,Dho"]["kid_lite2"].value == report.metrics["G,Dho"]["kid_lite2"].value
    assert bare.to_dict()["claims"]["learned_dream_not_photos/swd"]["low"] is None
    json.dumps(bare.to_dict(), allow_nan=False)


def test_evaluate_sets_names_a_missing_or_broken_set(crops):
    with pytest.raises(InvalidArgument, match="Dho"):
        evaluate_sets({"S": crops, "Dtr": crops, "G": crops}, bootstrap=0)
    with pytest.raises(InvalidArgument, match="set G"):
        evaluate_sets({"S": crops, "Dtr": crops, "Dho": crops, "G": crops[:1]}, bootstrap=0)
