// Chat state and the protocol rules (docs/protocol.md), without any DOM.
//
// The UI reads the state and listens for "change" events; it acts through
// the methods (openConversation, sendMessage, loadOlder, ...). The rules that
// keep the state right across drops:
// - messages are kept per conversation by id (and seq), so a message that
//   arrives twice (push, offline queue, history, sync) is shown once;
// - sends carry a clientMessageId and are retried with it until acked;
// - after every (re)connect: pending sends are re-sent, the conversation list
//   is reloaded, presence re-subscribed, and every conversation we hold
//   messages for is synced from the last seq we hold without a gap;
// - a gap seen live (a seq that skips ahead) triggers a sync as well.

import { Connection, RequestError } from "./connection.js";

const PAGE = 50;
const TYPING_REFRESH_MS = 3000; // the server lapses a typist after 5 s
const TYPING_IDLE_MS = 4000;
const TYPING_SHOW_MAX_MS = 7000; // never show a typist longer without a refresh
const SEND_RETRY_MAX = 6;
const RECEIPT_MIN_INTERVAL_MS = 1000; // receipts are rate limited (and dropped quietly) upstream
const REQUEST_ATTEMPTS = 4;

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const USER_ID = /^[A-Za-z0-9_-]{1,64}$/;

export function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

class Conversation {
  constructor(id) {
    this.id = id;
    this.participantIds = [];
    this.title = null;
    this.createdAt = 0;
    this.lastSeq = 0;
    this.readSeq = 0; // our own read marker
    this.receiptSentSeq = 0; // what the server knows of it
    this.receiptAt = 0;
    this.receiptTimer = null;
    this.othersRead = new Map(); // userId -> highest seq they read
    this.messages = new Map(); // id -> message
    this.seqs = new Map(); // seq -> id
    this.pending = new Map(); // clientMessageId -> outgoing message not yet acked
    this.floorSeq = null; // oldest seq loaded by history; null = not loaded yet
    this.hasMore = false;
    this.loading = false;
    this.typing = new Map(); // userId -> timer
    this.lastActivity = 0;
    this.known = false; // seen in a list or a conversation frame
  }

  get loaded() {
    return this.floorSeq !== null;
  }

  /** The last seq up to which we hold every message from floorSeq: where sync starts. */
  get syncSeq() {
    let seq = this.floorSeq - 1;
    while (this.seqs.has(seq + 1)) seq += 1;
    return seq;
  }

  get unread() {
    return Math.max(0, this.lastSeq - this.readSeq);
  }

  get othersReadSeq() {
    let max = 0;
    for (const seq of this.othersRead.values()) max = Math.max(max, seq);
    return max;
  }

  newest() {
    let best = null;
    for (const m of this.messages.values()) if (!best || m.seq > best.seq) best = m;
    return best;
  }

  /** Messages to show, ascending: everything from the loaded floor, then pending sends. */
  visibleMessages() {
    const floor = this.floorSeq ?? 0;
    const list = [...this.messages.values()].filter((m) => m.seq >= floor);
    list.sort((a, b) => a.seq - b.seq);
    const pending = [...this.pending.values()].sort((a, b) => a.createdAt - b.createdAt);
    return list.concat(pending);
  }
}

export class ChatClient extends EventTarget {
  constructor({ userId, wsUrl, getToken }) {
    super();
    this.me = userId;
    this.conversations = new Map();
    this.presence = new Map(); // userId -> {status, lastSeen}
    this.watching = new Set();
    this.openId = null;
    this.status = { state: "idle" };
    this.everConnected = false;
    this.syncing = new Set();
    this.listTimer = null;
    this.typingOut = null; // {conversationId, sentAt, idleTimer}
    this.epoch = 0; // bumped on every `connected`: work for an older socket stops
    this.sendGateUntil = 0; // after RATE_LIMITED, sends wait until then, in order
    this.sendGateTimer = null;
    this.connection = new Connection({
      url: wsUrl,
      getToken,
      onFrame: (frame, matched) => this._onFrame(frame, matched),
      onStatus: (status) => this._onStatus(status),
    });
    this._onVisibility = () => this._maybeSendReceipt(this.openId);
    document.addEventListener("visibilitychange", this._onVisibility);
  }

  start() {
    this.connection.start();
  }

