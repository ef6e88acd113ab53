// Numbers and text laid out for the terminal table (a page WIDTH characters wide).

export const WIDTH = 120;

export function mb(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? 'n/a' : `${x.toFixed(1)} MB`;
}

/** A number in at most `width` characters, with as many of `decimals` as fit. */
export function fit(x: number | undefined, decimals: number, width: number): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  for (let d = decimals; d >= 0; d--) {
    const s = x.toFixed(d);
    if (s.length <= width) return s;
  }
  return x.toExponential(0);
}

export function times(x: number | undefined): string {
  if (x === undefined || !Number.isFinite(x)) return '-';
  return `${x < 10 ? x.toFixed(2) : x < 100 ? x.toFixed(1) : x.toFixed(0)}x`;
}

export function center(s: string, width: number): string {
  if (s.length >= width) return s.slice(0, width);
  const left = Math.floor((width - s.length) / 2);
  return `${' '.repeat(left)}${s}${' '.repeat(width - s.length - left)}`;
}

/** Greedy word wrap; the first line is prefixed with `first`, the others with `rest`. */
export function wrap(text: string, width: number, first: string, rest: string): string[] {
  const lines: string[] = [];
  let line = first;
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    if (!empty && line.length + 1 + word.length > width) {
      lines.push(line);
      line = rest;
      empty = true;
    }
    line += empty ? word : ` ${word}`;
    empty = false;
  }
  if (!empty || lines.length === 0) lines.push(line);
  return lines;
}
