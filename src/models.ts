/**
 * The Models section of the KubeAI panel, a model's detail view, and the
 * "Register model" and "Deploy" dialogs.
 *
 * The list shows the registered models the caller may see (theirs and
 * their projects'), with the latest version and the aliases. The detail
 * view (a main-area widget) shows every version side by side: one column
 * per metric, format, lineage (the job that produced it, opened with
 * `kubeai:open-job`), aliases; per version Deploy (any member), Set
 * alias (the model's owner), Archive/Unarchive and Delete (its creator,
 * the model's owner or an admin: `may_change`); and the model's history. Models change only when someone acts, so
 * nothing polls: the views list again when shown and after each action.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  ConnectionAPI,
  ICatalogProfile,
  IJob,
  IJobFile,
  IModel,
  IModelVersion,
  IRegistration,
  IService,
  ISignature,
  ITensorSpec,
  JobsAPI,
  KubeAIError,
  mayChange,
  ModelsAPI,
  ServicesAPI
} from './api';
import { button, confirmAction, el, errorText, FormBody, HistorySection, runFormDialog, when } from './dom';
import { age } from './jobs';

/** Model names: lowercase letters, digits and '-', starting with a letter (at most 63). */
export const MODEL_NAME_RE = /^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$/;
/** Service names are DNS labels short enough for the objects made from them (at most 40). */
export const SERVICE_NAME_RE = /^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$/;
export const ALIAS_RE = /^[a-z][-a-z0-9]{0,62}$/;

/** A valid name made from free text: `Train_MNIST v2` -> `train-mnist-v2`. */
export function nameFrom(text: string, maxLength = 63, fallback = 'model'): string {
  let name = text
    .toLowerCase()
    .replace(/\.[a-z0-9]+$/, '')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^[^a-z]+/, '')
    .slice(0, maxLength)
    .replace(/-+$/, '');
  if (!name) {
    name = fallback;
  }
  return name;
}

/** A metric value for a table cell: whole numbers as they are, others to 4 significant digits. */
export function formatMetric(value: unknown): string {
  if (typeof value === 'number') {
    if (Number.isInteger(value)) {
      return String(value);
    }
    return String(Number(value.toPrecision(4)));
  }
  if (value === null || value === undefined) {
    return '—';
  }
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** Every metric name of `versions`, in first-seen order: the table's metric columns. */
export function metricNames(versions: readonly IModelVersion[]): string[] {
  const names: string[] = [];
  for (const v of versions) {
    for (const name of Object.keys(v.metrics ?? {})) {
      if (!names.includes(name)) {
        names.push(name);
      }
    }
  }
  return names;
}

/** `production → v2, staging → v3` */
function aliasText(model: IModel): string {
  return Object.entries(model.aliases)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([alias, v]) => `${alias} → v${v}`)
    .join(', ');
}

/** The Models section: the models the caller may see, by project. */
export class ModelsView extends Widget {
  constructor(
    private readonly api: ModelsAPI,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-KubeAI-models');
    this.addClass('jp-KubeAI-section');
    this.title.label = trans.__('Models');
    this.build();
  }

  /** A model was clicked: its detail should open. */
  get modelOpened(): ISignal<this, IModel> {
    return this._modelOpened;
  }

  get models(): readonly IModel[] {
    return this._models;
  }

  /** The projects the filter offers (the user's groups). */
  setProjects(groups: string[]): void {
    const current = this.projectFilter.value;
    this.projectFilter.replaceChildren(
      new Option(this.trans.__('All projects'), ''),
      new Option(this.trans.__('Personal'), '-'),
      ...groups.map(g => new Option(g, g))
    );
    this.projectFilter.value = current;
  }

  async refresh(): Promise<void> {
    const project = this.projectFilter.value;
    try {
      const { models } = await this.api.list(project && project !== '-' ? project : undefined);
      this._models = project === '-' ? models.filter(m => m.project === null) : models;
      this.node.dataset.state = 'listed';
      this.render();
    } catch (error) {
      this.node.dataset.state = 'error';
      this.message.textContent = this.trans.__('The models could not be listed: %1', errorText(error));
      this.message.hidden = false;
    }
  }

  protected onAfterShow(msg: Message): void {
    void this.refresh();
  }

  protected onAfterAttach(msg: Message): void {
    if (this.isVisible) {
      void this.refresh();
    }
  }

