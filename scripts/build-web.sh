#!/usr/bin/env bash
# Builds the browser demo into a folder (default: site/): the app compiled to wasm32 (cargo,
# profile `web`), its JS glue (wasm-bindgen), size optimisation (wasm-opt) and index.html.
# Offline on a fresh machine from registry packages only: the Rust target from rustup,
# wasm-bindgen-cli from crates.io (the version Cargo.lock pins), wasm-opt from npm (binaryen).
#
#   scripts/build-web.sh [OUT]                            build
#   python3 -m http.server -b 127.0.0.1 8080 -d site      serve, then open http://127.0.0.1:8080
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-site}
target_dir=${CARGO_TARGET_DIR:-target}

if command -v rustup >/dev/null; then
  rustup target add wasm32-unknown-unknown >/dev/null
fi

# wasm-bindgen's CLI must match the library version in Cargo.lock exactly.
version=$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $version"; then
  echo "installing wasm-bindgen-cli $version"
  cargo install wasm-bindgen-cli --version "$version"
fi
if [ ! -x web/node_modules/.bin/wasm-opt ]; then
  (cd web && npm ci --no-audit --no-fund)
fi

# WebAssembly SIMD (128-bit, in every current browser): Burn's CPU backend and its matrix
# products use it, so the page's CPU fallback ranks and trains faster.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128" \
  cargo build --locked --profile web --target wasm32-unknown-unknown --bin goalrank
wasm="$target_dir/wasm32-unknown-unknown/web/goalrank.wasm"
# A wasm binary with `main` is linked as a command: unless `main` runs the static constructors
# itself (src/main.rs), the linker wraps every export so that each call from JS re-runs them all.
if grep -q -a 'command_export' "$wasm"; then
  echo "error: $wasm: exports are wrapped to re-run static constructors (see src/main.rs)" >&2
  exit 1
fi
mkdir -p "$out"
wasm-bindgen --target web --no-typescript --out-dir "$out" --out-name goalrank "$wasm"
web/node_modules/.bin/wasm-opt -Oz --enable-simd \
  --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  "$out/goalrank_bg.wasm" -o "$out/goalrank_bg.wasm"
cp index.html "$out/"
echo "built $out/: goalrank_bg.wasm $(du -h "$out/goalrank_bg.wasm" | cut -f1)" \
  "($(gzip -c "$out/goalrank_bg.wasm" | wc -c | awk '{ printf "%.2f MB gzipped, %d bytes", $1 / 1e6, $1 }'))"
