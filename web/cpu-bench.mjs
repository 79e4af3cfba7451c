// How fast the browser demo ranks and trains on its CPU fallback. Opens the built site in
// Debian's Chromium, headless and without WebGPU, waits for the first list, trains live steps
// through `window.goalrank.command` and prints the page's own step times.
//
//   node web/cpu-bench.mjs SITE ["train 4 batch=128 group=16"]

import { chromium } from "playwright-core";
import path from "node:path";

import { serve } from "./serve.mjs";

const site = path.resolve(process.argv[2] ?? "site");
const command = process.argv[3] ?? "train 4 batch=128 group=16";
const server = await serve(site);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage();
  const started = Date.now();
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(
    () => {
      const text = window.goalrank && window.goalrank.state();
      const s = text && JSON.parse(text);
      return s && s.ready && s.request && s.request.goalrank_list;
    },
    null,
    { timeout: 120_000, polling: 100 },
  );
  console.log(`first list after ${((Date.now() - started) / 1000).toFixed(2)} s`);
  await page.evaluate((c) => window.goalrank.command(c), command);
  await page.waitForFunction(
    () => {
      const t = JSON.parse(window.goalrank.state()).training;
      return t.started && !t.running;
    },
    null,
    { timeout: 900_000, polling: 200 },
  );
  const t = JSON.parse(await page.evaluate(() => window.goalrank.state())).training;
  console.log(
    `${command} on ${t.backend}: ${t.status}; losses [${t.losses.map((l) => l.toFixed(4))}]` +
      `, step seconds [${t.seconds.map((x) => x.toFixed(3))}]`,
  );
} finally {
  await browser.close();
  server.close();
}
