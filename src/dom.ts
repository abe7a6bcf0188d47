/**
 * Small DOM and dialog helpers shared by the Models and Services views.
 *
 * `FormBody` is a dialog body of labelled rows whose controls carry
 * `data-kubeai-field` (what the browser tests find them by); `ActionDialog`
 * closes only when its action succeeded, otherwise it stays open with the
 * service's message and every value as typed (like the submit dialog).
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { IHistoryEvent, KubeAIError } from './api';

/** An element with a class, text and `data-kubeai-field`. */
export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: { className?: string; text?: string; field?: string } = {}
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (props.className) {
    node.className = props.className;
  }
  if (props.text !== undefined) {
    node.textContent = props.text;
  }
  if (props.field) {
    node.dataset.kubeaiField = props.field;
  }
  return node;
}

/** A Lab-styled button with `data-kubeai-action`. */
export function button(
  label: string,
  action: string,
  onClick: () => void,
  kind: 'accept' | 'reject' | 'warn' = 'reject'
): HTMLButtonElement {
  const b = el('button', {
    className: `jp-Button jp-mod-styled jp-mod-${kind} jp-KubeAI-button`,
    text: label
  });
  b.dataset.kubeaiAction = action;
  b.onclick = onClick;
  return b;
}

/** The message to show for a failed call. */
export function errorText(error: unknown): string {
  return error instanceof KubeAIError ? error.message : String(error);
}

/** A local date and time for seconds since the epoch. */
export function when(epoch: number | null | undefined): string {
  return epoch ? new Date(epoch * 1000).toLocaleString() : '—';
}

/**
 * Ask before an action that cannot be taken back (cancel, update, roll
 * back, delete): true when the user confirmed. `warn` styles the button
 * as destructive.
 */
export async function confirmAction(options: {
  title: string;
  body: string;
  ok: string;
  trans: TranslationBundle;
  warn?: boolean;
}): Promise<boolean> {
  const { trans } = options;
  const ok = options.warn ? Dialog.warnButton({ label: options.ok }) : Dialog.okButton({ label: options.ok });
  const answer = await showDialog({
    title: options.title,
    body: options.body,
    buttons: [Dialog.cancelButton({ label: trans.__('Cancel') }), ok]
  });
  return answer.button.accept;
}

/** A detail view's section: a heading over its content, found by `data-kubeai-section`. */
export function section(title: string, name: string): HTMLElement {
  const s = el('section', { className: 'jp-KubeAI-detail-section' });
  s.dataset.kubeaiSection = name;
  s.appendChild(el('h3', { text: title }));
  return s;
}

/** The words for an event's action: `rolled_back` -> `rolled back`. */
export function actionText(action: string): string {
  return action.replace(/_/g, ' ');
}

/**
 * An item's history (who did what, and when), oldest first, as a small
 * table; a line saying there is none when `events` is empty, and nothing
 * (null) when the service does not report events.
 */
export function historyList(events: readonly IHistoryEvent[] | undefined, trans: TranslationBundle): HTMLElement | null {
  if (events === undefined) {
    return null;
  }
  if (events.length === 0) {
    return el('p', { className: 'jp-KubeAI-muted', text: trans.__('Nothing recorded yet.'), field: 'history' });
  }
  const table = el('table', { className: 'jp-KubeAI-events jp-KubeAI-history', field: 'history' });
  for (const e of events) {
    const tr = el('tr', { field: 'history-event' });
    tr.dataset.kubeaiAction = e.action;
    tr.append(
      el('td', { className: 'jp-KubeAI-muted', text: when(e.time), field: 'history-time' }),
      el('td', { text: e.actor, field: 'history-actor' }),
      el('td', { text: actionText(e.action), field: 'history-action' }),
      el('td', { className: 'jp-KubeAI-muted', text: e.detail ?? '', field: 'history-detail' })
    );
    table.appendChild(tr);
  }
  return table;
}

/** A detail view's "History" section: hidden until the service reports the item's events. */
export class HistorySection {
  constructor(private readonly trans: TranslationBundle) {
    this.node = section(trans.__('History'), 'history');
    this.node.appendChild(this.body);
    this.node.hidden = true;
  }

