"""The CUDA paths in one short run: ``python scripts/device_check.py [--device cuda] [--out DIR]``.

The suite is built and tested on CPUs; this is what to run when a GPU is at hand (minutes, not
the test suite). Each check prints one line, ``ok`` or ``FAILED`` with its figures; the exit
status is the number of failed checks. ``--out DIR`` also writes ``device_check.json`` and the
images there. ``--device cpu`` runs the same checks on the CPU (that is how the script itself
is tested).

1. dream: the default dream (EfficientNet-Lite0, 4 octaves x 10 steps) of a 512 px photo: its
   time, finite pixels, and how far the device's image is from the CPU's (fp16 autocast on
   CUDA: a dream is a chaotic function of its input, so this is a figure, not a check).
2. batch: eight 128 px dreams' gradients as one batched pass against each alone (relative
   difference under 2%: fp16 on CUDA), and the batched pass's speed-up.
3. guided match: a guided dream in ``match`` mode runs and raises its objective.
4. style: 30 L-BFGS iterations at 256 px lower the loss, all finite.
5. gan: ``dcgan64`` trains 20 steps with AMP, checkpoints, and a CPU checkpoint of it resumes
   on the device (the grad scalers start afresh).
6. oom: with the device filled up to 256 MiB, an untiled 2048 px dream fails as out of memory (what
   the dream service refuses as ``RESOURCE_EXHAUSTED``), and the next dream runs once the
   memory is back (skipped on the CPU, where it would only exhaust the machine).
7. bench: ``dreamsuite bench engine`` on the device (Lite0, one round) and ``bench throughput``
   at 64 and 128 px, concurrency 1 and 8, their tables printed as they are.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch

from dreamsuite.artifacts import open_store
from dreamsuite.device import select_device
from dreamsuite.engine import DreamConfig, dream
from dreamsuite.engine.dream import prepare_dream
from dreamsuite.engine.objectives import LayerTerm, Maplist
from dreamsuite.images import resize, sample_image, save_png

RESULTS: dict[str, dict] = {}


def check(name: str) -> Callable[[Callable[..., dict]], Callable[..., None]]:
    def wrap(fn: Callable[..., dict]) -> Callable[..., None]:
        def run(*args) -> None:
            started = time.perf_counter()
            try:
                figures = fn(*args)
                ok = bool(figures.pop("ok", True))
            except Exception as exc:  # a failed check is reported, the others still run
                figures = {"error": f"{type(exc).__name__}: {exc}",
                           "trace": traceback.format_exc(limit=4)}
                ok = False
            figures["seconds"] = round(time.perf_counter() - started, 2)
            RESULTS[name] = {"ok": ok, **figures}
            shown = {k: v for k, v in figures.items() if k != "trace"}
            print(f"{name:<14}{'ok' if ok else 'FAILED':<8}{json.dumps(shown)}", flush=True)
            if not ok and "trace" in figures:
                print(figures["trace"], file=sys.stderr)
        return run
    return wrap


def photo(size: int) -> torch.Tensor:
    return resize(sample_image("astronaut"), (size, size)).clamp(0, 1)


@check("dream")
def check_dream(device: torch.device, out: Path | None) -> dict:
    image = photo(512)
    dream(resize(image, (128, 128)).clamp(0, 1), DreamConfig(octaves=1, steps=1), device=device)
    started = time.perf_counter()
    result = dream(image, DreamConfig(), device=device)
    seconds = time.perf_counter() - started
    on_cpu = dream(image, DreamConfig(), device="cpu").image if device.type != "cpu" else None
    if out is not None:
        save_png(result.image, out / "dream.png")
    change = (result.image - image).abs().mean()
    figures = {"seconds_512px": round(seconds, 3), "finite": bool(result.image.isfinite().all()),
               "mean_change": round(float(change), 4)}
    if on_cpu is not None:
        figures["vs_cpu_share_of_change"] = round(
            float((result.image - on_cpu).abs().mean() / change), 3)
    figures["ok"] = figures["finite"] and float(change) > 0.01
    return figures


@check("batch")
def check_batch(device: torch.device, out: Path | None) -> dict:
    """A batched pass against the same passes alone. On the CPU they are equal bit for bit
    (tested); on CUDA the batch's kernels may round differently, which a whole dream would
    magnify (it is chaotic in its input), so this reports how far apart one pass lands."""
    from dreamsuite.engine.batch import batch_gradients
    from dreamsuite.engine.dream import GradientRequest, gradient

    configs = [DreamConfig(octaves=1, steps=1, seed=s, maplist=Maplist((LayerTerm(layer),)))
               for s, layer in enumerate(("block_10", "block_6", "block_10", "block_4") * 2)]
    runs = [prepare_dream(photo(128), c, device=device) for c in configs]
    g = torch.Generator().manual_seed(0)
    pixels = [torch.rand(1, 3, 128, 128, generator=g).to(device)
              .contiguous(memory_format=torch.channels_last) for _ in runs]

    def requests() -> list[GradientRequest]:
        return [GradientRequest(p.clone(), r) for p, r in zip(pixels, runs, strict=True)]

    batched = batch_gradients(requests())
    alone = [gradient(r) for r in requests()]
    worst = max(float((b[0] - a[0]).abs().max() / a[0].abs().max())
                for b, a in zip(batched, alone, strict=True))

    def timed(fn: Callable[[], object]) -> float:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        for _ in range(3):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return (time.perf_counter() - started) / 3

    one_by_one = timed(lambda: [gradient(r) for r in requests()])
    together = timed(lambda: batch_gradients(requests()))
    return {"max_rel_grad_diff": round(worst, 5), "bit_identical": worst == 0.0,
            "speedup_8x128px": round(one_by_one / together, 2), "ok": worst <= 2e-2}


@check("guided_match")
def check_guided_match(device: torch.device, out: Path | None) -> dict:
    image, guide = photo(128), resize(sample_image("coffee"), (128, 128)).clamp(0, 1)
    run = prepare_dream(image, DreamConfig(octaves=2, steps=5, guide_mode="match"),
                        guides=[guide], device=device)
    result = run.run()
    before, after = run.evaluate(image), run.evaluate(result.image)
    return {"objective_before": round(before, 4), "objective_after": round(after, 4),
            "ok": bool(result.image.isfinite().all()) and after > before}


@check("style")
def check_style(device: torch.device, out: Path | None) -> dict:
    from dreamsuite.engine.style import StyleConfig, stylize

    losses: list[float] = []
    image = stylize(photo(256), [(resize(sample_image("coffee"), (256, 256)).clamp(0, 1), 1.0)],
                    StyleConfig(iterations=30, scales=1),
                    progress=lambda p: losses.append(p.loss), device=device)
    if out is not None:
        save_png(image, out / "style.png")
    finite = bool(image.isfinite().all()) and all(v == v for v in losses)
    return {"first": round(losses[0], 4), "last": round(losses[-1], 4),
            "ok": finite and losses[-1] < losses[0]}


@check("gan")
def check_gan(device: torch.device, out: Path | None) -> dict:
    from dreamsuite.gan.checkpoint import load_latest
    from dreamsuite.gan.data import write_dataset
    from dreamsuite.gan.train import TrainConfig, run

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(Path(tmp).as_uri())
        g = torch.Generator().manual_seed(0)
        triples = [(f"p{i}", x, x.flip(-1)) for i, x in
                   enumerate(torch.rand(16, 3, 64, 64, generator=g))]
        write_dataset(store, "check", {"train": triples}, 64)

        def config(job: str, steps: int, on: str) -> TrainConfig:
            return TrainConfig(job_id=job, artifacts=store.url, dataset="check", steps=steps,
                               batch=8, checkpoint_every=10, eval_every=-1, preview_seeds=0,
                               width=16, device=on)

        started = time.perf_counter()
        assert run(config("amp", 20, str(device)), store) == "done"
        seconds = time.perf_counter() - started
        amp = load_latest(store, "amp")
        # A CPU run's checkpoint, resumed on the device for 10 more steps.
        assert run(config("moved", 10, "cpu"), store) == "done"
        assert run(config("moved", 20, str(device)), store) == "done"
        moved = load_latest(store, "moved")
    finite = all(t.isfinite().all() for t in amp["G"].values() if t.is_floating_point())
    return {"seconds_20_steps": round(seconds, 2), "scaler_scale": amp["scaler_G"].get("scale"),
            "resumed_step": moved["step"], "ok": finite and moved["step"] == 20}


@check("oom")
def check_oom(device: torch.device, out: Path | None) -> dict:
    """The device filled up to 256 MiB (a stand-in for other work on it), an untiled 2048 px
    dream must fail as out of memory (what the dream service refuses as RESOURCE_EXHAUSTED),
    and once the memory is back, the next dream runs."""
    if device.type != "cuda":
        return {"skipped": "CPU"}
    import gc

    from dreamsuite.device import out_of_memory

    gc.collect()
    torch.cuda.empty_cache()  # the earlier checks' cached blocks would be freed on demand
    free, total = torch.cuda.mem_get_info(device)
    hog = torch.empty(max(0, free - (256 << 20)), dtype=torch.uint8, device=device)
    try:
        dream(photo(2048), DreamConfig(octaves=1, steps=1, tile=2048), device=device)
        detected = False
    except RuntimeError as exc:
        detected = out_of_memory(exc)
    finally:
        del hog
        torch.cuda.empty_cache()
    after = dream(photo(128), DreamConfig(octaves=1, steps=2), device=device)
    return {"gib_free": round(free / 2**30, 1), "gib_total": round(total / 2**30, 1),
            "detected": detected, "ok": detected and bool(after.image.isfinite().all())}


@check("bench")
def check_bench(device: torch.device, out: Path | None) -> dict:
    commands = [
        ["bench", "engine", "--backbone", "efficientnet_lite0", "--rounds", "1", "--no-memory",
         "--device", str(device)],
        ["bench", "throughput", "--sizes", "64", "128", "--concurrency", "1", "8",
         "--device", str(device)],
    ]
    codes = []
    for args in commands:
        print("$ dreamsuite " + " ".join(args), flush=True)
        code = "import sys; from dreamsuite.cli import main; sys.exit(main(sys.argv[1:]))"
        done = subprocess.run([sys.executable, "-c", code, *args], text=True,
                              capture_output=True, timeout=600)
        print(done.stdout, end="", flush=True)
        if done.returncode:
            print(done.stderr[-2000:], file=sys.stderr)
        codes.append(done.returncode)
    return {"exit_codes": codes, "ok": not any(codes)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda (default when present) or cpu")
    parser.add_argument("--out", type=Path, default=None, help="write the JSON and PNGs here")
    parser.add_argument("--skip", nargs="*", default=[], help="checks to leave out")
    args = parser.parse_args()
    device = select_device(args.device)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device {device} ({name})",
          flush=True)
    checks = {"dream": check_dream, "batch": check_batch, "guided_match": check_guided_match,
              "style": check_style, "gan": check_gan, "oom": check_oom, "bench": check_bench}
    for key, fn in checks.items():
        if key not in args.skip:
            fn(device, args.out)
    if args.out is not None:
        (args.out / "device_check.json").write_text(json.dumps(
            {"device": str(device), "name": name, "torch": torch.__version__,
             "checks": RESULTS}, indent=1))
    return sum(not r["ok"] for r in RESULTS.values())


if __name__ == "__main__":
    sys.exit(main())
