/**
 * "Submit as job": the dialog that turns a notebook into a training job.
 *
 * The form asks for the job's name, framework and topology, size, image,
 * project, parameters and environment, with choices from the caller's part
 * of the catalog (`GET catalog`) and their groups (`GET me`). Submitting
 * sends the notebook *as it is in the editor* to the server extension,
 * which snapshots it into the job folder. A refused submission keeps the
 * dialog open with the service's message and every value as typed.
 */
import { Dialog } from '@jupyterlab/apputils';
import { PageConfig } from '@jupyterlab/coreutils';
import { TranslationBundle } from '@jupyterlab/translation';
import { Widget } from '@lumino/widgets';

import {
  ConnectionAPI,
  ICatalog,
  ICatalogProfile,
  IJob,
  IMe,
  ISubmission,
  JobsAPI,
  KubeAIError
} from './api';

/** The frameworks a job can run with, as the service names them. */
export const FRAMEWORKS: { [name: string]: string } = {
  pytorch: 'PyTorch distributed (DDP)',
  tensorflow: 'TensorFlow parameter-server',
  mpi: 'Horovod/MPI',
  single: 'Single process'
};

/** A notebook to submit: where it lives and its content as in the editor. */
export interface INotebookSource {
  path: string;
  content: unknown;
  /** Whether `content` is the editor's (unsaved edits included) or the saved file. */
  fromEditor: boolean;
}

/** Parse `key = value` lines: values are JSON when they parse, else text. */
export function parseParameters(text: string): { [key: string]: unknown } {
  const out: { [key: string]: unknown } = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) {
      return;
    }
    const eq = line.indexOf('=');
    if (eq <= 0) {
      throw new Error(`Parameters, line ${i + 1}: write it as name = value.`);
    }
    const key = line.slice(0, eq).trim();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new Error(`Parameters, line ${i + 1}: "${key}" is not a Python name.`);
    }
    const value = line.slice(eq + 1).trim();
    try {
      out[key] = JSON.parse(value);
    } catch {
      out[key] = value;
    }
  });
  return out;
}

/** Parse `KEY=VALUE` lines into environment variables (values stay text). */
export function parseEnv(text: string): { [key: string]: string } {
  const out: { [key: string]: string } = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) {
      return;
    }
    const eq = line.indexOf('=');
    const key = eq > 0 ? line.slice(0, eq).trim() : '';
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) {
      throw new Error(
        `Environment, line ${i + 1}: write it as NAME=value (letters, digits and _).`
      );
    }
    out[key] = line.slice(eq + 1);
  });
  return out;
}

/** The default job name from a notebook path: `work/Train MNIST.ipynb` -> `Train MNIST`. */
export function defaultJobName(path: string): string {
  const base = path.split('/').pop() || 'job';
  return base.replace(/\.ipynb$/i, '') || 'job';
}

/** The submit form: the dialog's body. */
export class SubmitForm extends Widget {
  /** The job the service accepted, once it did. */
  job: IJob | null = null;

  constructor(
    readonly source: INotebookSource,
    private readonly catalog: ICatalog,
    private readonly me: IMe,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-KubeAI-submit');
    this.node.dataset.kubeaiDialog = 'submit-job';
    this.build();
  }

  private readonly inputs: { [field: string]: HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement } = {};
  private readonly rows: { [field: string]: HTMLElement } = {};
  private errorNode!: HTMLElement;

