/**
 * The Services section of the KubeAI panel and a service's detail view.
 *
 * The list shows the inference services the caller may see: name, model
 * and version, state and endpoint. The detail view (a main-area widget)
 * shows the status (state, reason, serving version, replicas), the last
 * failed requests the hub forwarded to it (even while Ready), the full
 * endpoint URL, a "Try it" box that sends a sample request (prefilled from
 * the version's signature) through `POST services/<name>/predict` and
 * shows the model server's answer, its history (who did what), and, for
 * its owner or a hub admin, Update to a version and Roll back (both
 * confirmed), Scale, Restart (a Failed model server) and Delete. Both
 * poll while they are visible: every two seconds while a service changes,
 * every fifteen otherwise (a deletion or failure elsewhere shows within
 * one poll; a detail whose service is gone says so), never while hidden.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { copyIcon } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  IModel,
  IService,
  IServiceError,
  ISignature,
  ITensorSpec,
  KubeAIError,
  mayChange,
  ModelsAPI,
  ServicesAPI
} from './api';
import { button, confirmAction, el, errorText, HistorySection, section, when } from './dom';
import { IDLE_POLL_MS } from './jobs';

/** How often the list and an open detail poll while a service is not Ready (ms). */
export const SERVICE_POLL_MS = 2000;

/** The full URL of a hub-relative endpoint (Lab runs on the hub's origin behind its proxy). */
export function fullURL(endpoint: string, origin = window.location.origin): string {
  if (/^https?:\/\//.test(endpoint)) {
    return endpoint;
  }
  return origin + (endpoint.startsWith('/') ? '' : '/') + endpoint;
}

/**
 * A sample request for "Try it": Open Inference Protocol v2 inputs of
 * zeros when the version has a signature, else a KServe v1 `instances`
 * template to edit.
 */
export function sampleRequest(signature?: ISignature | null): object {
  const inputs = signature?.inputs ?? [];
  if (inputs.length === 0) {
    return { instances: [[0, 0, 0, 0]] };
  }
  return {
    inputs: inputs.map((input, i) => {
      const shape = (input.shape && input.shape.length ? input.shape : [1]).map(d => (d > 0 ? d : 1));
      const size = shape.reduce((a, b) => a * b, 1);
      const datatype = input.datatype || 'FP32';
      const zero = datatype === 'BOOL' ? false : datatype === 'BYTES' ? '' : 0;
      return { name: input.name || `input-${i}`, shape, datatype, data: new Array(size).fill(zero) };
    })
  };
}

/**
 * A sample request from what the running model server reports (its v2
 * metadata) when the version has no signature: a KServe v1 `instances`
 * template of the right width for one input (e.g. 20 zeros for a
 * scikit-learn model fitted on 20 features), else v2 inputs; null when it
 * reports nothing usable.
 */
export function sampleFromMetadata(inputs?: ITensorSpec[] | null): object | null {
  if (!inputs || inputs.length === 0 || !inputs.every(i => Array.isArray(i.shape) && i.shape.length > 0)) {
    return null;
  }
  if (inputs.length > 1) {
    return sampleRequest({ inputs });
  }
  const zero = inputs[0].datatype === 'BOOL' ? false : inputs[0].datatype === 'BYTES' ? '' : 0;
  const instance = (dims: number[]): unknown =>
    dims.length === 0 ? zero : new Array(dims[0] > 0 ? dims[0] : 1).fill(null).map(() => instance(dims.slice(1)));
  return { instances: [instance(inputs[0].shape!.slice(1))] };
}

/** A request body as text: one line per instance / tensor, readable and editable. */
export function requestText(body: object): string {
  return JSON.stringify(body, null, 1).replace(/\[\s+([^[\]{}]*?)\s+\]/g, (_, inner: string) =>
    `[${inner.replace(/\s*\n\s*/g, ' ')}]`
  );
}