  private build(): void {
    const trans = this.trans;
    const bar = el('div', { className: 'jp-KubeAI-jobs-filters' });
    this.projectFilter = el('select', { className: 'jp-mod-styled', field: 'model-project-filter' });
    this.setProjects([]);
    this.projectFilter.onchange = () => void this.refresh();
    bar.append(this.projectFilter, button(trans.__('Refresh'), 'refresh-models', () => void this.refresh()));
    this.message = el('p', { className: 'jp-KubeAI-muted', field: 'models-message' });
    this.list = el('ul', { className: 'jp-KubeAI-job-list', field: 'models' });
    this.node.append(bar, this.message, this.list);
  }

  private render(): void {
    const trans = this.trans;
    this.list.replaceChildren();
    this.message.hidden = this._models.length > 0;
    this.message.textContent = trans.__(
      'No models yet. Register one from a finished job ("Register model" in its detail) or from a file or folder (right-click it in the file browser).'
    );
    const now = Date.now() / 1000;
    for (const model of this._models) {
      const li = el('li', { className: 'jp-KubeAI-job jp-KubeAI-item' });
      li.dataset.kubeaiModel = model.name;
      li.dataset.kubeaiModelId = String(model.id);
      li.tabIndex = 0;
      li.title = trans.__('Open model %1', model.name);
      const top = el('div', { className: 'jp-KubeAI-job-top' });
      top.append(
        el('span', { className: 'jp-KubeAI-job-name', text: model.name, field: 'name' }),
        el('span', {
          className: 'jp-KubeAI-state',
          text: model.latest === null ? trans.__('no version') : `v${model.latest}`,
          field: 'latest'
        })
      );
      const facts = el('div', { className: 'jp-KubeAI-job-facts jp-KubeAI-muted' });
      facts.append(
        el('span', { text: model.project ?? trans.__('personal'), field: 'project' }),
        el('span', { text: age(model.created, now), field: 'age' })
      );
      const aliases = aliasText(model);
      if (aliases) {
        facts.append(el('span', { text: aliases, field: 'aliases' }));
      }
      li.append(top, facts);
      li.onclick = () => this._modelOpened.emit(model);
      li.onkeydown = e => {
        if (e.key === 'Enter') {
          this._modelOpened.emit(model);
        }
      };
      this.list.appendChild(li);
    }
  }

  private _models: IModel[] = [];
  private readonly _modelOpened = new Signal<this, IModel>(this);
  private projectFilter!: HTMLSelectElement;
  private message!: HTMLElement;
  private list!: HTMLUListElement;
}

/** What the model detail needs from the application. */
export interface IModelDetailOptions {
  api: ModelsAPI;
  services: ServicesAPI;
  jobs: JobsAPI;
  trans: TranslationBundle;
  /** Open a job's detail (`kubeai:open-job`). */
  openJob: (jobId: string) => void;
  /** A version was deployed: show the service. */
  onDeployed: (service: IService) => void;
  /** The model list may have changed. */
  onChanged: () => void;
}

/** One model in the main area: its versions side by side, and what can be done to each. */
export class ModelDetail extends Widget {
  constructor(
    model: IModel,
    private readonly options: IModelDetailOptions
  ) {
    super();
    this.model = model;
    this.addClass('jp-KubeAI-job-detail');
    this.addClass('jp-KubeAI-model-detail');
    this.node.dataset.kubeaiModel = model.name;
    this.node.dataset.kubeaiModelId = String(model.id);
    this.title.label = model.name;
    this.title.closable = true;
    this.build();
    this.render();
  }

  model: IModel;

  async refresh(): Promise<void> {
    try {
      this.model = await this.options.api.get(this.model.id);
      if (!this.actionMessage) {
        this.showMessage(''); // a load error is over; an action's refusal stays until the next action
      }
      this.render();
    } catch (error) {
      if (error instanceof KubeAIError && error.status === 404) {
        this.showMessage(this.options.trans.__('This model no longer exists, or you may no longer see it.'));
        this.node.dataset.kubeaiState = 'Deleted';
        this.actions.hidden = true;
        this.versionsBody.replaceChildren();
        this.options.onChanged();
        return;
      }
      this.showMessage(errorText(error));
    }
  }

  protected onAfterAttach(msg: Message): void {
    void this.refresh();
  }

