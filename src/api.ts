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
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'kubeai', 'api', endPoint);
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(url, init, settings);
  } catch (error) {
    throw new KubeAIError(
      `The Jupyter server could not be reached: ${String(error)}`,
      0,
      'network'
    );
  }
  const text = await response.text();
  let data: any = text;
  if (text.length > 0) {
    try {
      data = JSON.parse(text);
    } catch {
      // Keep the raw text: it is shown as the error message below.
    }
  }
  if (!response.ok) {
    const message =
      (data && typeof data === 'object' && data.message) ||
      (typeof data === 'string' && data) ||
      response.statusText;
    const reason = (data && typeof data === 'object' && data.reason) || '';
    throw new KubeAIError(message, response.status, reason);
  }
  return data as T;
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
