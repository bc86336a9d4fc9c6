#!/usr/bin/env bash
# The HTTP contract check: start nats-server, a seeded product-svc and order-svc on free loopback
# ports (temp dirs, API keys on, rate limit out of the way), then let schemathesis (pinned, from
# the venv `just setup` makes) exercise both services' /openapi.json with every check. Any
# finding fails the run. CONTRACT_EXAMPLES bounds the examples per operation; CONTRACT_SEED
# makes a run repeatable (printed either way). Watches (SSE) are bounded to 1 s here
# (ORDER_WATCH_MAX_SECS), so the fuzzer never waits on an open stream.
set -euo pipefail
cd "$(dirname "$0")/../.."

st=.venv/bin/schemathesis
examples="${CONTRACT_EXAMPLES:-40}"
seed="${CONTRACT_SEED:-random}"
[ "$seed" = random ] && seed=$(python3 -c 'import random; print(random.getrandbits(64))')
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
    for _ in $(seq 1 600); do curl -fs "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "contract: timed out waiting for $1"; tail -20 "$work"/*.log; exit 1
}

nats=$(free_port); nats_http=$(free_port); product=$(free_port); grpc=$(free_port); order=$(free_port)
python3 scripts/dev-keys.py "$work" contract
key=$(cat "$work/dev-api-key")

nats-server -js -sd "$work/nats" -a 127.0.0.1 -p "$nats" -m "$nats_http" > "$work/nats.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$nats_http/healthz"
export NATS_URL="nats://127.0.0.1:$nats" RUST_LOG=warn
PRODUCT_HTTP_ADDR="127.0.0.1:$product" PRODUCT_GRPC_ADDR="127.0.0.1:$grpc" PRODUCT_DATA_DIR="$work/product" \
PRODUCT_API_KEYS="$work/product-keys.json" PRODUCT_GRPC_TOKEN_FILE="$work/grpc-token" PRODUCT_RATE_LIMIT=1000000 PRODUCT_RATE_BURST=1000000 \
    target/debug/product-svc --seed 20 > "$work/product.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$product/health/ready"
ORDER_HTTP_ADDR="127.0.0.1:$order" ORDER_DATA_DIR="$work/order" PRODUCT_GRPC_URL="http://127.0.0.1:$grpc" \
ORDER_API_KEYS="$work/order-keys.json" ORDER_GRPC_TOKEN_FILE="$work/grpc-token" ORDER_RATE_LIMIT=1000000 ORDER_RATE_BURST=1000000 ORDER_WATCH_MAX_SECS=1 \
    target/debug/order-svc > "$work/order.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$order/health/ready"

echo "contract: schemathesis $("$st" --version | awk '{print $NF}'), $examples examples per operation, seed $seed"
failed=0
for url in "http://127.0.0.1:$order" "http://127.0.0.1:$product"; do
    echo "contract: $url/openapi.json"
    "$st" --config-file tests/contract/schemathesis.toml run "$url/openapi.json" --checks all --max-examples "$examples" --seed "$seed" \
        -H "Authorization: Bearer $key" --no-color --suppress-health-check all || failed=1
done
[ "$failed" = 0 ] || { echo "contract: findings above (repeat with CONTRACT_SEED=$seed)"; exit 1; }
echo "contract: no findings"