  readonly node: HTMLElement;

  show(events: readonly IHistoryEvent[] | undefined): void {
    const history = historyList(events, this.trans);
    this.node.hidden = history === null;
    this.body.replaceChildren(...(history ? [history] : []));
  }

  private readonly body = el('div');
}

/**
 * Say next to a number field why the dialog's OK is greyed out: Lab's
 * Dialog disables it while any input is `:invalid` (here: out of its
 * min/max, or not a whole number), without a word. The message sits
 * under the field (`data-kubeai-field="<field>-invalid"`), updated as the
 * user types.
 */
export function explainCount(input: HTMLInputElement, row: HTMLElement, label: string, trans: TranslationBundle): void {
  const note = el('small', { className: 'jp-KubeAI-field-invalid', field: `${input.name || input.dataset.kubeaiField}-invalid` });
  note.hidden = true;
  row.appendChild(note);
  const check = () => {
    const min = input.min === '' ? null : Number(input.min);
    const max = input.max === '' ? null : Number(input.max);
    const text = input.value.trim();
    const n = Number(text);
    let why = '';
    if (text === '' && input.validity.badInput) {
      why = trans.__('%1 must be a number.', label);
    } else if (text === '') {
      why = input.required ? trans.__('%1 is needed.', label) : '';
    } else if (!Number.isInteger(n)) {
      why = trans.__('%1 must be a whole number.', label);
    } else if (min !== null && n < min) {
      why = max !== null
        ? trans.__('%1 must be from %2 to %3.', label, min, max)
        : trans.__('%1 must be at least %2.', label, min);
    } else if (max !== null && n > max) {
      why = trans.__('%1 must be at most %2.', label, max);
    }
    note.textContent = why;
    note.hidden = !why;
    // No setCustomValidity: the dialog checks validity before this listener runs, so a
    // custom message would keep OK greyed out one keystroke too long. min/max/step say it.
    input.classList.toggle('jp-KubeAI-invalid', !!why);
  };
  input.addEventListener('input', check);
  check();
}

/** A dialog body: labelled rows, and a place for the error. */
export class FormBody extends Widget {
  readonly inputs: { [field: string]: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement } = {};
  readonly rows: { [field: string]: HTMLElement } = {};

  constructor(dialogName: string) {
    super();
    this.addClass('jp-KubeAI-submit');
    this.node.dataset.kubeaiDialog = dialogName;
    this.form = el('form', { className: 'jp-KubeAI-form' });
    this.form.onsubmit = e => e.preventDefault();
    this.errorNode = el('p', { className: 'jp-KubeAI-submit-error', field: 'submit-error' });
    this.errorNode.hidden = true;
    this.node.append(this.form, this.errorNode);
  }

  readonly form: HTMLFormElement;

  /** A line of text above the rows. */
  addNote(text: string): HTMLElement {
    const p = el('p', { className: 'jp-KubeAI-muted', text });
    this.form.appendChild(p);
    return p;
  }

  addInput(
    field: string,
    label: string,
    type: string,
    value: string,
    attrs: { [name: string]: string } = {},
    help = ''
  ): HTMLInputElement {
    const input = el('input', { className: 'jp-mod-styled' });
    input.type = type;
    input.value = value;
    for (const [k, a] of Object.entries(attrs)) {
      input.setAttribute(k, a);
    }
    this.addRow(field, label, input, help);
    return input;
  }

  /** A whole-number field that says why it is invalid (see `explainCount`). */
  addCount(field: string, label: string, value: string, attrs: { [name: string]: string }, trans: TranslationBundle, help = ''): HTMLInputElement {
    const input = this.addInput(field, label, 'number', value, { step: '1', ...attrs }, help);
    explainCount(input, this.rows[field], label, trans);
    return input;
  }

  addTextArea(field: string, label: string, value: string, placeholder: string, help = ''): HTMLTextAreaElement {
    const area = el('textarea', { className: 'jp-mod-styled' });
    // Tall enough for what it is prefilled with (a notebook's parameters), within reason.
    area.rows = Math.min(8, Math.max(3, value.split('\n').length + 1));
    area.placeholder = placeholder;
    area.spellcheck = false;
    area.value = value;
    this.addRow(field, label, area, help);
    return area;
  }

