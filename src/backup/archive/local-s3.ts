// A local S3 API server (s3rver) over a directory: `strata dev` archives into it, and the archive
// commands use it when they work on an embedded database with no S3 endpoint configured, so the
// whole lifecycle (archive, list, restore, expire) can be tried on one machine. Not for production:
// s3rver keeps no checksums and has no Glacier restores (objects read back at once).
import { mkdirSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { basename, dirname, join, resolve } from 'node:path';
import S3rver from 's3rver';
import type { Config } from '../../config.ts';
import { archiveSettings, parseBuckets, type ArchiveSettings } from './settings.ts';

export const LOCAL_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' };
export const DEV_REGION = 'local';

export interface LocalS3 {
  endpoint: string;
  settings: ArchiveSettings;
  stop(): Promise<void>;
}

/** The local server's directory for an embedded database: <dev dir>/s3 beside strata dev's <dev dir>/pgdata, else <dir>.s3. */
export function localS3Dir(pgliteUrl: string): string {
  const data = resolve(pgliteUrl.replace(/^pglite:/, ''));
  return basename(data) === 'pgdata' ? join(dirname(data), 's3') : `${data}.s3`;
}

export async function startLocalS3(config: Config, dir: string, listen: { host: string; port: number } = { host: '127.0.0.1', port: 0 }): Promise<LocalS3> {
  const region = config.region ?? DEV_REGION;
  const bucket = (config.archiveBuckets ? parseBuckets(config.archiveBuckets).get(region) : undefined) ?? `strata-archive-${region}`;
  mkdirSync(dir, { recursive: true });
  const server = new S3rver({ address: listen.host, port: listen.port, directory: dir, silent: true, resetOnClose: false, configureBuckets: [{ name: bucket, configs: [] }] });
  const { port } = (await server.run()) as AddressInfo;
  const endpoint = `http://${listen.host}:${port}`;
  const settings = { ...archiveSettings({ ...config, region, archiveBuckets: `${region}=${bucket}`, s3Endpoint: endpoint }), credentials: LOCAL_CREDENTIALS };
  return { endpoint, settings, stop: () => server.close() };
}
