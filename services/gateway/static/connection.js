// One WebSocket to the gateway that keeps itself alive.
//
// - Reconnects after every unexpected close with exponential back-off and
//   jitter (1012 "server restart" and 4001 "token expired" reconnect at once,
//   the latter with a fresh token).
// - Notices a dead link (no frame for two heartbeat intervals while it sends
//   its own `ping`s) and reconnects instead of waiting for TCP to give up.
// - Correlates requests with replies by `requestId`; requests still waiting
//   when the socket goes away fail with code DISCONNECTED.
//
// It knows nothing about chat state: every frame goes to `onFrame`.

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 30_000;
const STABLE_AFTER_MS = 10_000; // a connection that lived this long resets the back-off
const DEFAULT_HEARTBEAT_MS = 20_000;
const REQUEST_TIMEOUT_MS = 15_000;
const CLIENT_GIVE_UP = 4000; // our own close code when the link looks dead

export const CLOSE_POLICY = 1008;
export const CLOSE_RESTART = 1012;
export const CLOSE_TOKEN_EXPIRED = 4001;

export class RequestError extends Error {
  constructor(frame) {
    super(frame.message || frame.code);
    this.code = frame.code;
    this.retryAfterMs = frame.retryAfterMs;
    this.frame = frame;
  }
}

function jittered(ms) {
  // "Equal jitter": half fixed, half random, so clients that dropped
  // together do not come back together.
  return ms / 2 + Math.random() * (ms / 2);
}

