"""Regenerate the Python modules of the wire contract from proto/fedsignal/v1/*.proto.

    python proto/generate.py          # rewrite the generated modules
    python proto/generate.py --check  # exit 1 if the committed modules are stale
"""

from __future__ import annotations

import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent
PACKAGE = ROOT / "fedsignal" / "v1"
SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")


def generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    code = protoc.main(args)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generated(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.endswith(SUFFIXES))


def main(argv: list[str]) -> int:
    check = "--check" in argv
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        import os

        cwd = os.getcwd()
        os.chdir(ROOT)
        try:
            generate(out)
        finally:
            os.chdir(cwd)
        fresh = generated(out / "fedsignal" / "v1")
        if check:
            committed = {p.name for p in generated(PACKAGE)}
            stale = [p.name for p in fresh if not (PACKAGE / p.name).exists() or not filecmp.cmp(p, PACKAGE / p.name, shallow=False)]
            extra = sorted(committed - {p.name for p in fresh})
            if stale or extra:
                print("generated wire modules are stale: " + ", ".join(stale + extra), file=sys.stderr)
                print("run: python proto/generate.py", file=sys.stderr)
                return 1
            print(f"generated wire modules are current ({len(fresh)} files)")
            return 0
        for old in generated(PACKAGE):
            old.unlink()
        for path in fresh:
            shutil.copyfile(path, PACKAGE / path.name)
        print(f"wrote {len(fresh)} files to {PACKAGE}")
        return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
