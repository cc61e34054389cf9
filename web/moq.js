// moq-lite-06 over WebTransport, for the browser: the bytes moq-net 0.3.18 puts on the wire
// (the Rust codec in moq/src/message is the reference; its module doc lists where moq-net
// differs from the draft). Plain ES module, no dependencies.
//
//   const session = await Session.connect(url, { certificateHash });
//   session.announced("", ({ path, active }) => ...);            // the peer's broadcasts
//   const sub = await session.subscribeAudio(path, { onFrame });   // catalog, TRACK, SUBSCRIBE
//   const mine = session.publish("mic", { channels: 1 });          // answered to the peer's requests
//   mine.write(timestampUs, opusPacket);                           // one group per packet
//
// A protocol violation closes the session with PROTOCOL_VIOLATION and a reason; `session.closed`
// resolves with `{ code, reason }` however the session ends. Requests that get no answer time out.

export const ALPN = "moq-lite-06";
/** Largest control message accepted (a length prefix above it is an error). */
export const MAX_MESSAGE_SIZE = 65_536;
/** Largest FRAME payload accepted. */
export const MAX_FRAME_SIZE = 4 << 20;
export const CATALOG_TRACK = "catalog.json";
/** Timescale of our audio tracks (hang pins media tracks to microseconds). */
export const TIMESCALE_US = 1_000_000;

/** Session close codes. */
export const SessionCode = { NO_ERROR: 0, INTERNAL_ERROR: 1, UNAUTHORIZED: 2, PROTOCOL_VIOLATION: 3 };
/** Stream reset / stop codes. */
export const StreamCode = { INTERNAL_ERROR: 0, CANCELLED: 1, DELIVERY_TIMEOUT: 2, NOT_FOUND: 0x33 };
/** Bidirectional stream types. */
export const StreamType = { ANNOUNCE: 1, SUBSCRIBE: 2, FETCH: 3, PROBE: 4, GOAWAY: 5, TRACK: 6 };
/** Unidirectional stream types. */
export const UniStreamType = { GROUP: 0, SETUP: 1 };

/** Malformed input from the peer. */
export class ProtocolError extends Error {
  constructor(message) { super(message); this.name = "ProtocolError"; }
}

// ---- Bytes ------------------------------------------------------------------------------------

/** Thrown by a decoder that ran out of bytes: the caller reads more and tries again. */
export const SHORT = Object.freeze({ short: true, toString: () => "message incomplete" });

const MAX_VARINT = (1n << 62n) - 1n;
const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/** Builds a message. */
export class Writer {
  constructor(size = 64) { this.buf = new Uint8Array(size); this.len = 0; }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }

  u8(v) { this.reserve(1); this.buf[this.len++] = v & 0xff; return this; }

  /** A QUIC varint (RFC 9000 §16) in its shortest form; a Number up to 2^53 or a BigInt up to 2^62. */
  varint(v) {
    if (typeof v === "bigint") {
      if (v < 0n || v > MAX_VARINT) throw new RangeError(`varint ${v} out of range`);
      if (v <= BigInt(Number.MAX_SAFE_INTEGER)) return this.varint(Number(v));
      this.reserve(8);
      new DataView(this.buf.buffer).setBigUint64(this.len, v | (3n << 62n));
      this.len += 8;
      return this;
    }
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`varint ${v} is not a non-negative integer`);
    const view = () => new DataView(this.buf.buffer);
    if (v < 0x40) return this.u8(v);
    if (v < 0x4000) { this.reserve(2); view().setUint16(this.len, v | 0x4000); this.len += 2; return this; }
    if (v < 0x40000000) { this.reserve(4); view().setUint32(this.len, (v | 0x80000000) >>> 0); this.len += 4; return this; }
    this.reserve(8);
    view().setUint32(this.len, (Math.floor(v / 2 ** 32) | 0xc0000000) >>> 0);
    view().setUint32(this.len + 4, v >>> 0);
    this.len += 8;
    return this;
  }

  bytes(b) { this.reserve(b.length); this.buf.set(b, this.len); this.len += b.length; return this; }
  /** A length-prefixed byte string. */
  lengthBytes(b) { return this.varint(b.length).bytes(b); }
  /** A string (s): varint byte length, then UTF-8. */
  string(s) { return this.lengthBytes(utf8.encode(s)); }

  /** A length-prefixed message whose body `fill(writer)` writes. */
  sized(fill) {
    const body = new Writer();
    fill(body);
    return this.varint(body.len).bytes(body.finish());
  }

  finish() { return this.buf.slice(0, this.len); }
}

/** Reads a message; every method throws SHORT when the bytes end early. */
export class Cursor {
  constructor(buf) { this.buf = buf; this.pos = 0; }
  get remaining() { return this.buf.length - this.pos; }

  u8() {
    if (this.pos >= this.buf.length) throw SHORT;
    return this.buf[this.pos++];
  }

