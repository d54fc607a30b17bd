// The archive object: a tar.gz of manifest.json then data.csv, built the same byte for byte from the
// same export (fixed mtime, owner and mode), so a retried archive step can recognise an object an
// interrupted one already uploaded. Reading it back checks the data against the manifest.
import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip, createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { z } from 'zod';
import { PART_BYTES } from './s3.ts';
import type { Manifest } from './types.ts';

export interface Packaged {
  file: string;
  bytes: number;
  /** SHA-256 of the whole object, hex. */
  sha256: string;
  /** The checksum S3 reports for it when uploaded in PART_BYTES parts (composite "…-N" when multipart). */
  s3Checksum: string;
}

/** SHA-256 over a stream as S3 computes it for an upload in `partBytes` parts. */
class ObjectHasher extends Transform {
  private readonly whole = createHash('sha256');
  private part = createHash('sha256');
  private inPart = 0;
  private readonly parts: Buffer[] = [];
  bytes = 0;
  constructor(private readonly partBytes = PART_BYTES) {
    super();
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null, data?: Buffer) => void): void {
    this.whole.update(chunk);
    this.bytes += chunk.length;
    let at = 0;
    while (at < chunk.length) {
      const take = Math.min(chunk.length - at, this.partBytes - this.inPart);
      this.part.update(chunk.subarray(at, at + take));
      this.inPart += take;
      at += take;
      if (this.inPart === this.partBytes) this.closePart();
    }
    done(null, chunk);
  }
  private closePart(): void {
    this.parts.push(this.part.digest());
    this.part = createHash('sha256');
    this.inPart = 0;
  }
  result(): { sha256: string; s3Checksum: string } {
    if (this.inPart > 0 || this.parts.length === 0) this.closePart();
    const sha256 = this.whole.digest('hex');
    const s3Checksum =
      this.parts.length === 1 ? Buffer.from(sha256, 'hex').toString('base64') : `${createHash('sha256').update(Buffer.concat(this.parts)).digest('base64')}-${this.parts.length}`;
    return { sha256, s3Checksum };
  }
}

export async function buildPackage(manifest: Manifest, dataFile: string, out: string): Promise<Packaged> {
  const pack = tar.pack();
  const mtime = new Date(manifest.rangeEnd);
  const header = { mtime, mode: 0o644, uid: 0, gid: 0, uname: 'strata', gname: 'strata' };
  const hasher = new ObjectHasher();
  const written = pipeline(pack, createGzip({ level: 6 }), hasher, createWriteStream(out));
  pack.entry({ ...header, name: 'manifest.json' }, JSON.stringify(manifest, null, 2) + '\n');
  const entry = pack.entry({ ...header, name: 'data.csv', size: manifest.data.bytes });
  await pipeline(createReadStream(dataFile), entry);
  pack.finalize();
  await written;
  return { file: out, bytes: hasher.bytes, ...hasher.result() };
}

/** SHA-256 (hex) of a stream, as it passes. */
export async function sha256Of(stream: Readable): Promise<{ sha256: string; bytes: number }> {
  const h = createHash('sha256');
  let bytes = 0;
  for await (const chunk of stream) {
    h.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: h.digest('hex'), bytes };
}

const manifestSchema = z.object({
  format: z.literal(1),
  hypertable: z.string(),
  region: z.string(),
  rangeStart: z.string(),
  rangeEnd: z.string(),
  rows: z.number().int().nonnegative(),
  rowsPerFacility: z.record(z.string(), z.number().int().nonnegative()),
  minTime: z.string().nullable(),
  maxTime: z.string().nullable(),
  data: z.object({ file: z.literal('data.csv'), format: z.literal('csv'), header: z.literal(true), columns: z.array(z.string()), bytes: z.number(), sha256: z.string() }),
  ddl: z.string(),
  versions: z.object({ postgresql: z.string(), timescaledb: z.string(), strata: z.string() }),
});

/**
 * Unpacks an archive object: returns its manifest, with data.csv written to `dataFile` after its
 * size, SHA-256 and row count were checked against the manifest. Throws naming the mismatch.
 */
export async function readPackage(object: Readable, dataFile: string, what: string): Promise<{ manifest: Manifest; objectSha256: string; objectBytes: number }> {
  const whole = createHash('sha256');
  let objectBytes = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _e, done) {
      whole.update(chunk);
      objectBytes += chunk.length;
      done(null, chunk);
    },
  });
  const extract = tar.extract();
  let manifest: Manifest | null = null;
  let data: { bytes: number; sha256: string; lines: number } | null = null;
  const unpacked = (async () => {
    for await (const entry of extract) {
      if (entry.header.name === 'manifest.json') {
        let text = '';
        for await (const c of entry) text += (c as Buffer).toString('utf8');
        const parsed = manifestSchema.safeParse(JSON.parse(text));
        if (!parsed.success) throw new Error(`${what}: manifest.json is not a strata manifest: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
        manifest = parsed.data as Manifest;
      } else if (entry.header.name === 'data.csv') {
        const h = createHash('sha256');
        let bytes = 0;
        let lines = 0;
        const sink = createWriteStream(dataFile);
        await pipeline(
          entry,
          new Transform({
            transform(c: Buffer, _e, done) {
              h.update(c);
              bytes += c.length;
              for (let i = c.indexOf(10); i !== -1; i = c.indexOf(10, i + 1)) lines++;
              done(null, c);
            },
          }),
          sink,
        );
        data = { bytes, sha256: h.digest('hex'), lines };
      } else {
        entry.resume();
      }
    }
  })();
  await Promise.all([pipeline(object, tap, createGunzip(), extract as unknown as Writable), unpacked]);
  const m = manifest as Manifest | null;
  const d = data as { bytes: number; sha256: string; lines: number } | null;
  if (!m) throw new Error(`${what}: no manifest.json in the archive`);
  if (!d) throw new Error(`${what}: no data.csv in the archive`);
  if (d.sha256 !== m.data.sha256 || d.bytes !== m.data.bytes) throw new Error(`${what}: data.csv does not match its manifest (sha256 ${d.sha256}, ${d.bytes} bytes; manifest says ${m.data.sha256}, ${m.data.bytes} bytes)`);
  if (d.lines - 1 !== m.rows) throw new Error(`${what}: data.csv holds ${d.lines - 1} rows; the manifest says ${m.rows}`);
  return { manifest: m, objectSha256: whole.digest('hex'), objectBytes };
}
