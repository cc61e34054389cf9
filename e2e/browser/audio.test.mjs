// Two real Chromium browsers in one room through the real veza binary: each hears the other's
// tone and not its own, at the full packet rate; chat typed in one shows up in the other.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  assertHears, cleanups, launchBrowser, listen, roomWithSpeakers, sessionOf, startVeza, tempDir, toneFile, usersInBrowsers,
} from "./support.mjs";

test("two browsers hear each other's tone and not their own", { timeout: 120_000 }, async () => {
  const cleanup = cleanups();
  let veza;
  try {
    const dir = tempDir(cleanup, "veza-tones-");
    veza = await startVeza();
    cleanup.add(() => veza.stop());
    const [a, b] = await Promise.all([launchBrowser(toneFile(dir, 440)), launchBrowser(toneFile(dir, 880))]);
    cleanup.add(() => a.close());
    cleanup.add(() => b.close());
    const [pageA, pageB] = await usersInBrowsers(veza.base, [a, b], ["alice", "bob"]);

    // Alice creates a public room; Bob becomes a speaker and joins it.
    const roomId = await roomWithSpeakers(veza.base, [pageA, pageB]);
    const alice = (await sessionOf(pageA)).access;

    const [heardByA, heardByB] = await Promise.all([listen(pageA, 5000), listen(pageB, 5000)]);
    console.log("alice heard", heardByA, "bob heard", heardByB);
    for (const [heard, want, mine] of [[heardByA, 880, 440], [heardByB, 440, 880]]) {
      assert.equal(heard.frequencies.length, 1, "one remote stream: nobody hears themselves");
      assertHears(heard, [want], { absent: [mine] });
    }

    // Both tones are loud: the audio levels they carry make both speakers "speaking".
    for (const page of [pageA, pageB]) {
      await page.waitForFunction(() => document.querySelectorAll("#people li.speaking").length === 2, null, { timeout: 5000 });
    }
    // Browsers' RTCP stats are fed by the server's reports: Alice's sender knows its round trip.
    const rtt = await pageA.evaluate(async () => {
      let rtt;
      (await window.veza.call.pc.getStats()).forEach((s) => {
        if (s.type === "remote-inbound-rtp" && s.kind === "audio") rtt = s.roundTripTime;
      });
      return rtt;
    });
    console.log("alice's round-trip time from RTCP:", rtt);
    assert.ok(typeof rtt === "number" && rtt >= 0 && rtt < 1, `roundTripTime ${rtt}`);

    // Chat: typed by Alice, shown to Bob, stored in the history.
    await pageA.fill("#chat-form input[name=text]", "hello from alice");
    await pageA.click("#chat-form button");
    await pageB.waitForSelector("#messages li:has-text('hello from alice')", { timeout: 5000 });
    const history = await fetch(`${veza.base}/api/v1/rooms/${roomId}/messages?limit=10`, {
      headers: { authorization: `Bearer ${alice}` },
    }).then((r) => r.json());
    assert.ok(history.messages.some((m) => m.text === "hello from alice" && m.username === "alice"));
    // Bad chat frames get a clear error on the data channel and disturb nobody.
    await pageA.evaluate(() => window.veza.call.chat.send("x".repeat(20_000)));
    await pageA.waitForFunction(() => document.querySelector("#room-error").textContent.includes("at most"), null, { timeout: 5000 });
    await pageA.evaluate(() => window.veza.call.chat.send("{not json"));
    await pageA.waitForFunction(() => document.querySelector("#room-error").textContent.includes("not a chat request"), null, { timeout: 5000 });
    await pageA.fill("#chat-form input[name=text]", "still here");
    await pageA.click("#chat-form button");
    await pageB.waitForSelector("#messages li:has-text('still here')", { timeout: 5000 });

    // Bob's signaling socket drops: his client reconnects with the same token, the server
    // restarts ICE, and Alice never sees him leave and keeps hearing him.
    await pageB.evaluate(() => window.veza.call.ws.close());
    await pageB.waitForFunction(() => window.veza.call.ws.readyState === WebSocket.OPEN && window.veza.call.dropped === null, null, { timeout: 10_000 });
    const afterReconnect = await listen(pageA, 3000);
    console.log("alice heard after bob reconnected", afterReconnect);
    assertHears(afterReconnect, [880], { absent: [440] });
    assert.equal(await pageA.locator("#people li").count(), 2, "bob never left alice's list");

    // Reloading Bob's page shows the history.
    await pageB.reload();
    await pageB.waitForSelector("#messages li:has-text('hello from alice')", { timeout: 10_000 });
  } catch (err) {
    if (veza) console.error(veza.log());
    throw err;
  } finally {
    await cleanup.run();
  }
});
