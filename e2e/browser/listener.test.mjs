// A plain listener: Carol joins Alice's public room without being a member, so she has the
// listener role and no publish grant. She hears Alice; nothing of hers reaches the room, her
// client offers no mute, and the server refuses her `publish` on the signaling socket.

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  assertHears, cleanups, createRoomInPage, enterRoomInPage, joinOverApi, launchBrowser, listen, packetsSent,
  peopleInPage, sessionOf, signalingSocket, startVeza, tempDir, toneFile, usersInBrowsers, waitForPeople,
} from "./support.mjs";

test("a listener hears the room and cannot publish", { timeout: 120_000 }, async () => {
  const cleanup = cleanups();
  let veza;
  try {
    const dir = tempDir(cleanup, "veza-listener-");
    veza = await startVeza();
    cleanup.add(() => veza.stop());
    // Carol gets a tone too: if anything of hers were sent, it would be audible.
    const [a, c] = await Promise.all([launchBrowser(toneFile(dir, 440)), launchBrowser(toneFile(dir, 880))]);
    cleanup.add(() => a.close());
    cleanup.add(() => c.close());
    const [pageA, pageC] = await usersInBrowsers(veza.base, [a, c], ["alice", "carol"]);

    const roomId = await createRoomInPage(pageA, "Lecture");
    await enterRoomInPage(pageC, veza.base, roomId);
    const carolJoin = await pageC.evaluate(() => window.veza.call.join);
    console.log("carol's join: role", carolJoin.role, "grants", carolJoin.grants);
    assert.equal(carolJoin.role, "listener");
    assert.equal(carolJoin.grants.can_publish, false);
    assert.equal(carolJoin.grants.can_subscribe, true);
    await waitForPeople([pageA, pageC], 2);
    console.log("alice's people", await peopleInPage(pageA));

    // Carol hears Alice's tone at the full rate.
    const heard = await listen(pageC, 5000);
    console.log("carol heard", heard);
    assert.equal(heard.frequencies.length, 1);
    assertHears(heard, [440], { absent: [880] });

    // Alice gets no stream from Carol, even after 5 s; Carol sends nothing.
    await pageA.waitForFunction(() => window.veza.call?.pc.connectionState === "connected", null, { timeout: 10_000 });
    await pageA.waitForTimeout(5000);
    const aliceStreams = await pageA.$$eval("#audio audio", (els) => els.length);
    const carolSent = await packetsSent(pageC);
    const carolSenders = await pageC.evaluate(() => window.veza.call.pc.getSenders().filter((s) => s.track).length);
    console.log("alice's remote audio elements", aliceStreams, "carol's audio packets sent", carolSent, "carol's senders with a track", carolSenders);
    assert.equal(aliceStreams, 0, "Alice must receive no stream from a listener");
    assert.equal(carolSent, 0, "a listener's peer connection sends no audio");
    assert.equal(carolSenders, 0, "a listener's client attaches no microphone");

    // Carol's page offers no mute: the button stays disabled; her entry says listener.
    assert.equal(await pageC.isDisabled("#mute"), true, "mute button disabled for a listener");
    const carolEntry = (await peopleInPage(pageC)).find((p) => p.id === carolJoin.participant_id);
    assert.match(carolEntry?.text ?? "", /carol \(you\) · listener/);

    // A raw signaling socket with a media token of Carol's: `publish` is refused.
    const join = await joinOverApi(veza.base, roomId, (await sessionOf(pageC)).access);
    assert.equal(join.role, "listener");
    const ws = await signalingSocket(join);
    cleanup.add(() => ws.close());
    const joined = await ws.waitFor((m) => m.type === "joined");
    assert.equal(joined.grants.can_publish, false);
    const offer = await ws.waitFor((m) => m.type === "offer");
    const recvOnlyAudio = offer.sdp.split(/\r?\nm=/).slice(1).filter((s) => s.startsWith("audio") && /\r?\na=recvonly/.test(s));
    assert.equal(recvOnlyAudio.length, 0, "no audio section for a listener's microphone in the offer");
    ws.send({ type: "publish" });
    const refused = await ws.waitFor((m) => m.type === "error");
    console.log("raw socket: message sequence", ws.messages.map((m) => m.type), "error", refused);
    assert.equal(refused.code, "publish_not_allowed");
  } catch (err) {
    if (veza) console.error(veza.log());
    throw err;
  } finally {
    await cleanup.run();
  }
});