  private build(): void {
    const trans = this.trans;
    const form = document.createElement('form');
    form.className = 'jp-KubeAI-form';
    form.onsubmit = e => e.preventDefault();

    const source = document.createElement('p');
    source.className = 'jp-KubeAI-muted';
    source.textContent = this.source.fromEditor
      ? trans.__('Notebook: %1 (as it is in the editor, unsaved edits included)', this.source.path)
      : trans.__('Notebook: %1 (as saved)', this.source.path);
    form.appendChild(source);

    this.addInput(form, 'name', trans.__('Job name'), 'text', defaultJobName(this.source.path));

    const framework = this.addSelect(
      form,
      'framework',
      trans.__('Framework'),
      Object.entries(FRAMEWORKS).map(([value, label]) => [value, trans.__(label)]),
      'pytorch'
    );
    this.addInput(form, 'workers', trans.__('Workers'), 'number', '1', { min: '1' });
    this.addInput(form, 'parameter_servers', trans.__('Parameter servers'), 'number', '1', { min: '0' });
    this.addInput(form, 'procs_per_worker', trans.__('Processes per worker'), 'number', '1', {
      min: '1'
    });

    const profiles = this.catalog.profiles;
    const defaultProfile = (profiles.find(p => p.default) ?? profiles[0])?.name ?? '';
    const profile = this.addSelect(
      form,
      'profile',
      trans.__('Size per worker'),
      profiles.map(p => [p.name, `${p.display_name || p.name} (${profileSummary(p)})`]),
      defaultProfile
    );
    this.addSelect(form, 'gpus', trans.__('GPUs per worker'), [], '');

    const images = this.catalog.images;
    const serverName = PageConfig.getOption('hubServerName') || '';
    const server = this.me.servers.find(s => s.name === serverName) ?? this.me.servers[0];
    const sessionImage = images.find(i => server && i.name === server.image);
    const defaultImage = (sessionImage ?? images.find(i => i.default) ?? images[0])?.name ?? '';
    this.addSelect(
      form,
      'image',
      trans.__('Image'),
      images.map(i => [
        i.name,
        (i.display_name || i.name) +
          (sessionImage && i.name === sessionImage.name ? ` — ${trans.__('this session')}` : '')
      ]),
      defaultImage
    );
    const rules = this.catalog.image_rules ?? [];
    if (rules.length > 0) {
      // Only for members of groups with an "own image" rule; the service checks the pattern again.
      const custom = this.addInput(form, 'custom_image', trans.__('Own image'), 'text', '', {
        placeholder: trans.__('optional, e.g. %1', rules[0].pattern)
      });
      custom.title = trans.__(
        'Instead of the image above, an image of your own that matches: %1',
        rules.map(r => `${r.pattern}${r.description ? ` (${r.description})` : ''}`).join('; ')
      );
    }

    const projects: [string, string][] = this.me.groups.map(g => [g, g]);
    projects.push(['', trans.__('personal (no project)')]);
    this.addSelect(form, 'project', trans.__('Project'), projects, projects[0][0]);

    this.addTextArea(
      form,
      'parameters',
      trans.__('Parameters'),
      'epochs = 3\nlr = 0.01',
      trans.__('One "name = value" a line; put in place of the cell tagged "parameters". Values are JSON when they parse (3, 0.5, true, "text", [1, 2]), otherwise text.')
    );
    this.addTextArea(
      form,
      'env',
      trans.__('Environment variables'),
      'NAME=value',
      trans.__('One NAME=value a line.')
    );

    this.errorNode = document.createElement('p');
    this.errorNode.className = 'jp-KubeAI-submit-error';
    this.errorNode.dataset.kubeaiField = 'submit-error';
    this.errorNode.hidden = true;
    form.appendChild(this.errorNode);

    framework.addEventListener('change', () => this.update_());
    profile.addEventListener('change', () => this.updateGpus());
    this.node.appendChild(form);
    this.updateGpus();
    this.update_();
  }

  /** Show or hide the fields that depend on the framework. */
  private update_(): void {
    const framework = this.inputs.framework.value;
    this.rows.parameter_servers.hidden = framework !== 'tensorflow';
    const single = framework === 'single';
    this.rows.workers.hidden = single;
    this.rows.procs_per_worker.hidden = single;
  }

  /** GPUs per worker: offered only when the size has a GPU range. */
  private updateGpus(): void {
    const profile = this.selectedProfile();
    const select = this.inputs.gpus as HTMLSelectElement;
    select.replaceChildren();
    const max = profile && profile.gpus > 0 ? Math.max(profile.max_gpus, profile.gpus) : 0;
    for (let n = 1; n <= max; n++) {
      select.appendChild(new Option(String(n), String(n), false, n === profile!.gpus));
    }
    this.rows.gpus.hidden = max === 0;
  }

  private selectedProfile(): ICatalogProfile | undefined {
    return this.catalog.profiles.find(p => p.name === this.inputs.profile.value);
  }

  /** The submission as the form says; throws Error with a message for bad input. */
  submission(): ISubmission {
    const trans = this.trans;
    const v = (field: string) => this.inputs[field].value;
    const count = (field: string, label: string, min: number) => {
      const n = Number(v(field));
      if (!Number.isInteger(n) || n < min) {
        throw new Error(trans.__('%1 must be a whole number of at least %2.', label, min));
      }
      return n;
    };
    const name = v('name').trim();
    if (!name) {
      throw new Error(trans.__('Give the job a name.'));
    }
    const framework = v('framework');
    const single = framework === 'single';
    const profile = this.selectedProfile();
    return {
      notebook_path: this.source.path,
      content: this.source.content,
      name,
      framework,
      workers: single ? 1 : count('workers', trans.__('Workers'), 1),
      parameter_servers:
        framework === 'tensorflow' ? count('parameter_servers', trans.__('Parameter servers'), 0) : 0,
      procs_per_worker: single ? 1 : count('procs_per_worker', trans.__('Processes per worker'), 1),
      profile: v('profile'),
      gpus: profile && profile.gpus > 0 ? Number(v('gpus')) : null,
      image: v('image'),
      ...(this.inputs.custom_image && v('custom_image').trim()
        ? { custom_image: v('custom_image').trim() }
        : {}),
      project: v('project') || null,
      parameters: parseParameters(v('parameters')),
      env: parseEnv(v('env'))
    };
  }

