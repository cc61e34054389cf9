// Veza's browser client: sign in, pick a room, talk, listen and chat.
// Plain ES module, no build step. The signaling protocol is in docs/protocol.md.
// Audio goes over WebRTC, or over QUIC (moq-lite on WebTransport, see moq.js) when chosen.

import { Session as MoqSession } from "./moq.js";

const $ = (sel) => document.querySelector(sel);
const show = (id) => {
  for (const s of ["auth", "lobby", "room"]) $(`#${s}`).hidden = s !== id;
};

// ---- API ---------------------------------------------------------------------------------

const session = {
  get access() { return sessionStorage.getItem("veza.access"); },
  get refresh() { return sessionStorage.getItem("veza.refresh"); },
  get user() { return JSON.parse(sessionStorage.getItem("veza.user") || "null"); },
  set(s) {
    sessionStorage.setItem("veza.access", s.access_token);
    sessionStorage.setItem("veza.refresh", s.refresh_token);
    sessionStorage.setItem("veza.user", JSON.stringify(s.user));
  },
  clear() { sessionStorage.clear(); },
};

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

async function api(method, path, body, retry = true) {
  const headers = {};
  if (body !== undefined) headers["content-type"] = "application/json";
  if (session.access) headers.authorization = `Bearer ${session.access}`;
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401 && retry && session.refresh && !path.startsWith("/api/v1/auth/")) {
    const r = await fetch("/api/v1/auth/refresh", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ refresh_token: session.refresh }),
    });
    if (r.ok) { session.set(await r.json()); return api(method, path, body, false); }
  }
  const text = await res.text();
  const json = text ? JSON.parse(text) : null;
  if (!res.ok) throw new ApiError(res.status, json);
  return json;
}

// ---- Sign in and lobby ----------------------------------------------------------------------

$("#auth-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  const action = e.submitter?.value || "login";
  try {
    session.set(await api("POST", `/api/v1/auth/${action}`, {
      username: form.get("username"), password: form.get("password"),
    }));
    $("#auth-error").textContent = "";
    await lobby();
  } catch (err) { $("#auth-error").textContent = err.message; }
});

$("#logout").addEventListener("click", async () => {
  try { await api("POST", "/api/v1/auth/logout", { refresh_token: session.refresh }); } catch { /* gone anyway */ }
  session.clear();
  location.hash = "";
  start();
});

async function lobby() {
  show("lobby");
  $("#who").textContent = session.user?.username || "";
  $("#logout").hidden = false;
  const list = $("#rooms");
  list.replaceChildren();
  try {
    const page = await api("GET", "/api/v1/rooms?limit=100");
    for (const room of page.rooms) {
      const li = document.createElement("li");
      const b = document.createElement("button");
      b.textContent = `Join ${room.name}`;
      b.dataset.room = room.id;
      b.addEventListener("click", () => { location.hash = `room=${room.id}`; });
      li.append(b, ` ${room.visibility}${room.my_role ? ` · ${room.my_role}` : ""}`);
      list.append(li);
    }
  } catch (err) { $("#lobby-error").textContent = err.message; }
}

$("#create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = new FormData(e.target);
  try {
    const room = await api("POST", "/api/v1/rooms", { name: form.get("name"), visibility: form.get("visibility") });
    location.hash = `room=${room.id}`;
  } catch (err) { $("#lobby-error").textContent = err.message; }
});

// ---- Transport choice ---------------------------------------------------------------------------

// QUIC needs WebTransport for the session and WebCodecs to encode and decode Opus.
const quicSupported = typeof WebTransport === "function" && typeof AudioEncoder === "function" && typeof AudioDecoder === "function";

/** "quic" or "webrtc": `?transport=` in the address, else the lobby's choice. */
function chosenTransport() {
  const wanted = new URLSearchParams(location.search).get("transport") || localStorage.getItem("veza.transport");
  return quicSupported && wanted === "quic" ? "quic" : "webrtc";
}

if (quicSupported) {
  $("#transport-choice").hidden = false;
  $("#transport").value = chosenTransport();
  $("#transport").addEventListener("change", (e) => localStorage.setItem("veza.transport", e.target.value));
}

// ---- The room -------------------------------------------------------------------------------

let call = null;