  stop() {
    document.removeEventListener("visibilitychange", this._onVisibility);
    this.connection.stop();
    clearTimeout(this.listTimer);
    clearTimeout(this.sendGateTimer);
    if (this.typingOut) clearTimeout(this.typingOut.idleTimer);
    for (const conv of this.conversations.values()) {
      for (const timer of conv.typing.values()) clearTimeout(timer);
      for (const outgoing of conv.pending.values()) clearTimeout(outgoing.retryTimer);
      clearTimeout(conv.receiptTimer);
    }
  }

  // --- events to the UI -------------------------------------------------------------

  _emit(what, detail = {}) {
    this.dispatchEvent(new CustomEvent("change", { detail: { what, ...detail } }));
  }

  _toast(text, level = "error", key = undefined) {
    this.dispatchEvent(new CustomEvent("toast", { detail: { text, level, key } }));
  }

  // --- reading the state --------------------------------------------------------------

  conversation(id) {
    return this.conversations.get(id);
  }

  sortedConversations() {
    return [...this.conversations.values()]
      .filter((c) => c.known)
      .sort((a, b) => b.lastActivity - a.lastActivity || b.createdAt - a.createdAt);
  }

  others(conv) {
    return conv.participantIds.filter((id) => id !== this.me);
  }

  title(conv) {
    if (conv.title) return conv.title;
    const others = this.others(conv);
    return others.length ? others.join(", ") : conv.id;
  }

  typists(conv) {
    return [...conv.typing.keys()];
  }

  /** "sending" | "failed" | "sent" (acked, ✓) | "read" (another member read it, ✓✓) */
  deliveryState(conv, message) {
    if (message.pendingState) return message.pendingState;
    return conv.othersReadSeq >= message.seq ? "read" : "sent";
  }

  // --- actions -------------------------------------------------------------------------

  async openConversation(id) {
    if (this.openId && this.openId !== id) this.stopTyping();
    this.openId = id;
    this._emit("open", { conversationId: id });
    if (!id) return;
    const conv = this._conv(id);
    if (!conv.loaded) await this._loadLatest(conv);
    this._maybeSendReceipt(id);
  }

  async loadOlder(id) {
    const conv = this.conversations.get(id);
    if (!conv || !conv.loaded || !conv.hasMore || conv.loading || !this.connection.isOpen) return;
    conv.loading = true;
    this._emit("messages", { conversationId: id });
    try {
      const reply = await this._request(
        { type: "fetch_history", conversationId: id, beforeSeq: conv.floorSeq, limit: PAGE },
        { expect: "history" },
      );
      if (reply.messages.length) {
        conv.floorSeq = Math.min(conv.floorSeq, reply.messages[0].seq);
      }
      conv.hasMore = reply.hasMore && conv.floorSeq > 1;
    } catch (err) {
      this._requestFailed(err, "Could not load older messages");
    } finally {
      conv.loading = false;
      this._emit("messages", { conversationId: id, older: true });
    }
  }

  async createConversation(participantIds, title) {
    const frame = { type: "create_conversation", participantIds };
    if (title) frame.title = title;
    const reply = await this.connection.request(frame, { expect: "conversation" });
    return reply.conversation.id;
  }

  sendMessage(conversationId, content) {
    const conv = this._conv(conversationId);
    const outgoing = {
      id: null,
      clientMessageId: newId(),
      conversationId,
      senderId: this.me,
      content,
      contentType: "text",
      createdAt: Date.now(),
      sentAt: Date.now(),
      seq: Infinity,
      pendingState: "sending",
      attempts: 0,
      retryTimer: null,
    };
    conv.pending.set(outgoing.clientMessageId, outgoing);
    conv.lastActivity = Math.max(conv.lastActivity, outgoing.createdAt);
    this.stopTyping();
    this._emit("messages", { conversationId, sent: true });
    this._emit("conversations");
    this._transmit(outgoing);
  }

  retrySend(conversationId, clientMessageId) {
    const outgoing = this.conversations.get(conversationId)?.pending.get(clientMessageId);
    if (!outgoing) return;
    outgoing.pendingState = "sending";
    outgoing.attempts = 0;
    this._emit("messages", { conversationId });
    this._transmit(outgoing);
  }

  /** Call on every edit of the composer; refreshes before the server lapses it. */
  typed(conversationId) {
    const now = Date.now();
    const t = this.typingOut;
    if (t && t.conversationId !== conversationId) this.stopTyping();
    if (!this.typingOut || now - this.typingOut.sentAt > TYPING_REFRESH_MS) {
      if (this.connection.send({ type: "typing_indicator", conversationId, isTyping: true })) {
        this.typingOut = { conversationId, sentAt: now, idleTimer: null };
      }
    }
    if (this.typingOut) {
      clearTimeout(this.typingOut.idleTimer);
      this.typingOut.idleTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
    }
  }

