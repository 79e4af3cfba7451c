// Where the WebGPU warm-up of the browser demo blocks the page. Opens the built site in Debian's
// Chromium (headless, WebGPU) and, from the first list until the app has switched to WebGPU,
// records: the page's animation frames and a 20 ms timer on its main thread (if both stop, the
// main thread is blocked; if only frames stop, the GPU process is), the time spent inside each
// WebGPU call the page makes, and a sampled CPU profile of the main thread (self time by
// function). Function names need a build without wasm-opt, e.g.
//
//   wasm-bindgen --target web --no-typescript --keep-debug --out-dir SITE --out-name goalrank \
//     $CARGO_TARGET_DIR/wasm32-unknown-unknown/web/goalrank.wasm && cp index.html SITE/
//   node web/warmup-profile.mjs SITE ["?autotune=minimal"]

import { chromium } from "playwright-core";
import path from "node:path";

import { serve } from "./serve.mjs";

const site = path.resolve(process.argv[2] ?? "site");
const query = process.argv[3] ?? "";
const server = await serve(site);
const url = `http://127.0.0.1:${server.address().port}/${query}`;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--window-size=1400,860", "--enable-unsafe-webgpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 860 } });
  await page.addInitScript(() => {
    window.__frames = [];
    window.__beats = [];
    window.__calls = {};
    const tick = () => {
      window.__frames.push(performance.now());
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    setInterval(() => window.__beats.push(performance.now()), 20);
    const time = (proto, name) => {
      const call = proto[name];
      proto[name] = function (...args) {
        const start = performance.now();
        const result = call.apply(this, args);
        const ms = performance.now() - start;
        const c = (window.__calls[name] ??= { calls: 0, ms: 0, max_ms: 0 });
        c.calls++;
        c.ms += ms;
        c.max_ms = Math.max(c.max_ms, ms);
        return result;
      };
    };
    if (window.GPUDevice) {
      for (const name of [
        "createBuffer",
        "createBindGroup",
        "createBindGroupLayout",
        "createPipelineLayout",
        "createShaderModule",
        "createComputePipeline",
      ]) {
        time(GPUDevice.prototype, name);
      }
      time(GPUQueue.prototype, "submit");
      time(GPUQueue.prototype, "writeBuffer");
      time(GPUBuffer.prototype, "mapAsync");
    }
  });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 2000 });
  const opened = Date.now();
  await page.goto(url);
  await page.waitForFunction(
    () => {
      const text = window.goalrank && window.goalrank.state();
      return text && JSON.parse(text).ready;
    },
    null,
    { timeout: 240_000, polling: 250 },
  );
  console.log(`first list after ${((Date.now() - opened) / 1000).toFixed(1)} s`);
  await cdp.send("Profiler.start");
  await page.waitForFunction(() => !JSON.parse(window.goalrank.state()).warmup.preparing, null, {
    timeout: 600_000,
    polling: 250,
  });
  const { profile } = await cdp.send("Profiler.stop");
  console.log(`on WebGPU after ${((Date.now() - opened) / 1000).toFixed(1)} s`);

  const seen = await page.evaluate(() => ({
    frames: window.__frames,
    beats: window.__beats,
    calls: window.__calls,
  }));
  const longest = (times) => {
    const gaps = times.slice(1).map((t, i) => [t - times[i], times[i]]);
    gaps.sort((a, b) => b[0] - a[0]);
    return gaps.slice(0, 3).map(([gap, at]) => `${(gap / 1000).toFixed(1)} s at ${(at / 1000).toFixed(1)} s`);
  };
  console.log(`longest times without a frame: ${longest(seen.frames).join(", ")}`);
  console.log(`longest times without the main-thread timer: ${longest(seen.beats).join(", ")}`);
  console.log("WebGPU calls (calls, ms inside them, longest ms):");
  for (const [name, c] of Object.entries(seen.calls)) {
    console.log(`  ${name.padEnd(22)} ${String(c.calls).padStart(6)} ${c.ms.toFixed(0).padStart(8)} ${c.max_ms.toFixed(1).padStart(8)}`);
  }

  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map();
  let total = 0;
  profile.samples.forEach((id, i) => {
    const frame = nodes.get(id).callFrame;
    const name = frame.functionName || "(anonymous)";
    self.set(name, (self.get(name) ?? 0) + profile.timeDeltas[i]);
    total += profile.timeDeltas[i];
  });
  console.log(`main thread, ${(total / 1e6).toFixed(1)} s sampled; self time by function:`);
  for (const [name, us] of [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20)) {
    console.log(`  ${(us / 1e6).toFixed(2).padStart(7)} s  ${name.slice(0, 140)}`);
  }
} finally {
  await browser.close();
  server.close();
}
