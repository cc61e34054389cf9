// Audio over QUIC in Chromium: the web client's moq-lite-06 over WebTransport (web/moq.js),
// reaching the server's self-signed endpoint through serverCertificateHashes.
//
// 1. The codec writes the bytes of the Rust codec's vectors (moq/src/message), in Node.
// 2. `veza broadcast` publishes a 1 kHz tone; a page of the web client, transport "QUIC",
//    discovers it by announcement, decodes it with AudioDecoder and plays it: the test hears
//    the tone and counts the packets.
// 3. A page publishes its fake microphone over WebTransport (AudioEncoder); a WebRTC page hears it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as moq from "../../web/moq.js";
import {
  VEZA_BIN, assertHears, cleanups, enterRoomInPage, joinOverApi, launchBrowser, listen, registerInPage,
  sessionOf, setRole, startVeza, tempDir, toneFile,
} from "./support.mjs";

const hex = (bytes) => Buffer.from(bytes).toString("hex");
const encode = (message, value) => { const w = new moq.Writer(); message.encode(w, value); return hex(w.finish()); };
const decode = (message, wire) => moq.decodeAll(Buffer.from(wire, "hex"), message.decode);

test("moq.js writes the Rust codec's bytes and rejects malformed input", () => {
  // Vectors from moq/src/message/*.rs and moq/src/coding.rs.
  assert.equal(encode(moq.Setup, { params: [] }), "0100");
  assert.equal(encode(moq.AnnounceRequest, { prefix: "room/" }), "0605726f6f6d2f");
  assert.equal(encode(moq.AnnounceOk, { hopId: 42, activeCount: 3 }), "022a03");
  assert.equal(encode(moq.Announce, { type: "start", suffix: "cam", hops: [7, 300], warmCost: 12, coldCost: 30 }), "000a0363616d0207412c0c1e");
  assert.equal(encode(moq.Announce, { type: "end", id: 42 }), "01012a");
  const subscribe = { id: 1, broadcast: "room", track: "video", priority: 3, maxLatencyMs: 250, groupStart: 7, groupEnd: 9, frameStart: 4, frameEnd: 2 };
  assert.equal(encode(moq.Subscribe, subscribe), "130104726f6f6d05766964656f0340fa070a0403");
  assert.deepEqual(decode(moq.Subscribe, "130104726f6f6d05766964656f0340fa070a0403"), subscribe);
  assert.equal(encode(moq.SubscribeUpdate, { priority: 255, maxLatencyMs: 16_384, groupStart: 100 }), "0aff800040004064000000");
  assert.equal(encode(moq.SubscribeReply, { type: "ok", group: 5 }), "000105");
  assert.equal(encode(moq.SubscribeReply, { type: "drop", start: 1, end: 3, code: 64 }), "020401034040");
  assert.equal(encode(moq.Group, { subscribeId: 5, sequence: 1 << 20 }), "06058010000000");
  for (const [delta, len, head] of [[0, 10, "000a"], [33_333, 300, "8001046a412c"], [-1000, 0, "47cf00"], [-1, 1, "0101"]]) {
    const w = new moq.Writer();
    moq.Frame.encode(w, { timestampDelta: delta, payload: new Uint8Array(len) });
    assert.equal(hex(w.finish().subarray(0, head.length / 2)), head);
    assert.equal(moq.decodeAll(w.finish(), moq.Frame.decode).timestampDelta, delta);
  }
  assert.equal(decode({ decode: (c) => c.varint() }, "c2197c5eff14e88c"), 151_288_809_941_952_652n);
  assert.equal(decode({ decode: (c) => c.varint() }, "9d7f3e7d"), 494_878_333);
  // Malformed: truncated is SHORT (wait for more), the rest a ProtocolError with a reason.
  assert.throws(() => decode(moq.AnnounceRequest, "0302"), (e) => e === moq.SHORT);
  assert.throws(() => decode(moq.AnnounceRequest, "0201ff"), /not UTF-8/);
  assert.throws(() => decode(moq.AnnounceOk, "032a0300"), /trailing bytes/);
  assert.throws(() => decode(moq.AnnounceOk, "012a"), /shorter than its fields/);
  assert.throws(() => decode(moq.AnnounceOk, "8001000100"), /too large/);
  assert.throws(() => decode(moq.TrackInfo, "03000000"), /timescale is 0/);
  assert.throws(() => decode(moq.SubscribeReply, "0300"), /unknown subscribe reply type 3/);
  assert.throws(() => decode(moq.Setup, "050209000900"), /duplicate SETUP parameter/);
  assert.deepEqual(decode(moq.Announce, "0402aabb"), { type: "unknown", kind: 4 });
});

