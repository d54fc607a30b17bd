// Strata's version: package.json's, read once (the CLI's --version, the archive manifests).
import { readFileSync } from 'node:fs';

export const STRATA_VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
