// Opens the port implementation that a database URL names: postgres:// → node-postgres, pglite: → embedded.
import type { Logger } from '../log.ts';
// The embedded database is imported only for a pglite: URL, so a server process never loads it.
import { openPg } from './pg.ts';
import type { Db } from './port.ts';

/** The pool a command asks for (node-postgres; an embedded database ignores them). */
export interface OpenOptions {
  logger?: Logger;
  max?: number;
  applicationName?: string;
  queryTimeoutMs?: number;
  listenUrl?: string;
}

export async function openDb(url: string, opts: OpenOptions = {}): Promise<Db> {
  if (url.startsWith('pglite:')) return (await import('./pglite.ts')).openPglite(url);
  return openPg({ url, ...opts });
}
