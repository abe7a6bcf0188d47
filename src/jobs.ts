/**
 * The Jobs section of the KubeAI panel, and a job's detail view.
 *
 * The list shows the caller's jobs (and their projects' jobs) with state,
 * age, framework, workers, project and owner, filtered by state and
 * project. It polls every two seconds while it is visible and a job is
 * still active, and every fifteen otherwise (so a deletion or a teammate's
 * job shows), never while hidden. The detail view (a main-area widget)
 * shows one job: its log per replica (the tail, paged back with "Load
 * earlier", then followed: only appended bytes come over the wire),
 * events, a chart of the metrics the job logs, its output files (opened in
 * Lab; the service hides the machinery's files), its history (who did
 * what), and, for its owner or a hub admin, Cancel (confirmed), Resubmit
 * (the submit dialog prefilled from the job) and Delete record.
 */
import { TranslationBundle } from '@jupyterlab/translation';
import { ISignal, Signal } from '@lumino/signaling';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import {
  IJob,
  IJobEvent,
  IJobFile,
  IMetricRecord,
  JOB_STATES,
  JobsAPI,
  KubeAIError,
  LOG_TAIL_BYTES,
  mayChange
} from './api';
import { renderMetrics } from './chart';
import { button, confirmAction, el, errorText, HistorySection, section, when } from './dom';
import { FRAMEWORKS } from './submit';

/** How often the list and an open detail poll while a job is active (ms). */
export const POLL_MS = 2000;

/**
 * How often the list polls while it is visible and nothing is active (ms):
 * a teammate's submission or a deletion elsewhere shows without a click.
 */
export const IDLE_POLL_MS = 15000;

/** The most log text the detail keeps (characters); older lines leave as new ones come. */
export const LOG_KEPT_CHARS = 4 * 1024 * 1024;

/** `3 s`, `5 min`, `2 h`, `4 d`: how long ago `epoch` was. */
export function age(epoch: number | null, now = Date.now() / 1000): string {
  if (!epoch) {
    return '—';
  }
  const s = Math.max(0, Math.round(now - epoch));
  if (s < 60) {
    return `${s} s`;
  }
  if (s < 3600) {
    return `${Math.floor(s / 60)} min`;
  }
  if (s < 86400) {
    return `${Math.floor(s / 3600)} h`;
  }
  return `${Math.floor(s / 86400)} d`;
}

function duration(job: IJob): string {
  if (!job.started) {
    return '—';
  }
  const end = job.finished ?? Date.now() / 1000;
  return age(job.started, end);
}

function stateBadge(job: IJob): HTMLElement {
  const badge = el('span', {
    className: `jp-KubeAI-state jp-KubeAI-state-${job.state.toLowerCase()}`,
    text: job.state,
    field: 'state'
  });
  if (job.reason) {
    badge.title = job.reason;
  }
  return badge;
}

/** The Jobs section: the list of jobs, filtered, polled while any is active. */
export class JobsView extends Widget {
  constructor(
    private readonly api: JobsAPI,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-KubeAI-jobs');
    this.title.label = trans.__('Jobs');
    this.build();
  }

  /** A job was clicked: its detail should open. */
  get jobOpened(): ISignal<this, IJob> {
    return this._jobOpened;
  }

  /** The jobs as last listed. */
  get jobs(): readonly IJob[] {
    return this._jobs;
  }

