// A saturating collector fleet in its own process: `collectors` keep-alive connections each posting
// the same `lines`-line body as fast as they are answered, until SIGTERM; then prints the answers
// it got by status as JSON on stdout.
//   node --import tsx test/support/noisy-load.ts <gateway url> <token> <collectors> <lines>
import { Agent, request } from 'node:http';

const [url, token, collectorsArg, linesArg] = process.argv.slice(2);
const collectors = Number(collectorsArg);
const lines = Number(linesArg);
const base = new URL(url!);
const agent = new Agent({ keepAlive: true, maxSockets: collectors });
const statuses: Record<string, number> = {};
let stopping = false;
let round = 0;

function body(): Buffer {
  const at = 1_700_000_000 + (round++ % 1_000_000) * lines;
  const out: string[] = [];
  for (let i = 0; i < lines; i++) out.push(`noise,line=l${i % 50},cell=c${i % 7} v=${i}.25,w=${i % 11}i ${at + i}`);
  return Buffer.from(out.join('\n'));
}

function post(payload: Buffer): Promise<void> {
  return new Promise((resolve) => {
    const req = request(
      { host: base.hostname, port: base.port, path: '/api/v2/write?precision=s', method: 'POST', agent, headers: { Authorization: `Token ${token}`, 'Content-Length': payload.length } },
      (res) => {
        statuses[res.statusCode ?? 0] = (statuses[res.statusCode ?? 0] ?? 0) + 1;
        res.resume();
        res.on('end', resolve);
      },
    );
    req.on('error', () => {
      statuses.error = (statuses.error ?? 0) + 1;
      resolve();
    });
    req.end(payload);
  });
}

const bodies = Array.from({ length: 8 }, body);
const loops = Array.from({ length: collectors }, async (_, c) => {
  for (let i = c; !stopping; i++) await post(bodies[i % bodies.length]!);
});
process.on('SIGTERM', () => {
  stopping = true;
  void Promise.all(loops).then(() => {
    process.stdout.write(JSON.stringify(statuses) + '\n');
    process.exit(0);
  });
});
process.stdout.write('started\n');