  private build(): void {
    const trans = this.options.trans;
    this.header = el('div', { className: 'jp-KubeAI-detail-header' });
    this.messageNode = el('p', { className: 'jp-KubeAI-error-detail', field: 'detail-error' });
    this.messageNode.hidden = true;
    this.factsNode = el('dl', { className: 'jp-KubeAI-facts' });
    this.actions = el('div', { className: 'jp-KubeAI-actions' });
    this.actions.append(button(trans.__('Refresh'), 'refresh-model', () => void this.refresh()));
    const versions = el('section', { className: 'jp-KubeAI-detail-section' });
    versions.dataset.kubeaiSection = 'versions';
    versions.appendChild(el('h3', { text: trans.__('Versions') }));
    this.versionsBody = el('div', { className: 'jp-KubeAI-table-wrap' });
    versions.appendChild(this.versionsBody);
    this.history = new HistorySection(trans);
    this.node.append(this.header, this.messageNode, this.actions, this.factsNode, versions, this.history.node);
  }

  private showMessage(text: string): void {
    this.messageNode.textContent = text;
    this.messageNode.hidden = !text;
  }

  private render(): void {
    const trans = this.options.trans;
    const model = this.model;
    this.title.label = model.name;
    this.title.caption = trans.__('KubeAI model %1', model.name);
    this.header.replaceChildren(el('h2', { text: model.name, field: 'model-name' }));
    if (model.description) {
      this.header.appendChild(el('p', { className: 'jp-KubeAI-muted', text: model.description, field: 'description' }));
    }
    const facts: [string, string, string][] = [
      ['project', trans.__('Project'), model.project ?? trans.__('personal')],
      ['owner', trans.__('Owner'), model.owner],
      ['latest', trans.__('Latest version'), model.latest === null ? '—' : `v${model.latest}`],
      ['aliases', trans.__('Aliases'), aliasText(model) || '—'],
      ['created', trans.__('Registered'), when(model.created)]
    ];
    this.factsNode.replaceChildren();
    for (const [field, label, value] of facts) {
      this.factsNode.append(el('dt', { text: label }), el('dd', { text: value, field }));
    }
    this.renderVersions(model.versions ?? []);
    this.history.show(model.events);
  }

  private renderVersions(versions: IModelVersion[]): void {
    const trans = this.options.trans;
    if (versions.length === 0) {
      this.versionsBody.replaceChildren(el('p', { className: 'jp-KubeAI-muted', text: trans.__('No versions.') }));
      return;
    }
    const metrics = metricNames(versions);
    const table = el('table', { className: 'jp-KubeAI-table jp-KubeAI-versions' });
    const head = el('tr');
    for (const title of [
      trans.__('Version'),
      trans.__('Aliases'),
      ...metrics,
      trans.__('Format'),
      trans.__('Registered'),
      trans.__('Lineage'),
      ''
    ]) {
      head.appendChild(el('th', { text: title }));
    }
    head.querySelectorAll('th').forEach((th, i) => {
      if (i >= 2 && i < 2 + metrics.length) {
        th.dataset.kubeaiMetric = metrics[i - 2];
        th.className = 'jp-KubeAI-metric';
      }
    });
    const thead = el('thead');
    thead.appendChild(head);
    const tbody = el('tbody');
    const byVersion = new Map<number, string[]>();
    for (const [alias, v] of Object.entries(this.model.aliases)) {
      byVersion.set(v, [...(byVersion.get(v) ?? []), alias]);
    }
    for (const version of versions) {
      const tr = el('tr');
      tr.dataset.kubeaiVersion = String(version.version);
      tr.dataset.kubeaiArchived = String(version.archived);
      if (version.archived) {
        tr.classList.add('jp-KubeAI-archived');
      }
      const number = el('td', { field: 'version' });
      number.append(el('strong', { text: `v${version.version}` }));
      if (version.archived) {
        number.append(' ', el('span', { className: 'jp-KubeAI-state', text: trans.__('archived'), field: 'archived' }));
      }
      tr.appendChild(number);

      const aliases = el('td', { field: 'aliases' });
      for (const alias of (byVersion.get(version.version) ?? []).sort()) {
        aliases.appendChild(this.aliasChip(alias));
      }
      tr.appendChild(aliases);

      for (const name of metrics) {
        const value = version.metrics?.[name];
        const td = el('td', { className: 'jp-KubeAI-metric', text: formatMetric(value) });
        td.dataset.kubeaiMetric = name;
        if (value !== undefined) {
          td.title = String(value);
        }
        tr.appendChild(td);
      }
      tr.appendChild(el('td', { text: version.format, field: 'format' }));
      const created = el('td', { text: when(version.created), field: 'created' });
      created.title = trans.__('by %1; %2', version.created_by, version.checksum);
      tr.appendChild(created);
      tr.appendChild(this.lineageCell(version));

      // Members deploy any version as a service of their own; the aliases are the model
      // owner's; a version is changed by its creator (or the model's owner, an admin).
      const actions = el('td', { className: 'jp-KubeAI-row-actions' });
      if (!version.archived) {
        actions.append(button(trans.__('Deploy'), 'deploy', () => void this.deploy(version), 'accept'));
        if (mayChange(this.model)) {
          actions.append(button(trans.__('Set alias'), 'set-alias', () => void this.setAlias(version)));
        }
      }
      if (mayChange(version.may_change === undefined ? this.model : version)) {
        actions.append(
          button(
            version.archived ? trans.__('Unarchive') : trans.__('Archive'),
            version.archived ? 'unarchive' : 'archive',
            () => void this.setArchived(version, !version.archived)
          ),
          button(trans.__('Delete'), 'delete-version', () => void this.deleteVersion(version), 'warn')
        );
      }
      tr.appendChild(actions);
      tbody.appendChild(tr);
    }
    table.append(thead, tbody);
    this.versionsBody.replaceChildren(table);
  }

