"""Judging a GAN trained on dreams: distances between image sets, with bootstrap intervals.

The sets (each ``[N, 3, H, W]`` float in ``[0, 1]``): ``S`` the source photos, ``Dtr`` the
training dreams, ``Dho`` the holdout dreams, ``G`` the generator's samples.

Metrics of a pair (X, Y), Y the reference:

- ``kid_<view>``: Kernel Inception Distance, the unbiased MMD² with the cubic kernel
  ``k(x, y) = (x.y / D + 1) ** 3`` (torchmetrics' ``poly_kernel``) on the features of a
  :mod:`~dreamsuite.gan.features` view. For sets of equal size it is torchmetrics'
  ``KernelInceptionDistance`` with ``subset_size = N``; for unequal sizes it is the full
  U-statistic rather than an average over random equal subsets. Unbiased at small N, so it is
  the primary distance. ``kid_lite0`` / ``kid_lite2`` are on the pooled heads.
- ``fid_<view>_mid``: the Fréchet distance of Gaussians fitted to a mid-level view (D = 80 / 88,
  below N, so the covariances are full rank), torchmetrics' formula.
- ``swd``: sliced Wasserstein distance between 7x7 patches of a 3-level Laplacian pyramid: no
  network at all. Patches are scaled by the statistics of the real dreams (Dtr and Dho), so the
  value is comparable across pairs and across a training run.
- ``precision`` / ``recall``: k-nearest-neighbour manifolds (Kynkäänniemi et al. 2019, k = 3)
  in the ``lite2_head`` space: the share of X inside Y's manifold, and of Y inside X's.
- ``memorisation`` (G against Dtr and Dho): see :class:`~dreamsuite.gan.distances.Memorisation`.

Bootstrap: every set is resampled with replacement, as a count per image
(:mod:`~dreamsuite.gan.distances`), so every metric, and every difference of two metrics, is
computed on the very same resamples. Intervals are bias-corrected percentile intervals
(:func:`~dreamsuite.gan.distances.estimate`).

>>> report = evaluate_sets({"S": s, "Dtr": dtr, "Dho": dho, "G": g}, bootstrap=200, seed=0)
>>> print(report.table()); report.claims["learned_dream_not_photos/kid_lite2"].holds
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dreamsuite.errors import InvalidArgument
from dreamsuite.gan.distances import (
    Estimate,
    FrechetDistance,
    KernelDistance,
    ManifoldCoverage,
    Memorisation,
    SlicedWasserstein,
    estimate,
    ones,
    resample_counts,
    run,
)
from dreamsuite.gan.features import extract, patches_of

__all__ = [
    "SETS",
    "PAIRS",
    "JOB_METRICS",
    "Claim",
    "Report",
    "job_evaluation",
    "evaluate_sets",
    "sliced_wasserstein",
]

SETS = ("S", "Dtr", "Dho", "G")
PAIRS = (("S", "Dho"), ("G", "Dho"), ("G", "S"), ("Dtr", "Dho"), ("G", "Dtr"))
#: What :func:`job_evaluation` returns.
JOB_METRICS = ("kid_lite0", "kid_lite2", "fid_lite0_mid", "swd", "precision", "recall",
               "memorisation")
_KID_VIEWS = {"kid_lite0_mid": "lite0_mid", "kid_lite0": "lite0_head",
              "kid_lite2_mid": "lite2_mid", "kid_lite2": "lite2_head"}
_FID_VIEWS = {"fid_lite0_mid": "lite0_mid", "fid_lite2_mid": "lite2_mid"}
_MANIFOLD_VIEW = "lite2_head"
# Both entry points embed all four views: a mid view costs nothing on the way to its head, and
# the features of a set are then shared between them.
_VIEWS = ("lite0_mid", "lite0_head", "lite2_mid", "lite2_head")
_REFERENCE = ("Dtr", "Dho")  # the real dreams: they scale the patches of every set
# (name, statement, (larger pair), (smaller pair)): the claim holds when larger - smaller > 0.
_CLAIMS = (
    ("nearer_dreams_than_photos", "samples nearer the dreams than the photos are",
     ("S", "Dho"), ("G", "Dho")),
    ("learned_dream_not_photos", "learned the dream, not the photos", ("G", "S"), ("G", "Dho")),
)
_CLAIM_METRICS = ("kid_lite2", "swd")


@dataclass(frozen=True)
class Claim:
    """``metric(larger) > metric(smaller)``, judged by the bootstrap interval of the difference
    ``metric(larger) - metric(smaller)``: it holds when the whole interval is above 0."""

    statement: str
    metric: str
    larger: str
    smaller: str
    difference: Estimate

    @property
    def holds(self) -> bool:
        return self.difference.low > 0

    def to_dict(self) -> dict:
        return {"statement": self.statement, "metric": self.metric, "larger": self.larger,
                "smaller": self.smaller, "difference": self.difference.value,
                "low": _finite(self.difference.low), "high": _finite(self.difference.high),
                "holds": self.holds}


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _pair(x: str, y: str) -> str:
    return f"{x},{y}"


@dataclass(frozen=True)
class Report:
    """Every metric of every pair of :data:`PAIRS` with its interval, the claims, the floor
    (what two samples of the real dreams score: ``Dtr`` against ``Dho``) and G's memorisation."""

    sizes: dict[str, int]
    bootstrap: int
    seed: int
    confidence: float
    metrics: dict[str, dict[str, Estimate]]  # "G,Dho" -> {"kid_lite2": Estimate, ...}
    claims: dict[str, Claim]  # "learned_dream_not_photos/kid_lite2" -> Claim
    floor: dict[str, Estimate]  # "kid_lite2" / "swd" of (Dtr, Dho)
    memorisation: Estimate

    def to_dict(self) -> dict:
        """Plain JSON-ready data (an interval without resamples is None)."""
        def est(e: Estimate) -> dict:
            return {"value": e.value, "low": _finite(e.low), "high": _finite(e.high)}
        return {
            "sizes": dict(self.sizes), "bootstrap": self.bootstrap, "seed": self.seed,
            "confidence": self.confidence,
            "metrics": {p: {m: est(e) for m, e in ms.items()} for p, ms in self.metrics.items()},
            "claims": {name: claim.to_dict() for name, claim in self.claims.items()},
            "floor": {m: est(e) for m, e in self.floor.items()},
            "memorisation": est(self.memorisation),
        }

    def table(self) -> str:
        """A text table: one row per metric, one column per pair, then the claims."""
        pairs = list(self.metrics)
        names = list(dict.fromkeys(m for p in pairs for m in self.metrics[p]))
        rows = [["metric", *(f"({p})" for p in pairs)]]
        rows += [[m, *(str(self.metrics[p].get(m, "-")) for p in pairs)] for m in names]
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                 for row in rows]
        sizes = " ".join(f"{k}={v}" for k, v in self.sizes.items())
        level = f"{self.confidence:.0%}"
        lines[:0] = [f"sets: {sizes}; {self.bootstrap} bootstrap resamples, seed {self.seed}, "
                     f"{level} intervals", ""]
        lines += ["", f"memorisation of G (against Dtr, calibrated by Dho): {self.memorisation}"]
        lines += [f"floor {m}(Dtr,Dho): {e}" for m, e in self.floor.items()]
        lines += ["", f"claims (difference, {level} interval):"]
        lines += [f"  {'holds' if c.holds else 'open '}  {c.statement} [{c.metric}]: "
                  f"({c.larger}) - ({c.smaller}) = {c.difference}" for c in self.claims.values()]
        return "\n".join(lines)