class Call {
  constructor(roomId, join, seen = new Set()) {
    this.roomId = roomId;
    this.join = join;
    this.people = new Map();
    this.seen = seen;
    this.micSent = false;
    this.transport = chosenTransport();
    // Over QUIC the peer connection only carries the chat data channel; audio goes to `media`.
    if (this.transport === "quic") this.media = new QuicMedia(roomId, join);
    this.pc = new RTCPeerConnection({
      iceServers: join.ice_servers,
      iceTransportPolicy: new URLSearchParams(location.search).get("relay") ? "relay" : "all",
    });
    this.pc.ontrack = (e) => {
      if (this.media) return;
      const audio = document.createElement("audio");
      audio.autoplay = true;
      audio.srcObject = new MediaStream([e.track]);
      audio.dataset.mid = e.transceiver.mid;
      $("#audio").append(audio);
    };
    this.pc.ondatachannel = (e) => { if (e.channel.label === "chat") this.useChannel(e.channel); };
    this.pc.onconnectionstatechange = () => { $("#status").textContent = this.pc.connectionState; };
    this.connect();
  }

  // The WebSocket carries signaling only; if it drops, the media goes on and a new socket with
  // the same token resumes the participant (the server restarts ICE) for up to 30 s. A node that
  // refuses three sockets in a row is gone (or draining): the call joins the room again through
  // the API, which places it on another node; so does a `reconnect` message.
  connect() {
    const ws = new WebSocket(`${this.join.urls.signaling}?token=${encodeURIComponent(this.join.token)}`);
    this.ws = ws;
    this.dropped ??= null;
    this.failedOpens ??= 0;
    ws.onopen = () => { this.dropped = null; this.failedOpens = 0; ws.opened = true; };
    ws.onmessage = (e) => this.onMessage(JSON.parse(e.data));
    ws.onclose = () => {
      clearInterval(this.ping);
      if (this.ws !== ws || this.closed) return;
      this.dropped ??= Date.now();
      if (!ws.opened) this.failedOpens += 1;
      if (this.failedOpens >= 3) {
        rejoin("the media node is gone");
      } else if (Date.now() - this.dropped < 30_000) {
        $("#status").textContent = "reconnecting…";
        setTimeout(() => { if (!this.closed) this.connect(); }, 1000);
      } else {
        rejoin("the connection was lost");
      }
    };
    this.ping = setInterval(() => this.send({ type: "ping" }), 15000);
  }