  private aliasChip(alias: string): HTMLElement {
    const trans = this.options.trans;
    const chip = el('span', { className: 'jp-KubeAI-chip', text: alias });
    chip.dataset.kubeaiAlias = alias;
    if (!mayChange(this.model)) {
      return chip;
    }
    const remove = el('button', { className: 'jp-KubeAI-chip-remove', text: '×' });
    remove.dataset.kubeaiAction = 'remove-alias';
    remove.title = trans.__('Remove alias %1', alias);
    remove.onclick = () => void this.removeAlias(alias);
    chip.appendChild(remove);
    return chip;
  }

  private lineageCell(version: IModelVersion): HTMLElement {
    const trans = this.options.trans;
    const td = el('td', { field: 'lineage', className: 'jp-KubeAI-lineage' });
    const lineage = version.lineage ?? {};
    if (lineage.job_id) {
      const link = el('a', { text: lineage.job_id, field: 'lineage-job' });
      link.href = '#';
      link.title = trans.__('Open job %1', lineage.job_id);
      link.onclick = e => {
        e.preventDefault();
        this.options.openJob(lineage.job_id!);
      };
      td.append(trans.__('job '), link);
      const details = [
        lineage.notebook ? trans.__('notebook %1', lineage.notebook) : '',
        lineage.image ? trans.__('image %1', lineage.image) : '',
        lineage.parameters && Object.keys(lineage.parameters).length
          ? trans.__('parameters %1', JSON.stringify(lineage.parameters))
          : ''
      ].filter(Boolean);
      if (details.length) {
        td.appendChild(el('div', { className: 'jp-KubeAI-muted', text: details.join('; ') }));
      }
    } else if (lineage.source) {
      td.append(el('span', { text: lineage.source, field: 'lineage-source' }));
    } else {
      td.textContent = '—';
    }
    return td;
  }

  private async act(what: () => Promise<unknown>): Promise<void> {
    this.actionMessage = false;
    this.showMessage('');
    try {
      await what();
    } catch (error) {
      // Kept in view through the refreshes that follow (this one, and the list's).
      this.actionMessage = true;
      this.showMessage(errorText(error));
    }
    await this.refresh();
    this.options.onChanged();
  }

  private async setArchived(version: IModelVersion, archived: boolean): Promise<void> {
    await this.act(() => this.options.api.setArchived(this.model.id, version.version, archived));
  }

  private async removeAlias(alias: string): Promise<void> {
    await this.act(() => this.options.api.deleteAlias(this.model.id, alias));
  }

