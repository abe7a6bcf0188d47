/**
 * Small DOM and dialog helpers shared by the Models and Services views.
 *
 * `FormBody` is a dialog body of labelled rows whose controls carry
 * `data-kubeai-field` (what the browser tests find them by); `ActionDialog`
 * closes only when its action succeeded, otherwise it stays open with the
 * service's message and every value as typed (like the submit dialog).
 */
import { Dialog } from '@jupyterlab/apputils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import { KubeAIError } from './api';

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

  private addRow(field: string, label: string, control: HTMLInputElement | HTMLSelectElement, help: string): void {
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