def _bounds(metric: str) -> tuple[float, float]:
    """The range of a metric's values (KID, unbiased, may be below 0)."""
    if metric in ("precision", "recall"):
        return 0.0, 1.0
    return (-float("inf") if metric.startswith("kid") else 0.0), float("inf")


def _check_sets(sets: dict[str, torch.Tensor], names: tuple[str, ...]) -> None:
    if set(sets) != set(names):
        raise InvalidArgument(f"expected the image sets {', '.join(names)}, got {', '.join(sets)}")
    for name, x in sets.items():
        if not (isinstance(x, torch.Tensor) and x.dim() == 4 and x.shape[1] == 3
                and x.is_floating_point()):
            raise InvalidArgument(f"set {name} must be a float [N, 3, H, W] tensor in [0, 1]")
        if len(x) < 2 or not torch.isfinite(x).all():
            raise InvalidArgument(f"set {name} needs at least 2 images of finite values")


def _scaled_patches(
    images: dict[str, torch.Tensor], reference: tuple[str, ...], seed: int
) -> dict[str, list[torch.Tensor]]:
    """Pyramid patches of every set, at the smallest side among them, each level and colour
    scaled by the mean and spread of the ``reference`` sets' patches."""
    side = min(min(x.shape[-2:]) for x in images.values())
    patches = {}
    for name, x in images.items():
        if min(x.shape[-2:]) != side:
            x = F.interpolate(x.float(), size=(side, side), mode="bilinear", antialias=True,
                              align_corners=False)
        patches[name] = patches_of(x, seed=seed)
    out = {name: [] for name in images}
    for level in range(len(patches[reference[0]])):
        ref = torch.cat([patches[r][level] for r in reference]).unflatten(-1, (3, -1))
        mean, std = ref.mean(dim=(0, 1, 3)), ref.std(dim=(0, 1, 3)).clamp_min(1e-6)
        for name in images:
            p = patches[name][level].unflatten(-1, (3, -1))
            out[name].append(((p - mean[:, None]) / std[:, None]).flatten(-2))
    return out