  /** A QUIC varint: a Number, or a BigInt when above 2^53 (non-minimal encodings are fine). */
  varint() {
    if (this.pos >= this.buf.length) throw SHORT;
    const first = this.buf[this.pos];
    const len = 1 << (first >> 6);
    if (this.remaining < len) throw SHORT;
    let v = BigInt(first & 0x3f);
    for (let i = 1; i < len; i++) v = (v << 8n) | BigInt(this.buf[this.pos + i]);
    this.pos += len;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }

  take(n) {
    if (this.remaining < n) throw SHORT;
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }

  /** A length-prefixed byte string of at most MAX_MESSAGE_SIZE bytes. */
  lengthBytes() {
    const len = this.varint();
    if (len > MAX_MESSAGE_SIZE) throw new ProtocolError(`string of ${len} bytes is too large`);
    return this.take(len);
  }

  string() {
    const bytes = this.lengthBytes();
    try { return strictUtf8.decode(bytes); } catch { throw new ProtocolError("string is not UTF-8"); }
  }

  /**
   * A length-prefixed message body decoded by `body(cursor)`, which must consume it exactly.
   * SHORT until the whole body is buffered; a body too short for its fields is malformed.
   */
  sized(body) {
    const len = this.varint();
    if (len > MAX_MESSAGE_SIZE) throw new ProtocolError(`message too large: ${len} bytes`);
    const inner = new Cursor(this.take(len));
    let value;
    try { value = body(inner); } catch (err) {
      if (err === SHORT) throw new ProtocolError("message body shorter than its fields");
      throw err;
    }
    if (inner.remaining) throw new ProtocolError("trailing bytes in message body");
    return value;
  }
}

/** Decodes one value from the start of `bytes` with `decode(cursor)`; for tests and one-shot use. */
export function decodeAll(bytes, decode) {
  const c = new Cursor(bytes);
  const value = decode(c);
  if (c.remaining) throw new ProtocolError(`${c.remaining} bytes after the message`);
  return value;
}

// ---- Messages ---------------------------------------------------------------------------------
// Each `encode(w, msg)` appends the whole message (Type and Message Length included); each
// `decode(c)` reads it back or throws SHORT / ProtocolError. Optional "+1" fields are null or a number.

const plusOne = (v) => (v == null ? 0 : v + 1);
const minusOne = (v) => (v === 0 ? null : typeof v === "bigint" ? v - 1n : v - 1);

export const Setup = {
  PROBE: 1, PATH: 2, ROLE: 3, COST: 4, ORIGIN: 5, MAX_PARAMS: 64,
  /** `params`: an array of [id, Uint8Array]. */
  encode(w, { params = [] } = {}) {
    w.sized((b) => {
      b.varint(params.length);
      for (const [id, value] of params) b.varint(id).lengthBytes(value);
    });
  },
  decode(c) {
    return c.sized((b) => {
      const count = b.varint();
      if (count > Setup.MAX_PARAMS) throw new ProtocolError("too many SETUP parameters");
      const params = [];
      for (let i = 0; i < count; i++) {
        const id = b.varint();
        if (params.some(([k]) => k === id)) throw new ProtocolError("duplicate SETUP parameter");
        const value = b.lengthBytes();
        if (id === Setup.PATH) {
          try { strictUtf8.decode(value); } catch { throw new ProtocolError("SETUP path is not UTF-8"); }
        } else if ([Setup.PROBE, Setup.ROLE, Setup.COST, Setup.ORIGIN].includes(id)) {
          const v = new Cursor(value);
          try { v.varint(); } catch { v.pos = -1; }
          if (v.pos < 0 || v.remaining) throw new ProtocolError("SETUP parameter is not a single varint");
        }
        params.push([id, value.slice()]);
      }
      return { params };
    });
  },
};

export const AnnounceRequest = {
  encode(w, { prefix }) { w.sized((b) => b.string(prefix)); },
  decode(c) { return c.sized((b) => ({ prefix: b.string() })); },
};

export const AnnounceOk = {
  encode(w, { hopId, activeCount }) { w.sized((b) => b.varint(hopId).varint(activeCount)); },
  decode(c) { return c.sized((b) => ({ hopId: b.varint(), activeCount: b.varint() })); },
};

const MAX_HOPS = 32;
function encodeRoute(b, { hops = [], warmCost = 0, coldCost = 0 }) {
  b.varint(hops.length);
  for (const hop of hops) b.varint(hop);
  b.varint(warmCost).varint(coldCost);
}
function decodeRoute(b) {
  const count = b.varint();
  if (count > MAX_HOPS) throw new ProtocolError("too many hops");
  const hops = [];
  for (let i = 0; i < count; i++) {
    const hop = b.varint();
    if (hop !== 0 && hops.includes(hop)) throw new ProtocolError("repeated hop");
    hops.push(hop);
  }
  return { hops, warmCost: b.varint(), coldCost: b.varint() };
}

