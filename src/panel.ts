/**
 * The KubeAI sidebar panel.
 *
 * Its first section shows the connection: whether the hub service answers
 * through the server extension, who the user is, their projects (hub groups)
 * and the mode (local or Kubernetes). The next sections list the jobs
 * (see ./jobs.ts), the registered models (./models.ts) and the inference
 * services (./services.ts).
 */
import { PageConfig } from '@jupyterlab/coreutils';
import { ITranslator, nullTranslator, TranslationBundle } from '@jupyterlab/translation';
import { SidePanel } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import { AccordionPanel, Widget } from '@lumino/widgets';

import { ConnectionAPI, IMe, IServer, JobsAPI, KubeAIError, ModelsAPI, ServicesAPI } from './api';
import { kubeaiIcon } from './icon';
import { JobsView } from './jobs';
import { ModelsView } from './models';
import { ServicesView } from './services';

/** The connection section: one refreshable view of `GET /api/me`. */
export class ConnectionView extends Widget {
  constructor(
    private readonly api: ConnectionAPI,
    private readonly trans: TranslationBundle
  ) {
    super();
    this.addClass('jp-KubeAI-connection');
    this.title.label = trans.__('Connection');
  }

  /** The caller as last answered by the service (null until then). */
  get me(): IMe | null {
    return this._me;
  }

  /** Emitted when `GET me` answered. */
  get meChanged(): ISignal<this, IMe> {
    return this._meChanged;
  }

  private _me: IMe | null = null;
  private readonly _meChanged = new Signal<this, IMe>(this);

  /** Ask the hub service again and redraw. */
  async refresh(): Promise<void> {
    this.node.dataset.state = 'loading';
    this.renderMessage(this.trans.__('Connecting to the KubeAI service…'));
    try {
      const me = await this.api.me();
      this._me = me;
      this.renderMe(me);
      this._meChanged.emit(me);
    } catch (error) {
      this.renderError(error);
    }
    this.fitContent();
  }

  protected onAfterAttach(): void {
    void this.refresh();
  }

  protected onAfterShow(): void {
    this.fitContent();
  }

  /**
   * Never cut the section's content (its facts, a deprecated-image notice,
   * the Refresh button): the sidebar's accordion shares its height among
   * the sections by their relative sizes, but keeps each at least at its
   * CSS min-height, so that is set to what the content needs (up to half
   * the window; beyond, the section scrolls) and the accordion refitted.
   */
  private fitContent(): void {
    requestAnimationFrame(() => {
      const node = this.node;
      const last = node.lastElementChild as HTMLElement | null;
      if (!last || !this.isVisible) {
        return;
      }
      const padding = parseFloat(getComputedStyle(node).paddingBottom) || 0;
      const needed = Math.ceil(last.offsetTop + last.offsetHeight + padding);
      const wanted = `${Math.min(needed, Math.round(window.innerHeight / 2))}px`;
      if (node.style.minHeight !== wanted) {
        node.style.minHeight = wanted;
        this.parent?.fit();
      }
    });
  }

  private renderMe(me: IMe): void {
    const trans = this.trans;
    this.node.dataset.state = 'connected';
    this.node.replaceChildren();
    const status = document.createElement('p');
    status.className = 'jp-KubeAI-status jp-KubeAI-status-ok';
    status.dataset.kubeaiField = 'status';
    status.textContent = trans.__('Connected to the KubeAI service');
    this.node.appendChild(status);

    const list = document.createElement('dl');
    list.className = 'jp-KubeAI-facts';
    const add = (field: string, label: string, value: Node | string) => {
      const dt = document.createElement('dt');
      dt.textContent = label;
      const dd = document.createElement('dd');
      dd.dataset.kubeaiField = field;
      dd.append(value);
      list.append(dt, dd);
    };
    add('user', trans.__('User'), me.admin ? `${me.name} (${trans.__('admin')})` : me.name);
    add('projects', trans.__('Projects'), this.projectList(me.groups));
    add(
      'mode',
      trans.__('Mode'),
      me.mode === 'kubernetes' ? trans.__('Kubernetes') : trans.__('Local')
    );
    const server = this.thisServer(me);
    if (server) {
      add('profile', trans.__('Size'), server.profile || '—');
      add('image', trans.__('Image'), server.image || '—');
    }
    this.node.appendChild(list);
    if (server?.notice) {
      const notice = document.createElement('p');
      notice.className = 'jp-KubeAI-notice';
      notice.dataset.kubeaiField = 'notice';
      notice.textContent = server.notice;
      this.node.appendChild(notice);
    }
    this.node.appendChild(this.refreshButton());
  }

