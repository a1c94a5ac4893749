#!/usr/bin/env python3
"""Resolves a secret from Coffer over mutual TLS and follows WatchSecrets.

The order is the one ADR 0009 prescribes for any cache: open the watch
stream and wait for its first message, then read the value, so that every
change after the read arrives on the stream. On each event for the secret
it resolves again. It prints JSON lines with names, versions and value
lengths, never a value.

    python generate.py
    python coffer_example.py --server coffer.internal:50051 --tenant acme \\
        --ca ca.pem --cert billing.pem --key billing.key \\
        --consumer service:billing --config-path env.DB --secret db

Without --consumer the secret is resolved directly (a role that may do so)
and the whole tenant is watched.
"""

import argparse
import json
import pathlib
import sys
import uuid

import grpc

HERE = pathlib.Path(__file__).resolve().parent


def load_stubs(directory: pathlib.Path):
    """Imports the stubs generate.py wrote into `directory`."""
    if not (directory / "coffer" / "v1" / "secrets_pb2.py").exists():
        sys.exit(f"no stubs in {directory}: run `python generate.py --out {directory}` first")
    sys.path.insert(0, str(directory))
    from coffer.v1 import resources_pb2, secrets_pb2, secrets_pb2_grpc  # noqa: E402

    return resources_pb2, secrets_pb2, secrets_pb2_grpc


def emit(kind: str, **fields) -> None:
    print(json.dumps({kind: fields}, sort_keys=True), flush=True)


def metadata():
    # Every call carries a request id the server logs and echoes back.
    return (("x-request-id", str(uuid.uuid4())),)


def channel(args) -> grpc.Channel:
    if args.plaintext:
        return grpc.insecure_channel(args.server)
    read = lambda path: pathlib.Path(path).read_bytes()  # noqa: E731
    if not (args.ca and args.cert and args.key):
        sys.exit("--ca, --cert and --key are required (or --plaintext for a dev server)")
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(args.ca),
        private_key=read(args.key),
        certificate_chain=read(args.cert),
    )
    options = []
    if args.server_name:
        options.append(("grpc.ssl_target_name_override", args.server_name))
    return grpc.secure_channel(args.server, credentials, options=options)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="127.0.0.1:50051", help="host:port")
    parser.add_argument("--tenant", default="default")
    parser.add_argument("--ca", help="PEM of the CA that signed the server certificate")
    parser.add_argument("--cert", help="PEM client certificate")
    parser.add_argument("--key", help="PEM client private key")
    parser.add_argument("--server-name", help="name to verify the server certificate for")
    parser.add_argument("--plaintext", action="store_true", help="a `coffer serve --dev` server")
    parser.add_argument("--secret", required=True, help="the secret's key")
    parser.add_argument("--consumer", help="KIND:ID to resolve for (the resolver role needs one)")
    parser.add_argument("--config-path", default="", help="the consumer's binding config path")
    parser.add_argument("--events", type=int, default=0, help="exit after this many events (0: never)")
    parser.add_argument("--timeout", type=float, default=None, help="exit after this many seconds")
    parser.add_argument(
        "--stubs", type=pathlib.Path, default=HERE / "generated", help="where generate.py wrote the stubs"
    )
    args = parser.parse_args()

    resources_pb2, secrets_pb2, secrets_pb2_grpc = load_stubs(args.stubs.resolve())
    parent = f"tenants/{args.tenant}"
    name = f"{parent}/secrets/{args.secret}"
    consumer = None
    if args.consumer:
        kind, _, ident = args.consumer.partition(":")
        if not ident:
            sys.exit("--consumer must be KIND:ID, e.g. service:billing")
        consumer = resources_pb2.Consumer(kind=kind, id=ident)

    stub = secrets_pb2_grpc.SecretsServiceStub(channel(args))

    def resolve():
        response = stub.ResolveSecret(
            secrets_pb2.ResolveSecretRequest(name=name, consumer=consumer, config_path=args.config_path),
            metadata=metadata(),
        )
        emit("resolved", name=response.name, version=response.version, length=len(response.value))

    watch = secrets_pb2.WatchSecretsRequest(parent=parent, consumer=consumer)
    if consumer is None:
        watch.secrets.append(name)
    stream = stub.WatchSecrets(watch, metadata=metadata(), timeout=args.timeout)
    seen = 0
    try:
        first = next(stream)
        emit("watching", parent=parent, secret=name, resume_token_set=bool(first.resume_token))
        resolve()
        for message in stream:
            for event in message.events:
                kind = secrets_pb2.SecretChangeEvent.Type.Name(event.type)
                emit(
                    "event",
                    type=kind,
                    secret=event.secret,
                    version=event.version,
                    config_path=event.config_path,
                )
                if event.secret == name and kind in ("TYPE_CREATED", "TYPE_ROTATED", "TYPE_SECRET_ENABLED"):
                    resolve()
                seen += 1
                if args.events and seen >= args.events:
                    stream.cancel()
                    return 0
    except grpc.RpcError as err:
        if err.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            emit("timeout", events=seen)
            return 0 if not args.events else 1
        emit("error", code=err.code().name, message=err.details())
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