  send(msg) { if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(msg)); }

  async onMessage(msg) {
    switch (msg.type) {
      case "joined":
        this.people.clear();
        for (const p of msg.participants) this.people.set(p.participant_id, p);
        this.me = msg.participant_id;
        this.renderPeople();
        break;
      case "offer": await this.onOffer(msg.sdp); break;
      case "participant_joined": this.people.set(msg.participant.participant_id, msg.participant); this.renderPeople(); break;
      case "participant_left": this.people.delete(msg.participant_id); this.renderPeople(); break;
      case "track_published": this.patch(msg.participant_id, { publishing: true }); break;
      case "track_unpublished": this.patch(msg.participant_id, { publishing: false }); break;
      case "muted": this.patch(msg.participant_id, { muted: msg.muted }); break;
      case "speaking":
        this.speaking = new Set(msg.speakers.map((s) => s.participant_id));
        this.renderPeople();
        break;
      case "kicked": $("#room-error").textContent = "You were removed from the room."; this.close(); break;
      case "reconnect": rejoin(msg.reason); break;
      case "error": $("#room-error").textContent = msg.message; break;
    }
  }

  patch(id, fields) {
    const p = this.people.get(id);
    if (p) { Object.assign(p, fields); this.renderPeople(); }
  }

  // The server makes every offer. Its first one has a receive-only audio section for our
  // microphone when we may publish; we answer it send-only with the microphone attached.
  async onOffer(sdp) {
    await this.pc.setRemoteDescription({ type: "offer", sdp });
    let publish = false;
    if (this.media) {
      // Audio comes and goes over QUIC: every audio section is answered inactive.
      for (const t of this.pc.getTransceivers()) if (t.receiver.track?.kind === "audio") t.direction = "inactive";
    } else if (this.join.grants.can_publish && !this.micSent) {
      const mid = recvOnlyAudioMid(sdp);
      const t = this.pc.getTransceivers().find((x) => x.mid === mid);
      if (t) {
        this.mic = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
        });
        const track = this.mic.getAudioTracks()[0];
        await t.sender.replaceTrack(track);
        t.direction = "sendonly";
        this.micSent = publish = true;
        $("#mute").disabled = false;
      }
    }
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.send({ type: "answer", sdp: this.pc.localDescription.sdp });
    if (publish) this.send({ type: "publish" });
  }

  useChannel(channel) {
    this.chat = channel;
    channel.onmessage = (e) => this.onChat(JSON.parse(e.data));
  }

  onChat(msg) {
    if (msg.type === "chat.error") { $("#room-error").textContent = msg.message; return; }
    const m = msg.message;
    if (!m || this.seen.has(m.id)) return;
    if (msg.type === "chat.created" || msg.type === "chat.ack") addMessage(m, this.seen);
  }

  sendChat(text) {
    const body = { client_id: crypto.randomUUID(), text };
    if (this.chat?.readyState === "open") this.chat.send(JSON.stringify(body));
    else api("POST", `/api/v1/rooms/${this.roomId}/messages`, body)
      .then((m) => addMessage(m, this.seen))
      .catch((err) => { $("#room-error").textContent = err.message; });
  }

  toggleMute() {
    const track = (this.media?.mic ?? this.mic)?.getAudioTracks()[0];
    if (!track) return;
    track.enabled = !track.enabled;
    $("#mute").textContent = track.enabled ? "Mute" : "Unmute";
    this.send({ type: "mute", muted: !track.enabled });
  }

  renderPeople() {
    const ul = $("#people");
    ul.replaceChildren();
    for (const p of this.people.values()) {
      const li = document.createElement("li");
      li.textContent = `${p.name}${p.participant_id === this.me ? " (you)" : ""} · ${p.role}`;
      li.dataset.participant = p.participant_id;
      li.classList.toggle("speaking", this.speaking?.has(p.participant_id) ?? false);
      li.classList.toggle("muted", p.muted);
      ul.append(li);
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.ping);
    this.ws?.close();
    this.pc.close();
    this.media?.close();
    this.mic?.getTracks().forEach((t) => t.stop());
    $("#audio").replaceChildren();
  }
}

// ---- Audio over QUIC ---------------------------------------------------------------------------

/** How far ahead of the audio clock decoded packets are scheduled (the jitter buffer). */
const JITTER_S = 0.06;
/** A player more than this far ahead drops packets until it catches up. */
const MAX_AHEAD_S = 0.4;
/** How long a missing group is waited for before the packets after it are decoded anyway. */
const REORDER_MS = 30;

/**
 * The room's audio over moq-lite: every broadcast the server announces (one per other publisher)
 * is decoded with WebCodecs and played on one AudioContext; the microphone, when we may publish,
 * is encoded to Opus and offered as our broadcast. The session uses the call's own media token:
 * the server hands the participant's audio to it, while presence and chat stay on signaling.
 */
class QuicMedia {
  constructor(roomId, join) {
    this.roomId = roomId;
    this.join = join;
    this.grants = join.grants;
    this.players = new Map(); // broadcast path → OpusPlayer
    this.ctx = new AudioContext({ sampleRate: 48_000, latencyHint: "interactive" });
    this.ready = this.start().catch((err) => {
      if (this.closed) return;
      this.status(`QUIC failed: ${err.message}`);
      $("#room-error").textContent = `QUIC: ${err.message}`;
      throw err;
    });
    this.ready.catch(() => {});
  }

  status(text) { $("#media-status").textContent = text; }

  async start() {
    this.status("QUIC connecting…");
    const join = this.join;
    if (!join.urls.quic) throw new Error("this server has QUIC turned off");
    // The join names the media node and its certificate (a cluster has one per node).
    const hash = join.urls.quic_sha256 ?? (await api("GET", "/api/v1/quic/certificate-hash")).value;
    this.participantId = join.participant_id;
    this.session = await MoqSession.connect(`${join.urls.quic}?jwt=${encodeURIComponent(join.token)}`, {
      certificateHash: hash,
    });
    if (this.closed) { this.session.close(); return; }
    this.connectMs = this.session.connectMs;
    this.status(`QUIC connected (${Math.round(this.connectMs)} ms)`);
    this.session.closed.then(({ code, reason }) => {
      if (this.closed) return;
      this.status(`QUIC closed${reason ? `: ${reason}` : code ? ` (${code})` : ""}`);
      // GOING_AWAY (65): the node drains; join again through the API.
      if (code === GOING_AWAY) rejoin(reason || "the media node is draining");
    });
    await this.ctx.resume();
    await this.session.announced("", ({ path, active }) => (active ? this.listen(path) : this.players.get(path)?.close()));
    if (join.grants.can_publish) await this.publishMic();
  }

