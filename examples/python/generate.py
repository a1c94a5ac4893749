#!/usr/bin/env python3
"""Generates Python stubs for the Coffer API from the repository's proto/.

Writes coffer/v1/*_pb2.py, *_pb2_grpc.py and google/rpc/*_pb2.py into the
output directory (default: ./generated beside this file), which the client
then puts on sys.path. Uses grpcio-tools' bundled protoc, so no protoc
install is needed.
"""

import argparse
import pathlib
import sys

from grpc_tools import protoc

try:  # Python 3.9+: the well-known types ship inside grpc_tools.
    from importlib.resources import files as _files

    WELL_KNOWN = str(_files("grpc_tools") / "_proto")
except ImportError:  # pragma: no cover
    import pkg_resources

    WELL_KNOWN = pkg_resources.resource_filename("grpc_tools", "_proto")

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"


def generate(out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    protos = sorted(
        str(p.relative_to(PROTO_ROOT))
        for p in list(PROTO_ROOT.glob("coffer/v1/*.proto"))
        + list(PROTO_ROOT.glob("google/rpc/*.proto"))
    )
    if not protos:
        sys.exit(f"no .proto files under {PROTO_ROOT}")
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{WELL_KNOWN}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    # `google` must stay a namespace package (no __init__.py), or it would
    # hide the installed google.protobuf; `coffer` gets regular packages.
    for package in ["coffer", "coffer/v1"]:
        (out / package / "__init__.py").touch()
    print(f"generated {len(protos)} files' stubs into {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=HERE / "generated",
        help="output directory (default: %(default)s)",
    )
    generate(parser.parse_args().out.resolve())


if __name__ == "__main__":
    main()
