// Veza's browser client: sign in, pick a room, talk, listen and chat.
// Plain ES module, no build step. The signaling protocol is in docs/protocol.md.

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

// ---- The room -------------------------------------------------------------------------------

let call = null;

class Call {
  constructor(roomId, join) {
    this.roomId = roomId;
    this.join = join;
    this.people = new Map();
    this.seen = new Set();
    this.micSent = false;
    this.pc = new RTCPeerConnection({
      iceServers: join.ice_servers,
      iceTransportPolicy: new URLSearchParams(location.search).get("relay") ? "relay" : "all",
    });
    this.pc.ontrack = (e) => {
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
  // the same token resumes the participant (the server restarts ICE) for up to 30 s.
  connect() {
    const ws = new WebSocket(`${this.join.urls.signaling}?token=${encodeURIComponent(this.join.token)}`);
    this.ws = ws;
    this.dropped ??= null;
    ws.onopen = () => { this.dropped = null; };
    ws.onmessage = (e) => this.onMessage(JSON.parse(e.data));
    ws.onclose = () => {
      clearInterval(this.ping);
      if (this.ws !== ws || this.closed) return;
      this.dropped ??= Date.now();
      if (Date.now() - this.dropped < 30_000) {
        $("#status").textContent = "reconnecting…";
        setTimeout(() => { if (!this.closed) this.connect(); }, 1000);
      } else {
        $("#status").textContent = "disconnected";
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
    if (this.join.grants.can_publish && !this.micSent) {
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
    const track = this.mic?.getAudioTracks()[0];
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
    this.mic?.getTracks().forEach((t) => t.stop());
    $("#audio").replaceChildren();
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
