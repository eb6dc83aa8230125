"""Dreams stepped as one batch give exactly the images they give alone; the batch policy comes
from measurement."""

from __future__ import annotations

import pytest
import torch

from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.batch import BatchCalibration, dream_together
from dreamsuite.engine.dream import prepare_dream
from dreamsuite.engine.objectives import Maplist, parse_layer_spec
from dreamsuite.errors import Cancelled
from dreamsuite.images import sample_image


def config(layer: str, seed: int, **fields) -> DreamConfig:
    return DreamConfig(maplist=Maplist((parse_layer_spec(layer),)), seed=seed, **fields)


# Each dream its own objective, seed, jitter and regulariser, on the default schedule (4
# octaves x 10 steps, which magnifies any rounding difference of a pass into a different
# dream). The third keeps the plain pixel step (laplacian=0, no decorrelation): the batch mixes
# both kinds of step.
CASES = [
    ("coffee", config("block_10", 3)),
    ("coffee", config("block_6=0.5", 2, jitter=4)),
    ("coffee", config("block_4", 0, tv=0.05, laplacian=0, decorrelate=False)),
]


def alone(cases):
    return [dream(sample_image(name, size=64), cfg, device="cpu").image for name, cfg in cases]


def test_a_batch_gives_each_dream_its_own_image():
    runs = [prepare_dream(sample_image(name, size=64), cfg, device="cpu") for name, cfg in CASES]
    steps = []

    def counting(requests):
        from dreamsuite.engine.batch import batch_gradients

        steps.append(len(requests))
        return batch_gradients(requests)

    together = dream_together(runs, answer=counting)
    assert set(steps) == {3}  # every pass shared by the three
    for single, batched in zip(alone(CASES), together, strict=True):
        assert torch.equal(single, batched.image)
    images = [r.image for r in together]
    assert (images[0] - images[1]).abs().max() > 0.1  # and they are different dreams


def test_each_pass_of_a_batch_is_the_pass_alone_bit_for_bit():
    from dreamsuite.engine.batch import batch_gradients
    from dreamsuite.engine.dream import GradientRequest, gradient

    cases = [*CASES, ("chelsea", config("block_8:3,5=-1", 4))]
    runs = [prepare_dream(sample_image(name, size=64), cfg, device="cpu") for name, cfg in cases]
    pixels = [torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(i))
              .contiguous(memory_format=torch.channels_last) for i in range(len(runs))]
    batched = batch_gradients([GradientRequest(p.clone(), r)
                               for p, r in zip(pixels, runs, strict=True)])
    for p, run, (grad, value) in zip(pixels, runs, batched, strict=True):
        single_grad, single_value = gradient(GradientRequest(p.clone(), run))
        assert value == single_value
        assert torch.equal(grad, single_grad)


def test_tiled_dreams_batch_tile_by_tile():
    cases = [(name, config("block_10", seed, octaves=1, steps=2, tile=64))
             for name, seed in (("coffee", 5), ("coffee", 6))]
    runs = [prepare_dream(sample_image(name, size=96), cfg, device="cpu") for name, cfg in cases]
    together = dream_together(runs)
    expected = [dream(sample_image(name, size=96), cfg, device="cpu").image for name, cfg in cases]
    for single, batched in zip(expected, together, strict=True):
        assert torch.equal(single, batched.image)


def test_a_cancelled_dream_leaves_the_batch_and_the_others_are_undisturbed():
    runs = [prepare_dream(sample_image(name, size=64), cfg, device="cpu") for name, cfg in CASES]
    seen = []

    def progress(p):
        seen.append(p)

    stop = lambda: len(seen) >= 3  # noqa: E731  (cancelled during the first octave)
    outcomes = dream_together(runs, progress=[None, progress, None],
                              should_cancel=[None, stop, None])
    assert isinstance(outcomes[1], Cancelled)
    expected = alone(CASES)
    for i in (0, 2):
        assert torch.equal(expected[i], outcomes[i].image)


