// Name patterns are defined once (src/patterns.ts): the catalog's CHECK constraints in sql/ carry the
// same expressions, and the registry checks them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { facilityInput } from '../src/facilities/registry.ts';
import { FACILITY_CODE, IDENTIFIER, QUALIFIED_IDENTIFIER, REGION } from '../src/patterns.ts';

const catalog = readFileSync(join(import.meta.dirname, '../sql/0002_catalog.sql'), 'utf8');
/** The regular expression of column `col`'s CHECK (col ~ '…') in the catalog. */
const checkOf = (col: string) => new RegExp(`\\b${col}\\s+text NOT NULL[^\\n]*CHECK \\(${col} ~ '([^']+)'\\)`).exec(catalog)?.[1];

describe('name patterns', () => {
  it("are the catalog's CHECK constraints, character for character", () => {
    expect(checkOf('code')).toBe(FACILITY_CODE.source);
    expect(checkOf('region')).toBe(REGION.source);
  });

  it('are what the registry and configuration check', () => {
    expect(facilityInput.safeParse({ code: 'plant-7_a', region: 'eu-west-1' }).success).toBe(true);
    for (const code of ['Plant', '-a', 'a'.repeat(49), 'a b']) expect(facilityInput.safeParse({ code, region: 'eu-west-1' }).success, code).toBe(false);
    for (const region of ['EU', 'eu_west', '-eu']) expect(facilityInput.safeParse({ code: 'a', region }).success, region).toBe(false);
    expect(IDENTIFIER.test('warm_data')).toBe(true);
    expect(IDENTIFIER.test('a'.repeat(64))).toBe(false);
    expect(QUALIFIED_IDENTIFIER.test('restored.chunk_1')).toBe(true);
    expect(QUALIFIED_IDENTIFIER.test('restored.chunk;drop')).toBe(false);
  });
});
