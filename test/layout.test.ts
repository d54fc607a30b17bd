// The arrows point down (DESIGN §7): the ground floor imports only itself, src/jobs/ nothing above
// it, and the archive (src/backup/archive/) nothing of tiering — both jobs share src/jobs/ instead.
import { readFileSync, readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = join(import.meta.dirname, '../src');
const files = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
/** Project files a file imports (statically or on demand), relative to src/. */
function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)].map((m) => relative(SRC, resolve(dirname(file), m[1]!)));
}
const within = (prefix: string) => files(join(SRC, prefix)).map((f) => ({ file: relative(SRC, f), imports: importsOf(f) }));
const GROUND = ['config.ts', 'errors.ts', 'log.ts', 'patterns.ts', 'redact.ts', 'signals.ts', 'units.ts'];

describe('the layout', () => {
  it('keeps the ground floor to itself', () => {
    const up = GROUND.flatMap((f) => importsOf(join(SRC, f)).filter((i) => !GROUND.includes(i)).map((i) => `${f} → ${i}`));
    expect(up).toEqual([]);
  });

  it('keeps src/jobs below tiering, the archive, ingest and the commands', () => {
    const up = within('jobs').flatMap(({ file, imports }) => imports.filter((i) => !i.startsWith('jobs/') && !i.startsWith('db/') && !GROUND.includes(i)).map((i) => `${file} → ${i}`));
    expect(up).toEqual([]);
  });

  it('has the archive import nothing of tiering, nor tiering anything of the archive', () => {
    const cross = [
      ...within('backup').flatMap(({ file, imports }) => imports.filter((i) => i.startsWith('tiering/')).map((i) => `${file} → ${i}`)),
      ...within('tiering').flatMap(({ file, imports }) => imports.filter((i) => i.startsWith('backup/')).map((i) => `${file} → ${i}`)),
    ];
    expect(cross).toEqual([]);
  });
});
