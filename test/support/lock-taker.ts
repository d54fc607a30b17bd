// A process that tries to take an embedded directory's lock when told to (a line "go" on stdin),
// prints "took" or "refused: <message>", and holds what it took until stdin ends.
import { createInterface } from 'node:readline';
import { lockDataDir } from '../../src/db/dir-lock.ts';

const dir = process.argv[2]!;
const lines = createInterface({ input: process.stdin });
process.stdout.write('ready\n');
lines.once('line', () => {
  try {
    lockDataDir(dir, `lock-taker ${process.pid}`);
    process.stdout.write('took\n');
  } catch (err) {
    process.stdout.write(`refused: ${(err as Error).message}\n`);
  }
});
lines.once('close', () => process.exit(0));
