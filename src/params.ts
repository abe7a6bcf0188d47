/**
 * The parameters of a notebook, read as papermill reads them: the
 * assignments `name = value` of the cell tagged `parameters`, where the
 * value is a simple Python literal (numbers, strings, True/False/None, and
 * lists, tuples and dicts of those). Anything else in the cell (a call, an
 * expression, an import) is skipped: the submit dialog only offers what
 * it can write back as a value.
 *
 * Pure functions, no DOM: the submit dialog prefills its Parameters field
 * from `notebookParameters(content)`.
 */

/** The tag of the cell that holds a notebook's parameters (papermill's). */
export const PARAMETERS_TAG = 'parameters';

/** One assignment of the parameters cell. */
export interface INotebookParameter {
  name: string;
  value: unknown;
}

/** Thrown for what is not a simple literal assignment; the line is skipped. */
class NotALiteral extends Error {}

const IDENT = /[A-Za-z_][A-Za-z0-9_]*/y;
// Python numbers: decimal (with _ separators), floats with exponents, hex/octal/binary ints.
const NUMBER =
  /(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d[\d_]*)?)(?![A-Za-z0-9_.])/y;
const ESCAPES: { [c: string]: string } = {
  n: '\n',
  t: '\t',
  r: '\r',
  '0': '\0',
  '\\': '\\',
  "'": "'",
  '"': '"',
  a: '\x07',
  b: '\b',
  f: '\f',
  v: '\v',
  '\n': ''
};

class Reader {
  constructor(readonly s: string) {}

  i = 0;

  done(): boolean {
    return this.i >= this.s.length;
  }

  peek(): string {
    return this.s[this.i] ?? '';
  }

  /** Spaces and tabs (and, inside brackets, newlines and comments). */
  blank(multiline: boolean): void {
    for (;;) {
      const c = this.peek();
      if (c === ' ' || c === '\t' || (c === '\\' && this.s[this.i + 1] === '\n')) {
        this.i += c === '\\' ? 2 : 1;
      } else if (multiline && (c === '\n' || c === '\r')) {
        this.i++;
      } else if (multiline && c === '#') {
        this.toLineEnd();
      } else {
        return;
      }
    }
  }

  toLineEnd(): void {
    const end = this.s.indexOf('\n', this.i);
    this.i = end < 0 ? this.s.length : end;
  }

  match(re: RegExp): string | null {
    re.lastIndex = this.i;
    const m = re.exec(this.s);
    if (!m) {
      return null;
    }
    this.i += m[0].length;
    return m[0];
  }

  expect(text: string): void {
    if (!this.s.startsWith(text, this.i)) {
      throw new NotALiteral(text);
    }
    this.i += text.length;
  }

  /** A literal value; `depth` > 0 inside brackets (newlines are blanks there). */
  value(depth: number): unknown {
    if (depth > 32) {
      throw new NotALiteral('too deep');
    }
    const inside = depth > 0;
    this.blank(inside);
    const c = this.peek();
    if (c === '[' || c === '(') {
      return this.sequence(c === '[' ? ']' : ')', depth);
    }
    if (c === '{') {
      return this.mapping(depth);
    }
    if (c === '-' || c === '+') {
      this.i++;
      this.blank(inside);
      const n = this.number();
      return c === '-' ? -n : n;
    }
    const word = this.match(IDENT);
    if (word !== null) {
      if (word === 'True' || word === 'False' || word === 'None') {
        return word === 'True' ? true : word === 'False' ? false : null;
      }
      // r'...' and u'...' are strings too; f-strings and bytes are not literals we can keep.
      if (/^[rRuU]$/.test(word) && (this.peek() === "'" || this.peek() === '"')) {
        return this.string(word.toLowerCase() === 'r');
      }
      throw new NotALiteral(word);
    }
    if (c === "'" || c === '"') {
      return this.string(false);
    }
    return this.number();
  }

  number(): number {
    const text = this.match(NUMBER);
    if (text === null) {
      throw new NotALiteral('number');
    }
    const clean = text.replace(/_/g, '');
    const n = /^0[xob]/i.test(clean) ? Number(clean.toLowerCase()) : Number(clean);
    if (!Number.isFinite(n)) {
      throw new NotALiteral(text);
    }
    return n;
  }

  string(raw: boolean): string {
    const quote = this.s.startsWith("'''", this.i) || this.s.startsWith('"""', this.i) ? this.s.slice(this.i, this.i + 3) : this.peek();
    this.i += quote.length;
    let out = '';
    for (;;) {
      if (this.done()) {
        throw new NotALiteral('unterminated string');
      }
      if (this.s.startsWith(quote, this.i)) {
        this.i += quote.length;
        return out;
      }
      const c = this.s[this.i];
      if (c === '\n' && quote.length === 1) {
        throw new NotALiteral('newline in string');
      }
      if (c === '\\' && !raw) {
        const e = this.s[this.i + 1] ?? '';
        if (e in ESCAPES) {
          out += ESCAPES[e];
          this.i += 2;
          continue;
        }
        const hex = e === 'x' ? 2 : e === 'u' ? 4 : e === 'U' ? 8 : 0;
        const digits = this.s.slice(this.i + 2, this.i + 2 + hex);
        if (hex && /^[0-9a-fA-F]+$/.test(digits) && digits.length === hex) {
          out += String.fromCodePoint(parseInt(digits, 16));
          this.i += 2 + hex;
          continue;
        }
        out += c; // an unknown escape stays as written, as in Python
        this.i++;
        continue;
      }
      if (c === '\\' && raw) {
        out += this.s.slice(this.i, this.i + 2);
        this.i += 2;
        continue;
      }
      out += c;
      this.i++;
    }
  }

