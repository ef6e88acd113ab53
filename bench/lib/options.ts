// npm run bench's command line.

export interface Options {
  seconds: number;
  warmup: number;
  guest: boolean;
  only?: RegExp;
  quick: boolean;
  budgetSeconds: number;
  /**
   * Each throughput case runs this many times, raw and embedded interleaved, and keeps its
   * best window: interference from the rest of the machine only ever slows a run down.
   */
  repeat: number;
  /** The daemon's guest->host 64 B case: perf stat (per thread: CPU, context switches, syscalls) during the window, strace -c -f after it. */
  profile: boolean;
}
export function parseArgs(argv: string[]): Options {
  const o: Options = { seconds: 3, warmup: 1, guest: true, quick: false, budgetSeconds: 900, profile: false, repeat: 2 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): string => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--seconds') o.seconds = Number(value());
    else if (a === '--warmup') o.warmup = Number(value());
    else if (a === '--no-guest') o.guest = false;
    else if (a === '--only') o.only = new RegExp(value());
    else if (a === '--quick') o.quick = true;
    else if (a === '--profile') o.profile = true;
    else if (a === '--budget') o.budgetSeconds = Number(value());
    else if (a === '--repeat') o.repeat = Math.max(1, Math.floor(Number(value())));
    else if (a === '--help' || a === '-h') {
      process.stdout.write('node dist/bench/run.js [--seconds 3] [--warmup 1] [--repeat 2] [--no-guest] [--only REGEX] [--quick] [--budget 900] [--profile]\n');
      process.exit(0);
    } else throw new Error(`unknown option ${a}`);
  }
  if (o.quick) {
    o.seconds = Math.min(o.seconds, 1.5);
    o.warmup = Math.min(o.warmup, 0.5);
    o.repeat = 1;
  }
  return o;
}
