// Opens the port implementation that a database URL names: postgres:// → node-postgres, pglite: → embedded.
import type { Logger } from '../log.ts';
import { openPg } from './pg.ts';
import { openPglite } from './pglite.ts';
import type { Db } from './port.ts';

export async function openDb(url: string, opts: { logger?: Logger; max?: number; applicationName?: string; queryTimeoutMs?: number; listenUrl?: string } = {}): Promise<Db> {
  if (url.startsWith('pglite:')) return openPglite(url);
  return openPg({ url, ...opts });
}