def test_a_dream_that_fails_alone_after_its_batch_failed_ends_and_the_others_finish(
        monkeypatch):
    """Out of memory in a batched pass: the dreams are stepped one by one; one that fails
    alone too ends with its error, the others finish as they would have alone."""
    import dreamsuite.engine.batch as batch

    runs = [prepare_dream(sample_image(name, size=64), cfg, device="cpu") for name, cfg in CASES]

    def no_memory(requests):
        raise RuntimeError("out of memory (injected)")

    def second_fails(request):
        if request.run is runs[1]:
            raise RuntimeError("out of memory alone too (injected)")
        return gradient(request)

    from dreamsuite.engine.dream import gradient

    monkeypatch.setattr(batch, "_batched", no_memory)
    monkeypatch.setattr(batch, "gradient", second_fails)
    outcomes = dream_together(runs)
    assert isinstance(outcomes[1], RuntimeError)
    assert "alone too" in str(outcomes[1])
    expected = alone(CASES)
    for i in (0, 2):
        assert torch.equal(expected[i], outcomes[i].image)


def test_a_dream_whose_objective_fails_in_a_batch_ends_alone(monkeypatch):
    """Not only out of memory: any error in a batched pass sends its dreams one by one, so
    the dream whose objective fails ends with its error and the others finish."""
    runs = [prepare_dream(sample_image(name, size=64), cfg, device="cpu") for name, cfg in CASES]
    real_value = runs[1].value

    def broken(acts, pixels):
        if len(seen := broken.calls) >= 2:
            raise ValueError("this objective broke (injected)")
        seen.append(1)
        return real_value(acts, pixels)

    broken.calls = []
    monkeypatch.setattr(runs[1], "value", broken)
    outcomes = dream_together(runs)
    assert isinstance(outcomes[1], ValueError)
    expected = alone(CASES)
    for i in (0, 2):
        assert torch.equal(expected[i], outcomes[i].image)


def test_every_dream_gets_an_outcome_when_answering_a_round_fails():
    runs = [prepare_dream(sample_image(name, size=64), cfg, device="cpu") for name, cfg in CASES]
    rounds = []

    def broken(requests):
        rounds.append(len(requests))
        raise RuntimeError("device lost (injected)")

    outcomes = dream_together(runs, answer=broken)
    assert rounds == [3]
    assert all(isinstance(o, RuntimeError) and "device lost" in str(o) for o in outcomes)


def test_calibration_picks_the_smallest_batch_near_the_fastest(monkeypatch):
    per_image = {1: 10.0, 2: 6.0, 4: 4.1, 8: 4.0, 16: 4.5}
    timed = []

    def fake_timer(self, backbone, layer, size, batch):
        timed.append((size, batch))
        return lambda: per_image[batch] * batch

    monkeypatch.setattr(BatchCalibration, "_timer", fake_timer)
    from dreamsuite.backbones import get_backbone

    backbone = get_backbone("efficientnet_lite0", device="cpu")
    calibration = BatchCalibration(max_batch=16)
    assert calibration.best(backbone, ["block_10"], (64, 64)) == 4  # within 5% of 8's
    assert calibration.best(backbone, ["block_6", "block_10"], (64, 64)) == 4  # cached
    assert timed == [((64, 64), b) for b in (1, 2, 4, 8, 16)]
    per_image.update({1: 10.0, 2: 10.5})
    assert calibration.best(backbone, ["block_10"], (512, 512)) == 1
    assert timed[-2:] == [((512, 512), 1), ((512, 512), 2)]  # no faster: stop measuring
    per_image.update({1: 10.0, 2: 9.5, 4: 9.8})
    assert calibration.best(backbone, ["block_10"], (256, 256)) == 1  # under the 10% gain
    known = {c.size: c for c in calibration.known()}
    assert known[(64, 64)].speedup(4) == pytest.approx(10 / 4.1)