/** ANNOUNCE_START (0), ANNOUNCE_END (1), ANNOUNCE_UPDATE (2): `{ type: "start"|"end"|"update", ... }`. */
export const Announce = {
  encode(w, msg) {
    switch (msg.type) {
      case "start": w.varint(0).sized((b) => { b.string(msg.suffix); encodeRoute(b, msg); }); break;
      case "end": w.varint(1).sized((b) => b.varint(msg.id)); break;
      case "update": w.varint(2).sized((b) => { b.varint(msg.id); encodeRoute(b, msg); }); break;
      default: throw new TypeError(`unknown announce ${msg.type}`);
    }
  },
  /** An unknown type comes back as `{ type: "unknown", kind }` once whole (moq-net skips it). */
  decode(c) {
    const kind = c.varint();
    switch (kind) {
      case 0: return c.sized((b) => ({ type: "start", suffix: b.string(), ...decodeRoute(b) }));
      case 1: return c.sized((b) => ({ type: "end", id: b.varint() }));
      case 2: return c.sized((b) => ({ type: "update", id: b.varint(), ...decodeRoute(b) }));
      default: {
        const len = c.varint();
        if (len > MAX_MESSAGE_SIZE) throw new ProtocolError(`message too large: ${len} bytes`);
        c.take(len);
        return { type: "unknown", kind };
      }
    }
  },
};

function encodeRange(b, { maxLatencyMs = 0, groupStart = null, groupEnd = null, frameStart = 0, frameEnd = null }) {
  b.varint(maxLatencyMs).varint(groupStart ?? 0).varint(plusOne(groupEnd)).varint(frameStart).varint(plusOne(frameEnd));
}
function decodeRange(b) {
  const maxLatencyMs = b.varint();
  const start = b.varint();
  const groupEnd = minusOne(b.varint());
  const frameStart = b.varint();
  const frameEnd = minusOne(b.varint());
  if (frameEnd !== null && groupEnd === null) throw new ProtocolError("frame end without a group end");
  // moq-net lite-06: a raw Group Start of 0 is "no floor", unless a frame offset names group 0.
  const groupStart = start !== 0 || frameStart !== 0 ? start : null;
  return { maxLatencyMs, groupStart, groupEnd, frameStart, frameEnd };
}

/** SUBSCRIBE: `{ id, broadcast, track, priority, maxLatencyMs, groupStart, groupEnd, frameStart, frameEnd }`. */
export const Subscribe = {
  encode(w, msg) {
    w.sized((b) => { b.varint(msg.id).string(msg.broadcast).string(msg.track).u8(msg.priority ?? 128); encodeRange(b, msg); });
  },
  decode(c) {
    return c.sized((b) => ({ id: b.varint(), broadcast: b.string(), track: b.string(), priority: b.u8(), ...decodeRange(b) }));
  },
};

export const SubscribeUpdate = {
  encode(w, msg) { w.sized((b) => { b.u8(msg.priority ?? 128); encodeRange(b, msg); }); },
  decode(c) { return c.sized((b) => ({ priority: b.u8(), ...decodeRange(b) })); },
};

/** SUBSCRIBE_OK (0) `{group}`, SUBSCRIBE_END (1) `{group}`, SUBSCRIBE_DROP (2) `{start, end, code}`. */
export const SubscribeReply = {
  encode(w, msg) {
    switch (msg.type) {
      case "ok": w.varint(0).sized((b) => b.varint(msg.group)); break;
      case "end": w.varint(1).sized((b) => b.varint(msg.group)); break;
      case "drop": w.varint(2).sized((b) => b.varint(msg.start).varint(msg.end).varint(msg.code)); break;
      default: throw new TypeError(`unknown subscribe reply ${msg.type}`);
    }
  },
  decode(c) {
    const kind = c.varint();
    switch (kind) {
      case 0: return c.sized((b) => ({ type: "ok", group: b.varint() }));
      case 1: return c.sized((b) => ({ type: "end", group: b.varint() }));
      case 2: return c.sized((b) => ({ type: "drop", start: b.varint(), end: b.varint(), code: b.varint() }));
      default: throw new ProtocolError(`unknown subscribe reply type ${kind}`);
    }
  },
};

export const Track = {
  encode(w, { broadcast, track }) { w.sized((b) => b.string(broadcast).string(track)); },
  decode(c) { return c.sized((b) => ({ broadcast: b.string(), track: b.string() })); },
};

export const TrackInfo = {
  encode(w, { priority, maxLatencyMs, timescale }) { w.sized((b) => b.u8(priority).varint(maxLatencyMs).varint(timescale)); },
  decode(c) {
    return c.sized((b) => {
      const info = { priority: b.u8(), maxLatencyMs: b.varint(), timescale: b.varint() };
      if (info.timescale === 0) throw new ProtocolError("TRACK_INFO timescale is 0");
      return info;
    });
  },
};

/** GROUP, the header of a group stream: `{ subscribeId, sequence, frameStart }`. */
export const Group = {
  encode(w, { subscribeId, sequence, frameStart = 0 }) { w.sized((b) => b.varint(subscribeId).varint(sequence).varint(frameStart)); },
  decode(c) { return c.sized((b) => ({ subscribeId: b.varint(), sequence: b.varint(), frameStart: b.varint() })); },
};

