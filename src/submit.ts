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
import { FormBody } from './dom';
import { notebookParameters, parametersText } from './params';

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

/** `train` -> `train-2`, `train-2` -> `train-3`: a name for a resubmission, distinct from `taken`. */
export function nextJobName(name: string, taken: Iterable<string> = []): string {
  const used = new Set(taken);
  const m = /^(.*\S)-(\d+)$/.exec(name);
  const base = m ? m[1] : name;
  let n = m ? Number(m[2]) + 1 : 2;
  while (used.has(`${base}-${n}`) || `${base}-${n}` === name) {
    n++;
  }
  return `${base}-${n}`;
}

/** The choices the dialog remembers between submissions (per user, in this browser). */
export interface ILastChoices {
  framework?: string;
  workers?: number;
  parameter_servers?: number;
  procs_per_worker?: number;
  profile?: string;
  gpus?: number | null;
  image?: string;
  custom_image?: string;
  project?: string | null;
}

const REMEMBERED: (keyof ILastChoices)[] = [
  'framework',
  'workers',
  'parameter_servers',
  'procs_per_worker',
  'profile',
  'gpus',
  'image',
  'custom_image',
  'project'
];

/** Where the last choices of `user` are kept (localStorage: the browser's, not the workspace's). */
export function lastChoicesKey(user: string): string {
  return `jupyter-kubeai:last-submit:${user}`;
}

/** The last choices of `user` in this browser (none when storage is off or holds nonsense). */
export function loadLastChoices(user: string): ILastChoices {
  try {
    const raw = JSON.parse(window.localStorage.getItem(lastChoicesKey(user)) ?? '{}');
    if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
      const out: { [key: string]: unknown } = {};
      for (const key of REMEMBERED) {
        if (key in raw) {
          out[key] = raw[key];
        }
      }
      return out as ILastChoices;
    }
  } catch {
    // Private windows and full storage: nothing remembered.
  }
  return {};
}

/** Remember what `user` submitted with (not the name, parameters or environment: those are per notebook). */
export function saveLastChoices(user: string, submission: ISubmission): void {
  const choices: { [key: string]: unknown } = {};
  for (const key of REMEMBERED) {
    choices[key] = (submission as unknown as { [key: string]: unknown })[key] ?? null;
  }
  try {
    window.localStorage.setItem(lastChoicesKey(user), JSON.stringify(choices));
  } catch {
    // Storage off or full: the next dialog starts from the defaults.
  }
}

/** What the dialog starts from besides the catalog's defaults. */
export interface ISubmitPrefill {
  /** The choices of the caller's last submission. */
  last?: ILastChoices;
  /** Resubmitting this job: its choices, parameters and environment, under a distinct name. */
  job?: IJob;
  /** The job name to propose. */
  name?: string;
}

/** The submit form: the dialog's body. */
export class SubmitForm extends FormBody {
  /** The job the service accepted, once it did. */
  job: IJob | null = null;

  constructor(
    readonly source: INotebookSource,
    private readonly catalog: ICatalog,
    private readonly me: IMe,
    private readonly trans: TranslationBundle,
    private readonly prefill: ISubmitPrefill = {}
  ) {
    super('submit-job');
    this.build();
  }