  private async setAlias(version: IModelVersion): Promise<void> {
    const trans = this.options.trans;
    const body = new FormBody('set-alias');
    body.addNote(trans.__('Point an alias at version %1 of %2 (it moves from the version it named before).', version.version, this.model.name));
    body.addInput('alias', trans.__('Alias'), 'text', Object.keys(this.model.aliases).length ? '' : 'production', {
      placeholder: 'production',
      list: 'jp-KubeAI-alias-suggestions'
    });
    const suggestions = el('datalist');
    suggestions.id = 'jp-KubeAI-alias-suggestions';
    for (const alias of new Set(['production', 'staging', ...Object.keys(this.model.aliases)])) {
      suggestions.appendChild(new Option(alias, alias));
    }
    body.form.appendChild(suggestions);
    const done = await runFormDialog({
      title: trans.__('Set alias'),
      body,
      okLabel: trans.__('Set alias'),
      trans,
      action: async () => {
        const alias = body.value('alias').trim();
        if (!ALIAS_RE.test(alias)) {
          throw new Error(trans.__('An alias is lowercase letters, digits and "-", starting with a letter.'));
        }
        return this.options.api.setAlias(this.model.id, alias, version.version);
      }
    });
    if (done) {
      await this.refresh();
      this.options.onChanged();
    }
  }

  private async deleteVersion(version: IModelVersion): Promise<void> {
    const trans = this.options.trans;
    const confirmed = await confirmAction({
      title: trans.__('Delete version %1?', version.version),
      body: trans.__(
        'Version %1 of %2 and its files leave the registry for good. A version that a service uses cannot be deleted (archive it instead).',
        version.version,
        this.model.name
      ),
      ok: trans.__('Delete'),
      trans,
      warn: true
    });
    if (!confirmed) {
      return;
    }
    await this.act(() => this.options.api.deleteVersion(this.model.id, version.version));
  }

  private async deploy(version: IModelVersion): Promise<void> {
    const service = await deployVersion(this.model, version, this.options.trans, this.options.services, this.options.jobs);
    if (service) {
      this.options.onDeployed(service);
    }
  }

  private header!: HTMLElement;
  private messageNode!: HTMLElement;
  /** The message is an action's refusal (kept by refreshes), not a load error. */
  private actionMessage = false;
  private factsNode!: HTMLElement;
  private actions!: HTMLElement;
  private versionsBody!: HTMLElement;
  private history!: HistorySection;
}

function profileLabel(p: ICatalogProfile): string {
  let text = `${p.display_name || p.name} (${p.cpu_limit} CPU, ${p.memory_limit}`;
  if (p.gpus > 0) {
    text += `, ${p.gpus} GPU`;
  }
  return text + ')';
}

/**
 * The Deploy dialog for one version: service name, replicas, size, batching.
 * The service once ready (the dialog waits for it), or null when cancelled.
 */
export async function deployVersion(
  model: IModel,
  version: IModelVersion,
  trans: TranslationBundle,
  services: ServicesAPI,
  jobs: JobsAPI
): Promise<IService | null> {
  const catalog = await jobs.catalog().catch(() => ({ images: [], profiles: [] as ICatalogProfile[] }));
  const body = new FormBody('deploy');
  body.addNote(trans.__('Serve version %1 of %2 behind a stable, authenticated URL.', version.version, model.name));
  body.addInput('name', trans.__('Service name'), 'text', nameFrom(model.name, 40, 'service'), {}, trans.__('Lowercase letters, digits and "-"; part of the endpoint URL.'));
  body.addCount('replicas', trans.__('Replicas'), '1', { min: '1', max: '32' }, trans);
  body.addCount(
    'max_replicas',
    trans.__('Autoscale up to'),
    '',
    { min: '1', max: '32', placeholder: trans.__('no autoscaling') },
    trans,
    trans.__('On a cluster: add replicas under load (CPU), up to this many. Local mode runs one.')
  );
  const profiles = catalog.profiles;
  if (profiles.length) {
    const preferred = profiles.find(p => p.default && p.gpus === 0) ?? profiles.find(p => p.gpus === 0) ?? profiles[0];
    const profile = body.addSelect(
      'profile',
      trans.__('Size per replica'),
      profiles.map(p => [p.name, profileLabel(p)]),
      preferred.name
    );
    // GPUs per replica: a choice only where the size offers a range.
    const gpus = body.addSelect('gpus', trans.__('GPUs per replica'), [], '');
    const updateGpus = () => {
      const p = profiles.find(q => q.name === profile.value);
      const max = p && p.gpus > 0 ? Math.max(p.max_gpus, p.gpus) : 0;
      gpus.replaceChildren();
      for (let n = 1; n <= max; n++) {
        gpus.appendChild(new Option(String(n), String(n), false, n === p!.gpus));
      }
      (gpus.closest('[data-kubeai-row]') as HTMLElement | null)?.toggleAttribute('hidden', max <= 1);
    };
    profile.addEventListener('change', updateGpus);
    updateGpus();
  }
  body.addCount('max_batch_size', trans.__('Max batch size'), '16', { min: '1', max: '1024' }, trans, trans.__('Requests arriving together are batched up to this many (1: no batching).'));
  return runFormDialog<IService>({
    title: trans.__('Deploy %1 v%2', model.name, version.version),
    body,
    okLabel: trans.__('Deploy'),
    busyText: trans.__('Deploying…'),
    trans,
    action: () => {
      const name = body.value('name').trim();
      if (!SERVICE_NAME_RE.test(name)) {
        throw new Error(
          trans.__('A service name is lowercase letters, digits and "-", starting with a letter, at most 40 long.')
        );
      }
      const replicas = body.count('replicas', trans.__('Replicas'), 1, 32);
      const maxReplicas = body.value('max_replicas').trim()
        ? body.count('max_replicas', trans.__('Autoscale up to'), replicas, 32)
        : undefined;
      const gpus = body.inputs.gpus && body.value('gpus') ? Number(body.value('gpus')) : undefined;
      return services.deploy({
        name,
        model_id: model.id,
        version: version.version,
        replicas,
        ...(maxReplicas !== undefined ? { max_replicas: maxReplicas } : {}),
        profile: body.inputs.profile ? body.value('profile') : undefined,
        ...(gpus !== undefined ? { gpus } : {}),
        max_batch_size: body.count('max_batch_size', trans.__('Max batch size'), 1, 1024)
      });
    }
  });
}