  /** Emitted after each listing (open details of jobs gone from it look again). */
  get listed(): ISignal<this, readonly IJob[]> {
    return this._listed;
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

  /** List again now (and keep polling while a job is active). */
  async refresh(): Promise<void> {
    this.stopPolling();
    const state = this.stateFilter.value;
    const project = this.projectFilter.value;
    try {
      const { jobs } = await this.api.list({
        state: JOB_STATES.includes(state as any) ? state : undefined,
        project: project && project !== '-' ? project : undefined,
        limit: 200
      });
      this._jobs = jobs;
      this.node.dataset.state = 'listed';
      this.render();
      this._listed.emit(jobs);
    } catch (error) {
      this.node.dataset.state = 'error';
      this.message.textContent = this.trans.__('The jobs could not be listed: %1', errorText(error));
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
    this.timer = window.setTimeout(() => void this.refresh(), this._jobs.some(j => j.active) ? POLL_MS : IDLE_POLL_MS);
  }

  private stopPolling(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private build(): void {
    const trans = this.trans;
    const bar = el('div', { className: 'jp-KubeAI-jobs-filters' });
    this.stateFilter = el('select', { className: 'jp-mod-styled', field: 'state-filter' });
    this.stateFilter.append(
      new Option(trans.__('All states'), ''),
      new Option(trans.__('Active'), 'active'),
      ...JOB_STATES.map(s => new Option(trans.__(s), s))
    );
    this.projectFilter = el('select', { className: 'jp-mod-styled', field: 'project-filter' });
    this.setProjects([]);
    this.stateFilter.onchange = () => void this.refresh();
    this.projectFilter.onchange = () => void this.refresh();
    const refresh = button(trans.__('Refresh'), 'refresh-jobs', () => void this.refresh());
    bar.append(this.stateFilter, this.projectFilter, refresh);
    this.message = el('p', { className: 'jp-KubeAI-muted', field: 'jobs-message' });
    this.list = el('ul', { className: 'jp-KubeAI-job-list' });
    this.list.dataset.kubeaiField = 'jobs';
    this.node.append(bar, this.message, this.list);
  }

  private render(): void {
    const trans = this.trans;
    const state = this.stateFilter.value;
    const project = this.projectFilter.value;
    const jobs = this._jobs.filter(
      j =>
        (!state || (state === 'active' ? j.active : j.state === state)) &&
        (!project || (project === '-' ? j.project === null : j.project === project))
    );
    this.list.replaceChildren();
    this.message.hidden = jobs.length > 0;
    this.message.textContent =
      this._jobs.length === 0
        ? trans.__('No jobs yet. Open a notebook and use "Submit as job" in its toolbar.')
        : trans.__('No jobs match the filter.');
    const now = Date.now() / 1000;
    for (const job of jobs) {
      const li = el('li', { className: 'jp-KubeAI-job' });
      li.dataset.kubeaiJob = job.job_id;
      li.dataset.kubeaiState = job.state;
      li.tabIndex = 0;
      li.title = trans.__('Open job %1', job.job_id);
      const top = el('div', { className: 'jp-KubeAI-job-top' });
      top.append(el('span', { className: 'jp-KubeAI-job-name', text: job.name, field: 'name' }), stateBadge(job));
      const facts = el('div', { className: 'jp-KubeAI-job-facts jp-KubeAI-muted' });
      const workers =
        job.framework === 'single'
          ? trans.__('1 process')
          : (job.procs_per_worker > 1
              ? trans.__('%1 workers × %2 processes', job.workers, job.procs_per_worker)
              : job.workers === 1
                ? trans.__('1 worker')
                : trans.__('%1 workers', job.workers)) +
            (job.total_gpus ? `, ${job.total_gpus} GPU` : '');
      facts.append(
        el('span', { text: age(job.created, now), field: 'age' }),
        el('span', { text: trans.__(FRAMEWORKS[job.framework] ?? job.framework), field: 'framework' }),
        el('span', { text: workers, field: 'workers' }),
        el('span', { text: job.project ?? trans.__('personal'), field: 'project' }),
        el('span', { text: trans.__('by %1', job.owner), field: 'owner' })
      );
      li.append(top, facts);
      li.onclick = () => this._jobOpened.emit(job);
      li.onkeydown = e => {
        if (e.key === 'Enter') {
          this._jobOpened.emit(job);
        }
      };
      this.list.appendChild(li);
    }
  }

  private _jobs: IJob[] = [];
  private readonly _jobOpened = new Signal<this, IJob>(this);
  private readonly _listed = new Signal<this, readonly IJob[]>(this);
  private timer: number | null = null;
  private stateFilter!: HTMLSelectElement;
  private projectFilter!: HTMLSelectElement;
  private message!: HTMLElement;
  private list!: HTMLUListElement;
}

/** What the detail view needs from the application. */
export interface IJobDetailOptions {
  api: JobsAPI;
  trans: TranslationBundle;
  /** Open a file (a path relative to the home) in Lab. */
  openFile: (path: string) => void;
  /** "Resubmit": the submit dialog prefilled from the job; the new job once submitted (null: cancelled). */
  resubmit: (job: IJob) => Promise<IJob | null>;
  /** A job was resubmitted: show the new one. */
  onResubmitted: (job: IJob) => void;
  /** The list may have changed (cancel, delete). */
  onChanged: () => void;
  /** "Register model" on a Succeeded job: register (some of) its outputs. */
  registerModel?: (job: IJob) => void;
}

/**
 * The log of one replica as the detail shows it: a window [start, end)
 * of its bytes, the tail first, paged back on demand, followed while the
 * job runs (only what is appended comes over the wire).
 */
class LogWindow {
  replica = '';
  start = 0;
  end = 0;
  text = '';
}

/** One job in the main area: facts, actions, metrics, logs, events, files, history. */
export class JobDetail extends Widget {
  constructor(
    job: IJob,
    private readonly options: IJobDetailOptions
  ) {
    super();
    this.job = job;
    this.addClass('jp-KubeAI-job-detail');
    this.node.dataset.kubeaiJob = job.job_id;
    this.title.label = job.name;
    this.title.caption = job.job_id;
    this.title.closable = true;
    this.build();
    this.renderJob();
  }

  job: IJob;

  /** Whether the record was found deleted (by a refresh's 404). */
  get deleted(): boolean {
    return this._deleted;
  }

  /** Fetch everything again; keep polling while the job is active. */
  async refresh(): Promise<void> {
    this.stopPolling();
    if (this._deleted) {
      return;
    }
    const { api } = this.options;
    const id = this.job.job_id;
    try {
      const before = this.job.state;
      this.job = await api.get(id);
      this.showMessage('');
      this.renderJob();
      if (before !== this.job.state) {
        this.options.onChanged(); // the list shows the new state without waiting for its own poll
      }
    } catch (error) {
      if (error instanceof KubeAIError && error.status === 404) {
        this.gone();
        return;
      }
      this.showMessage(errorText(error));
    }
    await Promise.all([this.loadEvents(), this.loadMetrics(), this.loadFiles(), this.loadReplicas()]);
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
    this.stopLog();
    super.dispose();
  }

  private schedule(): void {
    this.stopPolling();
    if (!this.isDisposed && this.isVisible && this.job.active && !this._deleted) {
      this.timer = window.setTimeout(() => void this.refresh(), POLL_MS);
    }
  }

  private stopPolling(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private build(): void {
    const trans = this.options.trans;
    this.header = el('div', { className: 'jp-KubeAI-detail-header' });
    this.messageNode = el('p', { className: 'jp-KubeAI-error-detail', field: 'detail-error' });
    this.messageNode.hidden = true;
    this.factsNode = el('dl', { className: 'jp-KubeAI-facts' });
    this.actions = el('div', { className: 'jp-KubeAI-actions' });

    this.metricsNode = section(trans.__('Metrics'), 'metrics');
    this.metricsBody = el('div');
    this.metricsNode.appendChild(this.metricsBody);

    const logs = section(trans.__('Logs'), 'logs');
    const logBar = el('div', { className: 'jp-KubeAI-log-bar' });
    this.replicaSelect = el('select', { className: 'jp-mod-styled', field: 'replica' });
    this.replicaSelect.onchange = () => this.startLog(this.replicaSelect.value);
    this.earlierButton = button(trans.__('Load earlier'), 'log-earlier', () => void this.loadEarlier());
    this.earlierButton.hidden = true;
    this.logRange = el('span', { className: 'jp-KubeAI-muted', field: 'log-range' });
    logBar.append(el('span', { text: trans.__('Replica') }), this.replicaSelect, this.earlierButton, this.logRange);
    this.logNode = el('pre', { className: 'jp-KubeAI-log', field: 'log' });
    logs.append(logBar, this.logNode);

    this.eventsNode = section(trans.__('Events'), 'events');
    this.eventsBody = el('div');
    this.eventsNode.appendChild(this.eventsBody);

    this.filesNode = section(trans.__('Output files'), 'files');
    this.filesBody = el('div');
    this.filesNode.appendChild(this.filesBody);

    this.history = new HistorySection(trans);

    this.node.append(
      this.header,
      this.messageNode,
      this.actions,
      this.factsNode,
      this.metricsNode,
      logs,
      this.filesNode,
      this.eventsNode,
      this.history.node
    );
  }

  private showMessage(text: string): void {
    this.messageNode.textContent = text;
    this.messageNode.hidden = !text;
  }

  /** The record is gone (deleted here or elsewhere): say so, offer nothing, stop watching. */
  private gone(): void {
    const trans = this.options.trans;
    this._deleted = true;
    this.stopLog();
    this.node.dataset.kubeaiState = 'Deleted';
    const badge = this.header.querySelector<HTMLElement>('[data-kubeai-field="state"]');
    if (badge) {
      badge.textContent = trans.__('Deleted');
      badge.className = 'jp-KubeAI-state jp-KubeAI-state-deleted';
    }
    this.actions.replaceChildren();
    this.showMessage(trans.__('This job record no longer exists (it was deleted). Its folder %1 may still hold its files.', this.job.folder));
    this.options.onChanged();
  }

  private renderJob(): void {
    const trans = this.options.trans;
    const job = this.job;
    this.title.label = job.name;
    this.node.dataset.kubeaiState = job.state;
    this.header.replaceChildren(el('h2', { text: job.name, field: 'job-name' }), stateBadge(job));
    if (job.reason) {
      this.header.appendChild(el('p', { className: 'jp-KubeAI-muted', text: job.reason, field: 'reason' }));
    }
    const facts: [string, string, string][] = [
      ['job-id', trans.__('Job id'), job.job_id],
      ['owner', trans.__('Owner'), job.owner],
      ['framework', trans.__('Framework'), trans.__(FRAMEWORKS[job.framework] ?? job.framework)],
      [
        'workers',
        trans.__('Workers'),
        job.framework === 'tensorflow'
          ? trans.__('%1 workers, %2 parameter servers', job.workers, job.parameter_servers)
          : trans.__('%1 × %2 processes', job.workers, job.procs_per_worker)
      ],
      ['profile', trans.__('Size'), job.gpus ? `${job.profile}, ${job.gpus} GPU / worker` : job.profile],
      ['image', trans.__('Image'), job.image],
      ['project', trans.__('Project'), job.project ?? trans.__('personal')],
      ['backend', trans.__('Backend'), job.backend],
      ['notebook', trans.__('Notebook'), job.notebook || '—'],
      ['folder', trans.__('Folder'), job.folder],
      ['created', trans.__('Submitted'), when(job.created)],
      ['duration', trans.__('Run time'), duration(job)]
    ];
    this.factsNode.replaceChildren();
    for (const [field, label, value] of facts) {
      this.factsNode.append(el('dt', { text: label }), el('dd', { text: value, field }));
    }

    // Cancel, Resubmit and Delete only for whoever may use them (its owner, a hub admin).
    const mine = mayChange(job);
    this.actions.replaceChildren();
    if (job.active && mine) {
      this.actions.appendChild(button(trans.__('Cancel job'), 'cancel', () => void this.cancel()));
    }
    if (job.state === 'Succeeded' && this.options.registerModel) {
      const register = this.options.registerModel;
      this.actions.appendChild(button(trans.__('Register model'), 'register-model', () => register(this.job), 'accept'));
    }
    if (mine) {
      this.actions.appendChild(button(trans.__('Resubmit…'), 'resubmit', () => void this.resubmit(), 'accept'));
    }
    if (!job.active && mine) {
      this.actions.appendChild(button(trans.__('Delete record'), 'delete', () => void this.remove(), 'warn'));
    }
    this.actions.appendChild(button(trans.__('Refresh'), 'refresh-job', () => void this.refresh()));

    this.history.show(job.events);
  }

  private async cancel(): Promise<void> {
    const trans = this.options.trans;
    const confirmed = await confirmAction({
      title: trans.__('Cancel job %1?', this.job.name),
      body: trans.__(
        'Every process of %1 is stopped now; what it has not saved is lost. Its record and folder stay.',
        this.job.name
      ),
      ok: trans.__('Cancel job'),
      trans,
      warn: true
    });
    if (!confirmed) {
      return;
    }
    try {
      this.job = await this.options.api.cancel(this.job.job_id);
      this.renderJob();
      this.options.onChanged();
    } catch (error) {
      this.showMessage(errorText(error));
    }
    void this.refresh();
  }

  private async resubmit(): Promise<void> {
    let job: IJob | null;
    try {
      job = await this.options.resubmit(this.job);
    } catch (error) {
      this.showMessage(errorText(error));
      return;
    }
    if (job) {
      this.options.onResubmitted(job);
    }
  }

  private async remove(): Promise<void> {
    const trans = this.options.trans;
    const confirmed = await confirmAction({
      title: trans.__('Delete the job record?'),
      body: trans.__(
        'The record of %1 leaves the Jobs list. Its folder %2 (outputs and logs) stays in your files.',
        this.job.name,
        this.job.folder
      ),
      ok: trans.__('Delete'),
      trans,
      warn: true
    });
    if (!confirmed) {
      return;
    }
    try {
      await this.options.api.remove(this.job.job_id);
      this.options.onChanged();
      this.dispose();
    } catch (error) {
      this.showMessage(errorText(error));
    }
  }

  private async loadEvents(): Promise<void> {
    const trans = this.options.trans;
    let events: IJobEvent[];
    try {
      events = (await this.options.api.events(this.job.job_id)).events;
    } catch (error) {
      this.eventsBody.replaceChildren(el('p', { className: 'jp-KubeAI-muted', text: errorText(error) }));
      return;
    }
    if (events.length === 0) {
      this.eventsBody.replaceChildren(el('p', { className: 'jp-KubeAI-muted', text: trans.__('No events.') }));
      return;
    }
    const table = el('table', { className: 'jp-KubeAI-events' });
    for (const e of events) {
      const tr = el('tr');
      tr.dataset.kubeaiEventType = e.type;
      tr.append(
        el('td', { text: new Date(e.time * 1000).toLocaleTimeString() }),
        el('td', { text: e.type, className: e.type === 'Warning' ? 'jp-KubeAI-warning' : '' }),
        el('td', { text: e.reason }),
        el('td', { text: e.message }),
        el('td', { text: e.source, className: 'jp-KubeAI-muted' })
      );
      table.appendChild(tr);
    }
    this.eventsBody.replaceChildren(table);
  }

  private async loadMetrics(): Promise<void> {
    const trans = this.options.trans;
    let records: IMetricRecord[];
    try {
      records = (await this.options.api.metrics(this.job.job_id)).metrics;
    } catch (error) {
      this.metricsBody.replaceChildren(el('p', { className: 'jp-KubeAI-muted', text: errorText(error) }));
      return;
    }
    this.metricsBody.replaceChildren(
      renderMetrics(
        records,
        trans.__('No metrics yet. In the notebook: jupyter_kubeai.log_metric(step=epoch, loss=loss)')
      )
    );
  }

  private async loadFiles(): Promise<void> {
    const trans = this.options.trans;
    let files: IJobFile[];
    try {
      // The service hides the job folder's internal files (state, pids, logs, the script).
      files = (await this.options.api.files(this.job.job_id)).files;
    } catch (error) {
      this.filesBody.replaceChildren(el('p', { className: 'jp-KubeAI-muted', text: errorText(error) }));
      return;
    }
    if (files.length === 0) {
      this.filesBody.replaceChildren(el('p', { className: 'jp-KubeAI-muted', text: trans.__('No files yet.') }));
      return;
    }
    const ul = el('ul', { className: 'jp-KubeAI-files' });
    for (const file of files) {
      const li = el('li');
      li.dataset.kubeaiFile = file.path ?? file.name;
      const link = el('a', { text: file.name });
      link.href = '#';
      const path = file.path;
      if (path !== undefined) {
        link.title = trans.__('Open %1 in JupyterLab', path);
        link.onclick = e => {
          e.preventDefault();
          this.options.openFile(path);
        };
      } else {
        // A teammate's job: its folder is in their home, not in this Lab.
        link.title = trans.__('Download %1 (the job folder is in %2\'s home)', file.name, this.job.owner);
        link.onclick = e => {
          e.preventDefault();
          void this.download(file.name);
        };
      }
      li.append(link, el('span', { className: 'jp-KubeAI-muted', text: ` ${formatSize(file.size)}` }));
      ul.appendChild(li);
    }
    this.filesBody.replaceChildren(ul);
  }

  private async download(name: string): Promise<void> {
    let blob: Blob;
    try {
      blob = await this.options.api.download(this.job.job_id, name);
    } catch (error) {
      this.showMessage(errorText(error));
      return;
    }
    const url = URL.createObjectURL(blob);
    const a = el('a');
    a.href = url;
    a.download = name.split('/').pop() ?? name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  }

  private async loadReplicas(): Promise<void> {
    let replicas: string[];
    try {
      replicas = (await this.options.api.replicas(this.job.job_id)).replicas;
    } catch {
      return;
    }
    const known = [...this.replicaSelect.options].map(o => o.value);
    if (replicas.join('\n') !== known.join('\n')) {
      const current = this.replicaSelect.value;
      this.replicaSelect.replaceChildren(...replicas.map(r => new Option(r, r)));
      if (replicas.includes(current)) {
        this.replicaSelect.value = current;
      }
    }
    const replica = this.replicaSelect.value;
    if (!replica) {
      if (!this.logNode.textContent) {
        this.logNode.textContent = this.options.trans.__('No logs yet.');
      }
      return;
    }
    if (replica !== this.log.replica || !this.logAbort) {
      this.startLog(replica);
    } else if (!this.logBusy && (this.job.active || this.logFinishedState !== this.job.state)) {
      // The stream ended while the job runs (a cut connection), or before its final state
      // was known: go on from where the text ends, never from the start again.
      this.followFrom(this.log, this.logAbort);
    }
  }

  /** Show the tail of `replica`'s log, then follow it while the job runs. */
  private startLog(replica: string): void {
    this.stopLog();
    const controller = new AbortController();
    this.logAbort = controller;
    const log = new LogWindow();
    log.replica = replica;
    this.log = log;
    this.logBusy = true;
    this.logNode.textContent = '';
    this.logNode.dataset.kubeaiReplica = replica;
    this.renderRange();
    this.options.api
      .logTail(this.job.job_id, replica)
      .then(piece => {
        if (controller.signal.aborted) {
          return;
        }
        log.start = piece.offset;
        log.end = piece.offset + piece.bytes;
        log.text = piece.text;
        this.logNode.textContent = log.text;
        this.logNode.scrollTop = this.logNode.scrollHeight;
        this.renderRange();
        this.followFrom(log, controller);
      })
      .catch(error => {
        if (!controller.signal.aborted) {
          this.logBusy = false;
          this.logNode.textContent = `[${errorText(error)}]`;
        }
      });
  }

  /** Stream what is appended to `log` after its end (until the job ends). */
  private followFrom(log: LogWindow, controller: AbortController): void {
    if (controller.signal.aborted || log !== this.log) {
      return;
    }
    this.logBusy = true;
    const node = this.logNode;
    const state = this.job.state;
    this.options.api
      .followLog(
        this.job.job_id,
        log.replica,
        log.end,
        {
          start: offset => {
            if (offset !== log.end) {
              // The service streams from elsewhere (one without offsets: from the start).
              log.start = offset;
              log.end = offset;
              log.text = '';
              node.textContent = '';
            }
          },
          text: (text, bytes) => {
            if (!text && !bytes) {
              return;
            }
            const atBottom = node.scrollTop + node.clientHeight >= node.scrollHeight - 4;
            log.text += text;
            log.end += bytes;
            if (log.text.length > LOG_KEPT_CHARS) {
              this.trimLog(log);
              node.textContent = log.text;
            } else {
              node.appendChild(document.createTextNode(text));
            }
            if (atBottom) {
              node.scrollTop = node.scrollHeight;
            }
            this.renderRange();
          }
        },
        controller.signal
      )
      .catch(error => {
        if (!controller.signal.aborted) {
          node.appendChild(document.createTextNode(`\n[${errorText(error)}]`));
        }
      })
      .finally(() => {
        if (this.logAbort === controller) {
          this.logBusy = false;
          this.logFinishedState = this.job.active ? '' : state;
        }
      });
  }

  /** Keep the newest `LOG_KEPT_CHARS` (from a line start); "Load earlier" brings the rest back. */
  private trimLog(log: LogWindow): void {
    let cut = log.text.length - LOG_KEPT_CHARS;
    const nl = log.text.indexOf('\n', cut);
    cut = nl >= 0 ? nl + 1 : cut;
    log.start += new TextEncoder().encode(log.text.slice(0, cut)).length;
    log.text = log.text.slice(cut);
  }

  /** Page back: the bytes before what is shown, up to `LOG_TAIL_BYTES` at a time. */
  private async loadEarlier(): Promise<void> {
    const log = this.log;
    if (log.start <= 0) {
      return;
    }
    const length = Math.min(LOG_TAIL_BYTES, log.start);
    const offset = log.start - length;
    this.earlierButton.disabled = true;
    try {
      const piece = await this.options.api.logRange(this.job.job_id, log.replica, offset, length);
      if (log !== this.log || piece.offset + piece.bytes !== log.start) {
        return; // another replica meanwhile, or an answer that does not join up
      }
      const node = this.logNode;
      const fromBottom = node.scrollHeight - node.scrollTop;
      log.text = piece.text + log.text;
      log.start = piece.offset;
      node.textContent = log.text;
      node.scrollTop = node.scrollHeight - fromBottom; // the lines read stay in view
    } catch (error) {
      this.showMessage(errorText(error));
    } finally {
      this.earlierButton.disabled = false;
      this.renderRange();
    }
  }

  /** "Load earlier" while the log has more before what is shown, and how much is shown. */
  private renderRange(): void {
    const log = this.log;
    this.earlierButton.hidden = log.start <= 0;
    this.logRange.textContent =
      log.start > 0
        ? this.options.trans.__('showing the last %1 of %2', formatSize(log.end - log.start), formatSize(log.end))
        : '';
  }

  private stopLog(): void {
    if (this.logAbort) {
      this.logAbort.abort();
      this.logAbort = null;
    }
    this.logBusy = false;
  }

  private _deleted = false;
  private timer: number | null = null;
  private logAbort: AbortController | null = null;
  private log = new LogWindow();
  /** Whether the tail is loading or the log is being followed. */
  private logBusy = false;
  private logFinishedState = '';
  private header!: HTMLElement;
  private messageNode!: HTMLElement;
  private factsNode!: HTMLElement;
  private actions!: HTMLElement;
  private metricsNode!: HTMLElement;
  private metricsBody!: HTMLElement;
  private replicaSelect!: HTMLSelectElement;
  private earlierButton!: HTMLButtonElement;
  private logRange!: HTMLElement;
  private logNode!: HTMLElement;
  private eventsNode!: HTMLElement;
  private eventsBody!: HTMLElement;
  private filesNode!: HTMLElement;
  private filesBody!: HTMLElement;
  private history!: HistorySection;
}

function formatSize(bytes: number): string {
  if (bytes < 1024) {
    return `${bytes} B`;
  }
  if (bytes < 1024 * 1024) {
    return `${(bytes / 1024).toFixed(1)} KiB`;
  }
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