  sequence(close: string, depth: number): unknown[] {
    this.i++;
    const items: unknown[] = [];
    for (;;) {
      this.blank(true);
      if (this.peek() === close) {
        this.i++;
        return items;
      }
      items.push(this.value(depth + 1));
      this.blank(true);
      if (this.peek() === ',') {
        this.i++;
      } else if (this.peek() !== close) {
        throw new NotALiteral('sequence');
      }
    }
  }

  mapping(depth: number): { [key: string]: unknown } {
    this.i++;
    const out: { [key: string]: unknown } = {};
    for (;;) {
      this.blank(true);
      if (this.peek() === '}') {
        this.i++;
        return out;
      }
      const key = this.value(depth + 1);
      if (typeof key !== 'string' && typeof key !== 'number') {
        throw new NotALiteral('key'); // JSON keys are text
      }
      this.blank(true);
      this.expect(':');
      out[String(key)] = this.value(depth + 1);
      this.blank(true);
      if (this.peek() === ',') {
        this.i++;
      } else if (this.peek() !== '}') {
        throw new NotALiteral('mapping');
      }
    }
  }

  /** One `name = literal` (or `name: annotation = literal`) statement. */
  assignment(): INotebookParameter {
    const name = this.match(IDENT);
    if (name === null) {
      throw new NotALiteral('name');
    }
    this.blank(false);
    if (this.peek() === ':') {
      // A type annotation: skip it up to the "=" on this line.
      const eq = this.s.slice(this.i).search(/=|\n/);
      if (eq < 0 || this.s[this.i + eq] !== '=') {
        throw new NotALiteral('annotation without a value');
      }
      this.i += eq;
    }
    this.expect('=');
    if (this.peek() === '=') {
      throw new NotALiteral('comparison');
    }
    const value = this.value(0);
    this.blank(false);
    const c = this.peek();
    if (c === ';') {
      this.i++;
    } else if (c === '#') {
      this.toLineEnd();
    } else if (c !== '\n' && c !== '\r' && c !== '') {
      throw new NotALiteral('more after the value');
    }
    return { name, value };
  }
}

/**
 * The `name = literal` assignments of Python `source`, in order (a later
 * one of the same name wins, as when the cell runs); others are skipped.
 */
export function pythonAssignments(source: string): INotebookParameter[] {
  const found = new Map<string, unknown>();
  const reader = new Reader(source.replace(/\r\n?/g, '\n'));
  while (!reader.done()) {
    reader.blank(true);
    if (reader.done()) {
      break;
    }
    const start = reader.i;
    try {
      const { name, value } = reader.assignment();
      found.delete(name);
      found.set(name, value);
    } catch (error) {
      if (!(error instanceof NotALiteral)) {
        throw error;
      }
      // Skip the rest of this line (statements inside brackets go with it).
      reader.i = Math.max(reader.i, start);
      reader.toLineEnd();
    }
  }
  return [...found].map(([name, value]) => ({ name, value }));
}

/** The source of a notebook cell as nbformat stores it (text, or a list of lines). */
function cellSource(cell: { source?: unknown }): string {
  const source = cell.source;
  if (Array.isArray(source)) {
    return source.filter(line => typeof line === 'string').join('');
  }
  return typeof source === 'string' ? source : '';
}

/**
 * The parameters of a notebook (nbformat JSON, as the editor's model
 * gives it): the literal assignments of its code cells tagged
 * `parameters`, in order; none when it has no such cell.
 */
export function notebookParameters(content: unknown): INotebookParameter[] {
  const cells = (content as { cells?: unknown } | null)?.cells;
  if (!Array.isArray(cells)) {
    return [];
  }
  const sources = cells
    .filter(cell => {
      const tags = (cell?.metadata as { tags?: unknown } | undefined)?.tags;
      return cell?.cell_type === 'code' && Array.isArray(tags) && tags.includes(PARAMETERS_TAG);
    })
    .map(cellSource);
  return pythonAssignments(sources.join('\n'));
}

/** Parameters as the dialog's text: one `name = <JSON>` a line (what `parseParameters` reads back). */
export function parametersText(parameters: { [name: string]: unknown } | INotebookParameter[]): string {
  const entries = Array.isArray(parameters)
    ? parameters.map(p => [p.name, p.value] as [string, unknown])
    : Object.entries(parameters);
  return entries.map(([name, value]) => `${name} = ${JSON.stringify(value)}`).join('\n');
}
