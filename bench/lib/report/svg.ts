// The chart of a run (bench/results/latest.svg): Mpps and Gbit/s per case, one bar per
// split-ring backend, and the targets with their measured values.
import { backendLabel, dirLabel, firstLine, frameLabel, rowLabel } from './labels';
import type { Backend, Report, Row, Target } from './results';
import { BACKENDS, casesOf, findRow, usable, type CaseKey, type Metric } from './rows';
import { measuredText, targetStatus } from './targets';
import { fit } from './text-format';

/** Text for XML: escaped, and without the control characters XML 1.0 forbids (error text can carry terminal escapes). */
function esc(s: string): string {
  return s
    .replace(/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f\ufffe\uffff]/g, '')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}

// The chart draws the split rows only (BACKENDS); packed ones are in the table.
const COLORS: Record<Backend, string> = { raw: '#8c8c8c', embedded: '#2b7bba', testpmd: '#e08a2b', daemon: '#3a9a4a', 'embedded-packed': '#7fb2dc', 'daemon-packed': '#8cc98f', 'embedded-steering': '#1d4f7a' };

/** 1, 2, 2.5 or 5 times a power of ten: the step for about `ticks` gridlines up to `max`. */
function niceStep(max: number, ticks: number): number {
  const raw = max / ticks;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

function n1(x: number): string {
  return (Math.round(x * 10) / 10).toString();
}

function tickText(v: number): string {
  return Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(3)));
}

interface Panel {
  metric: Metric;
  title: string;
  unit: string;
  y: number;
  height: number;
}

function barPanel(s: string[], rows: readonly Row[], cases: readonly CaseKey[], p: Panel, x0: number, width: number): void {
  const headroom = 34; // rotated value labels above the tallest bar
  const plotTop = p.y + 22 + headroom;
  const plotBottom = p.y + p.height - 44;
  const plotH = plotBottom - plotTop;
  const values = rows.filter(usable).map((r) => r[p.metric]);
  const top = Math.max(0, ...values);
  const step = top > 0 ? niceStep(top, 4) : 1;
  const max = top > 0 ? Math.ceil(top / step) * step : 1;
  const y = (v: number): number => plotBottom - (Math.max(0, v) / max) * plotH;

  s.push(`<text x="${x0}" y="${p.y + 14}" font-size="13" font-weight="bold">${esc(p.title)}</text>`);
  for (let v = 0; v <= max + step / 2; v += step) {
    s.push(`<line x1="${x0}" y1="${n1(y(v))}" x2="${x0 + width}" y2="${n1(y(v))}" stroke="${v === 0 ? '#333' : '#e4e4e4'}"/>`);
    s.push(`<text x="${x0 - 6}" y="${n1(y(v) + 4)}" text-anchor="end" font-size="10" fill="#555">${esc(tickText(v))}</text>`);
  }
  const midY = (plotTop + plotBottom) / 2;
  s.push(`<text transform="translate(${x0 - 40},${n1(midY)}) rotate(-90)" text-anchor="middle" font-size="11" fill="#333">${esc(p.unit)}</text>`);

  const slot = width / Math.max(1, cases.length);
  const barW = Math.min(26, (slot * 0.84) / BACKENDS.length);
  cases.forEach((c, i) => {
    const cx = x0 + slot * (i + 0.5);
    const left = cx - (barW * BACKENDS.length) / 2;
    BACKENDS.forEach((b, j) => {
      const r = findRow(rows, b, c.dir, c.frame, c.queues);
      const bx = left + j * barW;
      const mid = bx + barW / 2;
      if (!r) return;
      if (!usable(r)) {
        const why = r.error !== undefined ? firstLine(r.error) : 'no rate';
        s.push(`<text transform="translate(${n1(mid + 3)},${n1(plotBottom - 3)}) rotate(-90)" font-size="9" fill="#c0392b">failed<title>${esc(`${rowLabel(r)}: ${why}`)}</title></text>`);
        return;
      }
      const v = r[p.metric];
      const by = y(v);
      const tip = `${rowLabel(r)}: ${r.mpps.toFixed(3)} Mpps, ${r.gbps.toFixed(2)} Gbit/s` +
        (r.cpuSecondsPerMpkt !== undefined ? `, ${r.cpuSecondsPerMpkt.toFixed(2)} CPU s/Mpkt` : '');
      s.push(`<rect x="${n1(bx + 0.5)}" y="${n1(by)}" width="${n1(Math.max(1, barW - 1))}" height="${n1(Math.max(0.5, plotBottom - by))}" fill="${COLORS[b]}"><title>${esc(tip)}</title></rect>`);
      const label = p.metric === 'mpps' ? fit(v, 3, 6) : fit(v, 2, 6);
      s.push(`<text transform="translate(${n1(mid + 3)},${n1(by - 3)}) rotate(-90)" font-size="9" fill="#333">${esc(label)}</text>`);
    });
    // Three short lines: '64 KB GSO' is about as wide as a case's slot.
    const lines = [dirLabel(c.dir, true), frameLabel(c.frame), `${c.queues} pair${c.queues === 1 ? '' : 's'}`];
    lines.forEach((text, k) => {
      s.push(`<text x="${n1(cx)}" y="${plotBottom + 12 + k * 11}" text-anchor="middle" font-size="9.5"${k === 1 ? '' : ' fill="#555"'}>${esc(text)}</text>`);
    });
  });
}

