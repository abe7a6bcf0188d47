/**
 * The one way the lab extension talks to its server extension.
 *
 * Every call goes to `/kubeai/api/...` on the single-user server (Jupyter's
 * own auth and XSRF apply); the server extension forwards it to the hub
 * service "kubeai" with the user's own hub token.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

/** An error answered by the server extension or the hub service. */
export class KubeAIError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly reason: string = ''
  ) {
    super(message);
  }
}

/**
 * Call `/kubeai/api/<endPoint>` and return its decoded JSON body.
 *
 * Non-2xx answers become a `KubeAIError` carrying the service's own message,
 * so the UI can show something a person can act on.
 */
export async function requestAPI<T>(
  endPoint = '',
  init: RequestInit = {}
): Promise<T> {
  return requestJSON<T>(['kubeai', 'api', endPoint], init);
}

/**
 * Call one of the server extension's own routes, `/kubeai/<endPoint>`
 * (the ones that need the user's files: job submission, metrics, outputs).
 */
export async function requestLab<T>(
  endPoint: string,
  init: RequestInit = {}
): Promise<T> {
  return requestJSON<T>(['kubeai', endPoint], init);
}

/** Fetch a path under the Jupyter server's base URL; the Response as it came. */
export async function requestRaw(
  parts: string[],
  init: RequestInit = {}
): Promise<Response> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, ...parts);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    if (error instanceof Error && error.name === 'AbortError') {
      throw error;
    }
    throw new KubeAIError(
      `The Jupyter server could not be reached: ${String(error)}`,
      0,
      'network'
    );
  }
  if (!response.ok) {
    throw await errorOf(response);
  }
  return response;
}

/** The `KubeAIError` of a non-2xx answer ({message, reason} JSON or text). */
async function errorOf(response: Response): Promise<KubeAIError> {
  const text = await response.text();
  let data: any = text;
  try {
    data = JSON.parse(text);
  } catch {
    // Keep the raw text: it is the message.
  }
  const message =
    (data && typeof data === 'object' && data.message) ||
    (typeof data === 'string' && data) ||
    response.statusText;
  const reason = (data && typeof data === 'object' && data.reason) || '';
  return new KubeAIError(message, response.status, reason);
}

async function requestJSON<T>(parts: string[], init: RequestInit): Promise<T> {
  const response = await requestRaw(parts, init);
  const text = await response.text();
  if (text.length === 0) {
    return undefined as T;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    return text as T;
  }
}

/** One of the caller's running servers, as the hub service sees it. */
export interface IServer {
  name: string;
  profile: string;
  image: string;
  /** Set when the server's image is deprecated: what to do about it. */
  notice: string;
}

/** Who the hub service says the caller is (`GET /api/me`). */
export interface IMe {
  name: string;
  admin: boolean;
  groups: string[];
  mode: 'local' | 'kubernetes';
  service_version: string;
  servers: IServer[];
}

/** The connection area of the REST API. */
export class ConnectionAPI {
  /** The caller's identity as the hub service sees it. */
  me(): Promise<IMe> {
    return requestAPI<IMe>('me');
  }
}

/**
 * One entry of an item's history (`events` on the detail GETs of jobs,
 * models and services): who did what, and when; oldest first.
 */
export interface IHistoryEvent {
  /** Seconds since the epoch. */
  time: number;
  actor: string;
  /** created, updated, rolled_back, cancelled, deleted, resubmitted, restarted, ... */
  action: string;
  detail?: string;
}

/**
 * Whether the caller may change or delete `item` (its owner or a hub
 * admin). A service that does not send `may_change` yet is taken at its
 * word that it checks every change itself: the actions show, and a
 * refusal shows its message.
 */
export function mayChange(item: { may_change?: boolean } | null | undefined): boolean {
  return item?.may_change !== false;
}

/** The states of a job; `active` on the job says whether it may still change. */
export type JobState = 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Cancelled';

export const JOB_STATES: JobState[] = ['Pending', 'Running', 'Succeeded', 'Failed', 'Cancelled'];

/** A job record as the hub service answers it. */
export interface IJob {
  job_id: string;
  name: string;
  owner: string;
  project: string | null;
  framework: string;
  backend: string;
  state: JobState;
  reason: string;
  active: boolean;
  job_dir: string;
  /** The job folder relative to the owner's home, for Lab paths. */
  folder: string;
  notebook: string;
  workers: number;
  parameter_servers: number;
  procs_per_worker: number;
  profile: string;
  image: string;
  gpus: number;
  total_gpus: number;
  created: number | null;
  started: number | null;
  finished: number | null;
  /** The choices it was submitted with (for Resubmit). */
  custom_image?: string | null;
  parameters?: { [key: string]: unknown } | null;
  env?: { [key: string]: string } | null;
  /** Whether the caller may cancel, resubmit or delete it. */
  may_change?: boolean;
  /** Who did what to it (the detail GET only). */
  events?: IHistoryEvent[];
}

