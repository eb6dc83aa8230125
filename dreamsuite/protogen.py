"""Generate the protobuf code from ``protos/`` (``make protos``; ``make check-protos`` checks).

Two trees, one mechanism:

- ``protos/dreamsuite/v1/*.proto`` -> ``dreamsuite/v1`` (messages and gRPC stubs): the wire
  contract. ``-I protos``, so imports read ``from dreamsuite.v1 import dream_pb2``.
- ``protos/torchserve/*.proto`` -> ``dreamsuite/activations/tsproto`` (messages only): the part
  of TorchServe's inference API our client calls. It is not part of our contract, so it lives
  in a private package next to that client.

``--check`` regenerates into a temporary folder and fails if the committed code differs, so the
protos and the code that implements them cannot drift apart.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Target", "TARGETS", "generate", "stale_files", "main"]

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    """One proto tree: ``include`` is protoc's ``-I``, ``sources`` a glob below it, generated
    files land in ``package``; ``python_out`` is protoc's output root (both relative to the
    output root)."""

    name: str
    include: Path
    sources: str
    python_out: Path
    package: Path
    grpc: bool
    init: str


TARGETS = (
    Target("dreamsuite.v1", ROOT / "protos", "dreamsuite/v1/*.proto", Path("."),
           Path("dreamsuite/v1"), grpc=True,
           init="Generated protobuf and gRPC code for dreamsuite.v1 (make protos). Do not edit."),
    Target("torchserve", ROOT / "protos" / "torchserve", "*.proto",
           Path("dreamsuite/activations/tsproto"), Path("dreamsuite/activations/tsproto"),
           grpc=False,
           init="Generated code for TorchServe's inference API (make protos). Do not edit."),
)


def generate(target: Target, out_root: Path) -> list[Path]:
    """Run grpc_tools.protoc for ``target`` below ``out_root``; returns the generated files."""
    # optional: grpcio-tools is a [dev] dependency; only regenerating the code needs it.
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(target.include)) for p in target.include.glob(target.sources))
    if not sources:
        return []
    out = out_root / target.python_out
    out.mkdir(parents=True, exist_ok=True)
    bundled = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{target.include}", f"-I{bundled}", f"--python_out={out}",
            f"--pyi_out={out}", *([f"--grpc_python_out={out}"] if target.grpc else []), *sources]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {target.name}")
    package = out_root / target.package
    (package / "__init__.py").write_text(f'"""{target.init}"""\n')
    return sorted(package.glob("*.py*"))


def stale_files(target: Target) -> list[str]:
    """Generated files of ``target`` that differ from a fresh generation (or are missing/extra)."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(target, Path(tmp))}
        committed = {p.name: p for p in (ROOT / target.package).glob("*.py*")}
        return sorted(
            name for name in fresh.keys() | committed.keys()
            if name not in fresh or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args(argv)
    failed = False
    for target in TARGETS:
        if not args.check:
            files = generate(target, ROOT)
            print(f"{target.name}: generated {len(files)} files in {target.package}")
            continue
        stale = stale_files(target)
        if stale:
            failed = True
            print(f"{target.name}: generated code is stale, run `make protos`: "
                  f"{', '.join(stale)}", file=sys.stderr)
        else:
            print(f"{target.name}: generated code matches the protos")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
