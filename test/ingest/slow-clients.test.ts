// Slow and silent clients cannot hold the gateway: headers, keep-alive idle, body stalls and trickles
// are cut within their limits (408 with a JSON reason where an answer is possible), a cut body's bytes
// leave the queue budget at once, and idle connections free the connection cap. Loopback, real HTTP,
// native PostgreSQL through PgBouncer; small limits, waits on conditions.
import { connect, type Socket } from 'node:net';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../../src/db/open.ts';
import type { Db } from '../../src/db/port.ts';
import type { Gateway, GatewayOptions } from '../../src/ingest/gateway.ts';
import { cluster, createDatabase, type TestDatabase } from '../support/databases.ts';
import { facility, gateway, plainSchema, post } from '../support/gateway.ts';
import { sleep, until } from '../support/wait.ts';

let t: TestDatabase;
let admin: Db;
let db: Db;
const tokens: Record<string, { id: number; token: string }> = {};

beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_slow');
  admin = await openDb(t.url);
  await plainSchema(admin);
  for (const code of ['loud', 'rowdy', 'quiet']) tokens[code] = await facility(admin, code);
  db = await openDb(cluster().bouncerUrl(t.name), { max: 6 });
});

afterAll(async () => {
  await db?.close();
  await admin?.close();
  await t?.drop();
});

/** A bound far above the limit, far below any fallback: the machine may be loaded. */
const GENEROUS = 20;

const auth = (code: string) => `Authorization: Token ${tokens[code]!.token}\r\n`;

/** The connections of the current test's gateway, destroyed with it. */
let sockets: Socket[] = [];

async function withGateway(o: Partial<GatewayOptions>, fn: (gw: Gateway, port: number) => Promise<void>): Promise<void> {
  const gw = await gateway(db, o);
  const mine: Socket[] = [];
  sockets = mine;
  try {
    await fn(gw, Number(new URL(gw.url).port));
  } finally {
    for (const s of mine) s.destroy();
    await gw.stop();
  }
}

const cuts = async (gw: Gateway, reason: string) =>
  ((await gw.metrics.registry.getSingleMetric('strata_ingest_connections_cut_total')?.get())?.values ?? []).filter((v) => v.labels.reason === reason).reduce((n, v) => n + v.value, 0);

interface Raw {
  socket: Socket;
  /** Everything the gateway sent. */
  text(): string;
  /** Resolves with performance.now() when the connection is closed (by either side). */
  closed: Promise<number>;
  write(data: string | Buffer): Promise<number>;
}