export interface IJobEvent {
  time: number;
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
  source: string;
}

/** One line of the job's metrics.jsonl, as the server extension reads it. */
export interface IMetricRecord {
  step: number | null;
  time?: number;
  rank?: number;
  /** The values, when the record nests them; otherwise they are top-level keys. */
  values?: { [name: string]: number };
  [name: string]: unknown;
}

export interface IJobFile {
  name: string;
  /** Relative to the caller's home: set for files Lab can open (the caller's own jobs). */
  path?: string;
  size: number;
  modified: number;
}

/** A job folder's outputs, and what to register from it by default. */
export interface IJobFiles {
  folder: string;
  files: IJobFile[];
  /** The model file (or folder) the job wrote, relative to its folder; null when nothing says which. */
  model_file?: string | null;
}

/** What `POST /kubeai/jobs` takes: the notebook as in the editor and the choices. */
export interface ISubmission {
  notebook_path: string;
  content: unknown;
  name: string;
  framework: string;
  workers: number;
  parameter_servers: number;
  procs_per_worker: number;
  profile: string;
  gpus: number | null;
  image: string;
  /** An image of the user's own, allowed by one of the catalog's image rules (wins over `image`). */
  custom_image?: string;
  project: string | null;
  parameters: { [key: string]: unknown };
  env: { [key: string]: string };
}

/** A catalog image (the entry's `to_dict`). */
export interface ICatalogImage {
  name: string;
  image: string;
  display_name: string;
  description: string;
  default: boolean;
  deprecated: boolean;
}

/** A catalog size (the entry's `to_dict`). */
export interface ICatalogProfile {
  name: string;
  display_name: string;
  description: string;
  cpu_limit: string;
  memory_limit: string;
  /** Default GPUs; 0 for a CPU size. */
  gpus: number;
  /** With GPUs: the most a user may pick (1..max_gpus). */
  max_gpus: number;
  default: boolean;
}

/** An "own image" rule: images matching `pattern` may be typed in. */
export interface ICatalogImageRule {
  name: string;
  pattern: string;
  description: string;
}

/** `GET /api/catalog`: the part of the catalog the caller may use. */
export interface ICatalog {
  images: ICatalogImage[];
  profiles: ICatalogProfile[];
  image_rules?: ICatalogImageRule[];
}

/** Filters of the job list. */
export interface IJobFilter {
  state?: string;
  project?: string;
  limit?: number;
}

