// The archive object on its own: a package reads back with its manifest and data checked; its S3
// checksum is SHA-256 of the whole object when it fits one part and the composite of the part
// digests ("…-N") when multipart; a multipart upload to a real S3 API server round-trips byte for
// byte with progress reported; damaged packages are refused with the reason.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildPackage, readPackage, sha256Of } from '../../src/backup/archive/package.ts';
import { ArchiveStore, PART_BYTES } from '../../src/backup/archive/s3.ts';
import type { Manifest } from '../../src/backup/archive/types.ts';
import { S3_CREDENTIALS, startS3, type LocalS3 } from '../support/s3.ts';

const dir = mkdtempSync(join(tmpdir(), 'strata-package-'));
let s3: LocalS3;
beforeAll(async () => {
  s3 = await startS3(['package-test-1']);
});
afterAll(async () => s3?.stop());

function manifestFor(data: Buffer, rows: number): Manifest {
  return {
    format: 1, hypertable: 'strata.metrics', region: 'test-1', rangeStart: '2024-01-01T00:00:00.000Z', rangeEnd: '2024-01-31T00:00:00.000Z', rows, rowsPerFacility: { '1': rows },
    minTime: null, maxTime: null, data: { file: 'data.csv', format: 'csv', header: true, columns: ['time', 'facility_id', 'series_id', 'value'], bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') },
    ddl: 'CREATE TABLE strata.metrics ();', versions: { postgresql: '15', timescaledb: '2.23.0', strata: '0.1.0' },
  };
}

/** What S3 reports for an object uploaded in PART_BYTES parts, computed here from the file's slices. */
function expectedS3Checksum(file: string): string {
  const bytes = readFileSync(file);
  if (bytes.length <= PART_BYTES) return createHash('sha256').update(bytes).digest('base64');
  const digests: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += PART_BYTES) digests.push(createHash('sha256').update(bytes.subarray(at, at + PART_BYTES)).digest());
  return `${createHash('sha256').update(Buffer.concat(digests)).digest('base64')}-${digests.length}`;
}

describe('archive package', () => {
  it('reads back its manifest and data, and is the same bytes when built again', async () => {
    const csv = Buffer.from('time,facility_id,series_id,value\n2024-01-01 00:00:00+00,1,1,1.5\n2024-01-01 00:00:10+00,1,1,2\n');
    writeFileSync(join(dir, 'small.csv'), csv);
    const m = manifestFor(csv, 2);
    const a = await buildPackage(m, join(dir, 'small.csv'), join(dir, 'a.tar.gz'));
    const b = await buildPackage(m, join(dir, 'small.csv'), join(dir, 'b.tar.gz'));
    expect(b.sha256).toBe(a.sha256);
    expect(a.s3Checksum).toBe(expectedS3Checksum(a.file));
    expect(a.s3Checksum).not.toMatch(/-\d+$/);
    const back = await readPackage(createReadStream(a.file), join(dir, 'back.csv'), 'a.tar.gz');
    expect(back.manifest).toEqual(m);
    expect(back.objectSha256).toBe(a.sha256);
    expect(readFileSync(join(dir, 'back.csv'))).toEqual(csv);
  });

  it('uploads a multipart object whose composite checksum it knows, reporting progress, and reads it back intact', async () => {
    // Incompressible data, so the tar.gz spans three 16 MiB parts.
    const data = randomBytes(2 * PART_BYTES + 1_000_000);
    writeFileSync(join(dir, 'big.csv'), data);
    const pkg = await buildPackage(manifestFor(data, 0), join(dir, 'big.csv'), join(dir, 'big.tar.gz'));
    expect(pkg.bytes).toBeGreaterThan(2 * PART_BYTES);
    expect(pkg.s3Checksum).toBe(expectedS3Checksum(pkg.file));
    expect(pkg.s3Checksum).toMatch(/-3$/);
    const store = new ArchiveStore({ region: 'test-1', bucket: 'package-test-1', prefix: 'p', storageClass: 'STANDARD', objectLock: null, retention: '7 years', restoreTier: 'Standard', restoreDays: 1, workDir: dir, endpoint: s3.endpoint, credentials: S3_CREDENTIALS });
    try {
      const progress: number[] = [];
      await store.upload('p/big.tar.gz', pkg.file, pkg.bytes, { storageClass: 'STANDARD', metadata: { sha256: pkg.sha256 }, onProgress: (n) => progress.push(n) });
      expect(progress.length).toBe(3);
      expect(progress.at(-1)).toBe(pkg.bytes);
      const head = await store.head('p/big.tar.gz');
      expect(head).toMatchObject({ bytes: pkg.bytes, metadata: { sha256: pkg.sha256 } });
      expect(await sha256Of(await store.download('p/big.tar.gz'))).toEqual({ sha256: pkg.sha256, bytes: pkg.bytes });
    } finally {
      store.close();
    }
  });

  it('refuses a package whose data does not match its manifest, or that is not one', async () => {
    const csv = Buffer.from('time,facility_id,series_id,value\n2024-01-01 00:00:00+00,1,1,1.5\n');
    const pack = async (entries: [string, Buffer][]) => {
      const p = tar.pack();
      for (const [name, body] of entries) p.entry({ name }, body);
      p.finalize();
      const parts: Buffer[] = [];
      for await (const c of p) parts.push(c as Buffer);
      return Readable.from([gzipSync(Buffer.concat(parts))]);
    };
    const m = manifestFor(csv, 1);
    await expect(readPackage(await pack([['manifest.json', Buffer.from(JSON.stringify(m))], ['data.csv', Buffer.from(csv.toString().replace('1.5', '9.5'))]]), join(dir, 'x.csv'), 'k1')).rejects.toThrow(
      /^k1: data.csv does not match its manifest \(sha256 [0-9a-f]{64}, \d+ bytes; manifest says [0-9a-f]{64}, \d+ bytes\)$/,
    );
    await expect(readPackage(await pack([['manifest.json', Buffer.from(JSON.stringify({ ...m, rows: 5 }))], ['data.csv', csv]]), join(dir, 'x.csv'), 'k2')).rejects.toThrow('k2: data.csv holds 1 rows; the manifest says 5');
    await expect(readPackage(await pack([['data.csv', csv]]), join(dir, 'x.csv'), 'k3')).rejects.toThrow('k3: no manifest.json in the archive');
    await expect(readPackage(await pack([['manifest.json', Buffer.from('{"format":2}')]]), join(dir, 'x.csv'), 'k4')).rejects.toThrow(/^k4: manifest.json is not a strata manifest: format: /);
    await expect(readPackage(Readable.from([Buffer.from('plain text')]), join(dir, 'x.csv'), 'k5')).rejects.toThrow(/incorrect header check/);
  });
});