const zigzag = (v) => (v >= 0 ? v * 2 : -v * 2 - 1);
const unzigzag = (u) => (u % 2 === 0 ? u / 2 : -(u + 1) / 2);

/** FRAME: `{ timestampDelta, payload }`, the delta zigzag-encoded, then a length-prefixed payload. */
export const Frame = {
  encode(w, { timestampDelta, payload }) { w.varint(zigzag(timestampDelta)).lengthPayload(payload); },
  decode(c) {
    const delta = c.varint();
    if (typeof delta === "bigint") throw new ProtocolError("frame timestamp delta out of range");
    const len = c.varint();
    if (len > MAX_FRAME_SIZE) throw new ProtocolError(`frame of ${len} bytes is too large`);
    return { timestampDelta: unzigzag(delta), payload: c.take(len) };
  },
};
Writer.prototype.lengthPayload = function (payload) { return this.varint(payload.length).bytes(payload); };

/** hang's legacy container: a varint µs timestamp, then the codec frame. */
export function legacyPayload(timestampUs, codec) {
  return new Writer(codec.length + 8).varint(timestampUs).bytes(codec).finish();
}
export function splitLegacyPayload(payload) {
  const c = new Cursor(payload);
  let timestampUs;
  try { timestampUs = c.varint(); } catch { throw new ProtocolError("legacy frame without its timestamp"); }
  return { timestampUs, codec: payload.subarray(c.pos) };
}

/** The catalog of one Opus track (hang's JSON). */
export function opusCatalog(track, channels, bitrate) {
  const rendition = { codec: "opus", sampleRate: 48_000, numberOfChannels: channels, container: { kind: "legacy" } };
  if (bitrate) rendition.bitrate = bitrate;
  return { audio: { renditions: { [track]: rendition } } };
}

/** The first Opus rendition in the legacy container: `{ track, config }`, or null. */
export function findOpus(catalog) {
  const renditions = catalog?.audio?.renditions;
  if (!renditions || typeof renditions !== "object") return null;
  for (const [track, config] of Object.entries(renditions)) {
    const legacy = config?.container == null || config.container.kind === "legacy";
    if (String(config?.codec).toLowerCase() === "opus" && legacy && config.sampleRate > 0 && config.numberOfChannels > 0) {
      return { track, config };
    }
  }
  return null;
}

// ---- Streams ----------------------------------------------------------------------------------

/** Buffers a ReadableStream of bytes and hands out whole messages. */
class StreamReader {
  constructor(readable, limit = MAX_MESSAGE_SIZE + 16) {
    this.reader = readable.getReader();
    this.buf = new Uint8Array(0);
    this.fin = false;
    this.limit = limit;
  }

  /** The next message decoded by `decode(cursor)`; null when the stream ended between messages. */
  async next(decode) {
    for (;;) {
      if (this.buf.length) {
        const c = new Cursor(this.buf);
        try {
          const value = decode(c);
          this.buf = this.buf.subarray(c.pos);
          return value;
        } catch (err) {
          if (err !== SHORT) throw err;
        }
      }
      if (this.fin) {
        if (this.buf.length) throw new ProtocolError("stream ended inside a message");
        return null;
      }
      if (this.buf.length > this.limit) throw new ProtocolError(`message over ${this.limit} bytes`);
      await this.fill();
    }
  }

  async fill() {
    const { value, done } = await this.reader.read();
    if (done) { this.fin = true; return; }
    if (!this.buf.length) { this.buf = value; return; }
    const joined = new Uint8Array(this.buf.length + value.length);
    joined.set(this.buf);
    joined.set(value, this.buf.length);
    this.buf = joined;
  }

  /** Resolves when the peer finishes or resets the stream, discarding what it sends. */
  async closed() {
    try { while (!this.fin) { await this.fill(); this.buf = new Uint8Array(0); } } catch { /* reset */ }
  }

  /** STOP_SENDING with `code`. */
  stop(code = StreamCode.CANCELLED) { this.reader.cancel(streamError(code)).catch(() => {}); }
}

function streamError(code) {
  try { return new WebTransportError("", { streamErrorCode: code }); } catch { return undefined; }
}