/** The jobs area of the REST API (hub service and server extension). */
export class JobsAPI {
  list(filter: IJobFilter = {}): Promise<{ jobs: IJob[] }> {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filter)) {
      if (value !== undefined && value !== '') {
        query.set(key, String(value));
      }
    }
    const q = query.toString();
    return requestAPI<{ jobs: IJob[] }>('jobs' + (q ? `?${q}` : ''));
  }

  get(id: string): Promise<IJob> {
    return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}`);
  }

  events(id: string): Promise<{ events: IJobEvent[] }> {
    return requestAPI(`jobs/${encodeURIComponent(id)}/events`);
  }

  replicas(id: string): Promise<{ replicas: string[] }> {
    return requestAPI(`jobs/${encodeURIComponent(id)}/logs`);
  }

  /** The last `tail` bytes of one replica's log (cut at a line start), and where they lie in it. */
  logTail(id: string, replica: string, tail = LOG_TAIL_BYTES): Promise<ILogPiece> {
    return this.logPiece(id, replica, `tail=${tail}`);
  }

  /** Bytes [offset, offset + length) of one replica's log (paging back). */
  logRange(id: string, replica: string, offset: number, length: number): Promise<ILogPiece> {
    return this.logPiece(id, replica, `offset=${offset}&length=${length}`);
  }

  private async logPiece(id: string, replica: string, query: string): Promise<ILogPiece> {
    const response = await requestRaw(logParts(id, replica, query));
    const buffer = await response.arrayBuffer();
    const bytes = buffer.byteLength;
    const offset = headerNumber(response, 'X-Log-Offset');
    const size = headerNumber(response, 'X-Log-Size');
    return {
      text: new TextDecoder().decode(buffer),
      // A service without bounded logs answers the whole log, from its start.
      offset: offset ?? 0,
      size: size ?? (offset ?? 0) + bytes,
      bytes
    };
  }

  /**
   * Stream what is written to one replica's log from byte `offset` on
   * (the service reads only what is appended): `onStart` gets the byte
   * the stream starts at, `onText` each piece with its length in bytes.
   * The promise settles when the service ends the answer (the job ended)
   * or `signal` aborts it.
   */
  async followLog(
    id: string,
    replica: string,
    offset: number,
    on: { start: (offset: number) => void; text: (text: string, bytes: number) => void },
    signal: AbortSignal
  ): Promise<void> {
    const response = await requestRaw(logParts(id, replica, `follow=1&offset=${offset}`), { signal });
    // A service without offset-based follow streams the log from its start.
    on.start(headerNumber(response, 'X-Log-Offset') ?? 0);
    if (!response.body) {
      const buffer = await response.arrayBuffer();
      on.text(new TextDecoder().decode(buffer), buffer.byteLength);
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        break;
      }
      on.text(decoder.decode(value, { stream: true }), value.byteLength);
    }
    on.text(decoder.decode(), 0);
  }

  cancel(id: string): Promise<IJob> {
    return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}/cancel`, { method: 'POST' });
  }

  resubmit(id: string): Promise<IJob> {
    return requestAPI<IJob>(`jobs/${encodeURIComponent(id)}/resubmit`, {
      method: 'POST',
      body: '{}',
      headers: { 'Content-Type': 'application/json' }
    });
  }

  remove(id: string): Promise<void> {
    return requestAPI<void>(`jobs/${encodeURIComponent(id)}`, { method: 'DELETE' });
  }

  catalog(): Promise<ICatalog> {
    return requestAPI<ICatalog>('catalog');
  }

  /** Snapshot the notebook and submit it (server extension: it writes the job folder). */
  submit(submission: ISubmission): Promise<IJob> {
    return requestLab<IJob>('jobs', {
      method: 'POST',
      body: JSON.stringify(submission),
      headers: { 'Content-Type': 'application/json' }
    });
  }

  /**
   * The job's metrics: from the job folder in the caller's own home (the
   * server extension), or, for a teammate's project job, whose folder is in
   * the owner's home, from the hub service, which reads it on the share.
   */
  metrics(id: string): Promise<{ metrics: IMetricRecord[] }> {
    return fromOwnHomeElseService(`jobs/${encodeURIComponent(id)}/metrics`);
  }

  /** The job folder's outputs (its internal files hidden); `path` (openable in Lab) only for the caller's own jobs. */
  files(id: string): Promise<IJobFiles> {
    return fromOwnHomeElseService(`jobs/${encodeURIComponent(id)}/files`);
  }

  /**
   * The notebook the job ran (its snapshot, parameters injected), for a
   * resubmission: from the job folder in the caller's own home (Lab's
   * contents), else through the hub service.
   */
  async snapshot(job: IJob): Promise<unknown> {
    try {
      const response = await requestRaw(['api', 'contents', ...`${job.folder}/${SNAPSHOT_FILE}`.split('/').map(encodeURIComponent)], {});
      return ((await response.json()) as { content: unknown }).content;
    } catch (error) {
      if (!(error instanceof KubeAIError && error.status === 404)) {
        throw error;
      }
    }
    return JSON.parse(await (await this.download(job.job_id, SNAPSHOT_FILE)).text());
  }

  /** One file of a job folder, through the hub service (for files not in the caller's home). */
  async download(id: string, name: string): Promise<Blob> {
    const parts = name.split('/').map(encodeURIComponent).join('/');
    const response = await requestRaw(['kubeai', 'api', `jobs/${encodeURIComponent(id)}/files/${parts}`]);
    return response.blob();
  }
}

/** The notebook a job folder keeps as it ran (jobs/snapshot.py NOTEBOOK_FILE). */
export const SNAPSHOT_FILE = 'notebook.ipynb';

/** How much of a log the job detail shows at first, and pages back by (bytes). */
export const LOG_TAIL_BYTES = 262144;

/** A piece of a replica's log: its text, where it starts, and the log's size then (bytes). */
export interface ILogPiece {
  text: string;
  offset: number;
  size: number;
  /** The piece's length in bytes. */
  bytes: number;
}

function logParts(id: string, replica: string, query: string): string[] {
  return ['kubeai', 'api', 'jobs', encodeURIComponent(id), 'logs', `${encodeURIComponent(replica)}?${query}`];
}

