// The page: sign-in, conversation list, message pane, toasts.
// State and protocol live in client.js; this file only renders and wires events.

import { ChatClient, USER_ID } from "./client.js";
import { ago, avatar, byTestId, clock, dayKey, dayLabel, h, listTime } from "./dom.js";

const SESSION_KEY = "chat.session";
const TOKEN_MARGIN_MS = 60_000;
const NEAR_BOTTOM_PX = 80;
const NEAR_TOP_PX = 120;

const ui = {
  signin: byTestId("signin-view"),
  signinForm: byTestId("signin-form"),
  signinUser: byTestId("signin-user"),
  signinSubmit: byTestId("signin-submit"),
  signinError: byTestId("signin-error"),
  shell: byTestId("app-view"),
  meAvatar: byTestId("me-avatar"),
  meName: byTestId("me-name"),
  connLabel: byTestId("connection-label"),
  banner: byTestId("connection-status"),
  bannerText: byTestId("connection-text"),
  reconnect: byTestId("reconnect-now"),
  signout: byTestId("signout"),
  newButton: byTestId("new-conversation-button"),
  newForm: byTestId("new-conversation-form"),
  newParticipants: byTestId("new-conversation-participants"),
  newTitle: byTestId("new-conversation-title"),
  newError: byTestId("new-conversation-error"),
  newCancel: byTestId("new-conversation-cancel"),
  list: byTestId("conversation-list"),
  listEmpty: byTestId("conversation-list-empty"),
  placeholder: byTestId("no-conversation"),
  conversation: byTestId("conversation"),
  back: byTestId("back-button"),
  paneAvatar: byTestId("conversation-avatar"),
  title: byTestId("conversation-title"),
  members: byTestId("conversation-members"),
  scroller: byTestId("message-scroller"),
  loadOlder: byTestId("load-older"),
  historyLoading: byTestId("history-loading"),
  historyStart: byTestId("history-start"),
  messages: byTestId("message-list"),
  typing: byTestId("typing-indicator"),
  composer: byTestId("composer"),
  input: byTestId("composer-input"),
  toasts: byTestId("toasts"),
};

let session = null; // {userId, token, expiresAt}
let client = null;

// --- session and tokens -------------------------------------------------------------

class SignInError extends Error {
  constructor(message, fatal) {
    super(message);
    this.fatal = fatal;
  }
}

async function fetchToken(userId) {
  let response;
  try {
    response = await fetch(`/dev/token?user=${encodeURIComponent(userId)}`, { cache: "no-store" });
  } catch {
    throw new SignInError("Cannot reach the server.", false);
  }
  if (response.status === 404) {
    throw new SignInError(
      "This server does not offer development sign-in (start it with CHAT_DEV_MODE=1).",
      true,
    );
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new SignInError(
      body.message || `Sign-in failed (HTTP ${response.status}).`,
      response.status < 500,
    );
  }
  return { userId: body.userId, token: body.token, expiresAt: Date.now() + body.expiresIn * 1000 };
}

function saveSession() {
  try {
    if (session) localStorage.setItem(SESSION_KEY, JSON.stringify(session));
    else localStorage.removeItem(SESSION_KEY);
  } catch {
    /* private mode: stay signed in for this page only */
  }
}

function loadSession() {
  try {
    const stored = JSON.parse(localStorage.getItem(SESSION_KEY) || "null");
    return stored && USER_ID.test(stored.userId) ? stored : null;
  } catch {
    return null;
  }
}

async function getToken(refresh) {
  if (refresh || !session.token || session.expiresAt - Date.now() < TOKEN_MARGIN_MS) {
    session = await fetchToken(session.userId);
    saveSession();
  }
  return session.token;
}

// --- sign in / out ------------------------------------------------------------------

function showSignIn(message) {
  ui.shell.hidden = true;
  ui.signin.hidden = false;
  ui.signinError.hidden = !message;
  ui.signinError.textContent = message || "";
  ui.signinSubmit.disabled = false;
  ui.signinUser.focus();
}