export class Connection {
  /**
   * @param {object} options
   * @param {string} options.url ws(s)://host/ws
   * @param {(refresh: boolean) => Promise<string>} options.getToken
   * @param {(frame: object, matched: boolean) => void} options.onFrame
   * @param {(status: object) => void} options.onStatus
   */
  constructor({ url, getToken, onFrame, onStatus }) {
    this.url = url;
    this.getToken = getToken;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.ws = null;
    this.state = "idle"; // idle | connecting | open | waiting | stopped
    this.attempts = 0;
    this.retryAt = 0;
    this.lastClose = null; // {code, reason}
    this.pending = new Map();
    this.nextRequest = 0;
    this.timer = null;
    this.heartbeat = null;
    this.heartbeatMs = DEFAULT_HEARTBEAT_MS;
    this.lastFrameAt = 0;
    this.openedAt = 0;
    this.refreshToken = false;
    this.generation = 0;
    this._onOnline = () => this.reconnectNow();
    this._onVisible = () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    };
  }

  get isOpen() {
    return this.state === "open";
  }

  start() {
    window.addEventListener("online", this._onOnline);
    document.addEventListener("visibilitychange", this._onVisible);
    this.attempts = 0;
    this._connect();
  }

  stop() {
    this.state = "stopped";
    this.lastClose = null;
    window.removeEventListener("online", this._onOnline);
    document.removeEventListener("visibilitychange", this._onVisible);
    clearTimeout(this.timer);
    this._stopHeartbeat();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(1000, "signed out");
      } catch {
        /* already closed */
      }
    }
    this._failPending("DISCONNECTED", "signed out");
    this._status();
  }

  /** Skip the back-off wait (the network came back, the user asked, the tab woke up). */
  reconnectNow() {
    if (this.state !== "waiting") return;
    clearTimeout(this.timer);
    this._connect();
  }

  /** Drop the socket as if the network had failed (used by the debug hook). */
  drop() {
    if (this.ws) this._abandon(CLIENT_GIVE_UP, "dropped");
  }

  /** Fire and forget; false when there is no open socket. */
  send(frame) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  /**
   * Send a request and resolve with the reply of type `expect` carrying the
   * same requestId. Rejects with a RequestError (a server `error` frame, or
   * DISCONNECTED / TIMEOUT). Error frames whose code is in `collectErrors`
   * are gathered into `reply.errors` instead (for `sync`, which answers one
   * error per refused conversation and still completes).
   */
  request(frame, { expect, timeoutMs = REQUEST_TIMEOUT_MS, collectErrors = [] } = {}) {
    if (!this.isOpen) {
      return Promise.reject(new RequestError({ code: "DISCONNECTED", message: "not connected" }));
    }
    const requestId = `r${++this.nextRequest}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new RequestError({ code: "TIMEOUT", message: "no answer from the server" }));
      }, timeoutMs);
      this.pending.set(requestId, { expect, resolve, reject, timer, collectErrors, errors: [] });
      this.ws.send(JSON.stringify({ ...frame, requestId }));
    });
  }

  // --- internals -------------------------------------------------------------------

  async _connect() {
    const generation = ++this.generation;
    this.state = "connecting";
    this._status();
    let token;
    try {
      token = await this.getToken(this.refreshToken);
    } catch (err) {
      if (generation !== this.generation || this.state === "stopped") return;
      if (err && err.fatal) {
        this.state = "stopped";
        this.lastClose = { code: 0, reason: err.message };
        this._status();
        return;
      }
      this._scheduleReconnect(this._backoff(), { code: 0, reason: "could not get a token" });
      return;
    }
    if (generation !== this.generation || this.state === "stopped") return;
    this.refreshToken = false;
    const ws = new WebSocket(`${this.url}?token=${encodeURIComponent(token)}`);
    this.ws = ws;
    let welcomed = false;
    ws.onmessage = (event) => {
      this.lastFrameAt = Date.now();
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      if (frame.type === "connected") {
        welcomed = true;
        this.state = "open";
        this.openedAt = Date.now();
        this.lastClose = null;
        this.heartbeatMs = frame.heartbeatIntervalMs || DEFAULT_HEARTBEAT_MS;
        this._startHeartbeat();
        this._status();
      }
      this._dispatch(frame);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this._closed(event.code, event.reason, welcomed);
    };
    ws.onerror = () => {
      /* a close event always follows */
    };
  }

  _dispatch(frame) {
    const waiting = frame.requestId !== undefined ? this.pending.get(frame.requestId) : undefined;
    let matched = false;
    if (waiting) {
      matched = true;
      if (frame.type === "error") {
        if (waiting.collectErrors.includes(frame.code)) {
          waiting.errors.push(frame);
        } else {
          this._settle(frame.requestId);
          waiting.reject(new RequestError(frame));
        }
      } else if (frame.type === waiting.expect) {
        this._settle(frame.requestId);
        frame.errors = waiting.errors;
        // State first, then the caller's continuation (a microtask later).
        this.onFrame(frame, matched);
        waiting.resolve(frame);
        return;
      }
    }
    this.onFrame(frame, matched);
  }

  _settle(requestId) {
    const waiting = this.pending.get(requestId);
    if (waiting) clearTimeout(waiting.timer);
    this.pending.delete(requestId);
  }

  _failPending(code, message) {
    const pending = [...this.pending.values()];
    this.pending.clear();
    for (const waiting of pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new RequestError({ code, message }));
    }
  }

  _closed(code, reason, welcomed) {
    this.ws = null;
    this._stopHeartbeat();
    this._failPending("DISCONNECTED", "connection lost");
    if (this.state === "stopped") return;
    const lived = welcomed ? Date.now() - this.openedAt : 0;
    if (lived > STABLE_AFTER_MS) this.attempts = 0;
    let delay;
    if (code === CLOSE_TOKEN_EXPIRED) {
      this.refreshToken = true;
      delay = Math.random() * 300;
    } else if (code === CLOSE_RESTART) {
      // The gateway is draining: come back soon, but not all at once.
      delay = 250 + Math.random() * 1000;
    } else {
      // Refused before `connected` may be a 401 or a 429 (a browser cannot
      // tell), and 1008 may mean the token was revoked: try a fresh token.
      if (!welcomed || code === CLOSE_POLICY) this.refreshToken = true;
      delay = this._backoff();
    }
    this._scheduleReconnect(delay, { code, reason });
  }

  _backoff() {
    const ms = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempts);
    this.attempts += 1;
    return jittered(ms);
  }

  _scheduleReconnect(delay, close) {
    this.state = "waiting";
    this.lastClose = close;
    this.retryAt = Date.now() + delay;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), delay);
    this._status();
  }

  _abandon(code, reason) {
    // Do not wait for a closing handshake over a dead link.
    const ws = this.ws;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close(CLIENT_GIVE_UP, reason);
    } catch {
      /* ignore */
    }
    this._closed(code, reason, this.state === "open");
  }

  _startHeartbeat() {
    this._stopHeartbeat();
    const every = Math.max(this.heartbeatMs, 5000);
    this.heartbeat = setInterval(() => {
      if (!this.isOpen) return;
      if (Date.now() - this.lastFrameAt > 2 * every + 5000) {
        this._abandon(CLIENT_GIVE_UP, "heartbeat timeout");
        return;
      }
      this.send({ type: "ping" });
    }, every);
  }

  _stopHeartbeat() {
    clearInterval(this.heartbeat);
    this.heartbeat = null;
  }

  _status() {
    this.onStatus({
      state: this.state,
      retryAt: this.retryAt,
      attempts: this.attempts,
      lastClose: this.lastClose,
    });
  }
}