/** A whole-number response header, or null when it is absent or not a number. */
function headerNumber(response: Response, name: string): number | null {
  const value = response.headers.get(name);
  if (value === null || !/^\d+$/.test(value.trim())) {
    return null;
  }
  return Number(value);
}

/** A job-folder route of the server extension; on its 404 (not in this home) the service's. */
async function fromOwnHomeElseService<T>(endPoint: string): Promise<T> {
  try {
    return await requestLab<T>(endPoint);
  } catch (error) {
    if (error instanceof KubeAIError && error.status === 404) {
      return requestAPI<T>(endPoint);
    }
    throw error;
  }
}

// --- models and inference services ------------------------------------------------------------

/** How a model version stores its files, as the registry names it. */
export type ModelFormat = 'sklearn' | 'torchscript' | 'custom';

/** The job (and what it ran) a version came from; `source` is the registered path. */
export interface ILineage {
  job_id?: string;
  notebook?: string;
  snapshot?: string;
  image?: string;
  parameters?: { [key: string]: unknown };
  framework?: string;
  state?: string;
  source?: string;
}

/** One tensor of a signature (Open Inference Protocol v2 style). */
export interface ITensorSpec {
  name: string;
  datatype?: string;
  shape?: number[];
}

/** A version's optional input/output signature. */
export interface ISignature {
  inputs?: ITensorSpec[];
  outputs?: ITensorSpec[];
}

/** One immutable version of a registered model. */
export interface IModelVersion {
  model_id: number;
  version: number;
  /** The registry folder relative to the share root. */
  path: string;
  checksum: string;
  format: ModelFormat | string;
  signature: ISignature;
  metrics: { [name: string]: unknown };
  tags: { [name: string]: unknown };
  lineage: ILineage;
  archived: boolean;
  created: number;
  created_by: string;
  /** Whether the caller may archive or delete it (its creator, the model's owner or an admin). */
  may_change?: boolean;
}

/** A registered model (`GET models`); `GET models/{id}` adds its versions, newest first. */
export interface IModel {
  id: number;
  scope: string;
  name: string;
  project: string | null;
  owner: string;
  description: string;
  created: number;
  /** alias -> version */
  aliases: { [alias: string]: number };
  latest: number | null;
  versions?: IModelVersion[];
  /** Whether the caller may change the model (its aliases among others). */
  may_change?: boolean;
  /** Who did what to it (the detail GET only). */
  events?: IHistoryEvent[];
}

/** What `POST models` takes. */
export interface IRegistration {
  name: string;
  project: string | null;
  /** Relative to the home; with `job_id`, inside the job folder ('' = all of it). */
  path?: string;
  job_id?: string;
  format?: string;
  signature?: ISignature;
  metrics?: { [name: string]: unknown };
  tags?: { [name: string]: unknown };
  description?: string;
}

/** The states of an inference service. */
export type ServiceState = 'Pending' | 'Ready' | 'Updating' | 'Failed';

/** An inference service with its live status (`GET services`). */
export interface IService {
  name: string;
  owner: string;
  project: string | null;
  model_id: number;
  model: string;
  /** The version it should serve. */
  version: number;
  /** The version answering now (null while none does). */
  serving_version: number | null;
  /** What a rollback goes back to. */
  previous_version: number | null;
  state: ServiceState;
  reason: string;
  ready_replicas: number;
  /** Relative to the hub's origin: `/services/kubeai/serve/<name>/`. */
  endpoint: string;
  predict_url: string;
  /** The name in `/v1/models/<name>` and `/v2/models/<name>` (the service's). */
  served_name?: string;
  /** The last failed requests the hub forwarded to it, newest first. */
  recent_errors?: IServiceError[];
  spec: { options?: { [key: string]: unknown }; [key: string]: unknown };
  created?: number;
  updated?: number;
  /** Whether the caller may update, roll back, scale, restart or delete it. */
  may_change?: boolean;
  /** Who did what to it (the detail GET only). */
  events?: IHistoryEvent[];
}

/** A failed request to a service's model server (`recent_errors`). */
export interface IServiceError {
  /** Seconds since the epoch. */
  time: number;
  /** The HTTP status the caller got (503: no model server answered). */
  status: number;
  message: string;
}

/** What `POST services` takes. */
export interface IDeployment {
  name: string;
  model_id: number;
  version?: number;
  alias?: string;
  replicas?: number;
  /** Autoscale from `replicas` up to this many (Kubernetes). */
  max_replicas?: number;
  profile?: string;
  gpus?: number;
  max_batch_size?: number;
  max_latency_ms?: number;
}

