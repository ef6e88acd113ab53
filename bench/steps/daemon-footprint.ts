// What the daemon costs when it moves nothing: CPU while connected and idle, and
// memory (RSS beyond the guest's) with 8 pairs of 1024 entries.
import { memoryReport, processCpuSeconds } from '../../harness/proc';
import { sleep } from '../../harness/wait';
import { startDaemonBackend, withIdleFrontend, withOwnDaemon } from '../lib/frontend-backends';
import type { Step, StepContext } from './step';

export function daemonFootprintSteps(context: StepContext): Step[] {
  const { want, dpdkMissing } = context;
  const { idle, memory } = context.results;
  const stepsList: Step[] = [];
  if (want('idle')) {
    stepsList.push({
      label: 'idle: vhost-tap daemon connected, no traffic',
      run: () => withOwnDaemon(dpdkMissing, () => startDaemonBackend(1), (daemon) => withIdleFrontend(daemon, undefined, async () => {
        await sleep(1000);
        const a = processCpuSeconds(daemon.pid);
        await sleep(idle.seconds * 1000);
        idle.cpuSeconds = processCpuSeconds(daemon.pid) - a;
      }), (message) => (idle.error = message)),
    });
  }

  if (want('memory')) {
    stepsList.push({
      label: 'memory: vhost-tap daemon with 8 pairs x 1024 entries',
      run: () => withOwnDaemon(dpdkMissing, () => startDaemonBackend(memory.queuePairs, 'vtm0'), async (daemon) => {
        await sleep(500);
        memory.baselineRssMb = memoryReport(daemon.pid).rssKb / 1024;
        await withIdleFrontend(daemon, memory.ringSize, async () => {
          await sleep(1500);
          const m = memoryReport(daemon.pid);
          memory.rssMb = m.rssKb / 1024;
          memory.guestMb = m.guestRssKb / 1024;
          memory.netMb = (m.rssKb - m.guestRssKb) / 1024;
          memory.mappings = m.guestMappings;
        });
      }, (message) => (memory.error = message)),
    });
  }
  return stepsList;
}