function stateBadge(service: IService): HTMLElement {
  const badge = el('span', {
    className: `jp-KubeAI-state jp-KubeAI-state-${service.state.toLowerCase()}`,
    text: service.state,
    field: 'state'
  });
  if (service.reason) {
    badge.title = service.reason;
  }
  return badge;
}

/** Failed requests shown under a service's status (the newest first). */
export const RECENT_ERRORS_SHOWN = 5;

/**
 * The service's recent failed requests as a small list (time, status,
 * message), or null when there are none.
 */
export function recentErrorsList(
  errors: readonly IServiceError[] | undefined,
  trans: TranslationBundle,
  shown = RECENT_ERRORS_SHOWN
): HTMLElement | null {
  if (!errors || errors.length === 0) {
    return null;
  }
  const box = el('div', { className: 'jp-KubeAI-recent-errors', field: 'recent-errors' });
  box.appendChild(
    el('p', {
      className: 'jp-KubeAI-muted',
      text:
        errors.length > shown
          ? trans.__('Recent failed requests (last %1 of %2):', shown, errors.length)
          : trans.__('Recent failed requests:')
    })
  );
  const list = el('ul', { className: 'jp-KubeAI-recent-errors-list' });
  for (const error of errors.slice(0, shown)) {
    const li = el('li', { field: 'recent-error' });
    li.dataset.kubeaiStatus = String(error.status);
    li.append(
      el('span', { className: 'jp-KubeAI-muted', text: when(error.time), field: 'error-time' }),
      ' ',
      el('code', { text: String(error.status), field: 'error-status' }),
      ' ',
      el('span', { text: error.message, field: 'error-message' })
    );
    list.appendChild(li);
  }
  box.appendChild(list);
  return box;
}

/** `model:v2` (and `→ v3` while it switches). */
function versionText(service: IService): string {
  let text = `${service.model}:v${service.version}`;
  if (service.serving_version !== null && service.serving_version !== service.version) {
    text += ` (serving v${service.serving_version})`;
  }
  return text;
}

/** The Services section: the inference services the caller may see. */
export class ServicesView extends Widget {
  constructor(
    private readonly api: ServicesAPI,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-KubeAI-services');
    this.addClass('jp-KubeAI-section');
    this.title.label = trans.__('Services');
    this.build();
  }

  /** A service was clicked: its detail should open. */
  get serviceOpened(): ISignal<this, IService> {
    return this._serviceOpened;
  }

  get services(): readonly IService[] {
    return this._services;
  }

  /** Emitted after each listing (open details of services gone from it look again). */
  get listed(): ISignal<this, readonly IService[]> {
    return this._listed;
  }

  /** List again now (and keep polling while a service is not Ready). */
  async refresh(): Promise<void> {
    this.stopPolling();
    try {
      const { services } = await this.api.list();
      this._services = services;
      this.node.dataset.state = 'listed';
      this.render();
      this._listed.emit(services);
    } catch (error) {
      this.node.dataset.state = 'error';
      this.message.textContent = this.trans.__('The services could not be listed: %1', errorText(error));
      this.message.hidden = false;
    }
    this.schedule();
  }

  protected onAfterShow(msg: Message): void {
    void this.refresh();
  }

  protected onAfterAttach(msg: Message): void {
    if (this.isVisible) {
      void this.refresh();
    }
  }

  protected onBeforeHide(msg: Message): void {
    this.stopPolling();
  }

  protected onBeforeDetach(msg: Message): void {
    this.stopPolling();
  }

  dispose(): void {
    this.stopPolling();
    super.dispose();
  }

  private schedule(): void {
    this.stopPolling();
    if (this.isDisposed || !this.isVisible) {
      return;
    }
    // Often while one changes; now and then otherwise, so a deletion or failure elsewhere shows.
    const changing = this._services.some(s => s.state !== 'Ready' && s.state !== 'Failed');
    this.timer = window.setTimeout(() => void this.refresh(), changing ? SERVICE_POLL_MS : IDLE_POLL_MS);
  }