/**
 * A model server's Open Inference v2 model metadata (`GET services/{name}/metadata`):
 * `inputs` are the version's signature, else what the runtime learnt from the loaded model.
 */
export interface IModelMetadata {
  name: string;
  versions?: string[];
  platform?: string;
  inputs?: ITensorSpec[];
  outputs?: ITensorSpec[];
}

/** The model server's answer to a "try it" request, refused or not. */
export interface IPrediction {
  ok: boolean;
  status: number;
  answer: unknown;
}

/** What `PATCH services/{name}` takes. */
export interface IServiceUpdate {
  version?: number;
  alias?: string;
  replicas?: number;
  profile?: string;
}

function jsonInit(method: string, body: unknown): RequestInit {
  return { method, body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } };
}

/** The model registry area of the REST API. */
export class ModelsAPI {
  list(project?: string): Promise<{ models: IModel[] }> {
    return requestAPI(project ? `models?project=${encodeURIComponent(project)}` : 'models');
  }

  /** The model with its versions, newest first. */
  get(id: number): Promise<IModel> {
    return requestAPI<IModel>(`models/${id}`);
  }

  register(registration: IRegistration): Promise<{ model: IModel; version: IModelVersion }> {
    return requestAPI('models', jsonInit('POST', registration));
  }

  setArchived(id: number, version: number, archived: boolean): Promise<IModelVersion> {
    return requestAPI(`models/${id}/versions/${version}`, jsonInit('PATCH', { archived }));
  }

  /** Refused (409) while a service uses the version. */
  deleteVersion(id: number, version: number): Promise<void> {
    return requestAPI(`models/${id}/versions/${version}`, { method: 'DELETE' });
  }

  setAlias(id: number, alias: string, version: number): Promise<IModel> {
    return requestAPI(`models/${id}/aliases/${encodeURIComponent(alias)}`, jsonInit('PUT', { version }));
  }

  deleteAlias(id: number, alias: string): Promise<IModel> {
    return requestAPI(`models/${id}/aliases/${encodeURIComponent(alias)}`, { method: 'DELETE' });
  }
}

/** The inference services area of the REST API. */
export class ServicesAPI {
  list(): Promise<{ services: IService[] }> {
    return requestAPI('services');
  }

  get(name: string): Promise<IService> {
    return requestAPI<IService>(`services/${encodeURIComponent(name)}`);
  }

  /** Deploy a model version; the answer comes once the service is ready (or failed). */
  deploy(deployment: IDeployment): Promise<IService> {
    return requestAPI<IService>('services', jsonInit('POST', deployment));
  }

  /** Switch version (without failed requests), scale or resize. */
  update(name: string, update: IServiceUpdate): Promise<IService> {
    return requestAPI<IService>(`services/${encodeURIComponent(name)}`, jsonInit('PATCH', update));
  }

  rollback(name: string): Promise<IService> {
    return requestAPI<IService>(`services/${encodeURIComponent(name)}/rollback`, jsonInit('POST', {}));
  }

  remove(name: string): Promise<void> {
    return requestAPI<void>(`services/${encodeURIComponent(name)}`, { method: 'DELETE' });
  }

  /** Start a Failed local model server again. */
  restart(name: string): Promise<IService> {
    return requestAPI<IService>(`services/${encodeURIComponent(name)}/restart`, jsonInit('POST', {}));
  }

  /** The model server's v2 metadata of the model it serves (fails while it is not running). */
  metadata(name: string): Promise<IModelMetadata> {
    return requestAPI<IModelMetadata>(`services/${encodeURIComponent(name)}/metadata`);
  }

  /**
   * One request to the model through the hub service: a KServe v1 body
   * (with `instances`) or an Open Inference Protocol v2 one; the model
   * server's answer as it came.
   */
  async predict(name: string, body: unknown): Promise<IPrediction> {
    const settings = ServerConnection.makeSettings();
    const url = URLExt.join(settings.baseUrl, 'kubeai', 'api', 'services', encodeURIComponent(name), 'predict');
    let response: Response;
    try {
      response = await ServerConnection.makeRequest(url, jsonInit('POST', body), settings);
    } catch (error) {
      throw new KubeAIError(`The Jupyter server could not be reached: ${String(error)}`, 0, 'network');
    }
    // A refused payload (4xx) is an answer to show too, not only an error.
    const text = await response.text();
    let answer: unknown = text;
    try {
      answer = JSON.parse(text);
    } catch {
      // Not JSON: show the text.
    }
    return { ok: response.ok, status: response.status, answer };
  }
}
