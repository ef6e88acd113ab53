// The results of `npm run bench`: one row per (backend, direction, frame, queue
// pairs), the targets as ratios between rows of the same run, the
// terminal table, the SVG chart and the README block. Pure functions of the data:
// nothing here measures, so a saved latest.json can be re-rendered.
export type {
  Backend, Direction, FrameKind, GuestMapping, GuestResult, GuestThroughput, IdleResult, LatencyResult, MemoryResult, MigrationResult, MigrationRun,
  MigrationWindow, Report, Row, RttSummary, SwitchLossResult, SwitchLossRun, Target, TargetUnit,
} from './results';
export { summarizeRtts } from './rtt-summary';
export { backendLabel, caseLabel, frameLabel } from './labels';
export { baseBackend, findRow, finishRow, ringOf } from './rows';
export { evaluateTargets, targetStatus } from './targets';
export { renderTable } from './table';
export { renderSvg } from './svg';
export { renderMarkdown } from './markdown';
