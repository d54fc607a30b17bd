// Reads a request body under a size limit, gunzipping `Content-Encoding: gzip`. The limit applies
// to the decompressed bytes too, so a small gzip bomb is refused as early as a large plain body.
import type { IncomingMessage } from 'node:http';
import { createGunzip } from 'node:zlib';

export type BodyResult = { ok: true; body: Buffer; rawBytes: number } | { ok: false; status: 400 | 413 | 415 | 429; message: string };

/**
 * `take(n)` asks the gateway's memory budget for `n` more bytes as (decompressed) chunks arrive; when
 * it refuses, reading stops with 429, so gzip bodies cannot grow past the budget either.
 */
export function readBody(req: IncomingMessage, maxBytes: number, take: (bytes: number) => boolean = () => true): Promise<BodyResult> {
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
      if (!r.ok) {
        req.unpipe();
        gunzip?.destroy();
        req.resume(); // discard the rest; the server answers and closes the connection
      }
      resolve(r);
    };
    const gunzip = encoding === 'gzip' ? createGunzip({ chunkSize: 64 << 10 }) : null; // fewer, larger chunks: less per-chunk overhead
    const source = gunzip ?? req;
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
