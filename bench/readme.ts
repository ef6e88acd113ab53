// Puts the latest run (bench/results/latest.json) into README.md, between the
// "bench:begin" and "bench:end" markers: node dist/bench/readme.js [results.json]
import fs from 'node:fs';
import path from 'node:path';

import { renderMarkdown, type Report } from './lib/report';

const ROOT = path.resolve(__dirname, '..', '..');
const BEGIN = '<!-- bench:begin (node dist/bench/readme.js writes this block from bench/results/latest.json) -->';
const END = '<!-- bench:end -->';

export function replaceBlock(readme: string, block: string): string {
  const start = readme.indexOf(BEGIN);
  const end = readme.indexOf(END);
  if (start < 0 || end < start) throw new Error(`README.md has no "${BEGIN}" ... "${END}" block: put the two markers where the results go`);
  return `${readme.slice(0, start + BEGIN.length)}\n${block}\n${readme.slice(end)}`;
}

function main(): void {
  const results = process.argv[2] ?? path.join(ROOT, 'bench', 'results', 'latest.json');
  const report = JSON.parse(fs.readFileSync(results, 'utf8')) as Report;
  const readmePath = path.join(ROOT, 'README.md');
  fs.writeFileSync(readmePath, replaceBlock(fs.readFileSync(readmePath, 'utf8'), renderMarkdown(report)));
  process.stdout.write(`README.md: results of ${report.startedAt} from ${path.relative(ROOT, results)}\n`);
}

if (require.main === module) main();
