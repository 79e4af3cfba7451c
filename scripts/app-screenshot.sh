#!/usr/bin/env bash
# Opens the native app under a virtual X server (Xvfb) and saves a screenshot of its window to
# assets/screenshots/app.png (or $1). Needs: Xvfb, ImageMagick's `import`, and a Vulkan driver
# for wgpu (Mesa's lavapipe on a machine without a GPU); installs them with apt-get when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-assets/screenshots/app.png}
need=()
command -v Xvfb >/dev/null || need+=(xvfb)
command -v import >/dev/null || need+=(imagemagick)
ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers libvulkan1)
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}"
fi
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/goalrank/target}
cargo build --release --locked
display=:${DISPLAY_NUMBER:-97}
Xvfb "$display" -screen 0 1400x860x24 &
xvfb=$!
trap 'kill $app $xvfb 2>/dev/null || true' EXIT
sleep 2
DISPLAY=$display "$CARGO_TARGET_DIR/release/goalrank" app --data assets/data/movielens-latest-small &
app=$!
# The window needs the data, the model and (on lavapipe) shader compilation before it is drawn.
sleep "${WAIT_SECONDS:-25}"
kill -0 "$app" || { echo "the app exited early" >&2; exit 1; }
mkdir -p "$(dirname "$out")"
DISPLAY=$display import -window root "$out"
echo "wrote $out"
