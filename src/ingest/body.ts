// Reads a request body under a size limit, gunzipping `Content-Encoding: gzip`. The limit applies
// to the decompressed bytes too, so a small gzip bomb is refused as early as a large plain body.
// A body that stalls or trickles is cut (408), so a slow client cannot hold the queue budget.
import type { IncomingMessage } from 'node:http';
import { createGunzip } from 'node:zlib';

export type BodyResult =
  | { ok: true; body: Buffer; rawBytes: number }
  | { ok: false; status: 400 | 413 | 415 | 429; message: string }
  | { ok: false; status: 408; message: string; cut: PaceCut['reason'] };

/** How fast a body must arrive; a rule set to 0 is off. Wire bytes count (as sent, before gunzip). */
export interface BodyPace {
  /** A body with no byte for this long is cut. */
  idleMs: number;
  /** A body arriving slower than this, measured over the last `windowMs`, is cut ... */
  minBytesPerSecond: number;
  /** ... once it has been read for a whole window (the first window is the grace). */
  windowMs: number;
}

export interface PaceCut {
  reason: 'body_idle' | 'body_rate';
  message: string;
}

/**
 * Watches the wire bytes of `req` and calls `onSlow` once when they stop for `pace.idleMs` or arrive
 * slower than the minimum rate over the last `pace.windowMs`. Only the client's slowness is judged:
 * each verdict waits for the I/O already pending (setImmediate after the tick), and a tick that comes
 * late (the event loop was busy) or finds the body paused by the gateway (gunzip backpressure) starts
 * the measurement afresh. Stops by itself when the body ends or the request or its connection closes
 * (a request already answered is not closed with its connection); returns a stop function.
 */
export function watchPace(req: IncomingMessage, pace: BodyPace, onSlow: (cut: PaceCut) => void): () => void {
  const idleMs = pace.idleMs > 0 ? pace.idleMs : 0;
  const windowMs = pace.minBytesPerSecond > 0 && pace.windowMs > 0 ? pace.windowMs : 0;
  if (!idleMs && !windowMs) return () => {};
  const span = Math.min(idleMs || Infinity, windowMs || Infinity);
  const tickMs = Math.max(10, Math.min(500, Math.floor(span / 10)));
  const lateMs = Math.max(2 * tickMs, span / 2);
  let raw = 0;
  let lastByte = performance.now();
  let lastTick = lastByte;
  // Wire bytes so far at each tick of the current window; samples[0] is the newest at or before its start.
  let samples: { t: number; raw: number }[] = [{ t: lastByte, raw: 0 }];
  let stopped = false;
  const socket = req.socket;
  const onData = (c: Buffer) => {
    raw += c.length;
    lastByte = performance.now();
  };
  const stop = () => {
    if (stopped) return;
    stopped = true;
    clearInterval(timer);
    req.off('data', onData);
    req.off('end', stop);
    req.off('close', stop);
    socket?.off('close', stop);
  };
  const judge = () => {
    if (stopped) return;
    const now = performance.now();
    const late = now - lastTick > lateMs;
    lastTick = now;
    if (late || req.readableFlowing === false) {
      lastByte = now;
      samples = [{ t: now, raw }];
      return;
    }
    if (idleMs && now - lastByte >= idleMs) {
      stop();
      return onSlow({ reason: 'body_idle', message: `request body too slow: no byte arrived for ${Math.round(now - lastByte)} ms (the limit is ${idleMs} ms without a byte)` });
    }
    if (!windowMs) return;
    samples.push({ t: now, raw });
    const from = now - windowMs;
    while (samples.length > 1 && samples[1]!.t <= from) samples.shift();
    const first = samples[0]!;
    if (first.t > from) return; // not a whole window yet
    const perSecond = Math.floor(((raw - first.raw) * 1000) / (now - first.t));
    if (perSecond >= pace.minBytesPerSecond) return;
    stop();
    onSlow({
      reason: 'body_rate',
      message: `request body too slow: ${perSecond} bytes/s over the last ${Math.round(now - first.t)} ms, below the minimum of ${pace.minBytesPerSecond} bytes/s`,
    });
  };
  const timer = setInterval(() => setImmediate(judge), tickMs);
  req.on('data', onData);
  req.once('end', stop);
  req.once('close', stop);
  socket?.once('close', stop);
  return stop;
}

/**
 * `take(n)` asks the gateway's memory budget for `n` more bytes as (decompressed) chunks arrive; when
 * it refuses, reading stops with 429, so gzip bodies cannot grow past the budget either. With `pace`,
 * a body that stalls or trickles (watchPace) ends reading with 408 at once, so its bytes can be
 * released at once; the caller closes the connection.
 */
export function readBody(req: IncomingMessage, maxBytes: number, take: (bytes: number) => boolean = () => true, pace?: BodyPace): Promise<BodyResult> {
  const encoding = (req.headers['content-encoding'] ?? 'identity').trim().toLowerCase();
  if (encoding !== 'gzip' && encoding !== 'identity') {
    return Promise.resolve({ ok: false, status: 415, message: `Content-Encoding "${encoding}" is not supported; send gzip or identity` });
  }
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > maxBytes) {
    return Promise.resolve({ ok: false, status: 413, message: `body of ${declared} bytes exceeds the limit of ${maxBytes} bytes; split the batch` });
  }
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let raw = 0;
    let settled = false;
    const finish = (r: BodyResult) => {
      if (settled) return;
      settled = true;
      stopPace();
      if (!r.ok) {
        req.unpipe();
        gunzip?.destroy();
        req.resume(); // discard the rest; the server answers and closes the connection
      }
      resolve(r);
    };
    const gunzip = encoding === 'gzip' ? createGunzip({ chunkSize: 64 << 10 }) : null; // fewer, larger chunks: less per-chunk overhead
    const source = gunzip ?? req;
    const stopPace = pace ? watchPace(req, pace, (cut) => finish({ ok: false, status: 408, message: cut.message, cut: cut.reason })) : () => {};
    req.on('data', (c: Buffer) => {
      raw += c.length;
      if (!gunzip && raw > maxBytes) finish({ ok: false, status: 413, message: `body exceeds the limit of ${maxBytes} bytes; split the batch` });
    });
    req.on('error', (err) => finish({ ok: false, status: 400, message: `request body could not be read: ${err.message}` }));
    req.on('aborted', () => finish({ ok: false, status: 400, message: 'request body ended early (client aborted)' }));
    if (gunzip) {
      req.pipe(gunzip);
      gunzip.on('error', (err) => finish({ ok: false, status: 400, message: `gzip body is corrupt or truncated: ${err.message}` }));
      gunzip.on('data', (c: Buffer) => {
        size += c.length;
        if (size > maxBytes) finish({ ok: false, status: 413, message: `decompressed body exceeds the limit of ${maxBytes} bytes; split the batch` });
        else if (!take(c.length)) finish({ ok: false, status: 429, message: "the gateway's queue is full; retry later" });
        else chunks.push(c);
      });
    } else {
      req.on('data', (c: Buffer) => {
        if (settled) return;
        if (!take(c.length)) finish({ ok: false, status: 429, message: "the gateway's queue is full; retry later" });
        else chunks.push(c);
      });
    }
    source.on('end', () => finish({ ok: true, body: Buffer.concat(chunks), rawBytes: raw }));
  });
}