  stopTyping() {
    const t = this.typingOut;
    if (!t) return;
    this.typingOut = null;
    clearTimeout(t.idleTimer);
    this.connection.send({
      type: "typing_indicator",
      conversationId: t.conversationId,
      isTyping: false,
    });
  }

  reconnectNow() {
    this.connection.reconnectNow();
  }

  // --- connection life -----------------------------------------------------------------

  _onStatus(status) {
    const previous = this.status.state;
    this.status = status;
    if (status.state === "waiting" && previous === "open") {
      this._toast("Disconnected — reconnecting…", "warning", "connection");
      this._clearAllTyping();
    }
    this._emit("status");
  }

  async _afterConnect(frame) {
    const first = !this.everConnected;
    this.everConnected = true;
    this.me = frame.userId;
    this.epoch += 1;
    this.watching.clear();
    this.syncing.clear();
    if (!first) this._toast("Reconnected", "info", "connection");
    this._emit("me");
    // 1. Sends that were never acked go again, with their clientMessageId.
    this._flushPending();
    try {
      // 2. The list: new conversations, lastSeq, unread counts, read markers.
      await this._list();
      // 3. Presence of everyone we share a conversation with.
      this._watchParticipants();
      // 4. Anything missed while away, for every conversation we hold messages of.
      await this._sync([...this.conversations.values()].filter((c) => c.loaded));
      // 5. The open conversation, if it was never loaded.
      const open = this.openId && this.conversations.get(this.openId);
      if (open && !open.loaded) await this._loadLatest(open);
      this._maybeSendReceipt(this.openId);
    } catch (err) {
      if (err.code !== "DISCONNECTED") this._requestFailed(err, "Could not catch up");
    }
  }

