import {
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { ITranslator, nullTranslator } from '@jupyterlab/translation';

import { kubeaiIcon } from './icon';
import { KubeAIPanel } from './panel';

/** Command IDs of the extension, in one place. */
export namespace CommandIDs {
  export const openPanel = 'kubeai:open-panel';
  export const refresh = 'kubeai:refresh-connection';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'jupyter-kubeai:plugin',
  description: 'The KubeAI sidebar: connection to the hub service, jobs, models and services.',
  autoStart: true,
  optional: [ILayoutRestorer, ICommandPalette, ITranslator],
  activate: (
    app: JupyterFrontEnd,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    translator: ITranslator | null
  ) => {
    const trans = (translator ?? nullTranslator).load('jupyter_kubeai');
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
    if (palette) {
      const category = trans.__('KubeAI');
      palette.addItem({ command: CommandIDs.openPanel, category });
      palette.addItem({ command: CommandIDs.refresh, category });
    }
  }
};

export default plugin;