ui.signinForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const userId = ui.signinUser.value.trim();
  if (!USER_ID.test(userId)) {
    showSignIn("Use 1–64 letters, digits, - or _.");
    return;
  }
  ui.signinSubmit.disabled = true;
  try {
    session = await fetchToken(userId);
  } catch (err) {
    showSignIn(err.message);
    return;
  }
  saveSession();
  startChat();
});

ui.signout.addEventListener("click", () => {
  stopChat();
  session = null;
  saveSession();
  history.replaceState(null, "", location.pathname);
  showSignIn();
});

function startChat() {
  ui.signin.hidden = true;
  ui.shell.hidden = false;
  ui.meName.textContent = session.userId;
  ui.meAvatar.replaceChildren(avatar(session.userId));
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  client = new ChatClient({
    userId: session.userId,
    wsUrl: `${scheme}://${location.host}/ws`,
    getToken,
  });
  client.addEventListener("change", (event) => invalidate(event.detail));
  client.addEventListener("toast", ({ detail }) => toast(detail.text, detail.level, detail.key));
  client.start();
  window.chatDebug = { client, dropConnection: () => client.connection.drop() };
  routeFromHash();
  invalidate({ what: "all" });
}

function stopChat() {
  if (client) client.stop();
  client = null;
  window.chatDebug = undefined;
  ui.list.replaceChildren();
  listEls.clear();
  ui.messages.replaceChildren();
  messageEls.clear();
  dayEls.clear();
  renderedConversation = null;
  closeNewForm();
}

// --- routing: #/c/<conversationId> ------------------------------------------------------

const wide = window.matchMedia("(min-width: 721px)");

function routeFromHash() {
  if (!client) return;
  const match = /^#\/c\/([^/]+)$/.exec(location.hash);
  const id = match ? decodeURIComponent(match[1]) : null;
  if (id !== client.openId) {
    stick = true;
    client.openConversation(id);
    // On a phone the keyboard would cover the conversation just opened.
    if (id && wide.matches) ui.input.focus({ preventScroll: true });
  }
}

/** Open from the list: a history entry of its own, so Back returns to the list. */
function openConversation(id) {
  const hash = `#/c/${encodeURIComponent(id)}`;
  if (location.hash !== hash) history.pushState({ chat: true }, "", hash);
  routeFromHash();
}

function backToList() {
  if (history.state?.chat) {
    history.back(); // popstate routes
  } else {
    history.replaceState(null, "", location.pathname); // arrived by a link
    routeFromHash();
  }
}

window.addEventListener("hashchange", routeFromHash);
window.addEventListener("popstate", routeFromHash);
ui.back.addEventListener("click", backToList);

// --- render scheduling: coalesce every change of one task into one render -----------------

const dirty = new Set();
let flags = { older: false, stickNow: false };
let scheduled = false;

function invalidate(detail) {
  const what = detail.what;
  if (what === "all" || what === "me" || what === "status") dirty.add("status");
  if (what === "all" || what === "conversations" || what === "open" || what === "typing") {
    dirty.add("list");
  }
  if (what === "all" || what === "presence") {
    dirty.add("list");
    dirty.add("header");
  }
  if (what === "all" || what === "open" || what === "conversations") dirty.add("header");
  if (what === "all" || what === "open" || what === "messages") dirty.add("messages");
  if (what === "typing" || what === "open" || what === "all") dirty.add("typing");
  if (what === "open") {
    dirty.add("messages");
    stick = true;
    // Closed by the client (e.g. not a member): drop the link from the address bar.
    if (!detail.conversationId && location.hash) history.replaceState(null, "", location.pathname);
  }
  if (detail.older) flags.older = true;
  if (detail.sent || (detail.added && client && detail.added.senderId === client.me)) {
    flags.stickNow = true;
  }
  if (!scheduled) {
    scheduled = true;
    queueMicrotask(flush);
  }
}

