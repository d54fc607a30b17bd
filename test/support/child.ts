// Commands run the way an operator runs them: `strata …` in-process through main(), or as a child
// process that a test may kill with SIGKILL when its output matches a pattern.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { main } from '../../src/cli.ts';

const BIN = join(import.meta.dirname, '../../bin/strata.js');

/** `strata <args>` in-process, with its output and exit status. */
export async function strata(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(args, { out: (t) => out.push(t), err: (t) => err.push(t), env });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** `strata <args>` as a child process; SIGKILL as soon as its stdout and stderr so far match `killAt`. */
export function strataProcess(args: string[], env: NodeJS.ProcessEnv, killAt?: RegExp): Promise<{ killed: boolean; code: number | null; output: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  let killed = false;
  const watch = (d: Buffer) => {
    output += d.toString();
    if (killAt && !killed && killAt.test(output)) {
      killed = true;
      child.kill('SIGKILL');
    }
  };
  child.stdout.on('data', watch);
  child.stderr.on('data', watch);
  return new Promise((resolve) => child.once('exit', (code) => resolve({ killed, code, output })));
}