/** The v2 datatypes a signature may name (as the hub checks them). */
export const DATATYPES = [
  'BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES'
];

/**
 * The "Signature" field of the Register dialog: empty for none, else JSON
 * `{"inputs": [{name, datatype, shape}], "outputs": [...]}` checked as the
 * hub checks it (the hub has the last word). An Error says what is wrong.
 */
export function parseSignature(text: string, trans: TranslationBundle): ISignature | undefined {
  if (!text.trim()) {
    return undefined;
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new Error(trans.__('The signature is not JSON: %1', (error as Error).message));
  }
  const isObject = (v: unknown): v is { [key: string]: unknown } =>
    typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(raw)) {
    throw new Error(
      trans.__('The signature is an object: {"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]}.')
    );
  }
  const unknown = Object.keys(raw).filter(k => k !== 'inputs' && k !== 'outputs');
  if (unknown.length) {
    throw new Error(trans.__('The signature has unknown field(s) %1; it has inputs and outputs.', unknown.join(', ')));
  }
  const tensors = (list: unknown, where: string): ITensorSpec[] => {
    if (!Array.isArray(list) || list.length === 0) {
      throw new Error(trans.__('The signature\'s %1 must be a list of tensors ({"name", "datatype", "shape"}).', where));
    }
    return list.map((t: unknown, i: number) => {
      const here = `${where}[${i}]`;
      if (!isObject(t)) {
        throw new Error(trans.__('%1 must be an object with name, datatype and shape.', here));
      }
      if (t.name !== undefined && (typeof t.name !== 'string' || !t.name)) {
        throw new Error(trans.__('%1.name must be text.', here));
      }
      if (t.datatype !== undefined && !DATATYPES.includes(t.datatype as string)) {
        throw new Error(trans.__('%1.datatype must be one of %2.', here, DATATYPES.join(', ')));
      }
      const shape = t.shape;
      if (
        shape !== undefined &&
        (!Array.isArray(shape) || shape.length === 0 || !shape.every(d => Number.isInteger(d) && (d === -1 || d > 0)))
      ) {
        throw new Error(trans.__('%1.shape must be a list of sizes, -1 meaning any, e.g. [-1, 20].', here));
      }
      return t as unknown as ITensorSpec;
    });
  };
  if (raw.inputs === undefined) {
    throw new Error(trans.__('The signature needs its inputs.'));
  }
  const signature: ISignature = { inputs: tensors(raw.inputs, 'inputs') };
  if (raw.outputs !== undefined && raw.outputs !== null) {
    signature.outputs = tensors(raw.outputs, 'outputs');
  }
  return signature;
}

/** What to register: a job's folder (or a path in it), or a path in the user's home. */
export type RegisterSource = { job: IJob } | { path: string };

const FORMAT_CHOICES: [string, string][] = [
  ['', 'auto (from the files)'],
  ['sklearn', 'scikit-learn (joblib / pickle)'],
  ['torchscript', 'TorchScript'],
  ['custom', 'custom (predictor.py)']
];

