// A process and its descendants read from /proc (Linux): `strata serve --processes N` is a primary
// whose gateway processes are its children (node:cluster), so a benchmark's CPU time and peak RSS
// have to be read from each of them.
import { readFileSync, readdirSync } from 'node:fs';

export interface ProcStat {
  pid: number;
  /** The command name (/proc/<pid>/comm): `node` for a gateway process. */
  name: string;
  ppid: number;
  /** User + system CPU seconds of the process itself (not of exited children). */
  cpuSeconds: number;
  /** Resident set size now, and its high-water mark (VmHWM), MiB. */
  rssMiB: number;
  peakRssMiB: number;
}

const TICKS = 100; // USER_HZ on Linux

/** The pids of `pid`'s children (every thread's), or [] once it is gone. */
export function childrenOf(pid: number): number[] {
  let tasks: string[];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out = new Set<number>();
  for (const t of tasks) {
    try {
      for (const c of readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8').trim().split(/\s+/)) if (c) out.add(Number(c));
    } catch {
      // the thread ended meanwhile
    }
  }
  return [...out];
}

/** `pid` and all its descendants, the root first. */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) out.push(...childrenOf(out[i]!));
  return out;
}

export function procStat(pid: number): ProcStat | null {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0);
    const name = readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
    return { pid, name, ppid: Number(fields[1]), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / TICKS, rssMiB: Math.round(kb('VmRSS') / 1024), peakRssMiB: Math.round(kb('VmHWM') / 1024) };
  } catch {
    return null;
  }
}

/**
 * Samples a process tree every `everyMs`: the CPU seconds of every process seen (the last reading of
 * one that exited is kept), and each one's peak RSS. `cpuSeconds()` is the sum so far.
 */
export function watchTree(root: number, everyMs = 250) {
  const seen = new Map<number, ProcStat>();
  const sample = () => {
    for (const pid of processTree(root)) {
      const s = procStat(pid);
      if (!s) continue;
      const before = seen.get(pid);
      seen.set(pid, { ...s, peakRssMiB: Math.max(s.peakRssMiB, before?.peakRssMiB ?? 0) });
    }
  };
  sample();
  const timer = setInterval(sample, everyMs);
  timer.unref();
  return {
    sample,
    /** Sum of the CPU seconds of every process seen (sampled now). */
    cpuSeconds(): number {
      sample();
      return [...seen.values()].reduce((n, s) => n + s.cpuSeconds, 0);
    },
    /** Every process seen, the root first: its pid, CPU seconds and peak RSS. */
    processes(): ProcStat[] {
      sample();
      return [...seen.values()];
    },
    /**
     * Gateway processes: the root's node children when there are any (the root is then a
     * node:cluster primary), else the root; helpers such as tsx's esbuild service are not counted.
     */
    gateways(): ProcStat[] {
      const [root, ...rest] = this.processes();
      const nodes = rest.filter((s) => s.name === 'node' && s.ppid === root!.pid);
      return nodes.length > 0 ? nodes : [root!];
    },
    stop(): void {
      clearInterval(timer);
    },
  };
}
export type TreeWatch = ReturnType<typeof watchTree>;

/**
 * CPU seconds of `pid` and every live descendant, each with the CPU of its children that already
 * exited and were waited for (cutime + cstime), so a backend that ends meanwhile is still counted.
 */
export function treeCpuSeconds(pid: number): number {
  let n = 0;
  for (const p of processTree(pid)) {
    try {
      const f = readFileSync(`/proc/${p}/stat`, 'utf8').split(') ')[1]!.split(' ');
      n += (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICKS;
    } catch {
      // gone meanwhile
    }
  }
  return n;
}

/** Busy CPU seconds of the whole machine so far (user, nice, system, irq, softirq of /proc/stat; not idle, iowait or steal). */
export function machineBusySeconds(): number {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return ((f[0] ?? 0) + (f[1] ?? 0) + (f[2] ?? 0) + (f[5] ?? 0) + (f[6] ?? 0)) / TICKS;
}

/** One CPU reading: the machine's busy seconds, the benchmark's (roots and descendants), this process's own. */
interface CpuSample {
  at: number;
  machine: number;
  ours: number;
  self: number;
}

export interface CpuWindow {
  machineCores: number;
  oursCores: number;
  othersCores: number;
  /** This process alone (the load generator), in cores. */
  selfCores: number;
}

/**
 * Starts measuring the machine's busy CPU and the part of it used by `roots` and their descendants,
 * sampled every `everyMs`; the returned function gives both in cores over a window from the start:
 * up to now, or up to the sample nearest `endAt` (performance.now() time) for a phase whose end is
 * only known afterwards. `othersCores` is the rest: processes that are not the benchmark's — on a
 * shared machine, what competed with it.
 */
export function cpuMeter(roots: () => number[], everyMs = 250): (endAt?: number) => CpuWindow {
  const read = (): CpuSample => {
    const self = process.cpuUsage();
    return { at: performance.now(), machine: machineBusySeconds(), ours: roots().reduce((n, r) => n + treeCpuSeconds(r), 0), self: (self.user + self.system) / 1e6 };
  };
  const samples = [read()];
  const timer = setInterval(() => samples.push(read()), everyMs);
  timer.unref();
  return (endAt?: number) => {
    clearInterval(timer);
    samples.push(read());
    const a = samples[0]!;
    const b = endAt === undefined ? samples.at(-1)! : samples.reduce((best, x) => (Math.abs(x.at - endAt) < Math.abs(best.at - endAt) ? x : best));
    const wall = Math.max(1e-3, (b.at - a.at) / 1000);
    const machine = (b.machine - a.machine) / wall;
    const ours = (b.ours - a.ours) / wall;
    return { machineCores: +machine.toFixed(2), oursCores: +ours.toFixed(2), othersCores: +Math.max(0, machine - ours).toFixed(2), selfCores: +((b.self - a.self) / wall).toFixed(2) };
  };
}
