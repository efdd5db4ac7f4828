"""Regenerate the Python protobuf modules from the .proto files in this folder.

Run from the repository root: ``python proto/generate.py`` (needs the ``dev`` extra,
which brings grpcio-tools). The generated modules land in ``promstore/remote/pb/``
and are checked in, so that installing promstore needs no protobuf compiler. They are
the reference implementation our fast decoders are tested against, and the encoder
used by tools and tests; the hot paths do not use them.
"""

from __future__ import annotations

import pathlib
import re
import sys

from grpc_tools import protoc

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE.parent / "promstore" / "remote" / "pb"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    protos = sorted(p.name for p in HERE.glob("*.proto"))
    rc = protoc.main(["protoc", f"-I{HERE}", f"--python_out={OUT}", *protos])
    if rc != 0:
        return rc
    # protoc emits absolute imports ("import types_pb2"); make them package-relative.
    for path in OUT.glob("*_pb2.py"):
        text = path.read_text()
        text = re.sub(r"^import (\w+_pb2) as", r"from . import \1 as", text, flags=re.M)
        path.write_text(text)
    (OUT / "__init__.py").write_text(
        '"""Generated protobuf modules (reference encoders/decoders); see proto/generate.py."""\n'
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