function targetColor(t: Target): string {
  if (t.met === undefined) return '#aaaaaa';
  if (t.informational) return '#6f8fb0';
  return t.met ? '#3a9a4a' : '#d0603a';
}

/** A self-contained SVG: Mpps and Gbit/s per case, one bar per backend, and the targets with their measured values. */
export function renderSvg(report: Report): string {
  const width = 1200;
  const chartX = 70;
  const chartW = 640;
  const listX = chartX + chartW + 30;
  const rows = report.rows.filter((r) => BACKENDS.includes(r.backend));
  const cases = casesOf(rows);
  const targets = report.targets;
  const lineH = 15;
  const panelH = 250;
  const top = 62;
  const legendY = top + 2 * panelH + 8;
  const height = Math.max(legendY + 40, top + 24 + targets.length * lineH + 40);

  const m = report.machine;
  const date = report.startedAt.replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const machine = [m.hostname, m.cpus !== undefined ? `${String(m.cpus)} x ${String(m.cpuModel ?? 'CPU')}` : undefined, m.kernel !== undefined ? `Linux ${String(m.kernel)}` : undefined]
    .filter((x) => x !== undefined && x !== '').map(String).join(', ');
  const s: string[] = [];
  s.push('<?xml version="1.0" encoding="UTF-8"?>');
  s.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">`);
  s.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  s.push(`<text x="16" y="24" font-size="16" font-weight="bold">${esc(`vhost-tap bench: ${machine}`)}</text>`);
  const syscall = typeof m.syscallNs === 'number' ? `; a system call costs ${String(m.syscallNs)} ns here` : '';
  s.push(`<text x="16" y="42" font-size="11" fill="#555">${esc(`${date}, ${report.elapsedSeconds} s; tap counters over the measurement window; ` +
    `ratios only between rows of this run${syscall}`)}</text>`);

  if (cases.length === 0) s.push(`<text x="${chartX}" y="${top + 40}" fill="#999">no throughput cases run</text>`);
  else {
    barPanel(s, rows, cases, { metric: 'mpps', title: 'Packet rate', unit: 'Mpps', y: top, height: panelH }, chartX, chartW);
    barPanel(s, rows, cases, { metric: 'gbps', title: 'Bit rate (Ethernet frames; 64 KB GSO = one frame)', unit: 'Gbit/s', y: top + panelH, height: panelH }, chartX, chartW);
  }
  // Legend: backend colours, labelled for guest-to-host (raw and testpmd read the other way round host-to-guest).
  let lx = chartX;
  for (const b of BACKENDS) {
    const text = b === 'raw' ? 'raw write()/read() loop' : b === 'testpmd' ? 'DPDK testpmd' : backendLabel(b, 'g2h');
    s.push(`<rect x="${lx}" y="${legendY}" width="12" height="12" fill="${COLORS[b]}"/>`);
    s.push(`<text x="${lx + 17}" y="${legendY + 10}" font-size="11">${esc(text)}</text>`);
    lx += 30 + text.length * 6.4;
  }
  s.push(`<text x="${chartX}" y="${legendY + 28}" font-size="10" fill="#777">${esc('failed = the case ran and failed (hover for the error); no bar = not run')}</text>`);

  s.push(`<line x1="${listX - 14}" y1="${top}" x2="${listX - 14}" y2="${height - 20}" stroke="#ddd"/>`);
  s.push(`<text x="${listX}" y="${top + 14}" font-size="13" font-weight="bold">Targets</text>`);
  targets.forEach((t, i) => {
    const ty = top + 34 + i * lineH;
    const status = targetStatus(t);
    s.push(`<circle cx="${listX + 5}" cy="${ty - 4}" r="4.5" fill="${targetColor(t)}"><title>${esc(status)}</title></circle>`);
    const short = t.name.replace('guest->host', 'g->h').replace('host->guest', 'h->g');
    const name = short.length > 50 ? `${short.slice(0, 49)}...` : short;
    s.push(`<text x="${listX + 15}" y="${ty}" font-size="10">${esc(name)}<title>${esc(`${t.name}: want ${t.want}, measured ${measuredText(t)} (${status}). ${t.detail}`)}</title></text>`);
    s.push(`<text x="${width - 12}" y="${ty}" font-size="10" text-anchor="end" fill="${targetColor(t)}">${esc(`${t.measured === undefined ? 'n/a' : measuredText(t)} (${t.want})`)}</text>`);
  });
  const ky = top + 34 + targets.length * lineH + 8;
  const keys: [string, string][] = [['#3a9a4a', 'met'], ['#d0603a', 'NOT met'], ['#aaaaaa', 'not measured'], ['#6f8fb0', 'info (not a target)']];
  let kx = listX;
  for (const [color, text] of keys) {
    s.push(`<circle cx="${kx + 5}" cy="${ky - 4}" r="4.5" fill="${color}"/><text x="${kx + 13}" y="${ky}" font-size="10" fill="#555">${esc(text)}</text>`);
    kx += 22 + text.length * 5.6;
  }
  s.push('</svg>');
  return `${s.join('\n')}\n`;
}