  private stopPolling(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private build(): void {
    const bar = el('div', { className: 'jp-KubeAI-jobs-filters' });
    bar.append(button(this.trans.__('Refresh'), 'refresh-services', () => void this.refresh()));
    this.message = el('p', { className: 'jp-KubeAI-muted', field: 'services-message' });
    this.list = el('ul', { className: 'jp-KubeAI-job-list', field: 'services' });
    this.node.append(bar, this.message, this.list);
  }

  private render(): void {
    const trans = this.trans;
    this.list.replaceChildren();
    this.message.hidden = this._services.length > 0;
    this.message.textContent = trans.__('No services yet. Open a model and use "Deploy" on one of its versions.');
    for (const service of this._services) {
      const li = el('li', { className: 'jp-KubeAI-job jp-KubeAI-item' });
      li.dataset.kubeaiService = service.name;
      li.dataset.kubeaiState = service.state;
      li.tabIndex = 0;
      li.title = trans.__('Open service %1', service.name);
      const top = el('div', { className: 'jp-KubeAI-job-top' });
      top.append(el('span', { className: 'jp-KubeAI-job-name', text: service.name, field: 'name' }), stateBadge(service));
      const facts = el('div', { className: 'jp-KubeAI-job-facts jp-KubeAI-muted' });
      facts.append(
        el('span', { text: versionText(service), field: 'model-version' }),
        el('span', { text: trans.__('by %1', service.owner), field: 'owner' }),
        el('span', { text: service.endpoint, field: 'endpoint', className: 'jp-KubeAI-endpoint' })
      );
      const errors = service.recent_errors ?? [];
      if (errors.length) {
        const last = errors[0];
        const count = el('span', {
          className: 'jp-KubeAI-error-count',
          text: trans._n('%1 failed request', '%1 failed requests', errors.length),
          field: 'recent-error-count'
        });
        count.title = trans.__('Last: %1 %2 at %3', last.status, last.message, when(last.time));
        facts.append(count);
      }
      li.append(top, facts);
      li.onclick = () => this._serviceOpened.emit(service);
      li.onkeydown = e => {
        if (e.key === 'Enter') {
          this._serviceOpened.emit(service);
        }
      };
      this.list.appendChild(li);
    }
  }

  private _services: IService[] = [];
  private readonly _serviceOpened = new Signal<this, IService>(this);
  private readonly _listed = new Signal<this, readonly IService[]>(this);
  private timer: number | null = null;
  private message!: HTMLElement;
  private list!: HTMLUListElement;
}

/** What the service detail needs from the application. */
export interface IServiceDetailOptions {
  api: ServicesAPI;
  models: ModelsAPI;
  trans: TranslationBundle;
  /** Open the model's detail (`kubeai:open-model`). */
  openModel: (id: number) => void;
  /** The service list may have changed. */
  onChanged: () => void;
}

/** One inference service in the main area: status, endpoint, "Try it", update/rollback/scale/delete. */
export class ServiceDetail extends Widget {
  constructor(
    service: IService,
    private readonly options: IServiceDetailOptions
  ) {
    super();
    this.service = service;
    this.addClass('jp-KubeAI-job-detail');
    this.addClass('jp-KubeAI-service-detail');
    this.node.dataset.kubeaiService = service.name;
    this.title.label = service.name;
    this.title.closable = true;
    this.build();
    this.render();
  }

  service: IService;

  /** Whether the service was found deleted (by a refresh's 404). */
  get deleted(): boolean {
    return this._deleted;
  }

