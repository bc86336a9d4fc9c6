#!/usr/bin/env python3
"""Writes a development key set into DIR, unless DIR already has one:
product-keys.json and order-keys.json (one key, named NAME, with every scope of its service;
only its SHA-256 digest is stored), dev-api-key (the key itself) and grpc-token (the shared
token of product-svc's stock API). Used by `just up`, `just edge` and the contract check.

    scripts/dev-keys.py DIR [NAME]
"""
import hashlib
import json
import pathlib
import secrets
import sys

SCOPES = {
    "product-keys.json": ["catalog:read", "catalog:write"],
    "order-keys.json": ["orders:read", "orders:write", "orders:admin"],
}


def main() -> None:
    out = pathlib.Path(sys.argv[1])
    name = sys.argv[2] if len(sys.argv) > 2 else "dev"
    if (out / "dev-api-key").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(24)
    digest = hashlib.sha256(key.encode()).hexdigest()
    for file, scopes in SCOPES.items():
        keys = {"keys": [{"name": name, "sha256": digest, "scopes": scopes}]}
        (out / file).write_text(json.dumps(keys, indent=2))
    (out / "grpc-token").write_text(secrets.token_urlsafe(24))
    (out / "dev-api-key").write_text(key)  # last: its presence means the set is complete


if __name__ == "__main__":
    main()
