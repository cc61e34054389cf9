// Harness for the browser tests: the real veza binary on loopback, tone files for Chromium's
// fake microphone, and Chromium itself (Debian's package) driven by playwright-core.

import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
export const VEZA_BIN = resolve(process.env.VEZA_BIN || "../../target/debug/veza");
// Node 22 has a global WebSocket; Node 20 does not, so fall back to the `ws` bundled in playwright-core.
const WebSocketClient = globalThis.WebSocket ?? createRequire(import.meta.url)("playwright-core/lib/utilsBundle").ws;

/**
 * Clean-up actions run in reverse order of registration, each one even if an earlier one failed.
 * `const cleanup = cleanups(); try { … cleanup.add(() => x.stop()) … } finally { await cleanup.run(); }`
 */
export function cleanups() {
  const actions = [];
  return {
    add(fn) { actions.push(fn); },
    async run() {
      for (const fn of actions.reverse()) {
        try { await fn(); } catch (err) { console.error("clean-up failed:", err); }
      }
    },
  };
}

/** A fresh temporary folder, removed at clean-up. */
export function tempDir(cleanup, prefix = "veza-e2e-") {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  cleanup.add(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

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
      VEZA_QUIC_ADDR: "127.0.0.1:0",
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
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        await new Promise((r) => child.once("exit", r));
      }
      rmSync(dir, { recursive: true, force: true });
    },
    /** SIGKILL: the node vanishes without a goodbye. */
    async kill() {
      child.kill("SIGKILL");
      await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r() : child.once("exit", r)));
    },
  };
}

/**
 * A fresh PostgreSQL database on 127.0.0.1:5432 (trust auth), dropped at clean-up; resolves to
 * its URL.
 */