  /** Fetch the status again; keep polling (often while it is not Ready). */
  async refresh(): Promise<void> {
    this.stopPolling();
    if (this._deleted) {
      return;
    }
    try {
      const before = this.service.state;
      this.service = await this.options.api.get(this.service.name);
      this.render();
      if (before !== this.service.state) {
        this.options.onChanged(); // the list shows the new state without waiting for its own poll
      }
      await this.loadModel();
    } catch (error) {
      if (error instanceof KubeAIError && error.status === 404) {
        this.gone();
        return;
      }
      this.showMessage(errorText(error));
    }
    this.schedule();
  }

  protected onAfterAttach(msg: Message): void {
    void this.refresh();
  }

  protected onAfterShow(msg: Message): void {
    if (this.isAttached) {
      void this.refresh();
    }
  }

  protected onBeforeHide(msg: Message): void {
    this.stopPolling();
  }

  dispose(): void {
    this.stopPolling();
    super.dispose();
  }

  private schedule(): void {
    this.stopPolling();
    if (!this.isDisposed && this.isVisible && !this._deleted) {
      const changing = this.service.state !== 'Ready' && this.service.state !== 'Failed';
      this.timer = window.setTimeout(() => void this.refresh(), changing ? SERVICE_POLL_MS : IDLE_POLL_MS);
    }
  }

