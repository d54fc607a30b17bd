// Writes a benchmark's results as JSON and a Markdown page with the command that produced them.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';

export function writeTable(dir: string, name: string, command: string, versions: Record<string, string>, configuration: Record<string, unknown>, table: string[], results: unknown): string {
  const date = new Date().toISOString();
  const machine = `${cpus().length} × ${cpus()[0]?.model}, ${Math.round(totalmem() / 2 ** 30)} GiB`;
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${name}.json`), JSON.stringify({ date, command, machine, versions: { node: process.version, ...versions }, configuration, results }, null, 2) + '\n');
  const md = [
    `# ${name}`,
    '',
    `Command: \`${command}\`  `,
    `Date: ${date}; ${machine}; Node ${process.version}, ${Object.entries(versions).map(([k, v]) => `${k} ${v}`).join(', ')}  `,
    `Configuration: ${Object.entries(configuration).map(([k, v]) => `${k}=${String(v)}`).join(', ')}.`,
    '',
    ...table,
    '',
  ].join('\n');
  writeFileSync(join(dir, `${name}.md`), md);
  return md;
}