export function freshDatabase(cleanup) {
  const name = `veza_browser_${Date.now()}_${Math.floor(Math.random() * 1e9)}`;
  const psql = (sql) => execFileSync("psql", ["-h", "127.0.0.1", "-U", "postgres", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql]);
  psql(`CREATE DATABASE ${name}`);
  cleanup.add(() => psql(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  return `postgres://postgres@127.0.0.1:5432/${name}`;
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

function browserOptions(wav) {
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
  return { executablePath: CHROMIUM, headless: true, args };
}

/** A Chromium whose fake microphone plays `wav`. */
export async function launchBrowser(wav) {
  return chromium.launch(browserOptions(wav));
}

/**
 * A Chromium like `launchBrowser`'s that can be killed abruptly: `kill()` sends SIGKILL to its
 * whole process group (the browser, renderer, network and GPU processes), so nothing closes its
 * connections itself; the kernel closes its sockets as the processes die. `close()` closes it if still alive.
 */
export async function launchKillableBrowser(wav) {
  // Its own TMPDIR: a killed Chromium leaves its singleton-socket folder behind there.
  const tmp = mkdtempSync(join(tmpdir(), "veza-killable-"));
  const server = await chromium.launchServer({ ...browserOptions(wav), env: { ...process.env, TMPDIR: tmp } })
    .catch((err) => { rmSync(tmp, { recursive: true, force: true }); throw err; });
  const pid = server.process().pid;
  const browser = await chromium.connect(server.wsEndpoint()).catch(async (err) => {
    await server.kill().catch(() => {});
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  });
  let killed = false;
  return {
    browser,
    pid,
    kill() {
      killed = true;
      // Playwright starts the browser detached: it leads its own process group.
      process.kill(-pid, "SIGKILL");
    },
    async close() {
      if (!killed) {
        await browser.close().catch(() => {});
        await server.close().catch(() => {});
      } else {
        await server.kill().catch(() => {});
      }
      rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/** Opens a page in each browser and registers one user in each; resolves to the pages. */
export async function usersInBrowsers(base, browsers, usernames) {
  return Promise.all(browsers.map(async (browser, i) => {
    const page = await browser.newPage();
    await registerInPage(page, base, usernames[i]);
    return page;
  }));
}

/** Registers `username` through the web client's form; leaves the page in the lobby. */
export async function registerInPage(page, base, username) {
  await page.goto(base);
  await page.fill("#auth-form input[name=username]", username);
  await page.fill("#auth-form input[name=password]", "correct horse battery");
  await page.click("#auth-form button[value=register]");
  await page.waitForSelector("#lobby:not([hidden])");
}

/** The signed-in user's id and access token in `page`. */
export async function sessionOf(page) {
  return page.evaluate(() => ({
    id: JSON.parse(sessionStorage.getItem("veza.user")).id,
    access: sessionStorage.getItem("veza.access"),
  }));
}

/** Creates a room through the lobby's form (the page enters it); resolves to its id. */
export async function createRoomInPage(page, name, visibility = "public") {
  await page.fill("#create-form input[name=name]", name);
  await page.selectOption("#create-form select[name=visibility]", visibility);
  await page.click("#create-form button");
  await page.waitForSelector("#room:not([hidden])");
  return new URLSearchParams(new URL(page.url()).hash.slice(1)).get("room");
}

/** The owner (or a moderator), by access token, gives `userId` a role in the room over the REST API. */
export async function setRole(base, roomId, access, userId, role) {
  const res = await fetch(`${base}/api/v1/rooms/${roomId}/members/${userId}`, {
    method: "PUT",
    headers: { authorization: `Bearer ${access}`, "content-type": "application/json" },
    body: JSON.stringify({ role }),
  });
  assert.equal(res.status, 200, `set role ${role}: ${await res.text()}`);
}

/**
 * Opens the room in `page` (signed in already). `query` goes before the hash, e.g. "?relay=1".
 * Resolves once the client has a call object.
 */
export async function enterRoomInPage(page, base, roomId, query = "") {
  await page.goto(`${base}/${query}#room=${roomId}`);
  await page.waitForSelector("#room:not([hidden])");
  await page.waitForFunction(() => window.veza.call?.me !== undefined, null, { timeout: 10_000 });
}

/**
 * The room `name` created by the first page's user (the owner), every other page's user made a
 * speaker and all pages in the room. Pages are signed in and in the lobby. Resolves to the room id.
 */
export async function roomWithSpeakers(base, pages, name = "Tones") {
  const [owner, ...others] = pages;
  const roomId = await createRoomInPage(owner, name);
  const { access } = await sessionOf(owner);
  for (const page of others) await setRole(base, roomId, access, (await sessionOf(page)).id, "speaker");
  await Promise.all(others.map((page) => enterRoomInPage(page, base, roomId)));
  return roomId;
}

/** The people list of the page: `{id, text}` for each `#people li`. */
export async function peopleInPage(page) {
  return page.$$eval("#people li", (lis) => lis.map((li) => ({ id: li.dataset.participant, text: li.textContent })));
}

/** Waits until every page's people list shows `count` people. */
export async function waitForPeople(pages, count, timeout = 15_000) {
  await Promise.all(pages.map((page) => page.waitForFunction(
    (n) => document.querySelectorAll("#people li").length === n, count, { timeout },
  )));
}

/** `POST /api/v1/rooms/{id}/join` with the access token; resolves to the join response. */
export async function joinOverApi(base, roomId, access) {
  const res = await fetch(`${base}/api/v1/rooms/${roomId}/join`, {
    method: "POST",
    headers: { authorization: `Bearer ${access}` },
  });
  const body = await res.text();
  assert.equal(res.status, 200, `join: ${body}`);
  return JSON.parse(body);
}

/**
 * A signaling WebSocket from Node for a join response. `messages` holds every server message;
 * `waitFor(predicate, ms)` resolves to the first message matching it (past or future).
 */
export async function signalingSocket(join, timeout = 5000) {
  const ws = new WebSocketClient(`${join.urls.signaling}?token=${encodeURIComponent(join.token)}`);
  const messages = [];
  const waiters = new Set();
  ws.addEventListener("message", (e) => {
    const msg = JSON.parse(String(e.data));
    messages.push(msg);
    for (const w of waiters) if (w.predicate(msg)) w.done(msg);
  });
  await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error("signaling socket did not open")), timeout);
    ws.addEventListener("open", () => { clearTimeout(timer); done(); });
    ws.addEventListener("error", (e) => { clearTimeout(timer); fail(new Error(`signaling socket: ${e.message ?? "error"}`)); });
  });
  return {
    messages,
    send(msg) { ws.send(JSON.stringify(msg)); },
    waitFor(predicate, ms = 5000) {
      const seen = messages.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise((done, fail) => {
        const w = {
          predicate,
          done(msg) { clearTimeout(w.timer); waiters.delete(w); done(msg); },
          timer: setTimeout(() => {
            waiters.delete(w);
            fail(new Error(`no matching message within ${ms} ms; got ${JSON.stringify(messages.map((m) => m.type))}`));
          }, ms),
        };
        waiters.add(w);
      });
    },
    close() { ws.close(); },
  };
}

/** In the page: the audio packets sent so far, summed over the call's `outbound-rtp` stats. */
export async function packetsSent(page) {
  return page.evaluate(async () => {
    let sent = 0;
    (await window.veza.call.pc.getStats()).forEach((s) => {
      if (s.type === "outbound-rtp" && (s.kind ?? s.mediaType) === "audio") sent += s.packetsSent ?? 0;
    });
    return sent;
  });
}

/**
 * In the page: the call's selected ICE candidate pair (transport → selectedCandidatePairId →
 * candidate-pair → local and remote candidates), or null when none is selected.
 */
export async function selectedCandidatePair(page) {
  return page.evaluate(async () => {
    const stats = await window.veza.call.pc.getStats();
    let transport = null;
    stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) transport = s; });
    const pair = transport && stats.get(transport.selectedCandidatePairId);
    if (!pair) return null;
    const pick = (c) => c && { type: c.type, candidateType: c.candidateType, address: c.address, port: c.port, protocol: c.protocol, relayProtocol: c.relayProtocol, url: c.url };
    return {
      state: pair.state,
      local: pick(stats.get(pair.localCandidateId)),
      remote: pick(stats.get(pair.remoteCandidateId)),
    };
  });
}