function flush() {
  scheduled = false;
  if (!client) return;
  const parts = new Set(dirty);
  const f = flags;
  dirty.clear();
  flags = { older: false, stickNow: false };
  if (parts.has("status")) renderStatus();
  if (parts.has("list")) renderList();
  if (parts.has("header")) renderHeader();
  renderLayout(); // before the messages: a hidden pane cannot be scrolled
  if (parts.has("messages")) renderMessages(f);
  if (parts.has("typing")) renderTyping();
}

// --- connection status --------------------------------------------------------------------

let countdown = null;

function renderStatus() {
  const { state, retryAt, lastClose } = client.status;
  if (state === "stopped" && lastClose?.reason) {
    // The sign-in itself no longer works (e.g. development sign-in was turned off).
    stopChat();
    session = null;
    saveSession();
    showSignIn(lastClose.reason);
    return;
  }
  ui.shell.dataset.connection = state;
  clearInterval(countdown);
  const labels = {
    idle: "Connecting…",
    connecting: client.everConnected ? "Reconnecting…" : "Connecting…",
    open: "Online",
    waiting: "Offline",
    stopped: "Disconnected",
  };
  ui.connLabel.textContent = labels[state] || state;
  ui.connLabel.dataset.state = state;
  ui.banner.dataset.state = state;
  ui.banner.hidden = state === "open";
  ui.reconnect.hidden = state !== "waiting";
  if (state === "waiting") {
    const tick = () => {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      ui.bannerText.textContent = `Disconnected. Reconnecting in ${seconds} s…`;
    };
    tick();
    countdown = setInterval(tick, 1000);
  } else if (state === "stopped") {
    ui.bannerText.textContent = "Disconnected. Sign out and in again.";
  } else {
    ui.bannerText.textContent = labels[state];
  }
}

ui.reconnect.addEventListener("click", () => client?.reconnectNow());

// --- conversation list ------------------------------------------------------------------------

function presenceDot(userId) {
  const state = client.presence.get(userId);
  const status = state?.status === "online" ? "online" : "offline";
  const title = status === "online" ? `${userId} is online` : `${userId}: ${ago(state?.lastSeen)}`;
  return h("span", {
    class: `dot ${status}`,
    title,
    "aria-label": title,
    dataset: { testid: "presence-dot", user: userId, status },
  });
}

function typingText(conv) {
  const who = client.typists(conv);
  if (!who.length) return "";
  if (who.length === 1) return `${who[0]} is typing…`;
  if (who.length === 2) return `${who[0]} and ${who[1]} are typing…`;
  return `${who.length} people are typing…`;
}

function preview(conv) {
  const typing = typingText(conv);
  if (typing) return h("span", { class: "typing-preview" }, typing);
  const last = conv.visibleMessages().at(-1) || conv.newest();
  if (!last) return h("span", { class: "muted" }, conv.lastSeq ? "" : "No messages yet");
  const who = last.senderId === client.me ? "You: " : conv.participantIds.length > 2 ? `${last.senderId}: ` : "";
  return `${who}${last.content}`;
}

const listEls = new Map(); // conversationId -> <li>, kept so a click never lands on a replaced node

