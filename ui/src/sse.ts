// Server-Sent Events over fetch(): the aggregator authenticates `/api/v1/events` with the
// `Authorization` header only, which EventSource cannot send. This reads `text/event-stream`
// from a ReadableStream, reconnects with a back-off, and sends `Last-Event-ID` (harmless if the
// server ignores it: the client re-reads `/alerts` and `/cameras` after each `ready`).

export interface SseEvent {
  event: string;
  id: string;
  data: string;
}

export type LiveState = 'connecting' | 'live' | 'reconnecting' | 'stopped';

export interface SseOptions {
  url: string;
  token: string;
  onEvent: (e: SseEvent) => void;
  onState: (s: LiveState, detail?: string) => void;
  /** A refusal that retrying will not fix (401, 403, 400); the stream stops. */
  onFatal: (status: number, message: string, parameter?: string) => void;
}

export function openStream(opts: SseOptions): () => void {
  const ctl = new AbortController();
  let lastId = '';
  let attempt = 0;
  let stopped = false;

  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = setTimeout(resolve, ms);
      ctl.signal.addEventListener('abort', () => {
        clearTimeout(t);
        resolve();
      });
    });

  async function run(): Promise<void> {
    while (!stopped) {
      opts.onState(attempt === 0 ? 'connecting' : 'reconnecting');
      try {
        const headers: Record<string, string> = {
          Authorization: `Bearer ${opts.token}`,
          Accept: 'text/event-stream',
        };
        if (lastId) headers['Last-Event-ID'] = lastId;
        const resp = await fetch(opts.url, { headers, signal: ctl.signal, cache: 'no-store' });
        if (!resp.ok) {
          let message = `${resp.status} ${resp.statusText}`;
          let parameter: string | undefined;
          try {
            const j = await resp.json();
            message = j.message ?? message;
            parameter = j.parameter;
          } catch {
            /* not JSON */
          }
          if (resp.status === 400 || resp.status === 401 || resp.status === 403) {
            stopped = true;
            opts.onState('stopped', message);
            opts.onFatal(resp.status, message, parameter);
            return;
          }
          throw new Error(message);
        }
        if (!resp.body) throw new Error('no response body');
        await readEvents(resp.body, (e) => {
          if (e.id) lastId = e.id;
          if (e.event === 'ready') {
            attempt = 0;
            opts.onState('live');
          }
          opts.onEvent(e);
        });
        // the server ended the stream (shutdown): reconnect
      } catch (e) {
        if (stopped || ctl.signal.aborted) return;
        opts.onState('reconnecting', (e as Error).message);
      }
      if (stopped) return;
      attempt += 1;
      await sleep(Math.min(10_000, 500 * 2 ** Math.min(attempt, 5)));
    }
  }

  void run();
  return () => {
    stopped = true;
    ctl.abort();
  };
}

async function readEvents(body: ReadableStream<Uint8Array>, emit: (e: SseEvent) => void): Promise<void> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let event = '';
  let data: string[] = [];
  let id = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let nl: number;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + (buf[nl] === '\r' && buf[nl + 1] === '\n' ? 2 : 1));
      if (line === '') {
        if (data.length > 0 || event) emit({ event: event || 'message', id, data: data.join('\n') });
        event = '';
        data = [];
        id = '';
        continue;
      }
      if (line.startsWith(':')) continue; // keep-alive comment
      const colon = line.indexOf(':');
      const field = colon >= 0 ? line.slice(0, colon) : line;
      let val = colon >= 0 ? line.slice(colon + 1) : '';
      if (val.startsWith(' ')) val = val.slice(1);
      if (field === 'event') event = val;
      else if (field === 'data') data.push(val);
      else if (field === 'id') id = val;
    }
  }
}