  private build(): void {
    const trans = this.trans;
    const job = this.prefill.job;
    // The job's own choices win; then the last submission's; then the catalog's defaults.
    const chosen: ILastChoices = job
      ? {
          framework: job.framework,
          workers: job.workers,
          parameter_servers: job.parameter_servers,
          procs_per_worker: job.procs_per_worker,
          profile: job.profile,
          gpus: job.gpus || null,
          image: job.image,
          custom_image: job.custom_image ?? '',
          project: job.project
        }
      : (this.prefill.last ?? {});
    const pick = (options: [string, string][], wanted: unknown, fallback: string): string =>
      typeof wanted === 'string' && options.some(([v]) => v === wanted) ? wanted : fallback;
    const countText = (wanted: unknown, fallback: string): string =>
      typeof wanted === 'number' && Number.isInteger(wanted) ? String(wanted) : fallback;

    this.addNote(
      job
        ? trans.__('Runs the notebook as job %1 ran it (%2), with the choices below.', job.name, job.notebook || job.job_id)
        : this.source.fromEditor
          ? trans.__('Notebook: %1 (as it is in the editor, unsaved edits included)', this.source.path)
          : trans.__('Notebook: %1 (as saved)', this.source.path)
    );

    this.addInput('name', trans.__('Job name'), 'text', this.prefill.name ?? defaultJobName(this.source.path));

    const frameworks = Object.entries(FRAMEWORKS).map(([value, label]) => [value, trans.__(label)] as [string, string]);
    const framework = this.addSelect('framework', trans.__('Framework'), frameworks, pick(frameworks, chosen.framework, 'pytorch'));
    this.addCount('workers', trans.__('Workers'), countText(chosen.workers, '1'), { min: '1' }, trans);
    this.addCount(
      'parameter_servers',
      trans.__('Parameter servers'),
      countText(chosen.parameter_servers || undefined, '1'),
      { min: '0' },
      trans
    );
    this.addCount('procs_per_worker', trans.__('Processes per worker'), countText(chosen.procs_per_worker, '1'), { min: '1' }, trans);

    const profiles = this.catalog.profiles;
    const profileOptions = profiles.map(p => [p.name, `${p.display_name || p.name} (${profileSummary(p)})`] as [string, string]);
    const defaultProfile = (profiles.find(p => p.default) ?? profiles[0])?.name ?? '';
    const profile = this.addSelect('profile', trans.__('Size per worker'), profileOptions, pick(profileOptions, chosen.profile, defaultProfile));
    this.addSelect('gpus', trans.__('GPUs per worker'), [], '');

    const images = this.catalog.images;
    const serverName = PageConfig.getOption('hubServerName') || '';
    const server = this.me.servers.find(s => s.name === serverName) ?? this.me.servers[0];
    const sessionImage = images.find(i => server && i.name === server.image);
    const defaultImage = (sessionImage ?? images.find(i => i.default) ?? images[0])?.name ?? '';
    const imageOptions = images.map(
      i =>
        [
          i.name,
          (i.display_name || i.name) + (sessionImage && i.name === sessionImage.name ? ` — ${trans.__('this session')}` : '')
        ] as [string, string]
    );
    this.addSelect('image', trans.__('Image'), imageOptions, pick(imageOptions, chosen.image, defaultImage));
    const rules = this.catalog.image_rules ?? [];
    if (rules.length > 0) {
      // Only for members of groups with an "own image" rule; the service checks the pattern again.
      const custom = this.addInput('custom_image', trans.__('Own image'), 'text', chosen.custom_image ?? '', {
        placeholder: trans.__('optional, e.g. %1', rules[0].pattern)
      });
      custom.title = trans.__(
        'Instead of the image above, an image of your own that matches: %1',
        rules.map(r => `${r.pattern}${r.description ? ` (${r.description})` : ''}`).join('; ')
      );
    }

    const projects: [string, string][] = this.me.groups.map(g => [g, g]);
    projects.push(['', trans.__('personal (no project)')]);
    const project = chosen.project === null ? '' : chosen.project;
    this.addSelect('project', trans.__('Project'), projects, pick(projects, project, projects[0][0]));

    const parameters = job ? parametersText(job.parameters ?? {}) : parametersText(notebookParameters(this.source.content));
    this.addTextArea(
      'parameters',
      trans.__('Parameters'),
      parameters,
      'epochs = 3\nlr = 0.01',
      job
        ? trans.__('One "name = value" a line: the ones job %1 ran with, to edit. Values are JSON when they parse (3, 0.5, true, "text", [1, 2]), otherwise text.', job.name)
        : trans.__('One "name = value" a line, from the cell tagged "parameters"; what you write here runs in place of it. Values are JSON when they parse (3, 0.5, true, "text", [1, 2]), otherwise text.')
    );
    const env = job?.env ?? {};
    this.addTextArea(
      'env',
      trans.__('Environment variables'),
      Object.entries(env).map(([k, v]) => `${k}=${v}`).join('\n'),
      'NAME=value',
      trans.__('One NAME=value a line.')
    );

    framework.addEventListener('change', () => this.update_());
    profile.addEventListener('change', () => this.updateGpus());
    this.updateGpus(chosen.gpus ?? null);
    this.update_();
  }