/**
 * Asserts that the stream list measured by `listen` holds `want` (within one FFT bin), and none of
 * `absent`, at ≥ 45 packets/s per expected stream.
 */
export function assertHears(heard, want, { absent = [], streams = want.length } = {}) {
  const near = (f, hz) => Math.abs(f - hz) <= heard.binHz;
  for (const hz of want) {
    assert.ok(heard.frequencies.some((f) => near(f, hz)), `heard ${JSON.stringify(heard.frequencies)} Hz, want ${hz}`);
  }
  for (const hz of absent) {
    assert.ok(!heard.frequencies.some((f) => near(f, hz)), `heard ${JSON.stringify(heard.frequencies)} Hz, must not hear ${hz}`);
  }
  const rate = heard.packets / heard.seconds;
  assert.ok(rate >= 45 * streams, `${rate.toFixed(1)} packets/s received from ${streams} stream(s); want ≥ 90 % of 50/s each`);
}

/** Sends a STUN binding request to 127.0.0.1:`port` over UDP; resolves true if answered in `ms`. */
export function stunAnswers(port, ms = 500) {
  return new Promise((done) => {
    const sock = createSocket("udp4");
    const req = Buffer.alloc(20);
    req.writeUInt16BE(0x0001, 0); // Binding request, no attributes.
    req.writeUInt32BE(0x2112a442, 4); // Magic cookie.
    for (let i = 8; i < 20; i++) req[i] = Math.floor(Math.random() * 256);
    const finish = (ok) => { clearTimeout(timer); sock.close(); done(ok); };
    const timer = setTimeout(() => finish(false), ms);
    sock.on("message", (msg) => finish(msg.length >= 20 && msg.readUInt16BE(0) === 0x0101 && msg.subarray(8, 20).equals(req.subarray(8, 20))));
    sock.on("error", () => finish(false));
    sock.send(req, port, "127.0.0.1");
  });
}

/**
 * A real coturn on 127.0.0.1:`port` with the configuration of `veza turn local-conf`. Resolves once
 * it answers a STUN binding request. `log()` is its output (it logs verbosely to stdout).
 */
export async function startCoturn({ port, secret, realm = "veza.test" }) {
  const dir = mkdtempSync(join(tmpdir(), "veza-coturn-"));
  const conf = join(dir, "turnserver.conf");
  writeFileSync(conf, execFileSync(VEZA_BIN, ["turn", "local-conf", "--port", String(port), "--secret", secret, "--realm", realm]));
  const child = spawn(process.env.TURNSERVER || "turnserver", ["-c", conf, "--pidfile", join(dir, "turnserver.pid")], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let log = "";
  child.stdout.on("data", (d) => { log += d; });
  child.stderr.on("data", (d) => { log += d; });
  const spawned = new Promise((done) => { child.once("spawn", () => done(null)); child.once("error", done); });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const exited = new Promise((r) => child.once("exit", r));
      const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const err = await spawned;
  if (err) { rmSync(dir, { recursive: true, force: true }); throw new Error(`cannot run turnserver: ${err.message}`); }
  const deadline = Date.now() + 10_000;
  while (!(await stunAnswers(port, 300))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`coturn did not answer STUN on 127.0.0.1:${port} (exit ${child.exitCode}):\n${log}`);
    }
  }
  return { port, conf, log: () => log, stop };
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