def _pair_values(
    feats: dict[str, dict[str, torch.Tensor]], patches: dict[str, list[torch.Tensor]],
    weights: dict[str, torch.Tensor], x: str, y: str, seed: int,
) -> dict[str, torch.Tensor]:
    """Every metric of the pair (x, y) whose view was extracted: ``[B]`` values per metric."""
    fx, fy, wx, wy = feats[x], feats[y], weights[x], weights[y]
    out = {m: run(KernelDistance(fx[v], fy[v]), wx, wy) for m, v in _KID_VIEWS.items() if v in fx}
    out |= {m: run(FrechetDistance(fx[v], fy[v]), wx, wy) for m, v in _FID_VIEWS.items() if v in fx}
    swd = SlicedWasserstein(patches[x], patches[y], seed=seed)
    out["swd"] = swd(wx[:1], wy[:1])  # row 0: the data as they are, exactly
    if len(wx) > 1:  # the resamples: the fast grouped form
        out["swd"] = torch.cat([out["swd"], run(swd.grouped(), wx[1:], wy[1:])])
    view = _MANIFOLD_VIEW
    out["precision"] = run(ManifoldCoverage(fx[view], fy[view]), wx, wy)
    out["recall"] = run(ManifoldCoverage(fy[view], fx[view]), wy, wx)
    return out


def _memorisation(
    feats: dict[str, dict[str, torch.Tensor]], weights: dict[str, torch.Tensor]
) -> torch.Tensor:
    f = {name: feats[name][_MANIFOLD_VIEW] for name in ("G", "Dtr", "Dho")}
    return run(Memorisation(f["G"], f["Dtr"], f["Dho"]), weights["G"], weights["Dtr"], weights["Dho"])


def job_evaluation(
    samples: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor, *,
    device: str | torch.device | None = "cpu", seed: int = 0,
) -> dict[str, float]:
    """The metrics of :data:`JOB_METRICS` for a training job, no intervals: the samples against
    the holdout dreams (never seen in training), and memorisation against the training dreams.

    All sets ``[N, 3, H, W]`` in ``[0, 1]``, N >= 2. The feature networks are loaded once per
    device and the features of ``train`` and ``holdout`` are kept between calls.
    """
    sets = {"G": samples, "Dtr": train, "Dho": holdout}
    _check_sets(sets, ("G", "Dtr", "Dho"))
    feats = {name: extract(x, _VIEWS, device=device) for name, x in sets.items()}
    patches = _scaled_patches(sets, _REFERENCE, seed)
    weights = {name: ones(len(x)) for name, x in sets.items()}
    values = _pair_values(feats, patches, weights, "G", "Dho", seed)
    values["memorisation"] = _memorisation(feats, weights)
    return {name: float(values[name][0]) for name in JOB_METRICS}


def evaluate_sets(
    sets: dict[str, torch.Tensor], *, device: str | torch.device | None = "cpu",
    bootstrap: int = 200, seed: int = 0, confidence: float = 0.95,
) -> Report:
    """Every metric for every pair of :data:`PAIRS` of the sets ``S``, ``Dtr``, ``Dho``, ``G``
    (each ``[N, 3, H, W]`` in ``[0, 1]``, N >= 2), with ``bootstrap`` resamples (seeded), and
    the claims (see :class:`Claim`) on Lite2 KID and on the network-free distance."""
    _check_sets(sets, SETS)
    if bootstrap < 0 or not 0 < confidence < 1:
        raise InvalidArgument("bootstrap must be >= 0 and confidence between 0 and 1")
    feats = {name: extract(sets[name], _VIEWS, device=device) for name in SETS}
    patches = _scaled_patches(sets, _REFERENCE, seed)
    counts = resample_counts([len(sets[name]) for name in SETS], bootstrap, seed=seed)
    weights = dict(zip(SETS, counts, strict=True))
    values = {_pair(*p): _pair_values(feats, patches, weights, *p, seed) for p in PAIRS}
    claims = {}
    for name, statement, larger, smaller in _CLAIMS:
        for metric in _CLAIM_METRICS:
            diff = values[_pair(*larger)][metric] - values[_pair(*smaller)][metric]
            claims[f"{name}/{metric}"] = Claim(statement, metric, _pair(*larger), _pair(*smaller),
                                               estimate(diff, confidence))
    return Report(
        sizes={name: len(sets[name]) for name in SETS}, bootstrap=bootstrap, seed=seed,
        confidence=confidence,
        metrics={p: {m: estimate(v, confidence, bounds=_bounds(m)) for m, v in ms.items()}
                 for p, ms in values.items()},
        claims=claims,
        floor={m: estimate(values[_pair("Dtr", "Dho")][m], confidence, bounds=_bounds(m))
               for m in _CLAIM_METRICS},
        memorisation=estimate(_memorisation(feats, weights), confidence, bounds=(0, 1)),
    )


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, *, seed: int = 0) -> float:
    """Network-free distance of image sets ``[Nx, 3, H, W]`` and ``[Ny, 3, H, W]``; patches are
    scaled by the statistics of ``y`` (see :class:`SlicedWasserstein`)."""
    patches = _scaled_patches({"x": x, "y": y}, ("y",), seed)
    stat = SlicedWasserstein(patches["x"], patches["y"], seed=seed)
    return float(stat(ones(len(x)), ones(len(y)))[0])
