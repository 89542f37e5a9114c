// Small DOM helpers. Text always goes in as text nodes, never as HTML.

/**
 * h("div", {class: "x", dataset: {testid: "y"}, onclick: fn}, child, "text", ...)
 * Attributes named on* become listeners; `dataset` fills data-* attributes;
 * null/undefined/false attributes and children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "dataset") {
      for (const [k, v] of Object.entries(value)) if (v !== undefined) el.dataset[k] = v;
    } else if (key.startsWith("on")) {
      el.addEventListener(key.slice(2), value);
    } else if (key === "class") {
      el.className = value;
    } else {
      el.setAttribute(key, value === true ? "" : value);
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function byTestId(id, root = document) {
  return root.querySelector(`[data-testid="${id}"]`);
}

/** A stable hue per user id, for avatars. */
export function hue(text) {
  let hash = 0;
  for (const ch of text) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  return hash % 360;
}

export function avatar(name, extraClass = "") {
  const words = name.split(/[\s_-]+/).filter(Boolean);
  const initials =
    (words.length > 1 ? words[0][0] + words[1][0] : (words[0] || "?")[0]).toUpperCase();
  const el = h("span", { class: `avatar ${extraClass}`.trim(), "aria-hidden": "true" }, initials);
  el.style.setProperty("--hue", hue(name));
  return el;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  day: "numeric",
  month: "long",
});
const shortDayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

export function clock(ms) {
  return timeFormat.format(new Date(ms));
}

function startOfDay(ms) {
  const d = new Date(ms);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

export function dayLabel(ms) {
  const today = startOfDay(Date.now());
  const day = startOfDay(ms);
  if (day === today) return "Today";
  if (day === today - 86_400_000) return "Yesterday";
  return dayFormat.format(new Date(ms));
}

export function dayKey(ms) {
  return String(startOfDay(ms));
}

/** For the conversation list: a clock time today, otherwise a short date. */
export function listTime(ms) {
  if (!ms) return "";
  return startOfDay(ms) === startOfDay(Date.now()) ? clock(ms) : shortDayFormat.format(new Date(ms));
}

export function ago(ms) {
  if (!ms) return "offline";
  const seconds = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (seconds < 60) return "last seen just now";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `last seen ${minutes} min ago`;
  const hours = Math.round(minutes / 60);
  if (hours < 24) return `last seen ${hours} h ago`;
  return `last seen ${shortDayFormat.format(new Date(ms))}`;
}