  async listen(path) {
    this.players.get(path)?.close();
    const player = new OpusPlayer(this.ctx, path);
    this.players.set(path, player);
    player.onClose = () => { if (this.players.get(path) === player) this.players.delete(path); };
    try {
      const sub = await this.session.subscribeAudio(path, {
        maxLatencyMs: 200,
        onFrame: (frame) => player.push(frame),
        onEnd: () => player.close(),
      });
      player.start(sub);
    } catch (err) {
      player.close();
      console.warn(`cannot listen to ${path}:`, err);
    }
  }

  /** Microphone → MediaStreamTrackProcessor → AudioEncoder (Opus, 20 ms) → one group per packet. */
  async publishMic() {
    this.mic = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const track = this.mic.getAudioTracks()[0];
    if (typeof MediaStreamTrackProcessor !== "function") throw new Error("MediaStreamTrackProcessor is missing");
    const frames = new MediaStreamTrackProcessor({ track }).readable.getReader();
    $("#mute").disabled = false;
    this.encoder = new AudioEncoder({
      output: (chunk) => {
        const packet = new Uint8Array(chunk.byteLength);
        chunk.copyTo(packet);
        this.broadcast?.write(chunk.timestamp, packet);
      },
      error: (err) => { $("#room-error").textContent = `Opus encoder: ${err.message}`; },
    });
    (async () => {
      for (;;) {
        const { value: data, done } = await frames.read();
        if (done || this.closed) { data?.close(); break; }
        if (this.encoder.state === "unconfigured") {
          this.encoder.configure({
            codec: "opus", sampleRate: data.sampleRate, numberOfChannels: data.numberOfChannels,
            bitrate: 64_000, opus: { frameDuration: 20_000 },
          });
          this.broadcast = this.session.publish(`${this.participantId}`, { channels: data.numberOfChannels, bitrate: 64_000 });
        }
        if (this.encoder.state === "configured") this.encoder.encode(data);
        data.close();
      }
    })().catch((err) => { if (!this.closed) $("#room-error").textContent = `microphone: ${err.message}`; });
  }

  close() {
    this.closed = true;
    for (const player of this.players.values()) player.close();
    this.broadcast?.close();
    if (this.encoder?.state !== "closed") this.encoder?.close();
    this.mic?.getTracks().forEach((t) => t.stop());
    this.session?.close(0, "leaving");
    this.ctx.close().catch(() => {});
  }
}

/** One broadcast's Opus packets, decoded and scheduled on the AudioContext. */
class OpusPlayer {
  constructor(ctx, path) {
    this.ctx = ctx;
    this.path = path;
    this.packets = 0; // received
    this.played = 0;
    this.late = 0; // dropped: older than one already decoded, or too far ahead
    this.lastGroup = -1; // the last group given to the decoder
    this.waiting = new Map(); // group → packet, held until the groups before it arrive
    this.next = 0;
    this.output = ctx.createGain();
    this.output.connect(ctx.destination);
  }

  start(sub) {
    this.sub = sub;
    if (this.closed) { sub.close(); return; }
    this.decoder = new AudioDecoder({
      output: (data) => this.play(data),
      error: (err) => { console.warn(`decoder of ${this.path}:`, err); this.close(); },
    });
    this.decoder.configure({ codec: "opus", sampleRate: sub.config.sampleRate, numberOfChannels: sub.config.numberOfChannels });
  }

  // Each group travels on its own stream, so groups can overtake each other: a packet after a
  // gap waits up to REORDER_MS for the missing ones; one older than what was decoded is dropped.
  push(frame) {
    this.packets++;
    if (this.decoder?.state !== "configured") return;
    if (frame.group <= this.lastGroup) { this.late++; return; }
    if (this.lastGroup < 0) this.lastGroup = frame.group - 1;
    this.waiting.set(frame.group, frame);
    this.drain(false);
  }