/** Runs `veza broadcast` looping `wav` into the room; stopped at clean-up. */
function broadcaster(cleanup, base, roomId, token, wav) {
  const child = spawn(VEZA_BIN, ["broadcast", wav, "--server", base, "--room", roomId, "--token", token, "--loop"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr.on("data", (d) => { log += d; });
  cleanup.add(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
  });
  return { log: () => log, child };
}

/** Prints the page's console and errors (they explain a failed session). */
function echoConsole(page, name) {
  page.on("console", (m) => { if (m.type() !== "debug") console.log(`[${name}] ${m.type()}: ${m.text()}`); });
  page.on("pageerror", (e) => console.log(`[${name}] page error: ${e.message}`));
}

/**
 * In a page of the web client on transport "QUIC": waits for a playing broadcast, then for `ms`
 * measures its dominant frequency (FFT peak of the player's output) and the packets received.
 */
async function listenOverQuic(page, ms) {
  return page.evaluate(async (ms) => {
    const deadline = Date.now() + 20_000;
    const media = () => window.veza.call?.media;
    const playing = () => [...(media()?.players.values() ?? [])].find((p) => p.played > 10);
    while (!playing()) {
      if (Date.now() > deadline) {
        const m = media();
        throw new Error(`nothing plays over QUIC: ${document.querySelector("#media-status").textContent}; `
          + `${document.querySelector("#room-error").textContent}; players ${JSON.stringify([...(m?.players.values() ?? [])].map((p) => ({ path: p.path, packets: p.packets, played: p.played })))}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    const player = playing();
    const ctx = media().ctx;
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 8192;
    player.output.connect(analyser);
    const before = player.packets;
    const late = player.late;
    const peaks = new Map();
    const started = Date.now();
    while (Date.now() - started < ms) {
      await new Promise((r) => setTimeout(r, 250));
      const bins = new Float32Array(analyser.frequencyBinCount);
      analyser.getFloatFrequencyData(bins);
      let best = 1;
      for (let b = 1; b < bins.length; b++) if (bins[b] > bins[best]) best = b;
      if (bins[best] > -90) {
        const hz = Math.round((best * ctx.sampleRate) / analyser.fftSize);
        peaks.set(hz, (peaks.get(hz) || 0) + 1);
      }
    }
    const seconds = (Date.now() - started) / 1000;
    player.output.disconnect(analyser);
    return {
      binHz: ctx.sampleRate / analyser.fftSize,
      frequency: [...peaks.entries()].sort((x, y) => y[1] - x[1])[0]?.[0] ?? 0,
      packets: player.packets - before,
      late: player.late - late,
      seconds,
      connectMs: Math.round(media().connectMs),
      protocol: media().session.protocol,
      broadcast: player.path,
    };
  }, ms);
}

test("a browser hears a `veza broadcast` tone over WebTransport", { timeout: 120_000 }, async () => {
  const cleanup = cleanups();
  let veza;
  let cli;
  try {
    const dir = tempDir(cleanup, "veza-wt-");
    veza = await startVeza();
    cleanup.add(() => veza.stop());
    const browser = await launchBrowser(null);
    cleanup.add(() => browser.close());
    const page = await browser.newPage();
    echoConsole(page, "listener");
    await registerInPage(page, veza.base, "studio");
    // The owner's media token for the command-line broadcaster.
    const { access } = await sessionOf(page);
    const room = await fetch(`${veza.base}/api/v1/rooms`, {
      method: "POST",
      headers: { authorization: `Bearer ${access}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "Tone", visibility: "public" }),
    }).then((r) => r.json());
    const join = await joinOverApi(veza.base, room.id, access);
    assert.ok(join.urls.quic, "the join response names the QUIC endpoint");
    cli = broadcaster(cleanup, veza.base, room.id, join.token, toneFile(dir, 1000, 10));

    assert.equal(await page.evaluate(() => !document.querySelector("#transport-choice").hidden), true, "the transport choice is shown");
    await enterRoomInPage(page, veza.base, room.id, "?transport=quic");
    const heard = await listenOverQuic(page, 3000);
    const rate = heard.packets / heard.seconds;
    console.log(`over WebTransport: ${heard.frequency} Hz (bin ${heard.binHz.toFixed(2)} Hz), ${rate.toFixed(1)} packets/s `
      + `(${heard.late} late), connected in ${heard.connectMs} ms, protocol "${heard.protocol}", broadcast ${heard.broadcast}`);
    assert.ok(Math.abs(heard.frequency - 1000) <= 2 * heard.binHz, `heard ${heard.frequency} Hz, want 1000`);
    assert.ok(rate >= 40, `${rate.toFixed(1)} packets/s over 3 s; want ≥ 40`);
    assert.match(await page.textContent("#media-status"), /^QUIC connected/);

    // A bad token: the CONNECT is refused, and the session fails with a clear error, not a hang.
    const refused = await page.evaluate(async ({ url, hash }) => {
      const { Session } = await import("/moq.js");
      const started = Date.now();
      try {
        await Session.connect(`${url}?jwt=not-a-token`, { certificateHash: hash, timeoutMs: 5000 });
        return { ok: true };
      } catch (err) {
        return { ok: false, message: err.message, ms: Date.now() - started };
      }
    }, { url: join.urls.quic, hash: (await fetch(`${veza.base}/api/v1/quic/certificate-hash`).then((r) => r.json())).value });
    console.log("a bad token:", refused);
    assert.equal(refused.ok, false, "a bad token is refused");
    assert.ok(refused.ms < 5000, `refused in ${refused.ms} ms, not by the timeout`);
  } catch (err) {
    if (veza) console.error(veza.log());
    if (cli) console.error("veza broadcast:", cli.log());
    throw err;
  } finally {
    await cleanup.run();
  }
});

