#!/usr/bin/env node
// `npm run bench`: vhost-tap side by side with the raw tap limit, DPDK testpmd
// and QEMU's own tap backend, in one run, in private network namespaces that it
// creates and removes; with a guest, also one live migration per backend
// (informational). Prints a progress line, then the table; writes
// bench/results/latest.json and latest.svg. Targets are printed as met / not
// met; the run exits 0 unless the harness itself breaks.
//
//   node dist/bench/run.js [--seconds 3] [--warmup 1] [--no-guest] [--only REGEX] [--quick]
import fs from 'node:fs';
import path from 'node:path';

import { DAEMON_CLI } from '../harness/daemon';
import { type Netns } from '../harness/netns';
import { REPO_ROOT } from '../harness/repo';
import { requireTools } from '../harness/tools';
import { newNetns, removeStale } from './lib/bench-netns';
import { machineInfo } from './lib/machine';
import { REPORT_NOTES } from './lib/notes';
import { parseArgs } from './lib/options';
import { endProgress, loadAtStart, setStepCount, started, stepStarted, tty } from './lib/progress';
import { evaluateTargets, renderSvg, renderTable, type Report } from './lib/report';
import { daemonFootprintSteps } from './steps/daemon-footprint';
import { latencySteps } from './steps/latency';
import { liveMigrationSteps } from './steps/live-migration';
import { queueCountChangeSteps } from './steps/queue-count-changes';
import { realGuestSteps } from './steps/real-guest';
import { RunResults, type StepContext } from './steps/step';
import { frontendSteps, tapLoopSteps } from './steps/throughput';

const RESULTS = path.join(REPO_ROOT, 'bench', 'results');

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('npm run bench needs root: it creates network namespaces and tap devices');
  requireTools('ip', 'setpriv');
  // Without DPDK the cases it feeds (testpmd, the daemon, idle, memory) are reported as not run, with what to install.
  let dpdkMissing: string | undefined;
  try {
    requireTools('dpdk-testpmd');
  } catch (error) {
    // Debian 12 (DPDK 22.11) ships dpdk-testpmd in dpdk-dev, not in dpdk.
    dpdkMissing = `${(error as Error).message} dpdk-dev librte-net-virtio23 librte-mempool-ring23`;
    process.stdout.write(`${dpdkMissing}\n(the DPDK cases are skipped)\n`);
  }
  if (!fs.existsSync(DAEMON_CLI)) throw new Error(`${DAEMON_CLI} is missing: run npm run build first`);
  removeStale();
  fs.mkdirSync(RESULTS, { recursive: true });

  const results = new RunResults();
  // Raw loops and the embedded data path: one child per case, in one namespace.
  let caseNs: Netns | undefined;
  const context: StepContext = {
    o, dpdkMissing, results,
    want: (label) => !o.only || o.only.test(label),
    caseTimeout: (o.warmup + o.seconds + 40) * 1000,
    casesNetns: () => (caseNs ??= newNetns()),
  };
  const stepsList = [
    ...tapLoopSteps(context), ...frontendSteps(context), ...latencySteps(context), ...daemonFootprintSteps(context),
    ...realGuestSteps(context), ...liveMigrationSteps(context), ...queueCountChangeSteps(context),
  ];

  setStepCount(stepsList.length);
  for (const s of stepsList) {
    stepStarted(s.label);
    await s.run();
    const last = results.takeLastRecorded();
    if (!tty && last) {
      process.stdout.write(`        ${last.error ? `FAILED ${last.error.split('\n')[0]}` : `${last.mpps!.toFixed(3)} Mpps ${last.gbps!.toFixed(2)} Gbit/s`}\n`);
    }
  }
  caseNs?.delete();
  endProgress();

  const { rows, latency, idle, memory, guest, migration, switchLoss } = results;
  const report: Report = {
    machine: { ...machineInfo(), loadAverageAtStart: Number(loadAtStart) },
    startedAt: new Date(started).toISOString(),
    elapsedSeconds: Math.round((Date.now() - started) / 1000),
    config: { seconds: o.seconds, warmup: o.warmup, repeat: o.repeat, ringSize: 256, floodFlows: 8, generatorBatch: 32 },
    rows, latency, idle, memory, guest, migration, switchLoss,
    targets: evaluateTargets(rows, latency, idle, memory),
    notes: REPORT_NOTES,
  };
  const table = renderTable(report);
  process.stdout.write(`\nvhost-tap bench, ${report.startedAt}, ${String(report.machine.cpus)} x ${String(report.machine.cpuModel)}, Linux ${String(report.machine.kernel)}, ` +
    `${report.elapsedSeconds} s, load average at start ${String(loadAtStart)} (other work on the machine skews every figure); ` +
    `a system call costs ${String(report.machine.syscallNs)} ns here (getppid)\n\n${table}\n`);
  fs.writeFileSync(path.join(RESULTS, 'latest.json'), `${JSON.stringify({ ...report, table }, null, 2)}\n`);
  fs.writeFileSync(path.join(RESULTS, 'latest.svg'), renderSvg(report));
  process.stdout.write(`\nwrote ${path.relative(process.cwd(), path.join(RESULTS, 'latest.json'))} and latest.svg; node dist/bench/readme.js puts the run into README.md\n`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    endProgress();
    process.stderr.write(`bench: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  },
);