/** A send stream: whole writes, then FIN or a reset with a code. */
class StreamWriter {
  constructor(writable) { this.writer = writable.getWriter(); }
  write(bytes) { return this.writer.write(bytes); }
  finish() { return this.writer.close().catch(() => {}); }
  reset(code = StreamCode.CANCELLED) { return this.writer.abort(streamError(code)).catch(() => {}); }
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, fail) => { timer = setTimeout(() => fail(new Error(`${what}: no answer within ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** Lowercase hex to bytes. */
export function hexBytes(hex) {
  const clean = hex.replace(/[^0-9a-f]/gi, "");
  if (clean.length % 2) throw new Error("odd-length hex string");
  return Uint8Array.from(clean.match(/../g) ?? [], (h) => parseInt(h, 16));
}

// ---- Session ----------------------------------------------------------------------------------

const SETUP_TIMEOUT = 10_000;
const REQUEST_TIMEOUT = 5_000;
/** Group streams of one subscription allowed in flight before new packets are dropped. */
const MAX_IN_FLIGHT = 32;

/** One moq-lite session over a WebTransport. Both roles at once, as moq-lite wants. */
export class Session {
  /**
   * Opens a WebTransport to `url` (its query carries the token) and starts the session.
   * `certificateHash`: hex SHA-256 of a self-signed certificate, for serverCertificateHashes.
   */
  static async connect(url, { certificateHash, timeoutMs = 10_000 } = {}) {
    const options = { protocols: [ALPN] };
    if (certificateHash) options.serverCertificateHashes = [{ algorithm: "sha-256", value: hexBytes(certificateHash) }];
    const started = performance.now();
    const transport = new WebTransport(url, options);
    try {
      await withTimeout(transport.ready, timeoutMs, "WebTransport handshake");
    } catch (err) {
      try { transport.close(); } catch { /* never opened */ }
      throw new Error(`WebTransport to ${url.split("?")[0]} failed: ${err.message ?? err}`);
    }
    const session = new Session(transport);
    session.connectMs = performance.now() - started;
    session.protocol = transport.protocol ?? "";
    return session;
  }

  constructor(transport) {
    this.transport = transport;
    this.hopId = 1 + Math.floor(Math.random() * 2 ** 52);
    this.routes = new Map(); // Subscribe ID → route of one of our subscriptions
    this.nextSubscribeId = 0;
    this.broadcasts = new Map(); // path → Broadcast we offer
    this.announceWatchers = new Set(); // callbacks of the peer's Announce streams, on changes
    this.setupSeen = false;
    this.isClosed = false;
    this.closed = transport.closed.then(
      (info) => ({ code: info?.closeCode ?? 0, reason: info?.reason ?? "" }),
      (err) => ({ code: null, reason: this.closeReason ?? String(err?.message ?? err) }),
    ).then((info) => { this.isClosed = true; this.endAll(); return info; });
    this.run().catch((err) => this.fail(err));
  }

  /** Closes the session with `code` and `reason`. */
  close(code = SessionCode.NO_ERROR, reason = "") {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closeReason = reason;
    try { this.transport.close({ closeCode: code, reason }); } catch { /* already closed */ }
    this.endAll();
  }

  /** A stream handler failed: a protocol error closes the session, anything else ends only that stream. */
  fail(err) {
    if (err instanceof ProtocolError) {
      console.warn("moq-lite: protocol violation:", err.message);
      this.close(SessionCode.PROTOCOL_VIOLATION, err.message);
    } else if (!this.isClosed) {
      console.debug("moq-lite: stream ended:", err?.message ?? err);
    }
  }

  endAll() {
    for (const b of this.broadcasts.values()) b.end();
    this.broadcasts.clear();
    for (const route of this.routes.values()) route.onEnd?.();
    this.routes.clear();
  }

  async run() {
    const timer = setTimeout(() => {
      if (!this.setupSeen) this.fail(new ProtocolError(`no SETUP from the peer within ${SETUP_TIMEOUT} ms`));
    }, SETUP_TIMEOUT);
    this.closed.then(() => clearTimeout(timer));
    // Our SETUP: no parameters (a WebTransport client's path is its URL).
    const setup = new Writer().varint(UniStreamType.SETUP);
    Setup.encode(setup, { params: [] });
    const stream = new StreamWriter(await this.transport.createUnidirectionalStream());
    await stream.write(setup.finish());
    await stream.finish();
    this.acceptUni();
    this.acceptBi();
  }

  async acceptUni() {
    const streams = this.transport.incomingUnidirectionalStreams.getReader();
    for (;;) {
      const { value, done } = await streams.read().catch(() => ({ done: true }));
      if (done) return;
      this.serveUni(value).catch((err) => this.fail(err));
    }
  }

  async acceptBi() {
    const streams = this.transport.incomingBidirectionalStreams.getReader();
    for (;;) {
      const { value, done } = await streams.read().catch(() => ({ done: true }));
      if (done) return;
      this.serveBi(value).catch((err) => this.fail(err));
    }
  }

  async serveUni(readable) {
    const reader = new StreamReader(readable, MAX_FRAME_SIZE + 16);
    const kind = await reader.next((c) => c.varint());
    if (kind === null) return;
    if (kind === UniStreamType.SETUP) {
      if (this.setupSeen) throw new ProtocolError("a second SETUP stream");
      this.setupSeen = true;
      const setup = await reader.next(Setup.decode);
      if (!setup) throw new ProtocolError("an empty SETUP stream");
      this.peerSetup = setup;
      if ((await reader.next((c) => c.u8())) !== null) throw new ProtocolError("bytes after SETUP on the SETUP stream");
    } else if (kind === UniStreamType.GROUP) {
      await this.receiveGroup(reader);
    } else {
      reader.stop(StreamCode.NOT_FOUND); // unknown types are refused, not fatal
    }
  }

  async serveBi({ readable, writable }) {
    const reader = new StreamReader(readable);
    const writer = new StreamWriter(writable);
    const kind = await reader.next((c) => c.varint());
    if (kind === null) return;
    switch (kind) {
      case StreamType.ANNOUNCE: return this.serveAnnounce(reader, writer);
      case StreamType.TRACK: return this.serveTrack(reader, writer);
      case StreamType.SUBSCRIBE: return this.serveSubscribe(reader, writer);
      case StreamType.GOAWAY: return reader.closed();
      default: // Fetch (no past groups kept), Probe (none advertised), unknown: refused.
        writer.reset(StreamCode.NOT_FOUND);
        reader.stop(StreamCode.NOT_FOUND);
    }
  }

  async openBi(type, encode) {
    const { readable, writable } = await this.transport.createBidirectionalStream();
    const writer = new StreamWriter(writable);
    const w = new Writer().varint(type);
    encode(w);
    await writer.write(w.finish());
    return { reader: new StreamReader(readable), writer };
  }

  // ---- Subscriber: the peer's broadcasts ----

  /**
   * Follows the peer's broadcasts under `prefix`: `onChange({ path, active })` for each one
   * that appears or goes. Resolves once ANNOUNCE_OK arrived; `.close()` stops following.
   */
  async announced(prefix, onChange) {
    const { reader, writer } = await this.openBi(StreamType.ANNOUNCE, (w) => AnnounceRequest.encode(w, { prefix }));
    const ok = await withTimeout(reader.next(AnnounceOk.decode), REQUEST_TIMEOUT, "ANNOUNCE_REQUEST");
    if (!ok) throw new Error("the announce stream closed before ANNOUNCE_OK");
    const live = new Map(); // Announce ID → path
    let nextId = 0;
    (async () => {
      for (;;) {
        const msg = await reader.next(Announce.decode);
        if (!msg) break;
        if (msg.type === "start") {
          const path = prefix + msg.suffix;
          if ([...live.values()].includes(path)) throw new ProtocolError(`ANNOUNCE_START for ${path}, which is already announced`);
          live.set(nextId++, path);
          onChange({ path, active: true });
        } else if (msg.type === "end") {
          const path = live.get(msg.id);
          if (path === undefined) throw new ProtocolError(`ANNOUNCE_END for unknown announce id ${msg.id}`);
          live.delete(msg.id);
          onChange({ path, active: false });
        } else if (msg.type === "update") {
          if (!live.has(msg.id)) throw new ProtocolError(`ANNOUNCE_UPDATE for unknown announce id ${msg.id}`);
        }
      }
      // The peer closed the stream: every broadcast is gone.
      for (const path of live.values()) onChange({ path, active: false });
    })().catch((err) => this.fail(err));
    return { close: () => writer.finish() };
  }

  /** The catalog of `broadcast`, parsed. */
  async catalog(broadcast) {
    let resolve;
    const first = new Promise((r) => { resolve = r; });
    const sub = await this.subscribe(broadcast, CATALOG_TRACK, { timescale: TIMESCALE_US }, {
      maxLatencyMs: 0, legacy: false, onFrame: resolve, onEnd: () => resolve(null),
    });
    let frame;
    try {
      frame = await withTimeout(first, REQUEST_TIMEOUT, `${broadcast}'s catalog`);
    } finally { sub.close(); }
    if (!frame) throw new Error(`${broadcast}'s catalog track ended`);
    try { return JSON.parse(new TextDecoder().decode(frame.payload)); } catch (err) {
      throw new Error(`${broadcast}'s catalog is not valid JSON: ${err.message}`);
    }
  }

  /** TRACK → TRACK_INFO. */
  async trackInfo(broadcast, track) {
    const { reader, writer } = await this.openBi(StreamType.TRACK, (w) => Track.encode(w, { broadcast, track }));
    try {
      const info = await withTimeout(reader.next(TrackInfo.decode), REQUEST_TIMEOUT, `TRACK ${broadcast}/${track}`);
      if (!info) throw new Error(`no TRACK_INFO for ${broadcast}/${track}`);
      return info;
    } finally { writer.finish(); }
  }

  /**
   * Subscribes to the first Opus track in `broadcast`'s catalog. `onFrame({ group, timestampUs,
   * payload })` gets each Opus packet; `onEnd()` is called once when the subscription ends.
   * Resolves to `{ track, config, info, close() }`.
   */
  async subscribeAudio(broadcast, { maxLatencyMs = 200, onFrame, onEnd } = {}) {
    const catalog = await this.catalog(broadcast);
    const opus = findOpus(catalog);
    if (!opus) throw new Error(`${broadcast} has no Opus track in the legacy container`);
    const info = await this.trackInfo(broadcast, opus.track);
    const sub = await this.subscribe(broadcast, opus.track, info, { maxLatencyMs, legacy: true, onFrame, onEnd });
    return { ...opus, info, close: sub.close };
  }

  /** Opens a Subscribe stream and routes its groups to `onFrame`. */
  async subscribe(broadcast, track, info, { maxLatencyMs, legacy, onFrame, onEnd }) {
    const id = this.nextSubscribeId++;
    let ended = false;
    const route = {
      timescale: info.timescale,
      legacy,
      onFrame,
      onEnd: () => { if (!ended) { ended = true; onEnd?.(); } },
    };
    this.routes.set(id, route);
    const { reader, writer } = await this.openBi(StreamType.SUBSCRIBE, (w) => Subscribe.encode(w, {
      id, broadcast, track, priority: 128, maxLatencyMs, groupStart: null, groupEnd: null, frameStart: 0, frameEnd: null,
    }));
    const unroute = () => {
      if (this.routes.get(id) === route) this.routes.delete(id);
      route.onEnd();
    };
    (async () => {
      try {
        for (;;) {
          const reply = await reader.next(SubscribeReply.decode);
          if (!reply || reply.type === "end") break;
          if (reply.type === "ok") route.firstGroup = reply.group;
        }
      } catch (err) {
        if (err instanceof ProtocolError) throw err;
      }
      // Let groups already on their way arrive before the route goes.
      setTimeout(unroute, 500);
    })().catch((err) => { unroute(); this.fail(err); });
    return { id, close: () => { writer.reset(StreamCode.CANCELLED); unroute(); } };
  }

  /** A group stream from the peer: GROUP, then frames to the subscription it names. */
  async receiveGroup(reader) {
    const group = await reader.next(Group.decode);
    if (!group) throw new ProtocolError("group stream without GROUP");
    const route = this.routes.get(group.subscribeId);
    if (!route) { reader.stop(StreamCode.CANCELLED); return; } // a subscription we already dropped
    let timestamp = 0;
    for (;;) {
      const frame = await reader.next(Frame.decode);
      if (!frame) return;
      timestamp += frame.timestampDelta;
      let payload = frame.payload;
      if (route.legacy) {
        try { payload = splitLegacyPayload(payload).codec; } catch { continue; }
      }
      const timestampUs = route.timescale === TIMESCALE_US
        ? Math.max(0, timestamp)
        : Math.floor((Math.max(0, timestamp) * TIMESCALE_US) / route.timescale);
      route.onFrame?.({ group: group.sequence, timestampUs, payload });
    }
  }

  // ---- Publisher: our broadcasts ----

  /**
   * Offers a broadcast at `path` holding `catalog.json` and one Opus track. Returns its writer:
   * `write(timestampUs, opus)` sends one packet as the next group to every subscription.
   */
  publish(path, { track = "audio", channels = 1, bitrate } = {}) {
    const old = this.broadcasts.get(path);
    const broadcast = new Broadcast(this, path, track, opusCatalog(track, channels, bitrate));
    this.broadcasts.set(path, broadcast);
    old?.end();
    this.announceChanged();
    return broadcast;
  }

  unpublish(broadcast) {
    if (this.broadcasts.get(broadcast.path) === broadcast) {
      this.broadcasts.delete(broadcast.path);
      this.announceChanged();
    }
  }

  announceChanged() { for (const watcher of this.announceWatchers) watcher(); }

  /** The peer's Announce stream: ANNOUNCE_OK with our matching broadcasts, then changes. */
  async serveAnnounce(reader, writer) {
    const request = await reader.next(AnnounceRequest.decode);
    if (!request) throw new ProtocolError("announce stream without ANNOUNCE_REQUEST");
    const matching = () => [...this.broadcasts.values()].filter((b) => b.path.startsWith(request.prefix));
    const ids = new Map(); // Broadcast → Announce ID
    let nextId = 0;
    const start = (w, b) => {
      Announce.encode(w, { type: "start", suffix: b.path.slice(request.prefix.length), hops: [], warmCost: 0, coldCost: 0 });
      ids.set(b, nextId++);
    };
    const current = matching();
    const w = new Writer();
    AnnounceOk.encode(w, { hopId: this.hopId, activeCount: current.length });
    for (const b of current) start(w, b);
    let pending = writer.write(w.finish());
    const watcher = () => {
      const now = matching();
      const out = new Writer();
      for (const [b, id] of ids) {
        if (!now.includes(b)) { Announce.encode(out, { type: "end", id }); ids.delete(b); }
      }
      for (const b of now) if (!ids.has(b)) start(out, b);
      if (out.len) pending = pending.then(() => writer.write(out.finish())).catch(() => {});
    };
    this.announceWatchers.add(watcher);
    try {
      await pending;
      await reader.closed();
    } finally {
      this.announceWatchers.delete(watcher);
      writer.finish();
    }
  }

  /** The peer's Track stream: TRACK_INFO for our catalog or audio track, else a reset. */
  async serveTrack(reader, writer) {
    const request = await reader.next(Track.decode);
    if (!request) throw new ProtocolError("track stream without TRACK");
    const broadcast = this.broadcasts.get(request.broadcast);
    if (!broadcast || (request.track !== CATALOG_TRACK && request.track !== broadcast.track)) {
      writer.reset(StreamCode.NOT_FOUND);
      return;
    }
    const audio = request.track !== CATALOG_TRACK;
    const w = new Writer();
    TrackInfo.encode(w, { priority: audio ? 128 : 64, maxLatencyMs: 0, timescale: TIMESCALE_US });
    await writer.write(w.finish());
    await writer.finish();
  }

  /** The peer's Subscribe stream: the catalog (one group), or the audio (one group per packet). */
  async serveSubscribe(reader, writer) {
    const request = await reader.next(Subscribe.decode);
    if (!request) throw new ProtocolError("subscribe stream without SUBSCRIBE");
    const broadcast = this.broadcasts.get(request.broadcast);
    if (!broadcast || (request.track !== CATALOG_TRACK && request.track !== broadcast.track)) {
      writer.reset(StreamCode.NOT_FOUND);
      return;
    }
    if (request.track === CATALOG_TRACK) {
      await writer.write(new Writer().call((w) => SubscribeReply.encode(w, { type: "ok", group: 0 })).finish());
      const json = new TextEncoder().encode(JSON.stringify(broadcast.catalog));
      const group = new Writer(json.length + 16).varint(UniStreamType.GROUP);
      Group.encode(group, { subscribeId: request.id, sequence: 0, frameStart: 0 });
      Frame.encode(group, { timestampDelta: 0, payload: json });
      const stream = new StreamWriter(await this.transport.createUnidirectionalStream());
      await stream.write(group.finish());
      await stream.finish();
      const ended = await Promise.race([broadcast.ended.then(() => true), reader.closed().then(() => false)]);
      if (ended) await writer.write(new Writer().call((w) => SubscribeReply.encode(w, { type: "end", group: 1 })).finish()).catch(() => {});
      await writer.finish();
      return;
    }
    const sub = { id: request.id, request, maxLatencyMs: request.maxLatencyMs, writer, nextGroup: null, inFlight: 0 };
    broadcast.subscriptions.add(sub);
    try {
      for (;;) {
        const update = await Promise.race([reader.next(SubscribeUpdate.decode), broadcast.ended.then(() => "ended")]);
        if (update === "ended") {
          await writer.write(new Writer().call((w) => SubscribeReply.encode(w, { type: "end", group: sub.nextGroup ?? 0 })).finish()).catch(() => {});
          break;
        }
        if (!update) break;
        sub.maxLatencyMs = update.maxLatencyMs;
      }
    } finally {
      broadcast.subscriptions.delete(sub);
      writer.finish();
    }
  }
}

Writer.prototype.call = function (fn) { fn(this); return this; };

/** One broadcast we offer: a catalog and one Opus track. */
class Broadcast {
  constructor(session, path, track, catalog) {
    this.session = session;
    this.path = path;
    this.track = track;
    this.catalog = catalog;
    this.subscriptions = new Set();
    this.sequence = 0;
    this.sent = 0;
    this.dropped = 0;
    this.ended = new Promise((r) => { this.markEnded = r; });
  }

  get subscribers() { return this.subscriptions.size; }

  /** Sends one Opus packet with its presentation time as the next group, on its own stream. */
  write(timestampUs, opus) {
    const sequence = this.sequence++;
    for (const sub of this.subscriptions) {
      if (sub.request.groupStart != null && sequence < sub.request.groupStart) continue;
      if (sub.inFlight >= MAX_IN_FLIGHT) { this.dropped++; continue; }
      this.sendGroup(sub, sequence, Math.round(timestampUs), opus).catch((err) => this.session.fail(err));
    }
  }

  async sendGroup(sub, sequence, timestampUs, opus) {
    sub.inFlight++;
    try {
      // SUBSCRIBE_OK names the first group; the stream's writes go out in order, unawaited.
      if (sub.nextGroup === null) {
        sub.writer.write(new Writer().call((w) => SubscribeReply.encode(w, { type: "ok", group: sequence })).finish()).catch(() => {});
      }
      sub.nextGroup = sequence + 1;
      const w = new Writer(opus.length + 24).varint(UniStreamType.GROUP);
      Group.encode(w, { subscribeId: sub.id, sequence, frameStart: 0 });
      // The FRAME timestamp (first frame: absolute, in the µs timescale) and hang's legacy prefix.
      Frame.encode(w, { timestampDelta: timestampUs, payload: legacyPayload(timestampUs, opus) });
      // Newer groups first when the connection is congested.
      const stream = new StreamWriter(await this.session.transport.createUnidirectionalStream({ sendOrder: sequence }));
      await stream.write(w.finish());
      await stream.finish();
      this.sent++;
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      this.dropped++;
    } finally {
      sub.inFlight--;
    }
  }

  /** Ends the broadcast: ANNOUNCE_END and SUBSCRIBE_END go out. */
  close() { this.end(); this.session.unpublish(this); }

  end() { this.subscriptions.clear(); this.markEnded(); }
}
