// Two real Chromium browsers in one room through the real veza binary: each hears the other's
// tone and not its own, at the full packet rate; chat typed in one shows up in the other.

import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launchBrowser, listen, registerInPage, startVeza, toneFile } from "./support.mjs";

test("two browsers hear each other's tone and not their own", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), "veza-tones-"));
  const veza = await startVeza();
  const browsers = [];
  try {
    const [a, b] = await Promise.all([launchBrowser(toneFile(dir, 440)), launchBrowser(toneFile(dir, 880))]);
    browsers.push(a, b);
    const pageA = await a.newPage();
    const pageB = await b.newPage();
    await registerInPage(pageA, veza.base, "alice");
    await registerInPage(pageB, veza.base, "bob");

    // Alice creates a public room; Bob joins it from the lobby and becomes a speaker.
    await pageA.fill("#create-form input[name=name]", "Tones");
    await pageA.click("#create-form button");
    await pageA.waitForSelector("#room:not([hidden])");
    const roomId = new URLSearchParams(new URL(pageA.url()).hash.slice(1)).get("room");
    const bobId = await pageB.evaluate(() => JSON.parse(sessionStorage.getItem("veza.user")).id);
    const alice = await pageA.evaluate(() => sessionStorage.getItem("veza.access"));
    const promoted = await fetch(`${veza.base}/api/v1/rooms/${roomId}/members/${bobId}`, {
      method: "PUT",
      headers: { authorization: `Bearer ${alice}`, "content-type": "application/json" },
      body: JSON.stringify({ role: "speaker" }),
    });
    assert.equal(promoted.status, 200);
    await pageB.goto(`${veza.base}/#room=${roomId}`);
    await pageB.waitForSelector("#room:not([hidden])");

    const [heardByA, heardByB] = await Promise.all([listen(pageA, 5000), listen(pageB, 5000)]);
    console.log("alice heard", heardByA, "bob heard", heardByB);
    for (const [heard, want, mine] of [[heardByA, 880, 440], [heardByB, 440, 880]]) {
      assert.equal(heard.frequencies.length, 1, "one remote stream: nobody hears themselves");
      assert.ok(Math.abs(heard.frequencies[0] - want) <= heard.binHz, `heard ${heard.frequencies[0]} Hz, want ${want}`);
      assert.ok(Math.abs(heard.frequencies[0] - mine) > heard.binHz, "not their own tone");
      const rate = heard.packets / heard.seconds;
      assert.ok(rate >= 45, `${rate.toFixed(1)} packets/s received; want ≥ 90 % of 50/s`);
    }

    // Chat: typed by Alice, shown to Bob, stored in the history.
    await pageA.fill("#chat-form input[name=text]", "hello from alice");
    await pageA.click("#chat-form button");
    await pageB.waitForSelector("#messages li:has-text('hello from alice')", { timeout: 5000 });
    const history = await fetch(`${veza.base}/api/v1/rooms/${roomId}/messages?limit=10`, {
      headers: { authorization: `Bearer ${alice}` },
    }).then((r) => r.json());
    assert.ok(history.messages.some((m) => m.text === "hello from alice" && m.username === "alice"));
    // Reloading Bob's page shows the history.
    await pageB.reload();
    await pageB.waitForSelector("#messages li:has-text('hello from alice')", { timeout: 10_000 });
  } catch (err) {
    console.error(veza.log());
    throw err;
  } finally {
    await Promise.all(browsers.map((b) => b.close()));
    await veza.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