  addSelect(field: string, label: string, options: [string, string][], value: string, help = ''): HTMLSelectElement {
    const select = el('select', { className: 'jp-mod-styled' });
    for (const [v, text] of options) {
      select.appendChild(new Option(text, v, false, v === value));
    }
    this.addRow(field, label, select, help);
    return select;
  }

  value(field: string): string {
    return this.inputs[field].value;
  }

  /** A whole number of at least `min` (and at most `max`), or an Error saying so. */
  count(field: string, label: string, min: number, max = Infinity): number {
    const n = Number(this.value(field));
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new Error(
        max === Infinity
          ? `${label} must be a whole number of at least ${min}.`
          : `${label} must be a whole number from ${min} to ${max}.`
      );
    }
    return n;
  }

  /** Show why the action failed (or clear it with ''). */
  showError(message: string): void {
    this.errorNode.textContent = message;
    this.errorNode.hidden = !message;
  }

  private addRow(
    field: string,
    label: string,
    control: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement,
    help: string
  ): void {
    const row = el('label', { className: 'jp-KubeAI-form-row' });
    row.dataset.kubeaiRow = field;
    row.append(el('span', { className: 'jp-KubeAI-form-label', text: label }), control);
    if (help) {
      row.appendChild(el('small', { className: 'jp-KubeAI-muted', text: help }));
    }
    control.dataset.kubeaiField = field;
    control.name = field;
    this.inputs[field] = control;
    this.rows[field] = row;
    this.form.appendChild(row);
  }

  private readonly errorNode: HTMLElement;
}

/**
 * Show `body` with Cancel and `okLabel`; OK runs `action` and closes only
 * when it succeeded (its result is returned), else shows its error and
 * stays open. Null when cancelled.
 */
export async function runFormDialog<T>(options: {
  title: string;
  body: FormBody;
  okLabel: string;
  trans: TranslationBundle;
  action: () => Promise<T>;
  /** While the action runs (a deployment waits until ready). */
  busyText?: string;
}): Promise<T | null> {
  const dialog = new ActionDialog<T>(options);
  const result = await dialog.launch();
  return result.button.accept ? dialog.result : null;
}

class ActionDialog<T> extends Dialog<unknown> {
  result: T | null = null;

  constructor(
    private readonly options: {
      title: string;
      body: FormBody;
      okLabel: string;
      trans: TranslationBundle;
      action: () => Promise<T>;
      busyText?: string;
    }
  ) {
    super({
      title: options.title,
      body: options.body,
      buttons: [
        Dialog.cancelButton({ label: options.trans.__('Cancel') }),
        Dialog.okButton({ label: options.okLabel })
      ],
      focusNodeSelector: 'input, select'
    });
    this.addClass('jp-KubeAI-submit-dialog');
  }

  resolve(index?: number): void {
    // Index 1 (and the default, Enter) is OK; 0 is Cancel.
    if (index === 0) {
      super.resolve(0);
      return;
    }
    if (this.busy) {
      return;
    }
    void this.send();
  }

  private async send(): Promise<void> {
    const body = this.options.body;
    this.busy = true;
    this.node.dataset.kubeaiBusy = 'true';
    body.showError('');
    const ok = this.node.querySelector<HTMLButtonElement>('.jp-Dialog-button.jp-mod-accept');
    const label = ok?.querySelector('.jp-Dialog-buttonLabel');
    const okText = label?.textContent ?? '';
    if (ok && this.options.busyText) {
      ok.disabled = true;
      if (label) {
        label.textContent = this.options.busyText;
      }
    }
    try {
      this.result = await this.options.action();
    } catch (error) {
      body.showError(error instanceof Error && !(error instanceof KubeAIError) ? error.message : errorText(error));
      return;
    } finally {
      this.busy = false;
      delete this.node.dataset.kubeaiBusy;
      if (ok) {
        ok.disabled = false;
        if (label) {
          label.textContent = okText;
        }
      }
    }
    super.resolve(1);
  }

  private busy = false;
}