function conversationItem(conv) {
  let li = listEls.get(conv.id);
  if (!li) {
    const button = h("button", {
      type: "button",
      class: "conv",
      dataset: { testid: "conversation-item", conversationId: conv.id },
      onclick: () => openConversation(conv.id),
    });
    li = h("li", {}, button);
    listEls.set(conv.id, li);
  }
  const button = li.firstChild;
  const others = client.others(conv);
  const title = client.title(conv);
  const unread = conv.id === client.openId ? 0 : conv.unread;
  button.classList.toggle("active", conv.id === client.openId);
  button.classList.toggle("unread", unread > 0);
  button.setAttribute("aria-current", conv.id === client.openId ? "true" : "false");
  const pic = h("span", { class: "avatar-wrap" }, avatar(others.length === 1 ? others[0] : title));
  if (others.length === 1) pic.append(presenceDot(others[0]));
  else if (others.some((id) => client.presence.get(id)?.status === "online")) {
    pic.append(h("span", { class: "dot online", title: "someone is online" }));
  }
  const last = conv.newest();
  button.replaceChildren(
    pic,
    h(
      "span",
      { class: "conv-body" },
      h(
        "span",
        { class: "conv-top" },
        h("span", { class: "conv-title", dataset: { testid: "conversation-item-title" } }, title),
        h("span", { class: "conv-time" }, listTime(last ? last.sentAt : conv.createdAt)),
      ),
      h(
        "span",
        { class: "conv-bottom" },
        h("span", { class: "conv-preview" }, preview(conv)),
        unread
          ? h(
              "span",
              { class: "badge", dataset: { testid: "unread-badge" }, "aria-label": `${unread} unread` },
              unread > 99 ? "99+" : String(unread),
            )
          : null,
      ),
    ),
  );
  return li;
}

function renderList() {
  const convs = client.sortedConversations();
  ui.listEmpty.hidden = convs.length > 0 || client.status.state !== "open";
  const items = convs.map(conversationItem);
  const wanted = new Set(items);
  for (const [id, li] of listEls) if (!wanted.has(li)) listEls.delete(id);
  reorder(ui.list, items);
  const total = convs.reduce((n, c) => n + (c.id === client.openId ? 0 : c.unread), 0);
  document.title = total ? `(${total}) Chat` : "Chat";
}

/** Make `parent`'s children exactly `nodes`, in order, moving rather than recreating. */
function reorder(parent, nodes) {
  let cursor = parent.firstChild;
  for (const node of nodes) {
    if (node === cursor) cursor = cursor.nextSibling;
    else parent.insertBefore(node, cursor);
  }
  while (cursor) {
    const next = cursor.nextSibling;
    cursor.remove();
    cursor = next;
  }
}

// --- conversation header ------------------------------------------------------------------

function renderHeader() {
  const conv = client.openId && client.conversation(client.openId);
  if (!conv) return;
  const others = client.others(conv);
  const title = client.title(conv);
  ui.title.textContent = title;
  ui.paneAvatar.replaceChildren(avatar(others.length === 1 ? others[0] : title));
  if (others.length === 1) {
    const state = client.presence.get(others[0]);
    const online = state?.status === "online";
    ui.members.replaceChildren(
      h(
        "span",
        { class: "member", dataset: { testid: "member", user: others[0] } },
        presenceDot(others[0]),
        h("span", { class: "muted", dataset: { testid: "member-status" } }, online ? "online" : ago(state?.lastSeen)),
      ),
    );
  } else {
    ui.members.replaceChildren(
      ...others.map((id) =>
        h("span", { class: "member", dataset: { testid: "member", user: id } }, presenceDot(id), id),
      ),
    );
  }
}

// "last seen 3 min ago" ages by itself.
setInterval(() => client && invalidate({ what: "presence" }), 30_000);

// --- messages ---------------------------------------------------------------------------------

const messageEls = new Map(); // key -> <li>
const dayEls = new Map(); // day -> <li>
let renderedConversation = null;
let stick = true; // keep the view at the newest message

const STATUS = {
  sending: ["◷", "Sending…"],
  failed: ["!", "Not sent"],
  sent: ["✓", "Sent"],
  read: ["✓✓", "Read"],
};

function messageKey(m) {
  return m.senderId === client.me && m.clientMessageId ? `c:${m.clientMessageId}` : `m:${m.id}`;
}

