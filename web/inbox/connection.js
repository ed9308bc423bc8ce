// The agent's WebSocket to parleyd (protocol v1, /v1/agent): says hello,
// matches replies to requests by `re`, reconnects with backoff, and keeps
// requests that must not be lost (sends) until they are answered, sending
// them again after a reconnect (the server recognises a repeated
// client_msg_id and stores nothing twice).
//
// Events (EventTarget): 'status' {detail: 'connecting'|'online'|'reconnecting'},
// 'ready' {detail: hello ok}, 'event' {detail: server event}, 'unauthorized'.

const initialBackoffMs = 500;
const maxBackoffMs = 10_000;
const replyTimeoutMs = 30_000;

export class AgentConnection extends EventTarget {
  constructor(url, token) {
    super();
    this.url = url;
    this.token = token;
    this.socket = null;
    this.nextId = 1;
    this.waiting = new Map();   // id -> {resolve, reject, frame, durable, timer}
    this.durable = [];          // ids of requests to send again after a reconnect, in order
    this.backoffMs = initialBackoffMs;
    this.retryTimer = null;
    this.online = false;
    this.stopped = false;
    addEventListener('offline', () => this.socket?.close());
    addEventListener('online', () => this.reconnectNow());
  }

  start() { this.open('connecting'); }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.socket?.close(1000);
  }

  reconnectNow() {
    if (this.stopped || this.online) return;
    clearTimeout(this.retryTimer);
    if (!this.socket || this.socket.readyState === WebSocket.CLOSED) this.open('reconnecting');
  }

  open(status) {
    this.status(status);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.sendFrame({ type: 'hello', id: 'hello', token: this.token });
    };
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    socket.onclose = (close) => {
      if (this.socket !== socket) return;
      this.online = false;
      for (const [id, entry] of this.waiting) {
        if (entry.durable) continue;
        clearTimeout(entry.timer);
        entry.reject(Object.assign(new Error('connection lost'), { code: 'unavailable' }));
        this.waiting.delete(id);
      }
      if (this.stopped) return;
      if (close.code === 4401 || close.code === 1008) {
        this.stopped = true;
        this.dispatchEvent(new Event('unauthorized'));
        return;
      }
      this.status('reconnecting');
      const jitter = Math.random() * this.backoffMs * 0.3;
      this.retryTimer = setTimeout(() => this.open('reconnecting'), this.backoffMs + jitter);
      this.backoffMs = Math.min(this.backoffMs * 2, maxBackoffMs);
    };
  }

  status(value) { this.dispatchEvent(new CustomEvent('status', { detail: value })); }

  receive(frame) {
    if (frame.re === 'hello') {
      if (frame.type === 'error') {
        this.stop();
        this.dispatchEvent(new Event('unauthorized'));
        return;
      }
      this.online = true;
      this.backoffMs = initialBackoffMs;
      this.status('online');
      this.dispatchEvent(new CustomEvent('ready', { detail: frame }));
      for (const id of this.durable) this.sendFrame(this.waiting.get(id).frame);
      return;
    }
    if (frame.re !== undefined && this.waiting.has(frame.re)) {
      const entry = this.waiting.get(frame.re);
      this.waiting.delete(frame.re);
      clearTimeout(entry.timer);
      if (entry.durable) this.durable = this.durable.filter((id) => id !== frame.re);
      if (frame.type === 'ok') entry.resolve(frame);
      else entry.reject(Object.assign(new Error(frame.message), { code: frame.code }));
      return;
    }
    if (frame.type !== 'ok' && frame.type !== 'error') this.dispatchEvent(new CustomEvent('event', { detail: frame }));
  }

  sendFrame(frame) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(frame));
  }

  // Resolves with the ok, rejects with an Error carrying the protocol's `code`.
  // A durable request survives reconnects and waits for its answer however long.
  request(type, fields = {}, { durable = false } = {}) {
    const id = `r${this.nextId++}`;
    const frame = { type, id, ...fields };
    return new Promise((resolve, reject) => {
      if (!durable && !this.online) {
        reject(Object.assign(new Error('offline'), { code: 'unavailable' }));
        return;
      }
      const entry = { resolve, reject, frame, durable };
      if (!durable) {
        entry.timer = setTimeout(() => {
          this.waiting.delete(id);
          reject(Object.assign(new Error('no answer'), { code: 'unavailable' }));
        }, replyTimeoutMs);
      }
      this.waiting.set(id, entry);
      if (durable) this.durable.push(id);
      if (this.online) this.sendFrame(frame);
    });
  }

  // Fire and forget (typing): nothing to do when offline.
  notify(type, fields) {
    if (this.online) this.sendFrame({ type, ...fields });
  }
}
