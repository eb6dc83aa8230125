"""Generate ``dreamsuite/activations/tsproto`` from ``protos/torchserve/*.proto``.

TorchServe's gRPC inference API is not part of the dreamsuite contract, so its messages live in
a private package next to the client that uses them. ``--check`` fails when the committed code
differs from a fresh generation (tests run it). Only messages are generated: the client calls
the one method it needs through a plain channel, which needs no service stubs.

    python -m dreamsuite.activations.protogen [--check]
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

__all__ = ["generate", "main"]

ROOT = Path(__file__).resolve().parent.parent.parent
PROTOS = ROOT / "protos" / "torchserve"
PACKAGE = Path("dreamsuite") / "activations" / "tsproto"
_INIT = '"""Generated code for TorchServe\'s inference API (see ../protogen.py). Do not edit."""\n'


def generate(out_root: Path) -> list[Path]:
    """Run protoc on every TorchServe proto into ``out_root/PACKAGE``; returns the files."""
    import grpc_tools
    from grpc_tools import protoc

    out = out_root / PACKAGE
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.glob("*.proto"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}", f"--pyi_out={out}",
            *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out / "__init__.py").write_text(_INIT)
    return sorted(out.glob("*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated code is stale")
    args = parser.parse_args(argv)
    if not args.check:
        files = generate(ROOT)
        print(f"generated {len(files)} files in {PACKAGE}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = {p.name: p for p in generate(Path(tmp))}
        committed = {p.name: p for p in (ROOT / PACKAGE).glob("*.py*")}
        stale = sorted(
            name for name in fresh.keys() | committed.keys()
            if name not in fresh or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        )
    if stale:
        print(f"generated code is stale, run `python -m dreamsuite.activations.protogen`: "
              f"{', '.join(stale)}", file=sys.stderr)
        return 1
    print("generated TorchServe code matches the protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
