// The command socket of a process that holds an embedded data directory (`strata dev`): since only
// one process may open the directory (src/db/dir-lock.ts), a read-only command started elsewhere
// (`strata status`, ...) sends its argv and STRATA_* environment here as one JSON line; the holder
// runs the same command function on its own open database and streams back what it writes to
// stdout and stderr, then the exit status. One JSON object per line in both directions:
//   request  {"argv":[...],"env":{...}}
//   replies  {"out":"text"} | {"err":"text"} ... then {"exit":0}
// The socket lives beside the data directory (`<dir>.sock`, or in the temporary directory when that
// path is too long for a Unix socket), is readable by its owner only, and is named in the lock file.
import { createHash } from 'node:crypto';
import { chmodSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { liveHolder } from './db/dir-lock.ts';
import type { Db } from './db/port.ts';
import type { Logger } from './log.ts';

export interface CommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/** Runs one forwarded command on the holder's database; resolves with its exit status. */
export type CommandRunner = (argv: string[], env: Record<string, string>, io: CommandIo, db: Db) => Promise<number>;

export interface CommandSocket {
  readonly path: string;
  /** Stops accepting commands and waits for those running to finish (before the database closes). */
  close(): Promise<void>;
}

/** Where the holder of `dataDir` listens: beside it, unless that path is too long for a Unix socket. */
export function commandSocketPath(dataDir: string): string {
  const beside = `${dataDir}.sock`;
  if (Buffer.byteLength(beside) <= 100) return beside;
  return join(tmpdir(), `strata-${createHash('sha256').update(dataDir).digest('hex').slice(0, 16)}.sock`);
}

function removeSocketFile(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    /* not there */
  }
}

/** Listens for forwarded commands. The caller holds the directory's lock, so a socket file found there is stale. */
export async function serveCommands(dataDir: string, db: Db, run: CommandRunner, log: Logger): Promise<CommandSocket> {
  const path = commandSocketPath(dataDir);
  const running = new Set<Promise<unknown>>();
  const server = createServer((socket) => {
    socket.on('error', () => {}); // a client that went away: its command still runs to the end
    const lines = createInterface({ input: socket });
    lines.once('line', (line) => {
      lines.close();
      const task = answer(socket, line, db, run, log);
      running.add(task);
      void task.finally(() => running.delete(task));
    });
  });
  removeSocketFile(path);
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolveListen();
    });
  });
  chmodSync(path, 0o600);
  return {
    path,
    async close() {
      await new Promise<void>((r) => server.close(() => r()));
      await Promise.allSettled([...running]);
      removeSocketFile(path);
    },
  };
}

async function answer(socket: Socket, line: string, db: Db, run: CommandRunner, log: Logger): Promise<void> {
  const send = (msg: object) => {
    if (!socket.destroyed) socket.write(JSON.stringify(msg) + '\n');
  };
  let code = 1;
  try {
    const req = JSON.parse(line) as { argv?: unknown; env?: unknown };
    if (!Array.isArray(req.argv) || !req.argv.every((a) => typeof a === 'string')) throw new Error('the request has no argv');
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries((req.env ?? {}) as Record<string, unknown>)) if (k.startsWith('STRATA_') && typeof v === 'string') env[k] = v;
    log.info('running a forwarded command', { argv: req.argv.join(' ') });
    code = await run(req.argv as string[], env, { out: (text) => send({ out: text }), err: (text) => send({ err: text }) }, db);
  } catch (err) {
    send({ err: `strata: the forwarded command failed: ${(err as Error).message}` });
  }
  send({ exit: code });
  socket.end();
}

/** The STRATA_* part of an environment: all that a forwarded command is given. */
export function strataEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  return Object.fromEntries(Object.entries(env).filter((e): e is [string, string] => e[0].startsWith('STRATA_') && typeof e[1] === 'string'));
}

/**
 * Sends a command to the live holder of `dataDir`, if it answers commands; resolves with the exit
 * status, or undefined when there is no such holder (or it went away before answering anything):
 * then the caller opens the directory itself, and the lock tells it whether it may.
 */
export async function askHolder(dataDir: string, argv: string[], env: Record<string, string>, io: CommandIo): Promise<number | undefined> {
  const holder = liveHolder(dataDir);
  if (!holder?.socket) return undefined;
  return new Promise((resolveExit) => {
    let answered = false;
    let exit: number | undefined;
    const socket = createConnection(holder.socket!);
    socket.on('connect', () => socket.write(JSON.stringify({ argv, env }) + '\n'));
    const lines = createInterface({ input: socket });
    lines.on('line', (line) => {
      answered = true;
      const msg = JSON.parse(line) as { out?: string; err?: string; exit?: number };
      if (msg.out !== undefined) io.out(msg.out);
      if (msg.err !== undefined) io.err(msg.err);
      if (msg.exit !== undefined) exit = msg.exit;
    });
    socket.on('error', (err) => {
      if (!answered) resolveExit(undefined);
      else io.err(`strata: lost the connection to pid ${holder.pid} (${holder.command}): ${err.message}`);
    });
    socket.on('close', () => {
      if (exit !== undefined) resolveExit(exit);
      else if (!answered) resolveExit(undefined);
      else {
        io.err(`strata: pid ${holder.pid} (${holder.command}) stopped before the command finished`);
        resolveExit(1);
      }
    });
  });
}
