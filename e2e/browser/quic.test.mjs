// One room across transports: `veza broadcast` publishes over QUIC (moq-lite) and a browser
// hears it over WebRTC; a browser publishes over WebRTC and `veza listen` records it over
// QUIC. The Opus packets cross unchanged (no transcoding): only their framing changes.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import {
  VEZA_BIN, assertHears, cleanups, createRoomInPage, joinOverApi, launchBrowser, listen, readFileSync,
  registerInPage, sessionOf, setRole, startVeza, tempDir, toneFile,
} from "./support.mjs";

/** Registers `username` over the API; resolves to `{id, access}`. */
async function registerOverApi(base, username) {
  const res = await fetch(`${base}/api/v1/auth/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ username, password: "correct horse battery" }),
  });
  const body = await res.json();
  assert.equal(res.status, 201, JSON.stringify(body));
  return { id: body.user.id, access: body.access_token };
}

/** Runs `veza <args>`; resolves to `{code, stderr}` when it exits. */
function veza(cleanup, args) {
  const child = spawn(VEZA_BIN, args, { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, RUST_BACKTRACE: "0" } });
  let stderr = "";
  child.stderr.on("data", (d) => { stderr += d; });
  const exited = new Promise((done) => child.once("exit", (code) => done({ code, stderr })));
  cleanup.add(() => { if (child.exitCode === null) child.kill("SIGKILL"); });
  return { child, exited, stderr: () => stderr };
}

/** The first channel of a 16-bit PCM WAV file. */
function readWav(path) {
  const buf = readFileSync(path);
  const channels = buf.readUInt16LE(22);
  const rate = buf.readUInt32LE(24);
  const data = buf.indexOf("data") + 8;
  const samples = [];
  for (let at = data; at + 2 * channels <= buf.length; at += 2 * channels) samples.push(buf.readInt16LE(at) / 32768);
  return { rate, samples };
}

/** The strongest frequency between 100 and 3000 Hz in 5 Hz steps (Goertzel). */
function dominant(samples, rate) {
  let best = [0, 0];
  for (let f = 100; f <= 3000; f += 5) {
    const c = 2 * Math.cos((2 * Math.PI * f) / rate);
    let s1 = 0; let s2 = 0;
    for (const x of samples) { const s = x + c * s1 - s2; s2 = s1; s1 = s; }
    const power = s1 * s1 + s2 * s2 - c * s1 * s2;
    if (power > best[1]) best = [f, power];
  }
  return best[0];
}

test("a QUIC broadcaster is heard over WebRTC, a WebRTC speaker is recorded over QUIC", { timeout: 120_000 }, async () => {
  const cleanup = cleanups();
  let server;
  try {
    const dir = tempDir(cleanup, "veza-quic-");
    server = await startVeza();
    cleanup.add(() => server.stop());

    // A browser speaker (660 Hz) owns the room.
    const browser = await launchBrowser(toneFile(dir, 660));
    cleanup.add(() => browser.close());
    const page = await browser.newPage();
    await registerInPage(page, server.base, "alice");
    const roomId = await createRoomInPage(page, "Across transports");
    const owner = await sessionOf(page);

    // A broadcaster over QUIC with a speaker's token: 1 kHz, looped.
    const broadcaster = await registerOverApi(server.base, "radio");
    await setRole(server.base, roomId, owner.access, broadcaster.id, "speaker");
    const broadcastJoin = await joinOverApi(server.base, roomId, broadcaster.access);
    assert.match(broadcastJoin.urls.quic, /^https:\/\/127\.0\.0\.1:\d+\/room\//);
    const radio = veza(cleanup, [
      "broadcast", toneFile(dir, 1000, 5), "--loop", "--server", server.base, "--room", roomId, "--token", broadcastJoin.token,
    ]);

    // The browser hears the broadcaster over WebRTC: the right tone at the full packet rate.
    const heard = await listen(page, 4000);
    console.log("the browser heard the QUIC broadcaster:", heard);
    assertHears(heard, [1000], { absent: [660] });

    // A listener over QUIC records the room: the browser's 660 Hz and the radio's 1 kHz are
    // two broadcasts; `veza listen` follows the first one announced.
    const listener = await registerOverApi(server.base, "recorder");
    const listenJoin = await joinOverApi(server.base, roomId, listener.access);
    assert.equal(listenJoin.grants.can_publish, false);
    const out = join(dir, "room.wav");
    const recorder = veza(cleanup, [
      "listen", "--server", server.base, "--room", roomId, "--token", listenJoin.token, "--out", out, "--duration", "4",
    ]);
    const recorded = await recorder.exited;
    console.log("veza listen:", recorded.stderr.trim());
    assert.equal(recorded.code, 0, recorded.stderr);
    const { rate, samples } = readWav(out);
    assert.equal(rate, 48_000);
    const seconds = samples.length / rate;
    assert.ok(seconds > 3, `recorded ${seconds.toFixed(2)} s`);
    const middle = samples.slice(Math.floor(samples.length / 4), Math.floor(samples.length / 4) + rate);
    const frequency = dominant(middle, rate);
    console.log(`veza listen recorded ${seconds.toFixed(2)} s at ${frequency} Hz`);
    assert.ok([660, 1000].includes(frequency), `recorded ${frequency} Hz`);

    // `--broadcast` picks the browser's broadcast (its participant id) while the radio plays.
    const browserParticipant = await page.evaluate(() => window.veza.call.me);
    for (const [participant, want] of [[browserParticipant, 660], [broadcastJoin.participant_id, 1000]]) {
      const picked = join(dir, `picked-${want}.wav`);
      const run = veza(cleanup, [
        "listen", "--server", server.base, "--room", roomId, "--token", listenJoin.token, "--out", picked,
        "--duration", "3", "--broadcast", participant,
      ]);
      const result = await run.exited;
      assert.equal(result.code, 0, result.stderr);
      const wav = readWav(picked);
      const tone = dominant(wav.samples.slice(wav.rate, 2 * wav.rate), wav.rate);
      console.log(`veza listen --broadcast ${participant} recorded ${tone} Hz`);
      assert.equal(tone, want);
    }

    // With the broadcaster gone, the only broadcast left is the browser's: recorded at 660 Hz.
    // Ctrl-C ends a broadcast cleanly (exit 0), so its broadcast ends at once for everyone.
    radio.child.kill("SIGINT");
    const stopped = await radio.exited;
    assert.equal(stopped.code, 0, stopped.stderr);
    const out2 = join(dir, "browser.wav");
    const second = veza(cleanup, [
      "listen", "--server", server.base, "--room", roomId, "--token", listenJoin.token, "--out", out2, "--duration", "4",
    ]);
    const done = await second.exited;
    assert.equal(done.code, 0, done.stderr);
    const wav = readWav(out2);
    const browserTone = dominant(wav.samples.slice(wav.rate, 2 * wav.rate), wav.rate);
    console.log(`veza listen recorded the WebRTC speaker at ${browserTone} Hz over ${(wav.samples.length / wav.rate).toFixed(2)} s`);
    assert.equal(browserTone, 660);
  } catch (err) {
    if (server) console.error(server.log().slice(-5000));
    throw err;
  } finally {
    await cleanup.run();
  }
});