  /** This Lab's own server among the user's running servers. */
  private thisServer(me: IMe): IServer | undefined {
    const serverName = PageConfig.getOption('hubServerName') || '';
    return me.servers.find(s => s.name === serverName);
  }

  private projectList(groups: string[]): Node {
    if (groups.length === 0) {
      const none = document.createElement('span');
      none.className = 'jp-KubeAI-muted';
      none.textContent = this.trans.__('none (ask an admin to add you to a project group)');
      return none;
    }
    const ul = document.createElement('ul');
    ul.className = 'jp-KubeAI-projects';
    for (const group of groups) {
      const li = document.createElement('li');
      li.textContent = group;
      ul.appendChild(li);
    }
    return ul;
  }

  private renderError(error: unknown): void {
    const trans = this.trans;
    this.node.dataset.state = 'error';
    let detail = String(error);
    if (error instanceof KubeAIError) {
      detail = error.message;
    }
    this.node.replaceChildren();
    const status = document.createElement('p');
    status.className = 'jp-KubeAI-status jp-KubeAI-status-error';
    status.dataset.kubeaiField = 'status';
    status.textContent = trans.__('The KubeAI service is unreachable.');
    const why = document.createElement('p');
    why.className = 'jp-KubeAI-error-detail';
    why.dataset.kubeaiField = 'error';
    why.textContent = detail;
    const hint = document.createElement('p');
    hint.className = 'jp-KubeAI-muted';
    hint.textContent = trans.__(
      'Jobs, models and services need it. Retry in a moment; if it persists, ask a hub admin to check the "kubeai" service in the hub log.'
    );
    this.node.append(status, why, hint, this.refreshButton());
  }

  private renderMessage(message: string): void {
    const p = document.createElement('p');
    p.className = 'jp-KubeAI-muted';
    p.textContent = message;
    this.node.replaceChildren(p);
  }

  private refreshButton(): HTMLButtonElement {
    const button = document.createElement('button');
    button.className = 'jp-Button jp-mod-styled jp-mod-reject jp-KubeAI-refresh';
    button.textContent = this.trans.__('Refresh');
    button.onclick = () => void this.refresh();
    return button;
  }
}

/** The sidebar panel holding the KubeAI sections. */
export class KubeAIPanel extends SidePanel {
  readonly connection: ConnectionView;
  readonly jobs: JobsView;
  readonly models: ModelsView;
  readonly services: ServicesView;

  constructor(translator: ITranslator = nullTranslator) {
    const trans = translator.load('jupyter_kubeai');
    super({ translator });
    this.id = 'jp-kubeai-panel';
    this.addClass('jp-KubeAI-panel');
    this.title.icon = kubeaiIcon;
    this.title.caption = trans.__('KubeAI');
    const heading = new Widget();
    heading.node.textContent = trans.__('KubeAI');
    heading.addClass('jp-KubeAI-heading');
    this.header.addWidget(heading);
    this.connection = new ConnectionView(new ConnectionAPI(), trans);
    this.addWidget(this.connection);
    this.jobs = new JobsView(new JobsAPI(), trans);
    this.addWidget(this.jobs);
    this.models = new ModelsView(new ModelsAPI(), trans);
    this.addWidget(this.models);
    this.services = new ServicesView(new ServicesAPI(), trans);
    this.addWidget(this.services);
    // The connection's facts and Refresh button fit without scrolling; the lists share the rest.
    if (this.content instanceof AccordionPanel) {
      this.content.setRelativeSizes([1.4, 1.2, 1, 0.8]);
    }
    this.connection.meChanged.connect((_, me) => {
      this.jobs.setProjects(me.groups);
      this.models.setProjects(me.groups);
    });
  }

  /** Expand the Jobs section (after a submission, to show the new job). */
  showJobs(): void {
    this.expand(this.jobs);
  }

  /** Expand the Models section (after a registration). */
  showModels(): void {
    this.expand(this.models);
  }

  /** Expand the Services section (after a deployment). */
  showServices(): void {
    this.expand(this.services);
  }

  private expand(section: Widget): void {
    const content = this.content;
    const index = this.widgets.indexOf(section);
    if (content instanceof AccordionPanel && index >= 0 && !section.isVisible) {
      content.expand(index);
    }
  }
}