test("a browser publishes its microphone over WebTransport and a WebRTC page hears it", { timeout: 120_000 }, async () => {
  const cleanup = cleanups();
  let veza;
  try {
    const dir = tempDir(cleanup, "veza-wt-");
    veza = await startVeza();
    cleanup.add(() => veza.stop());
    const [quic, rtc] = await Promise.all([launchBrowser(toneFile(dir, 660)), launchBrowser(toneFile(dir, 330))]);
    cleanup.add(() => quic.close());
    cleanup.add(() => rtc.close());
    const [speaker, hearer] = await Promise.all([quic.newPage(), rtc.newPage()]);
    echoConsole(speaker, "quic");
    await registerInPage(speaker, veza.base, "speaker");
    await registerInPage(hearer, veza.base, "hearer");
    // The hearer owns the room; the QUIC speaker becomes a speaker in it.
    const { access } = await sessionOf(hearer);
    const room = await fetch(`${veza.base}/api/v1/rooms`, {
      method: "POST",
      headers: { authorization: `Bearer ${access}`, "content-type": "application/json" },
      body: JSON.stringify({ name: "Mixed", visibility: "public" }),
    }).then((r) => r.json());
    await setRole(veza.base, room.id, access, (await sessionOf(speaker)).id, "speaker");
    await enterRoomInPage(speaker, veza.base, room.id, "?transport=quic");
    await speaker.waitForFunction(() => (window.veza.call.media?.broadcast?.subscribers ?? 0) > 0, null, { timeout: 20_000 })
      .catch(async (err) => {
        throw new Error(`the server never subscribed to the QUIC microphone: ${await speaker.textContent("#media-status")} ${await speaker.textContent("#room-error")}\n${err.message}`);
      });
    await enterRoomInPage(hearer, veza.base, room.id);
    const heard = await listen(hearer, 3000);
    const sent = await speaker.evaluate(() => ({ sent: window.veza.call.media.broadcast.sent, dropped: window.veza.call.media.broadcast.dropped }));
    console.log("the WebRTC page heard the QUIC microphone:", heard, "groups sent", sent);
    assertHears(heard, [660]);

    // Chat and presence stay on signaling and the data channel: both pages see both people and
    // a line typed on the QUIC page.
    await Promise.all([speaker, hearer].map((page) => page.waitForFunction(() => document.querySelectorAll("#people li").length === 2, null, { timeout: 10_000 })));
    await speaker.fill("#chat-form input[name=text]", "hello over quic");
    await speaker.click("#chat-form button");
    await hearer.waitForSelector("#messages li:has-text('hello over quic')", { timeout: 5000 });
  } catch (err) {
    if (veza) console.error(veza.log());
    throw err;
  } finally {
    await cleanup.run();
  }
});
