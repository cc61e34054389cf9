// Harness for the browser tests: the real veza binary on loopback, tone files for Chromium's
// fake microphone, and Chromium itself (Debian's package) driven by playwright-core.

import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const VEZA_BIN = resolve(process.env.VEZA_BIN || "../../target/debug/veza");

/** A free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.once("error", fail);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => done(port));
    });
  });
}

/** Starts `veza serve` on a fresh data folder; resolves once /healthz answers. */
export async function startVeza(env = {}) {
  const dir = mkdtempSync(join(tmpdir(), "veza-browser-"));
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const { VEZA_BIN: _bin, ...inherited } = process.env;
  const child = spawn(VEZA_BIN, ["serve", "--http-addr", `127.0.0.1:${port}`, "--data-dir", dir], {
    env: {
      ...inherited,
      VEZA_RTC_UDP_ADDR: "0.0.0.0:0",
      VEZA_STUN_URLS: "",
      VEZA_RATE_LIMIT_PER_MIN: "100000",
      VEZA_AUTH_RATE_LIMIT_PER_MIN: "100000",
      VEZA_LOG_FORMAT: "json",
      RUST_LOG: "info,str0m=warn",
      ...env,
    },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (d) => { log += d; });
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      if ((await fetch(`${base}/healthz`)).ok) break;
    } catch { /* not up yet */ }
    if (child.exitCode !== null || Date.now() > deadline) {
      throw new Error(`veza did not start (exit ${child.exitCode}):\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base,
    log: () => log,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r() : child.once("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A mono 16-bit 48 kHz WAV file of a sine tone. */
export function toneFile(dir, hz, seconds = 30) {
  const rate = 48_000;
  const n = rate * seconds;
  const buf = Buffer.alloc(44 + n * 2);
  buf.write("RIFF", 0); buf.writeUInt32LE(36 + n * 2, 4); buf.write("WAVE", 8);
  buf.write("fmt ", 12); buf.writeUInt32LE(16, 16); buf.writeUInt16LE(1, 20); buf.writeUInt16LE(1, 22);
  buf.writeUInt32LE(rate, 24); buf.writeUInt32LE(rate * 2, 28); buf.writeUInt16LE(2, 32); buf.writeUInt16LE(16, 34);
  buf.write("data", 36); buf.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) buf.writeInt16LE(Math.round(12_000 * Math.sin((2 * Math.PI * hz * i) / rate)), 44 + i * 2);
  const path = join(dir, `tone-${hz}.wav`);
  writeFileSync(path, buf);
  return path;
}

/** A Chromium whose fake microphone plays `wav`. */
export async function launchBrowser(wav) {
  const args = [
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-gpu",
  ];
  if (wav) args.push(`--use-file-for-fake-audio-capture=${wav}`);
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args });
}

/** Registers `username` through the web client's form; leaves the page in the lobby. */
export async function registerInPage(page, base, username) {
  await page.goto(base);
  await page.fill("#auth-form input[name=username]", username);
  await page.fill("#auth-form input[name=password]", "correct horse battery");
  await page.click("#auth-form button[value=register]");
  await page.waitForSelector("#lobby:not([hidden])");
}

/**
 * In the page: waits for `count` remote audio streams, then measures for `ms` milliseconds the
 * dominant frequency of each (FFT peak) and the inbound-rtp packet counters.
 */
export async function listen(page, ms, count = 1) {
  return page.evaluate(async ({ ms, count }) => {
    const deadline = Date.now() + 15_000;
    while (document.querySelectorAll("#audio audio").length < count || window.veza.call?.pc.connectionState !== "connected") {
      if (Date.now() > deadline) throw new Error(`no audio: ${document.querySelectorAll("#audio audio").length} streams, ${window.veza.call?.pc.connectionState}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const pc = window.veza.call.pc;
    const inbound = async () => {
      let packets = 0;
      (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") packets += s.packetsReceived; });
      return packets;
    };
    const ctx = new AudioContext();
    const analysers = [...document.querySelectorAll("#audio audio")].map((el) => {
      const a = ctx.createAnalyser();
      a.fftSize = 8192;
      ctx.createMediaStreamSource(el.srcObject).connect(a);
      return a;
    });
    const before = await inbound();
    const peaks = analysers.map(() => new Map());
    const started = Date.now();
    while (Date.now() - started < ms) {
      await new Promise((r) => setTimeout(r, 250));
      analysers.forEach((a, i) => {
        const bins = new Float32Array(a.frequencyBinCount);
        a.getFloatFrequencyData(bins);
        let best = 0;
        for (let b = 1; b < bins.length; b++) if (bins[b] > bins[best]) best = b;
        if (bins[best] > -90) {
          const hz = Math.round((best * ctx.sampleRate) / a.fftSize);
          peaks[i].set(hz, (peaks[i].get(hz) || 0) + 1);
        }
      });
    }
    const packets = (await inbound()) - before;
    const binHz = ctx.sampleRate / 8192;
    await ctx.close();
    return {
      binHz,
      packets,
      seconds: (Date.now() - started) / 1000,
      // The most frequent peak of each stream.
      frequencies: peaks.map((m) => [...m.entries()].sort((x, y) => y[1] - x[1])[0]?.[0] ?? 0),
    };
  }, { ms, count });
}

export { readFileSync };
