import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import {
  ICommandPalette,
  MainAreaWidget,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { DocumentRegistry, DocumentWidget } from '@jupyterlab/docregistry';
import { IDefaultFileBrowser } from '@jupyterlab/filebrowser';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';
import { ToolbarButton } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { Widget } from '@lumino/widgets';

import { IJob, IModel, IService, JobsAPI, KubeAIError, ModelsAPI, ServicesAPI } from './api';
import { kubeaiIcon } from './icon';
import { JobDetail } from './jobs';
import { ModelDetail, RegisterSource, registerModel } from './models';
import { KubeAIPanel } from './panel';
import { ServiceDetail } from './services';
import { confirmAction } from './dom';
import { INotebookSource, resubmitJob, submitNotebook } from './submit';

/** Command IDs of the extension, in one place. */
export namespace CommandIDs {
  export const openPanel = 'kubeai:open-panel';
  export const refresh = 'kubeai:refresh-connection';
  export const submitJob = 'kubeai:submit-job';
  export const openJob = 'kubeai:open-job';
  export const refreshJobs = 'kubeai:refresh-jobs';
  export const registerModel = 'kubeai:register-model';
  export const openModel = 'kubeai:open-model';
  export const refreshModels = 'kubeai:refresh-models';
  export const openService = 'kubeai:open-service';
  export const refreshServices = 'kubeai:refresh-services';
}

/** The open notebooks, to know which one "Submit as job" means. */
type NotebookWidget = DocumentWidget<Widget, DocumentRegistry.IModel>;

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-kubeai:plugin',
  description: 'The KubeAI sidebar: connection to the hub service, jobs, models and services.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, ITranslator, IDefaultFileBrowser],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null,
    fileBrowser: IDefaultFileBrowser | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_kubeai');
    const api = new JobsAPI();
    const modelsAPI = new ModelsAPI();
    const servicesAPI = new ServicesAPI();
    const panel = new KubeAIPanel(translator ?? nullTranslator);
    app.shell.add(panel, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(panel, 'jupyter-kubeai-panel');
    }

    app.commands.addCommand(CommandIDs.openPanel, {
      label: trans.__('Open the KubeAI panel'),
      icon: kubeaiIcon,
      execute: () => app.shell.activateById(panel.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: trans.__('Refresh the KubeAI connection'),
      execute: () => panel.connection.refresh()
    });
    app.commands.addCommand(CommandIDs.refreshJobs, {
      label: trans.__('Refresh the KubeAI jobs'),
      execute: () => panel.jobs.refresh()
    });

    // --- job details in the main area -------------------------------------------------------
    const details = new WidgetTracker<MainAreaWidget<JobDetail>>({ namespace: 'kubeai-job' });
    const openJob = (job: IJob): void => {
      const id = `kubeai-job-${job.job_id}`;
      const open = details.find(w => w.id === id);
      if (open) {
        app.shell.activateById(id);
        void open.content.refresh();
        return;
      }
      const content = new JobDetail(job, {
        api,
        trans,
        openFile: path => void app.commands.execute('docmanager:open', { path }),
        resubmit: job => resubmit(job),
        onResubmitted: next => {
          void panel.jobs.refresh();
          openJob(next);
        },
        onChanged: () => void panel.jobs.refresh(),
        registerModel: job => void register({ job })
      });
      const widget = new MainAreaWidget({ content });
      widget.id = id;
      widget.title.icon = kubeaiIcon;
      widget.title.label = job.name;
      widget.title.caption = trans.__('KubeAI job %1', job.job_id);
      content.title.changed.connect(() => (widget.title.label = content.title.label));
      void details.add(widget);
      app.shell.add(widget, 'main');
      app.shell.activateById(id);
    };
    panel.jobs.jobOpened.connect((_, job) => openJob(job));
    // An open detail of a job the list no longer has looks again (a 404 marks it deleted).
    panel.jobs.listed.connect((_, jobs) => {
      const listed = new Set(jobs.map(j => j.job_id));
      details.forEach(w => {
        if (!listed.has(w.content.job.job_id) && !w.content.deleted) {
          void w.content.refresh();
        }
      });
    });

    /**
     * Resubmit: the submit dialog prefilled from the job, under a new name,
     * running the job's snapshot. An admin resubmitting a teammate's job
     * makes it the owner's job again with its choices (the service's own
     * resubmit), after a confirmation.
     */
    const resubmit = async (job: IJob): Promise<IJob | null> => {
      const me = panel.connection.me;
      if (me && job.owner !== me.name) {
        const confirmed = await confirmAction({
          title: trans.__('Resubmit %1 for %2?', job.name, job.owner),
          body: trans.__(
            'A new job of %1 runs the same snapshot with the same choices, under their name and rights.',
            job.owner
          ),
          ok: trans.__('Resubmit'),
          trans
        });
        return confirmed ? api.resubmit(job.job_id) : null;
      }
      return resubmitJob(
        job,
        panel.jobs.jobs.map(j => j.name),
        trans,
        api
      );
    };
    app.commands.addCommand(CommandIDs.openJob, {
      label: args => trans.__('Open KubeAI job %1', String(args.id ?? '')),
      execute: async args => openJob(await api.get(String(args.id)))
    });
    if (restorer) {
      void restorer.restore(details, {
        command: CommandIDs.openJob,
        args: w => ({ id: w.content.job.job_id }),
        name: w => w.content.job.job_id
      });
    }

    // --- models: register, details ------------------------------------------------------------
    const modelDetails = new WidgetTracker<MainAreaWidget<ModelDetail>>({ namespace: 'kubeai-model' });
    const serviceDetails = new WidgetTracker<MainAreaWidget<ServiceDetail>>({ namespace: 'kubeai-service' });

    const openModel = (model: IModel): void => {
      const id = `kubeai-model-${model.id}`;
      const open = modelDetails.find(w => w.id === id);
      if (open) {
        app.shell.activateById(id);
        void open.content.refresh();
        return;
      }
      const content = new ModelDetail(model, {
        api: modelsAPI,
        services: servicesAPI,
        jobs: api,
        trans,
        openJob: jobId => void app.commands.execute(CommandIDs.openJob, { id: jobId }),
        onDeployed: service => {
          Notification.success(trans.__('Service %1 is %2.', service.name, service.state), { autoClose: 5000 });
          panel.showServices();
          void panel.services.refresh();
          openService(service);
        },
        onChanged: () => void panel.models.refresh()
      });
      const widget = new MainAreaWidget({ content });
      widget.id = id;
      widget.title.icon = kubeaiIcon;
      widget.title.label = model.name;
      content.title.changed.connect(() => (widget.title.label = content.title.label));
      void modelDetails.add(widget);
      app.shell.add(widget, 'main');
      app.shell.activateById(id);
    };

    const openService = (service: IService): void => {
      const id = `kubeai-service-${service.name}`;
      const open = serviceDetails.find(w => w.id === id);
      if (open) {
        app.shell.activateById(id);
        void open.content.refresh();
        return;
      }
      const content = new ServiceDetail(service, {
        api: servicesAPI,
        models: modelsAPI,
        trans,
        openModel: modelId => void app.commands.execute(CommandIDs.openModel, { id: modelId }),
        onChanged: () => void panel.services.refresh()
      });
      const widget = new MainAreaWidget({ content });
      widget.id = id;
      widget.title.icon = kubeaiIcon;
      widget.title.label = service.name;
      content.title.changed.connect(() => (widget.title.label = content.title.label));
      void serviceDetails.add(widget);
      app.shell.add(widget, 'main');
      app.shell.activateById(id);
    };

    const register = async (source: RegisterSource): Promise<void> => {
      let result;
      try {
        result = await registerModel(source, trans, modelsAPI, api);
      } catch (error) {
        Notification.error(
          trans.__(
            'Could not prepare the registration: %1',
            error instanceof KubeAIError ? error.message : String(error)
          ),
          { autoClose: false }
        );
        return;
      }
      if (!result) {
        return;
      }
      Notification.success(
        trans.__('Registered %1 version %2.', result.model.name, result.version.version),
        { autoClose: 5000 }
      );
      app.shell.activateById(panel.id);
      panel.showModels();
      void panel.models.refresh();
      openModel(result.model);
    };

    panel.models.modelOpened.connect((_, model) => openModel(model));
    panel.services.serviceOpened.connect((_, service) => openService(service));
    // An open detail of a service the list no longer has looks again (a 404 marks it deleted).
    panel.services.listed.connect((_, services) => {
      const listed = new Set(services.map(s => s.name));
      serviceDetails.forEach(w => {
        if (!listed.has(w.content.service.name) && !w.content.deleted) {
          void w.content.refresh();
        }
      });
    });

    app.commands.addCommand(CommandIDs.openModel, {
      label: args => trans.__('Open KubeAI model %1', String(args.id ?? '')),
      execute: async args => openModel(await modelsAPI.get(Number(args.id)))
    });
    app.commands.addCommand(CommandIDs.openService, {
      label: args => trans.__('Open KubeAI service %1', String(args.name ?? '')),
      execute: async args => openService(await servicesAPI.get(String(args.name)))
    });
    app.commands.addCommand(CommandIDs.refreshModels, {
      label: trans.__('Refresh the KubeAI models'),
      execute: () => panel.models.refresh()
    });
    app.commands.addCommand(CommandIDs.refreshServices, {
      label: trans.__('Refresh the KubeAI services'),
      execute: () => panel.services.refresh()
    });
    if (restorer) {
      void restorer.restore(modelDetails, {
        command: CommandIDs.openModel,
        args: w => ({ id: w.content.model.id }),
        name: w => String(w.content.model.id)
      });
      void restorer.restore(serviceDetails, {
        command: CommandIDs.openService,
        args: w => ({ name: w.content.service.name }),
        name: w => w.content.service.name
      });
    }

    const selectedPath = (): string | null => {
      if (!fileBrowser) {
        return null;
      }
      for (const item of fileBrowser.selectedItems()) {
        return item.path;
      }
      return null;
    };
    app.commands.addCommand(CommandIDs.registerModel, {
      label: args =>
        args.fileBrowser ? trans.__('Register as model') : trans.__('Register a model'),
      caption: trans.__('Register a file or folder (or a job\'s outputs) as a new model version'),
      icon: kubeaiIcon,
      isEnabled: args => !args.fileBrowser || selectedPath() !== null,
      execute: async args => {
        if (args.jobId) {
          let job: IJob;
          try {
            job = await api.get(String(args.jobId));
          } catch (error) {
            Notification.error(trans.__('Could not read job %1: %2', String(args.jobId), String(error)));
            return;
          }
          await register({ job });
          return;
        }
        // A path relative to the home: the file browser's selection, the
        // one given, or else the folder the file browser shows.
        const path = args.fileBrowser
          ? selectedPath()
          : typeof args.path === 'string'
            ? args.path
            : (fileBrowser?.model.path ?? '');
        if (path === null) {
          return;
        }
        await register({ path });
      }
    });
    app.contextMenu.addItem({
      command: CommandIDs.registerModel,
      args: { fileBrowser: true },
      selector: '.jp-DirListing-item[data-isdir]',
      rank: 61
    });

    // --- "Submit as job" ---------------------------------------------------------------------
    const notebooks = new WidgetTracker<NotebookWidget>({ namespace: 'kubeai-notebooks' });
    const submit = async (source: INotebookSource): Promise<void> => {
      let job: IJob | null;
      try {
        job = await submitNotebook(source, trans, api);
      } catch (error) {
        Notification.error(
          trans.__(
            'Could not prepare the job: %1',
            error instanceof KubeAIError ? error.message : String(error)
          ),
          { autoClose: false }
        );
        return;
      }
      if (!job) {
        return;
      }
      Notification.success(trans.__('Submitted job %1 (%2).', job.name, job.job_id), {
        autoClose: 5000
      });
      app.shell.activateById(panel.id);
      panel.showJobs();
      void panel.jobs.refresh();
      openJob(job);
    };
    const fromNotebook = (widget: NotebookWidget): INotebookSource => ({
      path: widget.context.path,
      content: widget.context.model.toJSON(),
      fromEditor: true
    });
    const currentNotebook = (): NotebookWidget | null => {
      const current = app.shell.currentWidget;
      if (current && notebooks.has(current)) {
        return current as NotebookWidget;
      }
      return notebooks.currentWidget;
    };
    const selectedNotebookFile = (): string | null => {
      if (!fileBrowser) {
        return null;
      }
      for (const item of fileBrowser.selectedItems()) {
        if (item.type === 'notebook') {
          return item.path;
        }
      }
      return null;
    };

    app.commands.addCommand(CommandIDs.submitJob, {
      label: trans.__('Submit as job'),
      caption: trans.__('Run this notebook as a (distributed) training job'),
      icon: kubeaiIcon,
      isEnabled: args =>
        args.fileBrowser ? selectedNotebookFile() !== null : currentNotebook() !== null,
      execute: async args => {
        if (args.fileBrowser) {
          const path = selectedNotebookFile();
          if (!path) {
            return;
          }
          let content: unknown;
          try {
            const model = await app.serviceManager.contents.get(path, {
              type: 'notebook',
              content: true
            });
            content = model.content;
          } catch (error) {
            Notification.error(trans.__('Could not read %1: %2', path, String(error)));
            return;
          }
          await submit({ path, content, fromEditor: false });
          return;
        }
        const widget = currentNotebook();
        if (widget) {
          await submit(fromNotebook(widget));
        }
      }
    });

    // The button in every notebook's toolbar submits that notebook.
    const toolbarExtension: DocumentRegistry.IWidgetExtension<NotebookWidget, DocumentRegistry.IModel> = {
      createNew: (widget: NotebookWidget): IDisposable => {
        void notebooks.add(widget);
        const button = new ToolbarButton({
          icon: kubeaiIcon,
          label: trans.__('Submit as job'),
          tooltip: trans.__('Run this notebook as a (distributed) training job'),
          onClick: () => void submit(fromNotebook(widget))
        });
        button.addClass('jp-KubeAI-submit-button');
        button.node.dataset.kubeaiAction = 'submit-job';
        widget.toolbar.insertItem(10, 'kubeai-submit-job', button);
        return new DisposableDelegate(() => button.dispose());
      }
    };
    app.docRegistry.addWidgetExtension('Notebook', toolbarExtension);

    app.contextMenu.addItem({
      command: CommandIDs.submitJob,
      args: { fileBrowser: true },
      selector: '.jp-DirListing-item[data-file-type="notebook"]',
      rank: 60
    });

    if (palette) {
      const category = trans.__('KubeAI');
      palette.addItem({ command: CommandIDs.openPanel, category });
      palette.addItem({ command: CommandIDs.refresh, category });
      palette.addItem({ command: CommandIDs.refreshJobs, category });
      palette.addItem({ command: CommandIDs.submitJob, category });
      palette.addItem({ command: CommandIDs.registerModel, category });
      palette.addItem({ command: CommandIDs.refreshModels, category });
      palette.addItem({ command: CommandIDs.refreshServices, category });
    }
  }
};

export default plugin;