  private stopPolling(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** The model and its versions (for Update, and the sample request of the version served). */
  private async loadModel(): Promise<void> {
    try {
      this.model = await this.options.models.get(this.service.model_id);
    } catch {
      // Keep what was known: the service itself still shows.
    }
    this.renderVersions();
    if (!this.tryEdited && this.sampleVersion !== this.service.version) {
      this.fillSample();
    }
  }

  private build(): void {
    const trans = this.options.trans;
    this.header = el('div', { className: 'jp-KubeAI-detail-header' });
    this.messageNode = el('p', { className: 'jp-KubeAI-error-detail', field: 'detail-error' });
    this.messageNode.hidden = true;
    this.busyNode = el('p', { className: 'jp-KubeAI-muted', field: 'busy' });
    this.busyNode.hidden = true;
    this.factsNode = el('dl', { className: 'jp-KubeAI-facts' });

    // Actions: update to a version, roll back, scale, delete.
    this.actions = el('div', { className: 'jp-KubeAI-actions jp-KubeAI-service-actions' });
    this.versionSelect = el('select', { className: 'jp-mod-styled', field: 'update-version' });
    this.versionSelect.onchange = () => (this.versionPicked = true);
    this.updateButton = button(trans.__('Update'), 'update', () => void this.updateVersion(), 'accept');
    this.rollbackButton = button(trans.__('Roll back'), 'rollback', () => void this.rollback());
    this.replicasInput = el('input', { className: 'jp-mod-styled', field: 'replicas' });
    this.replicasInput.type = 'number';
    this.replicasInput.min = '1';
    this.replicasInput.max = '32';
    this.scaleButton = button(trans.__('Scale'), 'scale', () => void this.scale());
    this.deleteButton = button(trans.__('Delete service'), 'delete-service', () => void this.remove(), 'warn');
    this.restartButton = button(trans.__('Restart'), 'restart-service', () => void this.restart(), 'accept');
    this.restartButton.title = trans.__('Start the model server again');
    const group = (...nodes: (HTMLElement | string)[]) => {
      const g = el('span', { className: 'jp-KubeAI-action-group' });
      g.append(...nodes);
      return g;
    };
    // What only its owner or a hub admin may do; hidden for anyone else.
    this.changeGroups = [
      group(this.restartButton),
      group(el('span', { text: trans.__('Version') }), this.versionSelect, this.updateButton),
      group(this.rollbackButton),
      group(el('span', { text: trans.__('Replicas') }), this.replicasInput, this.scaleButton),
      group(this.deleteButton)
    ];
    this.actions.append(
      ...this.changeGroups,
      group(button(trans.__('Refresh'), 'refresh-service', () => void this.refresh()))
    );

    const endpoint = section(trans.__('Endpoint'), 'endpoint');
    this.endpointBody = el('div');
    endpoint.appendChild(this.endpointBody);

    const tryIt = section(trans.__('Try it'), 'try');
    this.tryNode = tryIt;
    this.tryInput = el('textarea', { className: 'jp-mod-styled jp-KubeAI-try-input', field: 'try-request' });
    this.tryInput.rows = 6;
    this.tryInput.spellcheck = false;
    this.tryInput.oninput = () => (this.tryEdited = true);
    const tryBar = el('div', { className: 'jp-KubeAI-log-bar' });
    this.tryStatus = el('span', { className: 'jp-KubeAI-muted', field: 'try-status' });
    tryBar.append(
      button(trans.__('Send'), 'try-send', () => void this.sendTry(), 'accept'),
      button(trans.__('Reset sample'), 'try-reset', () => {
        this.tryEdited = false;
        this.fillSample();
      }),
      this.tryStatus
    );
    this.tryOutput = el('pre', { className: 'jp-KubeAI-log jp-KubeAI-try-output', field: 'try-response' });
    this.tryOutput.hidden = true;
    tryIt.append(
      el('p', {
        className: 'jp-KubeAI-muted',
        text: trans.__(
          'A KServe v1 body ({"instances": [...]}) or an Open Inference Protocol v2 body ({"inputs": [...]}); the answer is the model server\'s.'
        )
      }),
      this.tryInput,
      tryBar,
      this.tryOutput
    );

    this.history = new HistorySection(trans);

    this.node.append(
      this.header,
      this.messageNode,
      this.busyNode,
      this.actions,
      this.factsNode,
      endpoint,
      tryIt,
      this.history.node
    );
  }

  private showMessage(text: string): void {
    this.messageNode.textContent = text;
    this.messageNode.hidden = !text;
  }

  /** The service is gone (deleted here or elsewhere): say so, offer nothing, stop polling. */
  private gone(): void {
    const trans = this.options.trans;
    this._deleted = true;
    this.stopPolling();
    this.node.dataset.kubeaiState = 'Deleted';
    const badge = this.header.querySelector<HTMLElement>('[data-kubeai-field="state"]');
    if (badge) {
      badge.textContent = trans.__('Deleted');
      badge.className = 'jp-KubeAI-state jp-KubeAI-state-deleted';
    }
    this.header.querySelector('[data-kubeai-field="reason"]')?.remove();
    this.showMessage(trans.__('This service no longer exists (it was deleted); its endpoint answers no more.'));
    this.actions.hidden = true;
    this.tryNode.hidden = true; // nothing answers any more
    this.options.onChanged();
  }

  private render(): void {
    const trans = this.options.trans;
    const s = this.service;
    this.title.label = s.name;
    this.title.caption = trans.__('KubeAI service %1', s.name);
    this.node.dataset.kubeaiState = s.state;
    this.header.replaceChildren(el('h2', { text: s.name, field: 'service-name' }), stateBadge(s));
    if (s.reason) {
      this.header.appendChild(el('p', { className: 'jp-KubeAI-muted', text: s.reason, field: 'reason' }));
    }
    const errors = recentErrorsList(s.recent_errors, trans);
    if (errors) {
      this.header.appendChild(errors);
    }
    const options = (s.spec?.options ?? {}) as { [key: string]: unknown };
    const replicas = Number(options.replicas ?? 1);
    this.factsNode.replaceChildren();
    const add = (field: string, label: string, value: Node | string) => {
      const dd = el('dd', { field });
      dd.append(value);
      this.factsNode.append(el('dt', { text: label }), dd);
    };
    const modelLink = el('a', { text: s.model });
    modelLink.href = '#';
    modelLink.title = trans.__('Open model %1', s.model);
    modelLink.onclick = e => {
      e.preventDefault();
      this.options.openModel(s.model_id);
    };
    add('model', trans.__('Model'), modelLink);
    add('version', trans.__('Version'), `v${s.version}`);
    add('serving-version', trans.__('Serving now'), s.serving_version === null ? '—' : `v${s.serving_version}`);
    add('previous-version', trans.__('Rolls back to'), s.previous_version === null ? '—' : `v${s.previous_version}`);
    add('ready-replicas', trans.__('Replicas ready'), `${s.ready_replicas} / ${replicas}`);
    if (options.profile) {
      add('profile', trans.__('Size'), String(options.profile));
    }
    if (options.max_batch_size !== undefined) {
      add('max-batch-size', trans.__('Max batch size'), String(options.max_batch_size));
    }
    add('project', trans.__('Project'), s.project ?? trans.__('personal'));
    add('owner', trans.__('Owner'), s.owner);
    if (s.updated) {
      add('updated', trans.__('Updated'), when(s.updated));
    }

    if (document.activeElement !== this.replicasInput) {
      this.replicasInput.value = String(replicas);
    }
    this.rollbackButton.disabled = s.previous_version === null;
    this.rollbackButton.textContent =
      s.previous_version === null ? trans.__('Roll back') : trans.__('Roll back to v%1', s.previous_version);
    const mine = mayChange(s);
    for (const g of this.changeGroups) {
      g.hidden = !mine;
    }
    // Restart: a model server that failed (and was not brought back by itself).
    this.restartButton.parentElement!.hidden = !mine || s.state !== 'Failed';
    this.renderEndpoint();
    this.history.show(s.events);
    this.setBusy(this.busyText);
  }

  private renderEndpoint(): void {
    const trans = this.options.trans;
    const s = this.service;
    const url = fullURL(s.endpoint);
    const predict = fullURL(s.predict_url);
    const dl = el('dl', { className: 'jp-KubeAI-facts' });
    const add = (field: string, label: string, value: string) => {
      const code = el('code', { text: value, field });
      const copy = el('button', { className: 'jp-KubeAI-chip-remove jp-KubeAI-copy' });
      copy.appendChild(copyIcon.element({ tag: 'span', height: '14px', width: '14px' }));
      copy.title = trans.__('Copy');
      copy.dataset.kubeaiAction = `copy-${field}`;
      copy.onclick = () => void navigator.clipboard?.writeText(value);
      const dd = el('dd');
      dd.append(code, ' ', copy);
      dl.append(el('dt', { text: label }), dd);
    };
    add('endpoint', trans.__('URL'), url);
    add('predict-url', trans.__('v2 infer'), predict);
    // The model answers under the service's name (`served_name`), not the registry model's.
    add('v1-url', trans.__('v1 predict'), `${url}v1/models/${s.served_name ?? s.name}:predict`);
    const hint = el('p', {
      className: 'jp-KubeAI-muted',
      text: trans.__(
        'Authenticated by the hub: from a program send "Authorization: token <your JupyterHub API token>" (in Lab: $JUPYTERHUB_API_TOKEN).'
      )
    });
    this.endpointBody.replaceChildren(dl, hint);
  }

  private renderVersions(): void {
    const trans = this.options.trans;
    const versions = (this.model?.versions ?? []).filter(v => !v.archived || v.version === this.service.version);
    const byVersion = new Map<number, string[]>();
    for (const [alias, v] of Object.entries(this.model?.aliases ?? {})) {
      byVersion.set(v, [...(byVersion.get(v) ?? []), alias]);
    }
    const current = this.versionSelect.value;
    const options = versions.map(v => {
      const aliases = byVersion.get(v.version) ?? [];
      let label = `v${v.version}`;
      if (aliases.length) {
        label += ` (${aliases.join(', ')})`;
      }
      if (v.version === this.service.version) {
        label += ` — ${trans.__('current')}`;
      }
      return new Option(label, String(v.version));
    });
    const known = [...this.versionSelect.options].map(o => `${o.value}:${o.text}`).join('\n');
    if (known !== options.map(o => `${o.value}:${o.text}`).join('\n')) {
      this.versionSelect.replaceChildren(...options);
      // Keep a version the user picked; otherwise show the one it serves.
      this.versionSelect.value =
        this.versionPicked && versions.some(v => String(v.version) === current) ? current : String(this.service.version);
    }
  }

  /** Put the sample request of the served version in the "Try it" box. */
  private fillSample(): void {
    const version = this.model?.versions?.find(v => v.version === this.service.version);
    this.sampleVersion = version ? version.version : null;
    this.tryInput.value = requestText(sampleRequest(version?.signature));
    if (version && !version.signature?.inputs?.length) {
      // No signature: the running model server may know the input's shape (scikit-learn's n_features_in_).
      this.sampleVersion = null; // fill again once it is known (or the service is Ready)
      void this.fillSampleFromServer(version.version);
    }
  }

  /** The sample from the model server's metadata, once per version it serves. */
  private async fillSampleFromServer(version: number): Promise<void> {
    const s = this.service;
    if (s.state !== 'Ready' || s.serving_version !== version) {
      return;
    }
    this.sampleVersion = version;
    let sample: object | null = null;
    try {
      sample = sampleFromMetadata((await this.options.api.metadata(s.name)).inputs);
    } catch {
      return; // Keep the template: "Try it" still works with an edited body.
    }
    if (sample && !this.tryEdited && this.service.version === version) {
      this.tryInput.value = requestText(sample);
    }
  }

  private setBusy(text: string): void {
    this.busyText = text;
    this.busyNode.textContent = text;
    this.busyNode.hidden = !text;
    const busy = !!text;
    for (const b of [this.updateButton, this.scaleButton, this.deleteButton, this.restartButton]) {
      b.disabled = busy;
    }
    if (busy) {
      this.rollbackButton.disabled = true;
    }
    if (busy) {
      this.node.dataset.kubeaiBusy = 'true';
    } else {
      delete this.node.dataset.kubeaiBusy;
    }
  }

  /** Run a change (update, rollback, scale): busy meanwhile, then show the new status. */
  private async change(text: string, what: () => Promise<IService>): Promise<void> {
    this.setBusy(text);
    this.showMessage('');
    // Poll meanwhile: the switch can take a while and the state says how far it is.
    this.schedule();
    try {
      this.service = await what();
      this.versionPicked = false;
      this.versionSelect.value = String(this.service.version);
    } catch (error) {
      this.showMessage(errorText(error));
    } finally {
      this.setBusy('');
    }
    this.render();
    this.options.onChanged();
    await this.refresh();
  }

  private async updateVersion(): Promise<void> {
    const trans = this.options.trans;
    const version = Number(this.versionSelect.value);
    if (!version) {
      return;
    }
    const confirmed = await confirmAction({
      title: trans.__('Update %1 to v%2?', this.service.name, version),
      body: trans.__(
        '%1 switches from v%2 to v%3 of %4; v%2 answers until v%3 is ready. Callers of %5 get the new version\'s answers.',
        this.service.name,
        this.service.version,
        version,
        this.service.model,
        fullURL(this.service.endpoint)
      ),
      ok: trans.__('Update'),
      trans
    });
    if (!confirmed) {
      return;
    }
    await this.change(trans.__('Switching to v%1 (the old version answers until the new one is ready)…', version), () =>
      this.options.api.update(this.service.name, { version })
    );
  }

  private async rollback(): Promise<void> {
    const trans = this.options.trans;
    const previous = this.service.previous_version;
    const confirmed = await confirmAction({
      title: trans.__('Roll %1 back to v%2?', this.service.name, previous ?? ''),
      body: trans.__(
        '%1 goes back from v%2 to v%3 of %4; callers get v%3\'s answers once it is ready.',
        this.service.name,
        this.service.version,
        previous ?? '',
        this.service.model
      ),
      ok: trans.__('Roll back'),
      trans,
      warn: true
    });
    if (!confirmed) {
      return;
    }
    await this.change(trans.__('Rolling back to v%1…', previous ?? ''), () => this.options.api.rollback(this.service.name));
  }

  private async scale(): Promise<void> {
    const trans = this.options.trans;
    const replicas = Number(this.replicasInput.value);
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 32) {
      this.showMessage(trans.__('Replicas must be a whole number from 1 to 32.'));
      return;
    }
    await this.change(trans.__('Scaling to %1 replicas…', replicas), () =>
      this.options.api.update(this.service.name, { replicas })
    );
  }