/** When `c` closed; fails if it is still open after `ms`. */
async function closedWithin(c: Raw, ms: number): Promise<number> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`the connection is still open after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([c.closed, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A raw TCP connection to the gateway (fetch cannot stall half-way through a request). */
function raw(port: number): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    sockets.push(socket);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {}); // a reset is a close here
    const closed = new Promise<number>((r) => socket.once('close', () => r(performance.now())));
    socket.once('connect', () =>
      resolve({
        socket,
        text: () => Buffer.concat(chunks).toString('latin1'),
        closed,
        write: (data) => new Promise((r) => socket.write(data, () => r(performance.now()))),
      }),
    );
    socket.once('error', reject);
  });
}

/** The first HTTP response in `text`: status, lower-cased headers, body. */
function response(text: string): { status: number; headers: Record<string, string>; body: string } {
  const end = text.indexOf('\r\n\r\n');
  expect(end, `a complete response, got ${JSON.stringify(text.slice(0, 200))}`).toBeGreaterThan(0);
  const [statusLine, ...lines] = text.slice(0, end).split('\r\n');
  const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]));
  let body = text.slice(end + 4);
  if (headers['content-length'] !== undefined) body = body.slice(0, Number(headers['content-length']));
  else if (headers['transfer-encoding'] === 'chunked') {
    let plain = '';
    for (let at = 0; ; ) {
      const eol = body.indexOf('\r\n', at);
      const size = parseInt(body.slice(at, eol), 16);
      if (!(size > 0)) break;
      plain += body.slice(eol + 2, eol + 2 + size);
      at = eol + 2 + size + 2;
    }
    body = plain;
  }
  return { status: Number(statusLine!.split(' ')[1]), headers, body };
}

/**
 * Whether the queue budget refuses a request declaring `contentLength` bytes: only its headers are
 * sent, so a request let in holds nothing (no answer within a moment; it is closed).
 */
async function refused(port: number, code: string, contentLength: number): Promise<boolean> {
  const p = await raw(port);
  await p.write(`POST /api/v2/write HTTP/1.1\r\nHost: gateway\r\n${auth(code)}Content-Length: ${contentLength}\r\n\r\n`);
  await Promise.race([until('an answer', () => p.text().includes('\r\n\r\n'), 300, 5).catch(() => {}), p.closed]);
  p.socket.destroy();
  return p.text().startsWith('HTTP/1.1 429');
}

/** Valid line protocol of about `bytes` bytes. */
function lines(bytes: number, name: string): string {
  const out: string[] = [];
  let n = 0;
  for (let i = 0; n < bytes; i++) {
    const l = `slow,client=${name} v=${i} ${1_763_700_000_000_000_000n + BigInt(i) * 1000n}\n`;
    out.push(l);
    n += l.length;
  }
  return out.join('');
}

describe('slow and silent clients', () => {
  it('closes a connection whose request headers stall, with 408 and the reason, within the limit', async () => {
    const limit = 400;
    await withGateway({ headersTimeoutMs: limit }, async (gw, port) => {
      const c = await raw(port);
      // Times are taken before the bytes leave, so each is at or before the gateway's own start of the limit.
      const sent = performance.now();
      await c.write(`POST /api/v2/write HTTP/1.1\r\nHost: gateway\r\n${auth('quiet')}`);
      const took = (await closedWithin(c, GENEROUS * limit)) - sent;
      expect(took).toBeGreaterThanOrEqual(limit - 5);
      expect(took).toBeLessThan(GENEROUS * limit);
      const r = response(c.text());
      expect(r.status).toBe(408);
      expect(r.headers.connection).toBe('close');
      expect(JSON.parse(r.body)).toEqual({ code: 'request timeout', message: `request headers too slow: not complete within ${limit} ms (the limit)`, error: `request headers too slow: not complete within ${limit} ms (the limit)` });

      // A connection that never sends a byte is closed as well, without an answer.
      const opened = performance.now();
      const silent = await raw(port);
      const silentTook = (await closedWithin(silent, GENEROUS * limit)) - opened;
      expect(silentTook).toBeGreaterThanOrEqual(limit - 5);
      expect(silentTook).toBeLessThan(GENEROUS * limit);
      expect(silent.text()).toBe('');
      expect(await cuts(gw, 'headers')).toBe(1);
      expect(await cuts(gw, 'idle_first')).toBe(1);
    });
  });

  it('closes a keep-alive connection idle after its answer', async () => {
    const limit = 200;
    await withGateway({ idleTimeoutMs: limit }, async (gw, port) => {
      const c = await raw(port);
      const asked = performance.now();
      await c.write('GET /ping HTTP/1.1\r\nHost: gateway\r\n\r\n');
      await until('the ping answer', () => c.text().includes('\r\n\r\n'), 10_000, 5);
      expect(response(c.text()).status).toBe(204);
      const took = (await closedWithin(c, GENEROUS * limit)) - asked;
      // Node closes 1 s after the Keep-Alive timeout it advertises.
      expect(took).toBeGreaterThanOrEqual(limit - 5);
      expect(took).toBeLessThan(GENEROUS * limit);
      expect(c.text().indexOf('HTTP/1.1', 1)).toBe(-1); // nothing more was sent
      expect(await cuts(gw, 'idle')).toBe(1);
    });
  });

  it('cuts a body trickled below the minimum rate with 408, closes it, and releases its bytes from the queue at once', async () => {
    const windowMs = 1_500;
    const maxQueueBytes = 4 << 20;
    await withGateway({ maxQueueBytes, maxBodyBytes: maxQueueBytes, bodyMinBytesPerSecond: 64 << 10, bodyRateWindowMs: windowMs, bodyIdleTimeoutMs: 60_000 }, async (gw, port) => {
      const body = Buffer.from(lines((11 << 20) / 4, 'trickle')); // under the 3/4 of the queue one facility may hold
      const fast = (5 << 20) / 2; // 2.5 MiB of the 4 MiB budget, then 10 KiB/s
      const c = await raw(port);
      await c.write(`POST /api/v2/write HTTP/1.1\r\nHost: gateway\r\n${auth('loud')}Content-Length: ${body.length}\r\n\r\n`);
      await c.write(body.subarray(0, fast));
      let at = fast;
      let trickling = true;
      const trickle = (async () => {
        while (trickling && at < body.length && !c.socket.destroyed) {
          await c.write(body.subarray(at, at + 512));
          at += 512;
          await sleep(50);
        }
      })();

      // While the trickled body is held, a request needing more than what is left of the budget is refused.
      await until('a request of 1.75 MiB refused while the slow body holds 2.5 MiB', () => refused(port, 'quiet', (7 << 20) / 4), windowMs, 10);

      await closedWithin(c, GENEROUS * windowMs);
      trickling = false;
      await trickle;
      const r = response(c.text());
      expect(r.status).toBe(408);
      expect(r.headers.connection).toBe('close');
      const answer = JSON.parse(r.body) as Record<string, string>;
      expect(answer.code).toBe('request timeout');
      expect(answer.message).toBe(answer.error);
      expect(answer.message).toMatch(/^request body too slow: \d+ bytes\/s over the last \d+ ms, below the minimum of 65536 bytes\/s$/);
      expect(await cuts(gw, 'body_rate')).toBeGreaterThanOrEqual(1); // refused probes whose unread bodies then stalled are cut too

      // The 2.5 MiB are free again: a request needing more than the 1.5 MiB that were left is accepted.
      const big = lines((2 << 20) - 4096, 'after');
      const after = await post(gw.url, '/api/v2/write', big, { Authorization: `Token ${tokens.quiet!.token}` });
      expect(after.status, JSON.stringify(after.body)).toBe(204);
      await until('the queue empty', () => gw.ingestor.queuedBytes === 0, 10_000);
    });
  });

  it('judges a gzip body by its bytes as sent: compressed bytes trickled below the rate are cut', async () => {
    const windowMs = 400;
    await withGateway({ bodyMinBytesPerSecond: 64 << 10, bodyRateWindowMs: windowMs, bodyIdleTimeoutMs: 60_000 }, async (gw, port) => {
      const body = gzipSync(lines(4 << 20, 'gzip'), { level: 1 }); // about 8× smaller than the lines
      const c = await raw(port);
      await c.write(`POST /api/v2/write HTTP/1.1\r\nHost: gateway\r\n${auth('loud')}Content-Encoding: gzip\r\nContent-Length: ${body.length}\r\n\r\n`);
      const trickle = (async () => {
        for (let at = 0; at < body.length && !c.socket.destroyed; at += 1024) {
          await c.write(body.subarray(at, at + 1024)); // 20 KiB/s sent: ~160 KiB/s of lines, above the minimum
          await sleep(50);
        }
      })();
      await closedWithin(c, GENEROUS * windowMs);
      await trickle;
      const r = response(c.text());
      expect(r.status).toBe(408);
      expect((JSON.parse(r.body) as { message: string }).message).toMatch(/^request body too slow: \d+ bytes\/s over the last \d+ ms, below the minimum of 65536 bytes\/s$/);
      expect(await cuts(gw, 'body_rate')).toBe(1);
    });
  });

  it('cuts a body that stalls (no byte for the body idle limit) with 408 and closes it', async () => {
    const limit = 400;
    await withGateway({ bodyIdleTimeoutMs: limit, bodyMinBytesPerSecond: 0 }, async (gw, port) => {
      const c = await raw(port);
      await c.write(`POST /write?db=x HTTP/1.1\r\nHost: gateway\r\n${auth('loud')}Content-Length: 1000000\r\n\r\n`);
      const last = performance.now();
      await c.write(lines(100_000, 'stall'));
      const took = (await closedWithin(c, GENEROUS * limit)) - last;
      expect(took).toBeGreaterThanOrEqual(limit - 5);
      expect(took).toBeLessThan(GENEROUS * limit);
      const r = response(c.text());
      expect(r.status).toBe(408);
      expect(r.headers.connection).toBe('close');
      const answer = JSON.parse(r.body) as Record<string, string>;
      expect(answer.code).toBe('request timeout');
      expect(answer.error).toMatch(new RegExp(`^request body too slow: no byte arrived for \\d+ ms \\(the limit is ${limit} ms without a byte\\)$`));
      expect(await cuts(gw, 'body_idle')).toBe(1);
    });
  });

  // Two stalling facilities: with the queue shared fairly, one facility alone cannot fill it.
  it('starvation drill: stalled large bodies hold the queue only until the cut; a quiet facility is then answered 204', async () => {
    const cutMs = 1_000;
    const maxQueueBytes = 8 << 20;
    await withGateway({ maxQueueBytes, maxBodyBytes: 4 << 20, bodyIdleTimeoutMs: cutMs, bodyRateWindowMs: cutMs }, async (gw, port) => {
      // Four chunked bodies of 2 MiB less 2 KiB each, two per facility: 8 KiB of the budget left, then silence.
      const loud: Raw[] = [];
      const chunk = (2 << 20) - 2048;
      let stalled = 0;
      for (const code of ['loud', 'rowdy', 'loud', 'rowdy']) {
        const c = await raw(port);
        await c.write(`POST /api/v2/write HTTP/1.1\r\nHost: gateway\r\n${auth(code)}Transfer-Encoding: chunked\r\n\r\n`);
        stalled = await c.write(Buffer.concat([Buffer.from(`${chunk.toString(16)}\r\n`), Buffer.alloc(chunk, 0x61), Buffer.from('\r\n')]));
        loud.push(c);
      }
      const quietBody = lines(20_000, 'quiet');
      // Wait until the gateway holds the bodies (before that the quiet facility's bytes could take the loud ones' room).
      await until('the queue full', () => refused(port, 'quiet', quietBody.length), GENEROUS * cutMs, 10);
      const answers: { status: number; at: number }[] = [];
      await until(
        'the quiet facility answered 204',
        async () => {
          const r = await post(gw.url, '/api/v2/write', quietBody, { Authorization: `Token ${tokens.quiet!.token}` });
          answers.push({ status: r.status, at: performance.now() });
          return r.status === 204;
        },
        GENEROUS * cutMs,
        20,
      );
      const first204 = answers.at(-1)!.at;
      expect(answers.every((a) => a.status === 204 || a.status === 429)).toBe(true);
      expect(first204 - stalled).toBeLessThan(cutMs + GENEROUS * cutMs);
      for (const c of loud) {
        await closedWithin(c, GENEROUS * cutMs);
        const r = response(c.text());
        expect(r.status).toBe(408);
        expect((JSON.parse(r.body) as { message: string }).message).toMatch(/^request body too slow: /);
      }
      // (A probe of refused() let in while the queue filled, and held past the cut on a loaded machine, is a fifth.)
      expect((await cuts(gw, 'body_idle')) + (await cuts(gw, 'body_rate'))).toBeGreaterThanOrEqual(4);
      // Once the cut, the quiet facility is answered at once, every time.
      for (let i = 0; i < 3; i++) expect((await post(gw.url, '/api/v2/write', quietBody, { Authorization: `Token ${tokens.quiet!.token}` })).status).toBe(204);
    });
  });

  it('many idle connections fill the connection cap only until the headers limit cuts them', async () => {
    const limit = 500;
    const maxConnections = 200;
    await withGateway({ headersTimeoutMs: limit, maxConnections }, async (gw, port) => {
      const opened = performance.now();
      const idle = await Promise.all(Array.from({ length: maxConnections }, () => raw(port)));
      // At the cap, a new connection is closed as it arrives.
      await until('the cap to refuse a connection', async () => {
        const extra = await raw(port).catch(() => null);
        if (extra) await closedWithin(extra, 2_000).catch(() => extra.socket.destroy());
        return (await cuts(gw, 'max_connections')) > 0;
      }, 10_000, 20);
      await until(
        'a new client to write',
        async () => (await post(gw.url, '/api/v2/write', 'slow,client=new v=1\n', { Authorization: `Token ${tokens.quiet!.token}` })).status === 204,
        GENEROUS * limit,
        20,
      );
      expect(performance.now() - opened).toBeGreaterThanOrEqual(limit - 5);
      await Promise.all(idle.map((c) => closedWithin(c, GENEROUS * limit)));
      expect(await cuts(gw, 'idle_first')).toBeGreaterThanOrEqual(maxConnections);
    });
  });

  it('closes a connection whose unread body trickles on after an early answer (401)', async () => {
    const windowMs = 400;
    await withGateway({ bodyMinBytesPerSecond: 64 << 10, bodyRateWindowMs: windowMs, bodyIdleTimeoutMs: 60_000 }, async (gw, port) => {
      const c = await raw(port);
      const asked = performance.now();
      await c.write(`POST /api/v2/write HTTP/1.1\r\nHost: gateway\r\nAuthorization: Token stk_wrong\r\nContent-Length: 1000000\r\n\r\n`);
      await until('the 401', () => c.text().includes('\r\n\r\n'), 10_000, 5);
      expect(response(c.text()).status).toBe(401);
      // 100 bytes every 50 ms: each resets Node's keep-alive timer, only the rate rule ends it.
      const trickle = (async () => {
        while (!c.socket.destroyed) {
          await c.write(`slow v=${'1'.repeat(92)}\n`);
          await sleep(50);
        }
      })();
      const took = (await closedWithin(c, GENEROUS * windowMs)) - asked;
      await trickle;
      expect(took).toBeGreaterThanOrEqual(windowMs - 5);
      expect(await cuts(gw, 'body_rate')).toBe(1);
    });
  });
});
