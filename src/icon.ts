import { LabIcon } from '@jupyterlab/ui-components';

const kubeaiSvg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M12 1.5 2.9 6.25v11.5L12 22.5l9.1-4.75V6.25L12 1.5zm0 2.26 6.93 3.62L12 11 5.07 7.38 12 3.76zM4.9 9.03l6.1 3.18v7.56l-6.1-3.18V9.03zm8.1 10.74v-7.56l6.1-3.18v7.56L13 19.77z"/>
  </g>
</svg>`;

/** The KubeAI sidebar icon. */
export const kubeaiIcon = new LabIcon({
  name: 'jupyter-kubeai:kubeai',
  svgstr: kubeaiSvg
});