  private async restart(): Promise<void> {
    const trans = this.options.trans;
    await this.change(trans.__('Restarting the model server…'), () => this.options.api.restart(this.service.name));
  }

  private async remove(): Promise<void> {
    const trans = this.options.trans;
    const confirmed = await confirmAction({
      title: trans.__('Delete service %1?', this.service.name),
      body: trans.__(
        'The service stops answering at %1. The model version stays in the registry.',
        fullURL(this.service.endpoint)
      ),
      ok: trans.__('Delete'),
      trans,
      warn: true
    });
    if (!confirmed) {
      return;
    }
    this.setBusy(trans.__('Deleting…'));
    try {
      await this.options.api.remove(this.service.name);
    } catch (error) {
      this.setBusy('');
      this.showMessage(errorText(error));
      return;
    }
    this.setBusy('');
    this.options.onChanged();
    this.dispose();
  }

  private async sendTry(): Promise<void> {
    const trans = this.options.trans;
    let body: unknown;
    try {
      body = JSON.parse(this.tryInput.value);
    } catch (error) {
      this.tryStatus.textContent = trans.__('The request is not JSON: %1', String((error as Error).message));
      this.tryStatus.dataset.kubeaiStatus = 'invalid';
      return;
    }
    this.tryStatus.textContent = trans.__('Sending…');
    this.tryStatus.dataset.kubeaiStatus = 'sending';
    const started = performance.now();
    try {
      const result = await this.options.api.predict(this.service.name, body);
      const ms = Math.round(performance.now() - started);
      this.tryStatus.textContent = result.ok
        ? trans.__('%1 in %2 ms', result.status, ms)
        : trans.__('Refused (%1) in %2 ms', result.status, ms);
      this.tryStatus.dataset.kubeaiStatus = String(result.status);
      this.tryOutput.textContent =
        typeof result.answer === 'string' ? result.answer : JSON.stringify(result.answer, null, 2);
      this.tryOutput.classList.toggle('jp-KubeAI-try-error', !result.ok);
      this.tryOutput.hidden = false;
    } catch (error) {
      this.tryStatus.textContent = errorText(error);
      this.tryStatus.dataset.kubeaiStatus = 'error';
    }
    // A refused request is now among the recent errors (no polling while Ready).
    await this.refresh();
  }

  private model: IModel | null = null;
  private _deleted = false;
  private timer: number | null = null;
  private busyText = '';
  private tryEdited = false;
  private versionPicked = false;
  private sampleVersion: number | null = null;
  private header!: HTMLElement;
  private messageNode!: HTMLElement;
  private busyNode!: HTMLElement;
  private factsNode!: HTMLElement;
  private actions!: HTMLElement;
  private versionSelect!: HTMLSelectElement;
  private updateButton!: HTMLButtonElement;
  private rollbackButton!: HTMLButtonElement;
  private replicasInput!: HTMLInputElement;
  private scaleButton!: HTMLButtonElement;
  private deleteButton!: HTMLButtonElement;
  private restartButton!: HTMLButtonElement;
  private changeGroups: HTMLElement[] = [];
  private history!: HistorySection;
  private endpointBody!: HTMLElement;
  private tryNode!: HTMLElement;
  private tryInput!: HTMLTextAreaElement;
  private tryStatus!: HTMLElement;
  private tryOutput!: HTMLElement;
}