function messageEl(conv, m) {
  const mine = m.senderId === client.me;
  const el = h(
    "li",
    { class: `msg ${mine ? "mine" : "theirs"}`, dataset: { testid: "message", sender: m.senderId } },
    h("div", { class: "sender", dataset: { testid: "message-sender" } }, m.senderId),
    h(
      "div",
      { class: "bubble" },
      h("span", { class: "text", dataset: { testid: "message-text" } }, m.content),
      h(
        "span",
        { class: "meta" },
        h("time", { datetime: new Date(m.sentAt).toISOString() }, clock(m.sentAt)),
        mine ? h("span", { class: "status", dataset: { testid: "message-status" } }) : null,
      ),
    ),
  );
  if (mine) {
    el.append(
      h(
        "button",
        {
          type: "button",
          class: "link retry",
          dataset: { testid: "message-retry" },
          hidden: true,
          onclick: () => client.retrySend(conv.id, m.clientMessageId),
        },
        "Not sent — retry",
      ),
    );
  }
  return el;
}

function updateMessageEl(el, conv, m, first) {
  if (m.id) {
    el.dataset.messageId = m.id;
    el.dataset.seq = String(m.seq);
  }
  el.classList.toggle("first", first);
  el.querySelector(".sender").hidden = !first || m.senderId === client.me || conv.participantIds.length <= 2;
  if (m.senderId !== client.me) return;
  const state = client.deliveryState(conv, m);
  if (el.dataset.state === state) return;
  el.dataset.state = state;
  const [mark, label] = STATUS[state];
  const status = el.querySelector(".status");
  status.textContent = mark;
  status.title = label;
  status.setAttribute("aria-label", label);
  status.className = `status ${state}`;
  el.querySelector(".retry").hidden = state !== "failed";
}

function dayEl(day, sentAt) {
  let el = dayEls.get(day);
  if (!el) {
    el = h("li", { class: "day", dataset: { testid: "day-separator" } }, h("span", {}, dayLabel(sentAt)));
    dayEls.set(day, el);
  }
  return el;
}

function renderMessages({ older, stickNow }) {
  const conv = client.openId && client.conversation(client.openId);
  if (!conv) return;
  if (renderedConversation !== conv.id) {
    ui.messages.replaceChildren();
    messageEls.clear();
    dayEls.clear();
    renderedConversation = conv.id;
    stick = true;
  }
  const scroller = ui.scroller;
  const previousHeight = scroller.scrollHeight;
  const previousTop = scroller.scrollTop;

  const nodes = [];
  let lastDay = null;
  let lastSender = null;
  for (const m of conv.visibleMessages()) {
    const day = dayKey(m.sentAt);
    if (day !== lastDay) {
      nodes.push(dayEl(day, m.sentAt));
      lastDay = day;
      lastSender = null;
    }
    const key = messageKey(m);
    let el = messageEls.get(key);
    if (!el) {
      el = messageEl(conv, m);
      messageEls.set(key, el);
    }
    updateMessageEl(el, conv, m, lastSender !== m.senderId);
    lastSender = m.senderId;
    nodes.push(el);
  }
  // Put the nodes in order, reusing the elements already there.
  const wanted = new Set(nodes);
  for (const [key, el] of messageEls) if (!wanted.has(el)) messageEls.delete(key);
  for (const [key, el] of dayEls) if (!wanted.has(el)) dayEls.delete(key);
  reorder(ui.messages, nodes);

  ui.loadOlder.hidden = !conv.loaded || !conv.hasMore || conv.loading;
  ui.historyLoading.hidden = !conv.loading;
  ui.historyStart.hidden = !conv.loaded || conv.hasMore || conv.loading || nodes.length === 0;

  if (older) {
    scroller.scrollTop = previousTop + (scroller.scrollHeight - previousHeight);
  } else if (stick || stickNow) {
    scroller.scrollTop = scroller.scrollHeight;
    stick = true;
  }
}