def test_sizes_of_one_area_band_share_one_calibration(monkeypatch):
    """Every input size was a calibration of its own (about 1.8 s at 256 px): now one per band
    of area, measured at a square that stands for it."""
    timed = []

    def fake_timer(self, backbone, layer, size, batch):
        timed.append((size, batch))
        return lambda: {1: 10.0, 2: 6.0}[batch] * batch

    monkeypatch.setattr(BatchCalibration, "_timer", fake_timer)
    from dreamsuite.backbones import get_backbone

    backbone = get_backbone("efficientnet_lite0", device="cpu")
    calibration = BatchCalibration(max_batch=2)
    assert {calibration.best(backbone, ["block_10"], size)
            for size in [(192, 256), (193, 256), (192, 257), (256, 192)]} == {2}
    assert timed == [((216, 216), 1), ((216, 216), 2)]
    calibration.best(backbone, ["block_10"], (384, 384))  # another band
    assert len(timed) == 4 and timed[2][0] not in ((216, 216), (384, 384))
    assert abs(timed[2][0][0] - 384) < 384 * 0.1, "the band's square is near the size"


def test_a_failing_calibration_is_cached_not_repeated_before_every_dream(monkeypatch):
    """Out of memory at batch 4: the sizes that worked decide (2), and that is remembered;
    when even single passes fail, batch 1 is remembered: no dream pays a failing
    calibration again (each one did, before)."""
    timed = []

    def timer(self, backbone, layer, size, batch):
        timed.append((size, batch))
        if batch >= 4 or size == (512, 512):
            raise RuntimeError("CUDA out of memory (injected)")
        return lambda: {1: 10.0, 2: 6.0}[batch] * batch

    monkeypatch.setattr(BatchCalibration, "_timer", timer)
    from dreamsuite.backbones import get_backbone

    backbone = get_backbone("efficientnet_lite0", device="cpu")
    calibration = BatchCalibration(max_batch=8)
    assert calibration.best(backbone, ["block_10"], (64, 64)) == 2
    assert calibration.best(backbone, ["block_10"], (64, 64)) == 2
    assert timed == [((64, 64), 1), ((64, 64), 2), ((64, 64), 4)]
    assert calibration.best(backbone, ["block_10"], (512, 512)) == 1
    assert calibration.best(backbone, ["block_10"], (512, 512)) == 1
    assert timed[3:] == [((512, 512), 1)]


def test_calibration_times_each_batch_size_side_by_side_with_single_images(monkeypatch):
    """The machine slows down mid-calibration (a busy server: single passes measured 8 ms,
    then 15 ms): timed in turn with single images, batches still show their gain."""
    runs = []

    def drifting_timer(self, backbone, layer, size, batch):
        def once():
            runs.append(batch)
            slow = 1.0 if len(runs) <= 6 else 2.0  # twice as slow once batch 2 is timed
            return slow * {1: 8.0, 2: 2 * 6.0, 4: 4 * 4.0, 8: 8 * 3.0}[batch]
        return once

    monkeypatch.setattr(BatchCalibration, "_timer", drifting_timer)
    from dreamsuite.backbones import get_backbone

    calibration = BatchCalibration(max_batch=8, repeats=3, min_seconds=0)
    measured = calibration.measure(get_backbone("efficientnet_lite0", device="cpu"),
                                   ["block_10"], (64, 96))
    assert runs[:6] == [1, 2, 1, 2, 1, 2]  # alternating
    assert measured.best == 8
    assert measured.speedup(2) == pytest.approx(8 / 6)
    assert measured.speedup(8) == pytest.approx(8 / 3)


def test_calibration_measures_real_passes():
    from dreamsuite.backbones import get_backbone

    calibration = BatchCalibration(max_batch=2, repeats=1, min_seconds=0)
    measured = calibration.measure(get_backbone("efficientnet_lite0", device="cpu"),
                                   ["block_4"], (40, 40))
    assert set(measured.per_image) == {1, 2}
    assert all(0 < t < 5 for t in measured.per_image.values())
    assert measured.best in (1, 2)
    assert torch.get_default_dtype() == torch.float32