  drain(force) {
    clearTimeout(this.timer);
    while (this.waiting.size) {
      let group = this.lastGroup + 1;
      if (!this.waiting.has(group)) {
        if (!force) { this.timer = setTimeout(() => this.drain(true), REORDER_MS); return; }
        group = Math.min(...this.waiting.keys()); // give up on the gap
      }
      force = false;
      const { timestampUs, payload } = this.waiting.get(group);
      this.waiting.delete(group);
      this.lastGroup = group;
      if (this.decoder.state !== "configured") return;
      this.decoder.decode(new EncodedAudioChunk({ type: "key", timestamp: timestampUs, data: payload }));
    }
  }

  play(data) {
    try {
      const buffer = this.ctx.createBuffer(data.numberOfChannels, data.numberOfFrames, data.sampleRate);
      for (let c = 0; c < data.numberOfChannels; c++) {
        data.copyTo(buffer.getChannelData(c), { planeIndex: c, format: "f32-planar" });
      }
      const now = this.ctx.currentTime;
      if (this.next > now + MAX_AHEAD_S) { this.late++; return; }
      // Starting, or after an underrun: start again a jitter buffer ahead.
      if (this.next < now + 0.005) this.next = now + JITTER_S;
      const source = this.ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(this.output);
      source.start(this.next);
      this.next += buffer.duration;
      this.played++;
    } finally {
      data.close();
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.timer);
    this.sub?.close();
    if (this.decoder && this.decoder.state !== "closed") this.decoder.close();
    this.output.disconnect();
    this.onClose?.();
  }
}

function recvOnlyAudioMid(sdp) {
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    if (section.startsWith("audio") && /\r?\na=recvonly/.test(section)) {
      return section.match(/\r?\na=mid:(\S+)/)?.[1];
    }
  }
  return null;
}

function addMessage(m, seen) {
  if (seen.has(m.id)) return;
  seen.add(m.id);
  const li = document.createElement("li");
  const who = document.createElement("span");
  who.className = "author";
  who.textContent = m.username;
  li.append(who, m.deleted ? "(deleted)" : m.text);
  li.dataset.seq = m.seq;
  $("#messages").append(li);
  li.scrollIntoView({ block: "nearest" });
}

/** moq-lite session close code of a draining node (Veza's GOAWAY). */
const GOING_AWAY = 65;

/**
 * Leaves the current call and joins its room again through the API, which picks a media node
 * (another one when this one died or drains). Chat already shown stays; history fills the gap.
 */
async function rejoin(reason) {
  const old = call;
  if (!old || old.rejoining) return;
  old.rejoining = true;
  old.close();
  $("#status").textContent = `moving to another node (${reason})…`;
  for (let attempt = 0; call === old; attempt++) {
    try {
      const join = await api("POST", `/api/v1/rooms/${old.roomId}/join`);
      if (call !== old) return;
      call = new Call(old.roomId, join, old.seen);
      const history = await api("GET", `/api/v1/rooms/${old.roomId}/messages?limit=50`);
      for (const m of history.messages.reverse()) addMessage(m, call.seen);
    } catch (err) {
      $("#room-error").textContent = err.message;
      // Refused for good (banned, room deleted): stop. Unreachable, 429 or 503: try again.
      if (err.status >= 400 && err.status < 500 && err.status !== 429) return;
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** attempt, 5000)));
    }
  }
}

async function enterRoom(roomId) {
  show("room");
  $("#room-error").textContent = "";
  $("#messages").replaceChildren();
  try {
    const room = await api("GET", `/api/v1/rooms/${roomId}`);
    $("#room-name").textContent = room.name;
    const join = await api("POST", `/api/v1/rooms/${roomId}/join`);
    call = new Call(roomId, join);
    const history = await api("GET", `/api/v1/rooms/${roomId}/messages?limit=50`);
    for (const m of history.messages.reverse()) addMessage(m, call.seen);
  } catch (err) { $("#room-error").textContent = err.message; }
}

$("#mute").addEventListener("click", () => call?.toggleMute());
$("#leave").addEventListener("click", () => { location.hash = ""; });
$("#chat-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const input = e.target.elements.text;
  if (input.value.trim()) call?.sendChat(input.value);
  input.value = "";
});

function start() {
  call?.close();
  call = null;
  if (!session.access) return show("auth");
  const room = new URLSearchParams(location.hash.slice(1)).get("room");
  return room ? enterRoom(room) : lobby();
}

window.addEventListener("hashchange", start);
window.veza = { get call() { return call; } };
start();
