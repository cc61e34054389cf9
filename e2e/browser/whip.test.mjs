// WHIP and WHEP with plain RTCPeerConnection code in Chromium, no Veza client: a page publishes
// its fake microphone with one RFC 9725 POST (a video section offered too, which the server
// refuses), and a WHEP player in another browser hears it.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchBrowser, startVeza, toneFile } from "./support.mjs";

async function api(base, method, path, token, body) {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { "content-type": "application/json", ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: body && JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

test("a WHIP publisher is heard by a WHEP player", { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "veza-whip-"));
  const veza = await startVeza();
  const browsers = [];
  try {
    const owner = await api(veza.base, "POST", "/api/v1/auth/register", null, { username: "studio", password: "correct horse battery" });
    const viewer = await api(veza.base, "POST", "/api/v1/auth/register", null, { username: "viewer", password: "correct horse battery" });
    const room = await api(veza.base, "POST", "/api/v1/rooms", owner.access_token, { name: "Broadcast", visibility: "public" });
    const publish = await api(veza.base, "POST", `/api/v1/rooms/${room.id}/join`, owner.access_token);
    const listen = await api(veza.base, "POST", `/api/v1/rooms/${room.id}/join`, viewer.access_token);
    assert.equal(listen.grants.can_publish, false);

    const [pub, play] = await Promise.all([launchBrowser(toneFile(dir, 440)), launchBrowser(null)]);
    browsers.push(pub, play);
    const pubPage = await pub.newPage();
    const playPage = await play.newPage();
    await Promise.all([pubPage.goto(veza.base), playPage.goto(veza.base)]);

    // The publisher: plain WHIP (RFC 9725) with an audio and a video section.
    const published = await pubPage.evaluate(async ({ url, token }) => {
      const pc = new RTCPeerConnection();
      window.pc = pc;
      const mic = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
      });
      pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendonly" });
      pc.addTransceiver("video", { direction: "sendonly" });
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      const answer = await res.text();
      if (res.status !== 201) return { status: res.status, answer };
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      return { status: res.status, location: res.headers.get("location"), answer };
    }, { url: publish.urls.whip, token: publish.token });
    assert.equal(published.status, 201, published.answer);
    assert.match(published.location, new RegExp(`^/whip/${room.id}/`));
    assert.match(published.answer, /m=video 0 /, "the video section is refused with port 0");
    assert.match(published.answer, /m=audio [1-9]/, "the audio section is accepted");
    assert.doesNotMatch(published.answer, /a=ice-options:trickle/, "no trickle: PATCH is not offered");

    // A second publish with the same token is a conflict.
    const again = await fetch(publish.urls.whip, {
      method: "POST", headers: { "content-type": "application/sdp", authorization: `Bearer ${publish.token}` },
      body: published.answer,
    });
    assert.equal(again.status, 409);
    // A listener's token cannot publish.
    const refused = await fetch(publish.urls.whip, {
      method: "POST", headers: { "content-type": "application/sdp", authorization: `Bearer ${listen.token}` },
      body: published.answer,
    });
    assert.equal(refused.status, 403);

    // The player: plain WHEP with one receive-only audio section.
    const heard = await playPage.evaluate(async ({ url, token }) => {
      const pc = new RTCPeerConnection();
      pc.addTransceiver("audio", { direction: "recvonly" });
      const track = new Promise((r) => { pc.ontrack = (e) => r(e.track); });
      await pc.setLocalDescription(await pc.createOffer());
      const res = await fetch(url, {
        method: "POST",
        headers: { "content-type": "application/sdp", authorization: `Bearer ${token}` },
        body: pc.localDescription.sdp,
      });
      if (res.status !== 201) return { status: res.status, body: await res.text() };
      await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = new MediaStream([await track]);
      document.body.append(audio);
      const deadline = Date.now() + 15_000;
      while (pc.connectionState !== "connected" && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      const ctx = new AudioContext();
      const analyser = ctx.createAnalyser();
      analyser.fftSize = 8192;
      ctx.createMediaStreamSource(audio.srcObject).connect(analyser);
      const packets = async () => {
        let n = 0;
        (await pc.getStats()).forEach((s) => { if (s.type === "inbound-rtp" && s.kind === "audio") n += s.packetsReceived; });
        return n;
      };
      const before = await packets();
      const started = Date.now();
      const peaks = new Map();
      while (Date.now() - started < 5000) {
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
      return {
        status: res.status,
        state: pc.connectionState,
        binHz: ctx.sampleRate / analyser.fftSize,
        rate: ((await packets()) - before) / ((Date.now() - started) / 1000),
        frequency: [...peaks.entries()].sort((a, b) => b[1] - a[1])[0]?.[0] ?? 0,
      };
    }, { url: listen.urls.whep, token: listen.token });
    console.log("WHEP player heard", heard);
    assert.equal(heard.status, 201, heard.body);
    assert.ok(Math.abs(heard.frequency - 440) <= heard.binHz, `heard ${heard.frequency} Hz, want 440`);
    assert.ok(heard.rate >= 45, `${heard.rate.toFixed(1)} packets/s`);

    // DELETE on the Location ends the publication; another token may not.
    const wrong = await fetch(`${veza.base}${published.location}`, { method: "DELETE", headers: { authorization: `Bearer ${listen.token}` } });
    assert.equal(wrong.status, 403);
    const ended = await fetch(`${veza.base}${published.location}`, { method: "DELETE", headers: { authorization: `Bearer ${publish.token}` } });
    assert.equal(ended.status, 200);
  } catch (err) {
    console.error(veza.log());
    throw err;
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await veza.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
