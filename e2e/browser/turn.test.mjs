// Media through a real coturn: the listening browser may use relay candidates only
// (`?relay=1` sets iceTransportPolicy "relay"), so its audio must come through TURN on 127.0.0.1
// with credentials minted by veza from the shared secret.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  assertHears, cleanups, createRoomInPage, enterRoomInPage, freePort, launchBrowser, listen,
  selectedCandidatePair, sessionOf, setRole, startCoturn, startVeza, tempDir, toneFile, usersInBrowsers,
} from "./support.mjs";

const turnserver = process.env.TURNSERVER || "turnserver";
let skip = false;
try {
  execFileSync(turnserver, ["--version"], { stdio: "ignore" });
} catch {
  skip = `no coturn (${turnserver}); install it with apt-get install coturn`;
}

test("a relay-only browser hears the room through coturn", { timeout: 120_000, skip }, async () => {
  const cleanup = cleanups();
  let veza;
  let turn;
  try {
    const dir = tempDir(cleanup, "veza-turn-");
    const secret = "e2e-turn-secret-0123456789";
    turn = await startCoturn({ port: await freePort(), secret, realm: "veza.test" });
    cleanup.add(() => turn.stop());
    veza = await startVeza({
      VEZA_TURN_URLS: `turn:127.0.0.1:${turn.port}?transport=udp`,
      VEZA_TURN_SECRET: secret,
    });
    cleanup.add(() => veza.stop());
    const [a, b] = await Promise.all([launchBrowser(toneFile(dir, 440)), launchBrowser(toneFile(dir, 880))]);
    cleanup.add(() => a.close());
    cleanup.add(() => b.close());
    const [pageA, pageB] = await usersInBrowsers(veza.base, [a, b], ["alice", "bob"]);

    // Alice (all candidates) owns the room; Bob, a speaker, may only use relay candidates.
    const roomId = await createRoomInPage(pageA, "Relayed");
    await setRole(veza.base, roomId, (await sessionOf(pageA)).access, (await sessionOf(pageB)).id, "speaker");
    await enterRoomInPage(pageB, veza.base, roomId, "?relay=1");
    const bobConfig = await pageB.evaluate(() => {
      const c = window.veza.call.pc.getConfiguration();
      return { iceTransportPolicy: c.iceTransportPolicy, urls: c.iceServers.flatMap((s) => s.urls) };
    });
    console.log("bob's RTCConfiguration", bobConfig);
    assert.equal(bobConfig.iceTransportPolicy, "relay");
    assert.ok(bobConfig.urls.includes(`turn:127.0.0.1:${turn.port}?transport=udp`), "the join response hands out the TURN URL");

    const [heardByB, heardByA] = await Promise.all([listen(pageB, 5000), listen(pageA, 5000)]);
    const [pairB, pairA] = await Promise.all([selectedCandidatePair(pageB), selectedCandidatePair(pageA)]);
    console.log("bob (relay only) heard", heardByB, "over", pairB);
    console.log("alice heard", heardByA, "over", pairA);
    assertHears(heardByB, [440], { absent: [880] });
    assertHears(heardByA, [880], { absent: [440] });
    assert.equal(pairB?.local?.type, "local-candidate");
    assert.equal(pairB.local.candidateType, "relay", "bob's selected pair uses a relayed local candidate");
    // coturn relayed it for Bob, under a credential veza minted for his user id: it logged his
    // allocation and the permissions for the SFU's addresses.
    const bobId = (await sessionOf(pageB)).id;
    const relayed = turn.log().split("\n").filter((l) => /ALLOCATE processed|CREATE_PERMISSION processed|CHANNEL_BIND processed|peer .* lifetime|denied|Forbidden|error 403/i.test(l));
    console.log("coturn's log of the relay:\n" + relayed.join("\n"));
    assert.ok(relayed.some((l) => l.includes(`:${bobId}>: incoming packet ALLOCATE processed, success`)), "coturn allocated for Bob");
    assert.ok(relayed.some((l) => l.includes(`:${bobId}>: incoming packet CREATE_PERMISSION processed, success`)), "coturn let Bob's relay reach the SFU");
  } catch (err) {
    if (veza) console.error("veza log:\n" + veza.log());
    if (turn) console.error("coturn log:\n" + turn.log());
    throw err;
  } finally {
    await cleanup.run();
  }
});
