"""Generate ``dreamsuite/v1`` from ``protos/dreamsuite/v1/*.proto`` (``make protos``).

``--check`` regenerates into a temporary folder and fails if the committed code differs, so the
wire contract and the code that implements it cannot drift apart.
"""

from __future__ import annotations

import argparse
import filecmp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("dreamsuite") / "v1"
_INIT = '"""Generated protobuf and gRPC code for dreamsuite.v1 (make protos). Do not edit."""\n'


def generate(out_root: Path) -> list[Path]:
    """Run grpc_tools.protoc on every proto; returns the generated files."""
    import grpc_tools
    from grpc_tools import protoc

    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PACKAGE).glob("*.proto"))
    if not sources:
        return []
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = ["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE / "__init__.py").write_text(_INIT)
    return sorted((out_root / PACKAGE).glob("*.py*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
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
        print(f"generated code is stale, run `make protos`: {', '.join(stale)}", file=sys.stderr)
        return 1
    print("generated code matches the protos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
