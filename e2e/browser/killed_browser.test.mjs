// A browser that dies abruptly (SIGKILL of its whole process group, no goodbye on any socket)
// leaves the people list of everyone else within 10 s, and the others go on hearing each other.

import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import {
  assertHears, cleanups, launchBrowser, launchKillableBrowser, listen, peopleInPage, roomWithSpeakers, startVeza,
  tempDir, toneFile, usersInBrowsers, waitForPeople,
} from "./support.mjs";

/** How long others may see a killed participant (docs/protocol.md, "Reconnecting"). */
const LEAVE_WITHIN_MS = 10_000;

/** Processes of process group `pgid` that are still running (not zombies waiting to be reaped). */
function liveProcessesInGroup(pgid) {
  let live = 0;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      // /proc/<pid>/stat: "pid (comm) state ppid pgrp …"; comm may hold spaces and parentheses.
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(pgrp) === pgid && state !== "Z" && state !== "X") live++;
    } catch { /* exited meanwhile */ }
  }
  return live;
}

test("a killed browser leaves the room within 10 s; the others still hear each other", { timeout: 150_000 }, async () => {
  const cleanup = cleanups();
  let veza;
  try {
    const dir = tempDir(cleanup, "veza-killed-");
    veza = await startVeza();
    cleanup.add(() => veza.stop());
    const [a, b, killable] = await Promise.all([
      launchBrowser(toneFile(dir, 440)),
      launchBrowser(toneFile(dir, 880)),
      launchKillableBrowser(toneFile(dir, 660)),
    ]);
    cleanup.add(() => a.close());
    cleanup.add(() => b.close());
    cleanup.add(() => killable.close());
    const [pageA, pageB, pageC] = await usersInBrowsers(veza.base, [a, b, killable.browser], ["alice", "bob", "carol"]);
    await roomWithSpeakers(veza.base, [pageA, pageB, pageC]);

    // All connected: three people everywhere, each hears the two others' tones and not its own.
    await waitForPeople([pageA, pageB, pageC], 3);
    const heard = await Promise.all([pageA, pageB, pageC].map((p) => listen(p, 4000, 2)));
    console.log("before the kill: alice heard", heard[0], "bob heard", heard[1], "carol heard", heard[2]);
    assertHears(heard[0], [880, 660], { absent: [440] });
    assertHears(heard[1], [440, 660], { absent: [880] });
    assertHears(heard[2], [440, 880], { absent: [660] });

    // Kill Carol's browser and time how long Alice and Bob still list her: each page notes when
    // `participant_left` for her arrives on its signaling socket and when her entry leaves #people.
    const carol = await pageC.evaluate(() => window.veza.call.me);
    const watch = (page) => page.evaluate((id) => {
      window.carolLeft = {};
      window.veza.call.ws.addEventListener("message", (e) => {
        const m = JSON.parse(e.data);
        if (m.type === "participant_left" && m.participant_id === id) window.carolLeft.message ??= Date.now();
      });
      new MutationObserver(() => {
        if (!document.querySelector(`#people li[data-participant="${id}"]`)) window.carolLeft.list ??= Date.now();
      }).observe(document.querySelector("#people"), { childList: true });
    }, carol);
    await Promise.all([watch(pageA), watch(pageB)]);
    const killedAt = Date.now();
    killable.kill();
    const groupDead = (async () => {
      while (liveProcessesInGroup(killable.pid) > 0) await new Promise((r) => setTimeout(r, 2));
      return Date.now() - killedAt;
    })();
    const gone = async (page) => {
      const at = await page.waitForFunction(() => window.carolLeft.list && window.carolLeft, null, { timeout: 45_000 });
      const { message, list } = await at.jsonValue();
      return { message: message - killedAt, list: list - killedAt };
    };
    const [goneForA, goneForB] = await Promise.all([gone(pageA), gone(pageB)]);
    console.log(`carol killed: all her browser's processes had exited by ${await groupDead} ms (upper bound: /proc polling); ` +
      `participant_left reached alice after ${goneForA.message} ms, bob after ${goneForB.message} ms; ` +
      `gone from alice's list after ${goneForA.list} ms, from bob's after ${goneForB.list} ms (limit ${LEAVE_WITHIN_MS} ms)`);
    console.log("alice's people", await peopleInPage(pageA));
    await waitForPeople([pageA, pageB], 2, 1000);

    // Alice and Bob still hear each other at the full rate (Carol's old stream is silent now).
    const after = await Promise.all([listen(pageA, 4000, 1), listen(pageB, 4000, 1)]);
    console.log("after the kill: alice heard", after[0], "bob heard", after[1]);
    assertHears(after[0], [880], { absent: [440, 660], streams: 1 });
    assertHears(after[1], [440], { absent: [880, 660], streams: 1 });

    // Checked last, so a late notice does not hide whether the room goes on working.
    const listed = Math.max(goneForA.list, goneForB.list);
    assert.ok(listed <= LEAVE_WITHIN_MS, `the killed participant stayed listed for ${listed} ms; want ≤ ${LEAVE_WITHIN_MS} ms`);
  } catch (err) {
    if (veza) console.error(veza.log());
    throw err;
  } finally {
    await cleanup.run();
  }
});