  /**
   * A request that is safe to repeat (list, history, sync, presence): retried
   * after RATE_LIMITED (when the server says) and after a store hiccup, as
   * long as the socket it was made on is still the current one.
   */
  async _request(frame, options) {
    const epoch = this.epoch;
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.connection.request(frame, options);
      } catch (err) {
        const retryable = ["RATE_LIMITED", "SERVICE_UNAVAILABLE", "TIMEOUT"].includes(err.code);
        if (!retryable || attempt >= REQUEST_ATTEMPTS) throw err;
        const ms =
          err.code === "RATE_LIMITED" ? (err.retryAfterMs ?? 1000) : 500 * 2 ** attempt;
        await sleep(ms + Math.random() * 250);
        if (epoch !== this.epoch || !this.connection.isOpen) {
          throw new RequestError({ code: "DISCONNECTED", message: "connection replaced" });
        }
      }
    }
  }

  async _list() {
    const reply = await this._request({ type: "list_conversations" }, { expect: "conversations" });
    for (const c of reply.conversations) {
      const conv = this._upsert(c);
      // The server's marker is authoritative for what it knows; ours may be ahead.
      const serverRead = c.lastSeq - (c.unreadCount ?? 0);
      conv.readSeq = Math.max(conv.readSeq, serverRead);
      conv.receiptSentSeq = serverRead;
    }
    this._emit("conversations");
  }

  _scheduleList() {
    if (this.listTimer) return;
    this.listTimer = setTimeout(async () => {
      this.listTimer = null;
      if (!this.connection.isOpen) return;
      try {
        await this._list();
        this._watchParticipants();
      } catch (err) {
        if (err.code !== "DISCONNECTED") this._requestFailed(err, "Could not load conversations");
      }
    }, 200);
  }

  async _sync(convs) {
    const wanted = convs.filter((c) => c.loaded && !this.syncing.has(c.id));
    if (!wanted.length || !this.connection.isOpen) return;
    const positions = {};
    for (const conv of wanted.slice(0, 500)) {
      positions[conv.id] = conv.syncSeq;
      this.syncing.add(conv.id);
    }
    try {
      const done = await this._request(
        { type: "sync", conversations: positions },
        {
          expect: "sync_complete",
          collectErrors: ["NOT_A_MEMBER", "CONVERSATION_NOT_FOUND"],
          timeoutMs: 30_000,
        },
      );
      for (const error of done.errors) this._serverError(error);
    } finally {
      for (const id of Object.keys(positions)) this.syncing.delete(id);
    }
  }

  _watchParticipants() {
    const ids = new Set();
    for (const conv of this.conversations.values()) {
      for (const id of conv.participantIds) if (id !== this.me) ids.add(id);
    }
    const fresh = [...ids].filter((id) => !this.watching.has(id)).slice(0, 200 - this.watching.size);
    if (!fresh.length || !this.connection.isOpen) return;
    for (const id of fresh) this.watching.add(id);
    this._request({ type: "subscribe_presence", userIds: fresh }, { expect: "presence_state" })
      .catch((err) => {
        for (const id of fresh) this.watching.delete(id);
        if (err.code !== "DISCONNECTED") this._requestFailed(err, "Could not watch presence");
      });
  }

  async _loadLatest(conv) {
    if (conv.loading || !this.connection.isOpen) return;
    conv.loading = true;
    this._emit("messages", { conversationId: conv.id });
    try {
      const reply = await this._request(
        { type: "fetch_history", conversationId: conv.id, limit: PAGE },
        { expect: "history" },
      );
      const first = reply.messages[0];
      conv.floorSeq = first ? first.seq : conv.lastSeq + 1;
      conv.hasMore = reply.hasMore && conv.floorSeq > 1;
      conv.known = true;
      // Anything that arrived live between the page and now is already held.
      if (conv.seqs.size && conv.syncSeq < conv.newest().seq) await this._sync([conv]);
    } catch (err) {
      if (err.code === "NOT_A_MEMBER" || err.code === "CONVERSATION_NOT_FOUND") {
        if (!conv.known) this.conversations.delete(conv.id);
        if (this.openId === conv.id) this.openConversation(null);
      }
      this._requestFailed(err, "Could not load messages");
    } finally {
      conv.loading = false;
      this._emit("messages", { conversationId: conv.id });
      this._emit("conversations");
    }
  }

  // --- sending -----------------------------------------------------------------------

  /** Every send still waiting, oldest first per conversation (after a reconnect or a limit). */
  _flushPending() {
    for (const conv of this.conversations.values()) {
      for (const outgoing of conv.pending.values()) {
        if (outgoing.pendingState === "sending") this._transmit(outgoing);
      }
    }
  }

  _gateSends(ms) {
    this.sendGateUntil = Math.max(this.sendGateUntil, Date.now() + ms);
    clearTimeout(this.sendGateTimer);
    this.sendGateTimer = setTimeout(
      () => {
        this.sendGateTimer = null;
        this._flushPending();
      },
      this.sendGateUntil - Date.now() + Math.random() * 200,
    );
  }

  async _transmit(outgoing) {
    if (outgoing.inFlight || !this.connection.isOpen) return; // re-sent on connect
    if (Date.now() < this.sendGateUntil) {
      this._gateSends(0); // goes out, in order, when the gate opens
      return;
    }
    clearTimeout(outgoing.retryTimer);
    outgoing.inFlight = true;
    outgoing.attempts += 1;
    try {
      const ack = await this.connection.request(
        {
          type: "send_message",
          conversationId: outgoing.conversationId,
          content: outgoing.content,
          clientMessageId: outgoing.clientMessageId,
        },
        { expect: "message_ack", timeoutMs: 10_000 },
      );
      outgoing.inFlight = false;
      this._addMessage(ack.message);
      this._maybeSendReceipt(this.openId);
    } catch (err) {
      outgoing.inFlight = false;
      this._sendFailed(outgoing, err);
    }
  }

  _sendFailed(outgoing, err) {
    const conv = this.conversations.get(outgoing.conversationId);
    if (!conv || !conv.pending.has(outgoing.clientMessageId)) return; // acked meanwhile
    const retry = (ms) => {
      clearTimeout(outgoing.retryTimer);
      outgoing.retryTimer = setTimeout(() => this._transmit(outgoing), ms);
    };
    switch (err.code) {
      case "DISCONNECTED":
        return; // stays "sending"; re-sent on reconnect
      case "RATE_LIMITED": {
        // Hold every send (this one and those behind it) until the server
        // allows more, then send them again in their original order.
        const ms = Math.max(err.retryAfterMs ?? 1000, 100);
        this._toast(
          `You are sending too fast. Retrying in ${Math.ceil(ms / 1000)} s.`,
          "warning",
          "rate-limited",
        );
        this._gateSends(ms);
        return;
      }
      case "TIMEOUT":
      case "SERVICE_UNAVAILABLE":
      case "INTERNAL_ERROR":
        if (outgoing.attempts < SEND_RETRY_MAX) {
          retry(Math.min(10_000, 500 * 2 ** outgoing.attempts) * (0.5 + Math.random() / 2));
          return;
        }
        break;
      default:
        break;
    }
    outgoing.pendingState = "failed";
    this._requestFailed(err, "Message not sent");
    this._emit("messages", { conversationId: outgoing.conversationId });
  }

  // --- frames from the server ----------------------------------------------------------

  _onFrame(frame, matched) {
    switch (frame.type) {
      case "connected":
        this._afterConnect(frame);
        break;
      case "message":
      case "message_ack":
        this._addMessage(frame.message);
        this._maybeSendReceipt(this.openId);
        break;
      case "history":
        for (const m of frame.messages) this._addMessage(m, { quiet: true });
        this._emit("messages", { conversationId: frame.conversationId });
        this._emit("conversations");
        this._maybeSendReceipt(this.openId);
        break;
      case "queued_messages":
        for (const m of frame.messages) this._addMessage(m, { quiet: true });
        // Acknowledge so the queue is trimmed and the next batch comes.
        this.connection.send({ type: "ack_queued", upTo: frame.cursor });
        this._emit("messages", {});
        this._emit("conversations");
        this._maybeSendReceipt(this.openId);
        break;
      case "sync_required": {
        const ids = frame.conversationIds || [];
        const convs = ids.length
          ? ids.map((id) => this._conv(id))
          : [...this.conversations.values()];
        this._sync(convs).catch(() => {});
        this._scheduleList();
        break;
      }
      case "conversation": {
        const conv = this._upsert(frame.conversation);
        if (!matched) conv.lastActivity = Math.max(conv.lastActivity, Date.now());
        this._emit("conversations");
        this._watchParticipants();
        break;
      }
      case "conversations":
        break; // handled by _list
      case "typing_indicator":
        this._typing(frame);
        break;
      case "read_receipt":
        this._receipt(frame);
        break;
      case "presence_state":
        for (const [id, state] of Object.entries(frame.users)) this.presence.set(id, state);
        this._emit("presence");
        break;
      case "presence_update":
        this.presence.set(frame.userId, { status: frame.status, lastSeen: frame.lastSeen });
        this._emit("presence");
        break;
      case "system_notification":
        this._toast(frame.message, frame.level === "info" ? "info" : frame.level);
        break;
      case "error":
        if (!matched) this._serverError(frame);
        break;
      default:
        break; // pong, sync_complete, and anything newer than this client
    }
  }

  _conv(id) {
    let conv = this.conversations.get(id);
    if (!conv) {
      conv = new Conversation(id);
      this.conversations.set(id, conv);
    }
    return conv;
  }

  _upsert(c) {
    const conv = this._conv(c.id);
    conv.known = true;
    conv.participantIds = c.participantIds;
    conv.title = c.title ?? null;
    conv.createdAt = c.createdAt;
    conv.lastSeq = Math.max(conv.lastSeq, c.lastSeq ?? 0);
    conv.lastActivity = Math.max(conv.lastActivity, c.createdAt);
    return conv;
  }

  _addMessage(m, { quiet = false } = {}) {
    const conv = this._conv(m.conversationId);
    if (!conv.known) this._scheduleList(); // a conversation we have not heard of yet
    if (m.clientMessageId && m.senderId === this.me) {
      const outgoing = conv.pending.get(m.clientMessageId);
      if (outgoing) {
        clearTimeout(outgoing.retryTimer);
        conv.pending.delete(m.clientMessageId);
      }
    }
    if (conv.messages.has(m.id) || conv.seqs.has(m.seq)) {
      if (!quiet) this._emit("messages", { conversationId: conv.id });
      return false; // a duplicate (push + queue + sync, or a retried send)
    }
    const gapBefore = conv.loaded && m.seq > conv.syncSeq + 1;
    conv.messages.set(m.id, m);
    conv.seqs.set(m.seq, m.id);
    conv.lastSeq = Math.max(conv.lastSeq, m.seq);
    conv.lastActivity = Math.max(conv.lastActivity, m.sentAt);
    if (m.senderId === this.me) conv.readSeq = Math.max(conv.readSeq, m.seq);
    this._stopShowingTypist(conv, m.senderId);
    if (gapBefore && !this.syncing.has(conv.id)) {
      // A push skipped ahead: something was dropped on the way. Give pushes
      // already in flight a moment, then fill the gap from the store.
      setTimeout(() => {
        if (conv.loaded && conv.syncSeq < conv.lastSeq) this._sync([conv]).catch(() => {});
      }, 300);
    }
    if (!quiet) {
      this._emit("messages", { conversationId: conv.id, added: m });
      this._emit("conversations");
    }
    return true;
  }

  /** Tell the server (and so the other members) we read up to the newest message. */
  _maybeSendReceipt(id) {
    if (!id || document.visibilityState !== "visible" || !this.connection.isOpen) return;
    const conv = this.conversations.get(id);
    if (!conv || !conv.loaded) return;
    const newest = conv.newest();
    if (!newest) return;
    if (newest.seq > conv.readSeq) {
      conv.readSeq = newest.seq;
      this._emit("conversations");
    }
    if (newest.seq <= conv.receiptSentSeq || conv.receiptTimer) return;
    // At most one receipt a second per conversation; the last one always goes.
    const wait = conv.receiptAt + RECEIPT_MIN_INTERVAL_MS - Date.now();
    if (wait > 0) {
      conv.receiptTimer = setTimeout(() => {
        conv.receiptTimer = null;
        this._maybeSendReceipt(conv.id === this.openId ? conv.id : null);
      }, wait);
      return;
    }
    if (this.connection.send({ type: "read_receipt", messageId: newest.id })) {
      conv.receiptSentSeq = newest.seq;
      conv.receiptAt = Date.now();
    }
  }

  _receipt(frame) {
    const conv = this._conv(frame.conversationId);
    conv.lastSeq = Math.max(conv.lastSeq, frame.seq);
    if (frame.userId === this.me) {
      // Read on another device of ours.
      conv.readSeq = Math.max(conv.readSeq, frame.seq);
      conv.receiptSentSeq = Math.max(conv.receiptSentSeq, frame.seq);
      this._emit("conversations");
    } else {
      const before = conv.othersRead.get(frame.userId) ?? 0;
      conv.othersRead.set(frame.userId, Math.max(before, frame.seq));
    }
    this._emit("messages", { conversationId: conv.id, receipts: true });
  }

  _typing(frame) {
    if (frame.userId === this.me) return;
    const conv = this._conv(frame.conversationId);
    clearTimeout(conv.typing.get(frame.userId));
    if (frame.isTyping) {
      conv.typing.set(
        frame.userId,
        setTimeout(() => this._stopShowingTypist(conv, frame.userId), TYPING_SHOW_MAX_MS),
      );
    } else {
      conv.typing.delete(frame.userId);
    }
    this._emit("typing", { conversationId: conv.id });
  }

  _stopShowingTypist(conv, userId) {
    if (!conv.typing.has(userId)) return;
    clearTimeout(conv.typing.get(userId));
    conv.typing.delete(userId);
    this._emit("typing", { conversationId: conv.id });
  }

  _clearAllTyping() {
    for (const conv of this.conversations.values()) {
      for (const userId of [...conv.typing.keys()]) this._stopShowingTypist(conv, userId);
    }
  }

  // --- errors -------------------------------------------------------------------------

  _serverError(frame) {
    this._toast(describeError(frame), frame.code === "SERVICE_UNAVAILABLE" ? "warning" : "error");
  }

  _requestFailed(err, what) {
    if (err instanceof RequestError) {
      if (err.code === "DISCONNECTED") return; // the connection banner says it
      this._toast(`${what}: ${describeError(err)}`, "error");
    } else {
      console.error(err);
      this._toast(`${what}.`, "error");
    }
  }
}

export function describeError(e) {
  switch (e.code) {
    case "RATE_LIMITED":
      return `You are going too fast; try again in ${Math.ceil((e.retryAfterMs ?? 1000) / 1000)} s.`;
    case "NOT_A_MEMBER":
      return "You are not a member of this conversation.";
    case "CONVERSATION_NOT_FOUND":
      return "This conversation does not exist.";
    case "MESSAGE_NOT_FOUND":
      return "That message does not exist.";
    case "SERVICE_UNAVAILABLE":
      return "The server is having trouble right now; please retry.";
    case "TIMEOUT":
      return "The server did not answer in time.";
    case "DISCONNECTED":
      return "Not connected.";
    default:
      return e.message || e.code || "Something went wrong.";
  }
}
