#!/usr/bin/env node
// Entry point. An installed package runs its build (dist/, made by `npm run build` when it is packed);
// a checkout with its development dependencies runs the TypeScript sources through tsx, so what runs
// there is always the code as edited (a dist/ left from an earlier build is never picked up by mistake).
import { existsSync } from 'node:fs';

const sources = new URL('../src/cli.ts', import.meta.url);
const built = new URL('../dist/cli.js', import.meta.url);

async function load() {
  if (existsSync(sources)) {
    let register;
    try {
      ({ register } = await import('tsx/esm/api'));
    } catch {
      register = null;
    }
    if (register) {
      register();
      return import(sources.href);
    }
  }
  if (existsSync(built)) return import(built.href);
  process.stderr.write('strata: no build in dist/ and no tsx to run the sources: run `npm ci` (development) or `npm run build`\n');
  process.exit(70);
}

const { main } = await load();
process.exitCode = await main(process.argv.slice(2));
