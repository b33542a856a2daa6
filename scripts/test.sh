#!/usr/bin/env bash
# Runs every Chorus test on a fresh machine: formatting, lints, and the whole
# test suite (unit, golden vectors, integration tests against a real server on
# loopback, the bench harness's own tests). `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
# One full build, not an edit loop: incremental caches would only add about
# 3 GB of disk (a CI machine has run out of it before). A caller may override.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is required (https://rustup.rs); this machine has none" >&2
    exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked

# Browser end-to-end tests (tests/browser): Debian's Chromium and Firefox ESR
# against a real server, plus the JS SDK's own tests. Installs what is missing.
echo "== browser tests: browsers, node"
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    else
        echo "the browser tests need ${missing[*]} (Debian: apt-get install -y chromium firefox-esr, as root)" >&2
        exit 1
    fi
fi
if ! command -v npm >/dev/null 2>&1 || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
    echo "the browser tests need node >= 20 and npm" >&2
    exit 1
fi
echo "== cargo build (server, browser_peer example)"
cargo build --locked -p chorus-server
cargo build --locked -p chorus-client --example browser_peer
echo "== npm ci"
(cd tests/browser && npm ci --no-audit --no-fund)
if [ -f client-sdk/js/package.json ]; then
    if [ -f client-sdk/js/package-lock.json ]; then
        (cd client-sdk/js && npm ci --no-audit --no-fund)
    else
        (cd client-sdk/js && npm install --no-audit --no-fund --no-package-lock)
    fi
fi
echo "== browser tests (tests/browser: npm test)"
(cd tests/browser && CHORUS_SKIP_BUILD=1 npm test)
if [ -f client-sdk/js/package.json ]; then
    echo "== JS SDK tests (client-sdk/js: npm test)"
    (cd client-sdk/js && npm test)
fi