/** The choices of "Path in the job folder": the whole folder, its top folders, its files. */
export function jobPathChoices(files: readonly IJobFile[], trans: TranslationBundle): [string, string][] {
  const choices: [string, string][] = [['', trans.__('the whole job folder')]];
  const folders = new Set<string>();
  for (const file of files) {
    const parts = file.name.split('/');
    for (let i = 1; i < parts.length; i++) {
      folders.add(parts.slice(0, i).join('/'));
    }
  }
  for (const folder of [...folders].sort()) {
    choices.push([folder, `${folder}/`]);
  }
  for (const file of files) {
    choices.push([file.name, file.name]);
  }
  return choices;
}

/**
 * The Register model dialog; the registered model and version, or null
 * when cancelled. Errors loading what the form needs are thrown.
 */
export async function registerModel(
  source: RegisterSource,
  trans: TranslationBundle,
  api: ModelsAPI,
  jobs: JobsAPI,
  connection = new ConnectionAPI()
): Promise<{ model: IModel; version: IModelVersion } | null> {
  const job = 'job' in source ? source.job : null;
  const [me, listing] = await Promise.all([
    connection.me(),
    job ? jobs.files(job.job_id) : Promise.resolve({ files: [] as IJobFile[], model_file: null })
  ]);
  const files = listing.files;
  const body = new FormBody('register-model');
  if (job) {
    body.addNote(trans.__('From job %1 (%2): its metrics, notebook, image and parameters are kept as lineage.', job.name, job.job_id));
  }
  const defaultName = nameFrom(job ? job.name : ('path' in source ? source.path.split('/').pop() ?? '' : ''));
  body.addInput('name', trans.__('Model name'), 'text', defaultName, {}, trans.__('An existing model of this name (in that project) gets a new version.'));
  const projects: [string, string][] = me.groups.map(g => [g, g]);
  projects.push(['', trans.__('personal (no project)')]);
  const defaultProject = job ? (job.project ?? '') : (me.groups[0] ?? '');
  body.addSelect('project', trans.__('Project'), projects, defaultProject);
  if (job) {
    // The model file (or folder) the job wrote, when the service can tell which; else the whole folder.
    const choices = jobPathChoices(files, trans);
    const modelFile = listing.model_file ?? '';
    if (modelFile && !choices.some(([value]) => value === modelFile)) {
      choices.push([modelFile, `${modelFile}/`]);
    }
    body.addSelect('path', trans.__('Files'), choices, modelFile, trans.__('In %1', job.folder));
  } else if ('path' in source) {
    body.addInput('path', trans.__('Path'), 'text', source.path, {}, trans.__('A file or folder in your home.'));
  }
  body.addSelect('format', trans.__('Format'), FORMAT_CHOICES.map(([v, l]) => [v, trans.__(l)]), '');
  body.addInput('description', trans.__('Description'), 'text', '', { placeholder: trans.__('optional') });
  body.addInput(
    'signature',
    trans.__('Signature'),
    'text',
    '',
    { placeholder: '{"inputs": [{"name": "input-0", "datatype": "FP64", "shape": [-1, 20]}]}', spellcheck: 'false' },
    trans.__(
      'Optional JSON: the inputs (and outputs) the model takes, -1 meaning any size. "Try it" in the Services panel starts from it. Default: the model.json the job wrote, if any.'
    )
  );
  return runFormDialog({
    title: trans.__('Register model'),
    body,
    okLabel: trans.__('Register'),
    busyText: trans.__('Registering…'),
    trans,
    action: () => {
      const name = body.value('name').trim();
      if (!MODEL_NAME_RE.test(name)) {
        throw new Error(trans.__('A model name is lowercase letters, digits and "-", starting with a letter.'));
      }
      const registration: IRegistration = {
        name,
        project: body.value('project') || null,
        path: body.value('path').trim()
      };
      if (job) {
        registration.job_id = job.job_id;
      } else if (!registration.path) {
        throw new Error(trans.__('Name the file or folder to register.'));
      }
      if (body.value('format')) {
        registration.format = body.value('format');
      }
      if (body.value('description').trim()) {
        registration.description = body.value('description').trim();
      }
      const signature = parseSignature(body.value('signature'), trans);
      if (signature) {
        registration.signature = signature;
      }
      return api.register(registration);
    }
  });
}