ui.scroller.addEventListener("scroll", () => {
  const s = ui.scroller;
  stick = s.scrollHeight - s.scrollTop - s.clientHeight < NEAR_BOTTOM_PX;
  const conv = client?.openId && client.conversation(client.openId);
  if (conv && s.scrollTop < NEAR_TOP_PX && conv.hasMore && !conv.loading) {
    client.loadOlder(conv.id);
  }
});

ui.loadOlder.addEventListener("click", () => client?.openId && client.loadOlder(client.openId));

// --- typing ---------------------------------------------------------------------------------

function renderTyping() {
  const conv = client.openId && client.conversation(client.openId);
  const text = conv ? typingText(conv) : "";
  ui.typing.textContent = text;
  ui.typing.hidden = !text;
  // The line takes room from the messages: keep the newest one in view.
  if (stick) ui.scroller.scrollTop = ui.scroller.scrollHeight;
}

// --- layout (narrow screens show the list or the conversation) ---------------------------------

function renderLayout() {
  const open = Boolean(client.openId && client.conversation(client.openId));
  ui.shell.classList.toggle("has-open", open);
  ui.placeholder.hidden = open;
  ui.conversation.hidden = !open;
}

// --- composer ---------------------------------------------------------------------------------

function autosize() {
  ui.input.style.height = "auto";
  ui.input.style.height = `${Math.min(ui.input.scrollHeight, 160)}px`;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const content = ui.input.value.trim();
  if (!content || !client?.openId) return;
  client.sendMessage(client.openId, content);
  ui.input.value = "";
  autosize();
  ui.input.focus();
});

ui.input.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    ui.composer.requestSubmit();
  }
});

ui.input.addEventListener("input", () => {
  autosize();
  if (!client?.openId) return;
  if (ui.input.value.trim()) client.typed(client.openId);
  else client.stopTyping();
});

// --- new conversation -------------------------------------------------------------------------

function closeNewForm() {
  ui.newForm.hidden = true;
  ui.newButton.hidden = false;
  ui.newError.hidden = true;
  ui.newParticipants.value = "";
  ui.newTitle.value = "";
}

ui.newButton.addEventListener("click", () => {
  ui.newForm.hidden = false;
  ui.newButton.hidden = true;
  ui.newParticipants.focus();
});

ui.newCancel.addEventListener("click", closeNewForm);

ui.newForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const showError = (text) => {
    ui.newError.textContent = text;
    ui.newError.hidden = false;
  };
  const ids = [
    ...new Set(
      ui.newParticipants.value
        .split(/[\s,]+/)
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  ].filter((id) => id !== client.me);
  const bad = ids.find((id) => !USER_ID.test(id));
  if (bad) return showError(`“${bad}” is not a valid user name.`);
  if (!ids.length) return showError("Name at least one other user.");
  const submit = ui.newForm.querySelector("[type=submit]");
  submit.disabled = true;
  try {
    const id = await client.createConversation(ids, ui.newTitle.value.trim() || undefined);
    closeNewForm();
    openConversation(id);
  } catch (err) {
    showError(err.code === "DISCONNECTED" ? "Not connected; try again in a moment." : err.message);
  } finally {
    submit.disabled = false;
  }
});

// --- toasts ----------------------------------------------------------------------------------

/** A toast replaces any shown with the same text or the same key. */
function toast(text, level = "info", key = text) {
  for (const existing of [...ui.toasts.children]) {
    if (existing.dataset.key === key || existing.dataset.text === text) existing.remove();
  }
  const el = h(
    "div",
    {
      class: `toast ${level}`,
      role: level === "error" ? "alert" : "status",
      dataset: { testid: "toast", level, text, key },
    },
    h("span", {}, text),
    h("button", { type: "button", class: "close", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"),
  );
  ui.toasts.append(el);
  while (ui.toasts.children.length > 4) ui.toasts.firstChild.remove();
  setTimeout(() => el.remove(), level === "error" ? 8000 : 5000);
}

// --- start ----------------------------------------------------------------------------------

session = loadSession();
if (session) startChat();
else showSignIn();
