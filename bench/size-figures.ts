// Refreshes the figures `strata size` ships with (src/sizing/figures.json) from the benchmark results:
//   npx tsx bench/size-figures.ts [--results bench/results] [--out src/sizing/figures.json]
// Each figure keeps its source (the results file and its date, or the assumption used). A test fails
// while the shipped file differs from what bench/results gives (test/size.test.ts).
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { measuredFigures } from '../src/sizing/measured.ts';

const { values } = parseArgs({ options: { results: { type: 'string', default: 'bench/results' }, out: { type: 'string', default: 'src/sizing/figures.json' } } });
writeFileSync(values.out, JSON.stringify(measuredFigures(values.results), null, 2) + '\n');
console.log(`wrote ${values.out} from ${values.results}`);