  /** Show or hide the fields that depend on the framework. */
  private update_(): void {
    const framework = this.inputs.framework.value;
    const shown = (field: string, show: boolean) => {
      this.rows[field].hidden = !show;
      // A hidden field does not count: Lab's dialog greys out OK while any input is invalid.
      (this.inputs[field] as HTMLInputElement).disabled = !show;
    };
    shown('parameter_servers', framework === 'tensorflow');
    const single = framework === 'single';
    shown('workers', !single);
    shown('procs_per_worker', !single);
  }

  /** GPUs per worker: offered only when the size has a GPU range. */
  private updateGpus(wanted: number | null = null): void {
    const profile = this.selectedProfile();
    const select = this.inputs.gpus as HTMLSelectElement;
    select.replaceChildren();
    const max = profile && profile.gpus > 0 ? Math.max(profile.max_gpus, profile.gpus) : 0;
    const selected = wanted !== null && wanted >= 1 && wanted <= max ? wanted : profile?.gpus;
    for (let n = 1; n <= max; n++) {
      select.appendChild(new Option(String(n), String(n), false, n === selected));
    }
    this.rows.gpus.hidden = max === 0;
  }

  private selectedProfile(): ICatalogProfile | undefined {
    return this.catalog.profiles.find(p => p.name === this.inputs.profile.value);
  }

  /** The submission as the form says; throws Error with a message for bad input. */
  submission(): ISubmission {
    const trans = this.trans;
    const v = (field: string) => this.value(field);
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
      workers: single ? 1 : this.count('workers', trans.__('Workers'), 1),
      parameter_servers:
        framework === 'tensorflow' ? this.count('parameter_servers', trans.__('Parameter servers'), 0) : 0,
      procs_per_worker: single ? 1 : this.count('procs_per_worker', trans.__('Processes per worker'), 1),
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
    trans: TranslationBundle,
    title: string,
    private readonly remember: (submission: ISubmission) => void
  ) {
    super({
      title,
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
      this.remember(submission);
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
 * null when the user cancelled. The form starts from the user's last
 * choices and the notebook's parameters cell, or, resubmitting, from the
 * job's (`prefill.job`). Errors loading the catalog are thrown.
 */
export async function submitNotebook(
  source: INotebookSource,
  trans: TranslationBundle,
  api = new JobsAPI(),
  connection = new ConnectionAPI(),
  prefill: ISubmitPrefill = {}
): Promise<IJob | null> {
  const [catalog, me] = await Promise.all([api.catalog(), connection.me()]);
  const form = new SubmitForm(source, catalog, me, trans, { last: loadLastChoices(me.name), ...prefill });
  const title = prefill.job ? trans.__('Resubmit %1', prefill.job.name) : trans.__('Submit as job');
  const dialog = new SubmitDialog(form, api, trans, title, submission => saveLastChoices(me.name, submission));
  const result = await dialog.launch();
  return result.button.accept ? form.job : null;
}

/**
 * Resubmit `job`: the submit dialog prefilled from it, under a name none
 * of `takenNames` has, running the notebook the job ran (its snapshot).
 */
export async function resubmitJob(
  job: IJob,
  takenNames: Iterable<string>,
  trans: TranslationBundle,
  api = new JobsAPI(),
  connection = new ConnectionAPI()
): Promise<IJob | null> {
  const content = await api.snapshot(job);
  return submitNotebook({ path: job.notebook || `${job.name}.ipynb`, content, fromEditor: false }, trans, api, connection, {
    job,
    name: nextJobName(job.name, takenNames)
  });
}