  /** Show why the submission failed (or clear it with ''). */
  showError(message: string): void {
    this.errorNode.textContent = message;
    this.errorNode.hidden = !message;
  }

  private addRow(form: HTMLElement, field: string, label: string, control: HTMLElement, help = ''): void {
    const row = document.createElement('label');
    row.className = 'jp-KubeAI-form-row';
    row.dataset.kubeaiRow = field;
    const text = document.createElement('span');
    text.className = 'jp-KubeAI-form-label';
    text.textContent = label;
    row.append(text, control);
    if (help) {
      const small = document.createElement('small');
      small.className = 'jp-KubeAI-muted';
      small.textContent = help;
      row.appendChild(small);
    }
    control.dataset.kubeaiField = field;
    (control as HTMLInputElement).name = field;
    this.rows[field] = row;
    form.appendChild(row);
  }

  private addInput(
    form: HTMLElement,
    field: string,
    label: string,
    type: string,
    value: string,
    attrs: { [name: string]: string } = {}
  ): HTMLInputElement {
    const input = document.createElement('input');
    input.type = type;
    input.value = value;
    input.className = 'jp-mod-styled';
    for (const [k, a] of Object.entries(attrs)) {
      input.setAttribute(k, a);
    }
    this.inputs[field] = input;
    this.addRow(form, field, label, input);
    return input;
  }

  private addSelect(
    form: HTMLElement,
    field: string,
    label: string,
    options: [string, string][],
    value: string
  ): HTMLSelectElement {
    const select = document.createElement('select');
    select.className = 'jp-mod-styled';
    for (const [v, text] of options) {
      select.appendChild(new Option(text, v, false, v === value));
    }
    this.inputs[field] = select;
    this.addRow(form, field, label, select);
    return select;
  }

  private addTextArea(form: HTMLElement, field: string, label: string, placeholder: string, help: string): void {
    const area = document.createElement('textarea');
    area.className = 'jp-mod-styled';
    area.rows = 3;
    area.placeholder = placeholder;
    area.spellcheck = false;
    this.inputs[field] = area;
    this.addRow(form, field, label, area, help);
  }
}

function profileSummary(p: ICatalogProfile): string {
  let text = `${p.cpu_limit} CPU, ${p.memory_limit}`;
  if (p.gpus > 0) {
    text += p.max_gpus > p.gpus ? `, up to ${p.max_gpus} GPU` : `, ${p.gpus} GPU`;
  }
  return text;
}

/**
 * A dialog whose Submit sends the job and closes only when the service
 * accepted it; otherwise it stays open with the message and the values.
 */
class SubmitDialog extends Dialog<IJob | null> {
  private busy = false;

  constructor(
    private readonly form: SubmitForm,
    private readonly api: JobsAPI,
    trans: TranslationBundle
  ) {
    super({
      title: trans.__('Submit as job'),
      body: form,
      buttons: [
        Dialog.cancelButton({ label: trans.__('Cancel') }),
        Dialog.okButton({ label: trans.__('Submit') })
      ],
      focusNodeSelector: 'input[name="name"]'
    });
    this.addClass('jp-KubeAI-submit-dialog');
  }

  resolve(index?: number): void {
    // Index 1 (and the default, Enter) is Submit; 0 is Cancel.
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
    const form = this.form;
    let submission: ISubmission;
    try {
      submission = form.submission();
    } catch (error) {
      form.showError((error as Error).message);
      return;
    }
    this.busy = true;
    this.node.dataset.kubeaiBusy = 'true';
    form.showError('');
    try {
      form.job = await this.api.submit(submission);
    } catch (error) {
      form.showError(error instanceof KubeAIError ? error.message : String(error));
      return;
    } finally {
      this.busy = false;
      delete this.node.dataset.kubeaiBusy;
    }
    super.resolve(1);
  }
}

/**
 * Ask for the job's settings and submit `source`; the accepted job, or
 * null when the user cancelled. Errors loading the catalog are thrown.
 */
export async function submitNotebook(
  source: INotebookSource,
  trans: TranslationBundle,
  api = new JobsAPI(),
  connection = new ConnectionAPI()
): Promise<IJob | null> {
  const [catalog, me] = await Promise.all([api.catalog(), connection.me()]);
  const form = new SubmitForm(source, catalog, me, trans);
  const dialog = new SubmitDialog(form, api, trans);
  const result = await dialog.launch();
  return result.button.accept ? form.job : null;
}
