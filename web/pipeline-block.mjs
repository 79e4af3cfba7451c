// Does creating compute pipelines block the page? Opens a page in Debian's Chromium (headless,
// WebGPU on its software adapter) that draws with WebGL2 on every animation frame and creates
// N distinct compute pipelines (one dispatch each) with WebGPU's synchronous
// `createComputePipeline` (what wgpu, and so Burn's kernels, call) or with
// `createComputePipelineAsync`, on the page's main thread or in a worker (`worker-sync`,
// `worker-async`); prints the frames drawn and the longest time without a frame.
//
//   node web/pipeline-block.mjs [N] [sync,async,worker-sync,worker-async]

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

import { serve } from "./serve.mjs";

const page = `<!doctype html><canvas id="c" width="400" height="300"></canvas><script>
const gl = document.getElementById("c").getContext("webgl2");
window.frames_ = [];
const tick = (t) => { frames_.push(t); gl.clearColor(Math.random(), 0, 0, 1); gl.clear(gl.COLOR_BUFFER_BIT); requestAnimationFrame(tick); };
requestAnimationFrame(tick);
function shader(i) {
  let body = "";
  for (let k = 0; k < 300; k++) body += "x = x * " + (1 + (i * 7 + k) % 13) + ".0 + sin(x + " + k + ".0) * cos(x * " + (i + 1) + ".0);\\n";
  return "@group(0) @binding(0) var<storage, read_write> buf: array<f32>;\\n" +
    "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) id: vec3<u32>) { var x = buf[id.x]; " + body + " buf[id.x] = x; }";
}
async function create(mode, n, salt) {
  const device = await (await navigator.gpu.requestAdapter()).requestDevice();
  const buf = device.createBuffer({ size: 4096, usage: GPUBufferUsage.STORAGE });
  const bgl = device.createBindGroupLayout({ entries: [{ binding: 0, visibility: GPUShaderStage.COMPUTE, buffer: { type: "storage" } }] });
  const layout = device.createPipelineLayout({ bindGroupLayouts: [bgl] });
  for (let i = 0; i < n; i++) {
    const desc = { layout, compute: { module: device.createShaderModule({ code: shader(salt + i) }), entryPoint: "main" } };
    const pipeline = mode === "async" ? await device.createComputePipelineAsync(desc) : device.createComputePipeline(desc);
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, device.createBindGroup({ layout: bgl, entries: [{ binding: 0, resource: { buffer: buf } }] }));
    pass.dispatchWorkgroups(16);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await new Promise((r) => setTimeout(r, 0));
  }
  await device.queue.onSubmittedWorkDone();
}
// "worker-sync" / "worker-async": the same, in a dedicated worker with its own device, while the
// page's main thread only draws.
window.run = async (mode, n, salt) => {
  const start = performance.now();
  frames_.length = 0;
  if (mode.startsWith("worker-")) {
    const code = shader.toString() + create.toString() +
      "onmessage = async (e) => { await create(e.data[0], e.data[1], e.data[2]); postMessage(0); };";
    const worker = new Worker(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
    await new Promise((done) => { worker.onmessage = done; worker.postMessage([mode.slice(7), n, salt]); });
  } else {
    await create(mode, n, salt);
  }
  let gap = 0;
  for (let i = 1; i < frames_.length; i++) gap = Math.max(gap, frames_[i] - frames_[i - 1]);
  return { mode, pipelines: n, seconds: (performance.now() - start) / 1000, frames: frames_.length, longest_gap_s: gap / 1000 };
};
</script>`;

const n = Number(process.argv[2] ?? 40);
const modes = (process.argv[3] ?? "sync,async,worker-sync,worker-async").split(",");
const dir = fs.mkdtempSync(path.join(os.tmpdir(), "pipeline-block-"));
fs.writeFileSync(path.join(dir, "index.html"), page);
const server = await serve(dir);
try {
  for (const [i, mode] of modes.entries()) {
    const browser = await chromium.launch({
      executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
      headless: true,
      args: ["--no-sandbox", "--enable-unsafe-webgpu"],
    });
    try {
      const tab = await browser.newPage();
      await tab.goto(`http://127.0.0.1:${server.address().port}/`);
      await tab.waitForTimeout(1000);
      // Each run compiles shaders of its own (no cache can serve them).
      console.log(JSON.stringify(await tab.evaluate(([m, k, s]) => window.run(m, k, s), [mode, n, 1000 * i])));
    } finally {
      await browser.close();
    }
  }
} finally {
  server.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
