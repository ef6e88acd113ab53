// How backends, cases, rows and errors are named in the table, the chart and the targets.
import type { Backend, Direction, FrameKind, Row } from './results';

export function frameLabel(frame: FrameKind): string {
  return frame === 'gso' ? '64 KB GSO' : `${frame} B`;
}

export function backendLabel(b: Backend, dir: Direction): string {
  switch (b) {
    case 'raw':
      return dir === 'g2h' ? 'raw write() loop' : 'raw read() loop';
    case 'embedded':
      return 'vhost-tap embedded';
    case 'testpmd':
      return dir === 'g2h' ? 'testpmd (vhost->tap)' : 'testpmd (tap->vhost)';
    case 'daemon':
      return 'vhost-tap daemon';
    case 'embedded-packed':
      return 'vhost-tap embedded packed';
    case 'daemon-packed':
      return 'vhost-tap daemon packed';
    case 'embedded-steering':
      return 'vhost-tap embedded + steering program';
  }
}

export function dirLabel(dir: Direction, short = false): string {
  if (short) return dir === 'g2h' ? 'g->h' : 'h->g';
  return dir === 'g2h' ? 'guest->host' : 'host->guest';
}

export function caseLabel(dir: Direction, frame: FrameKind, queues: number, short = false): string {
  return `${dirLabel(dir, short)} ${frameLabel(frame)} ${queues}q`;
}

export function rowLabel(r: Pick<Row, 'backend' | 'dir' | 'frame' | 'queues'>): string {
  return `${backendLabel(r.backend, r.dir)} ${caseLabel(r.dir, r.frame, r.queues)}`;
}

/** First line of an error, without the stack case.ts folds into it (" | " separated) or terminal escapes a child's log tail may carry. */
export function firstLine(text: string): string {
  const line = text.split('\n')[0]!.split(/ \|\s+at /)[0]!.replace(/\x1b\[[0-9;?]*[ -\/]*[@-~]/g, '').replace(/[\u0000-\u001f\u007f]/g, ' ').trim();
  return line.length > 240 ? `${line.slice(0, 237)}...` : line;
}
