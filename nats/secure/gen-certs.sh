#!/usr/bin/env bash
# Makes a private CA and, signed by it, a server certificate (for nats-server and product-svc's
# gRPC, valid for localhost and 127.0.0.1) and a client certificate (for mutual TLS to NATS).
# Usage: gen-certs.sh OUT_DIR [DAYS]. For development and tests; production brings its own PKI.
set -euo pipefail
out=${1:?usage: gen-certs.sh OUT_DIR [DAYS]}
days=${2:-825}
mkdir -p "$out"
cd "$out"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca-key.pem
openssl req -x509 -new -key ca-key.pem -sha256 -days "$days" -subj "/CN=eshop dev CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.pem
issue() { # name, CN, extended key usage, subjectAltName
  key "$1-key.pem"
  openssl req -new -key "$1-key.pem" -subj "/CN=$2" -out "$1.csr"
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$3" "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days "$days" \
    -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue server localhost serverAuth "DNS:localhost,IP:127.0.0.1"
issue client eshop-service clientAuth "DNS:eshop-service"
rm -f ca.srl
chmod 600 ./*-key.pem
echo "Wrote ca.pem, server.pem/server-key.pem, client.pem/client-key.pem to $out (valid $days days)."
