// The apns-sim dashboard: plain modern JavaScript, no framework, no build step.
//
// Everything shown comes from the control API: a snapshot (API.devices, API.faults,
// API.feedback, the inboxes) and then the event stream (API.events), which replays the
// delivery log from its start and then goes on live; the browser's EventSource resumes after
// the last event id on its own when the connection drops. Each event carries its sequence
// number `seq`, and an event at or below the last one seen is ignored, so a replay is harmless.
//
// Every API path the page uses is in API below, and only there (tests/it/dashboard.rs checks
// that each is a route of the router, so the page cannot call a route that does not exist).
// The DOM is built with createElement and textContent only: nothing from the simulator is ever
// parsed as HTML.
'use strict';

const API = Object.freeze({
  devices: '/v1/devices',
  device: '/v1/devices/{serial}',
  apps: '/v1/devices/{serial}/apps',
  app: '/v1/devices/{serial}/apps/{app}',
  offline: '/v1/devices/{serial}/offline',
  online: '/v1/devices/{serial}/online',
  inbox: '/v1/devices/{serial}/inbox',
  inboxApns: '/v1/devices/{serial}/inbox/{index}/apns',
  push: '/v1/push',
  notifications: '/v1/notifications',
  feedback: '/v1/feedback',
  faults: '/v1/faults',
  fault: '/v1/faults/{id}',
  reset: '/v1/reset',
  events: '/v1/events',
});

// The event tags of API.events the page listens for (EventSource delivers a named event
// only to a listener of that name).
const EVENT_TAGS = [
  'device_online', 'device_offline', 'registered', 'notification',
  'provider_connected', 'provider_disconnected', 'fault_added', 'fault_removed',
  'reset', 'truncated',
];

// How many notifications the page keeps (newest first); older ones drop off the page, the
// delivery log still has them. Bounds the page's memory and redraw time.
const MAX_NOTIFICATIONS = 300;
// How many log records after a notification's first event the page reads to find that
// notification's own record (its labelled bytes): its first few events are among them.
const LOG_LOOKAHEAD = 50;
// How many closed provider connections stay listed (greyed) after they end.
const MAX_CLOSED_PROVIDERS = 8;
// How many error messages stay on screen at once (the oldest goes first).
const MAX_ERRORS = 5;
// Wait this long after an event before re-reading a list from the API, so a burst of events
// (a replay, a fleet coming online) costs one request instead of hundreds.
const REFRESH_DELAY_MS = 150;
// After the stream fails for good (the server answered something other than an event
// stream), try again this much later.
const STREAM_RETRY_MS = 3000;
// The fault example the form starts with: the issue's own, verbatim but for the token.
const FAULT_EXAMPLE = {
  on: 'http2',
  match: { token: '…' },
  respond: { status: 500, reason: 'InternalServerError' },
  count: 2,
};

// With `--control-token`, the page is opened as /?access_token=T.
const ACCESS_TOKEN = new URLSearchParams(location.search).get('access_token') || '';

const state = {
  lastSeq: 0,
  providers: new Map(), // connection id -> provider_connected event
  devices: new Map(), // serial -> Device, as API.devices gives it
  inboxes: new Map(), // serial -> [Shown]
  notes: new Map(), // apns_id -> { apns_id, fields: {...}, events: [event] }
  faults: [], // as API.faults gives them
  feedback: new Map(), // "topic|environment" -> { topic, environment, tuples } or { error }
  selected: null, // apns_id shown in the detail panel
  selectedPush: null, // apns_id of the last push sent from this page (highlighted)
  source: null, // the EventSource
};

// ---------------------------------------------------------------------------------------
// Small helpers

const $ = (id) => document.getElementById(id);

/** An element with attributes (`text` sets textContent, `on*` adds a listener) and children. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'text') node.textContent = String(value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** A path of API with its `{name}` parts filled in (URL-encoded) and a query appended. */
function url(template, params = {}, query = {}) {
  let path = template.replace(/\{(\w+)\}/g, (_, name) => {
    if (params[name] === undefined) throw new Error(`no ${name} for ${template}`);
    return encodeURIComponent(String(params[name]));
  });
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const qs = q.toString();
  if (qs) path += '?' + qs;
  return path;
}

/** Raised for an answer that is not 2xx; its message says what went wrong, in words. */
class ApiError extends Error {}

/**
 * Calls the API: `method` on the filled-in `template`, with a JSON body if given. Resolves
 * to the parsed JSON body (null when there is none) or, with `raw`, the Response. Rejects
 * with an ApiError whose message names the request, the status and the API's own words.
 */
async function call(method, template, { params, query, body, raw } = {}) {
  const target = url(template, params, query);
  const headers = { Accept: 'application/json' };
  if (ACCESS_TOKEN) headers.Authorization = `Bearer ${ACCESS_TOKEN}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let response;
  try {
    response = await fetch(target, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch (e) {
    throw new ApiError(`${method} ${target}: could not reach the simulator (${e.message})`);
  }
  if (!response.ok) {
    let words = response.statusText || 'error';
    try {
      const err = await response.json();
      if (err && err.error) words = err.error + (err.field ? ` (field "${err.field}")` : '');
    } catch (_) {
      // Not JSON: keep the status text.
    }
    throw new ApiError(`${method} ${target} answered ${response.status}: ${words}`);
  }
  if (raw) return response;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(`${method} ${target}: the answer is not JSON (${e.message})`);
  }
}

/** Shows an error in words at the top of the page (and in the console). */
function showError(error) {
  const message = error instanceof Error ? error.message : String(error);
  console.error(message);
  const box = $('errors');
  const item = el('div', { class: 'error', 'data-testid': 'error' },
    el('span', { text: message }),
    el('button', { type: 'button', class: 'small', text: 'Dismiss', onclick: () => item.remove() }));
  box.append(item);
  while (box.children.length > MAX_ERRORS) box.firstElementChild.remove();
}

/** Runs an action of a button: disabled while it runs, its error shown. */
async function act(button, action) {
  if (button) button.disabled = true;
  try {
    return await action();
  } catch (e) {
    showError(e);
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

/** A function that runs `fn` once, `REFRESH_DELAY_MS` after the last of a burst of calls. */
function debounced(fn) {
  let timer = null;
  return () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn().catch(showError);
    }, REFRESH_DELAY_MS);
  };
}

const time = (ms) => (ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : '');
const short = (token) => (token ? `${token.slice(0, 8)}…${token.slice(-4)}` : '—');
const json = (value) => JSON.stringify(value, null, 2);

// Redraws are batched into the next animation frame.
const dirty = new Set();
function redraw(...what) {
  if (dirty.size === 0) requestAnimationFrame(flush);
  what.forEach((w) => dirty.add(w));
}
function flush() {
  const what = [...dirty];
  dirty.clear();
  for (const w of what) RENDER[w]();
}

// ---------------------------------------------------------------------------------------
// Devices

/** Every (device, app) pair, for the push form and the fault example. */
function targets() {
  const out = [];
  for (const d of state.devices.values()) {
    for (const a of d.apps || []) out.push({ device: d, app: a });
  }
  return out;
}

/** The device whose token this is, if the page knows it. */
function deviceOfToken(token) {
  if (!token) return undefined;
  for (const d of state.devices.values()) {
    if ((d.apps || []).some((a) => a.token === token)) return d;
  }
  return undefined;
}

async function loadDevices() {
  const body = await call('GET', API.devices);
  const seen = new Set();
  for (const d of body.devices || []) {
    state.devices.set(d.serial, d);
    seen.add(d.serial);
  }
  for (const serial of [...state.devices.keys()]) {
    if (!seen.has(serial)) {
      state.devices.delete(serial);
      state.inboxes.delete(serial);
    }
  }
  redraw('devices', 'pushTargets', 'faultExample');
  refreshFeedbackSoon();
  await Promise.all([...state.devices.values()].filter((d) => d.managed).map((d) => loadInbox(d.serial)));
}
const refreshDevicesSoon = debounced(loadDevices);

async function loadInbox(serial) {
  try {
    const body = await call('GET', API.inbox, { params: { serial } });
    state.inboxes.set(serial, body.notifications || []);
  } catch (e) {
    state.inboxes.set(serial, { error: e.message });
  }
  redraw('devices');
}

// One debounced inbox refresh per device.
const inboxRefreshers = new Map();
function refreshInboxSoon(serial) {
  const device = state.devices.get(serial);
  if (!device || !device.managed) return;
  if (!inboxRefreshers.has(serial)) inboxRefreshers.set(serial, debounced(() => loadInbox(serial)));
  inboxRefreshers.get(serial)();
}

function deviceCard(d) {
  const inbox = state.inboxes.get(d.serial);
  const toggle = d.online
    ? el('button', { type: 'button', 'data-testid': 'device-offline', text: 'Take offline',
      onclick: (e) => act(e.target, async () => {
        state.devices.set(d.serial, await call('POST', API.offline, { params: { serial: d.serial } }));
        redraw('devices', 'pushTargets');
      }) })
    : el('button', { type: 'button', 'data-testid': 'device-online', text: 'Bring online',
      onclick: (e) => act(e.target, async () => {
        state.devices.set(d.serial, await call('POST', API.online, { params: { serial: d.serial } }));
        redraw('devices', 'pushTargets');
      }) });
  const appRows = (d.apps || []).map((a) => el('tr', { 'data-testid': 'app', 'data-app': a.app, 'data-kind': a.kind },
    el('td', { text: a.app }),
    el('td', { text: a.kind }),
    el('td', {}, el('code', { class: 'token', title: a.token, text: a.token })),
    el('td', { class: 'actions' },
      el('button', { type: 'button', class: 'small', 'data-testid': 'app-push', text: 'Push to it',
        'aria-label': `Push to ${a.app} (${a.kind}) on ${d.serial}`,
        onclick: () => choosePushTarget(a.token) }),
      d.managed && el('button', { type: 'button', class: 'small', 'data-testid': 'app-uninstall', text: 'Uninstall',
        'aria-label': `Uninstall ${a.app} (${a.kind}) from ${d.serial}`,
        onclick: (e) => act(e.target, async () => {
          await call('DELETE', API.app, { params: { serial: d.serial, app: a.app },
            query: a.kind && a.kind !== 'remote' ? { kind: a.kind } : {} });
          await loadDevices();
        }) }))));
  const installId = `install-${d.serial}`;
  return el('article', { class: `device ${d.online ? 'online' : 'offline'}`, 'data-testid': 'device', 'data-serial': d.serial,
    'data-online': String(Boolean(d.online)) },
    el('header', {},
      el('h3', { text: d.serial }),
      el('span', { class: `badge ${d.online ? 'ok' : 'off'}`, 'data-testid': 'device-status', text: d.online ? 'online' : 'offline' }),
      el('span', { class: 'badge', text: d.environment }),
      el('span', { class: 'badge', text: d.managed ? 'managed' : 'external' }),
      d.managed && toggle,
      d.managed && el('button', { type: 'button', class: 'small', text: 'Remove device',
        onclick: (e) => act(e.target, async () => {
          await call('DELETE', API.device, { params: { serial: d.serial } });
          await loadDevices();
        }) })),
    (d.apps || []).length
      ? el('table', { class: 'apps' },
        el('thead', {}, el('tr', {}, el('th', { text: 'app' }), el('th', { text: 'kind' }), el('th', { text: 'token' }), el('th', { text: '' }))),
        el('tbody', {}, appRows))
      : el('p', { class: 'empty', text: 'No app installed.' }),
    d.managed && el('form', { class: 'inline', novalidate: true,
      onsubmit: (e) => {
        e.preventDefault();
        const form = e.target;
        const app = form.elements.app.value.trim();
        const kind = form.elements.kind.value.trim();
        act(form.querySelector('button'), async () => {
          if (!app) throw new Error('Give the bundle id of the app to install.');
          await call('POST', API.apps, { params: { serial: d.serial }, body: kind ? { app, kind } : { app } });
          await loadDevices();
        });
      } },
      el('label', { for: installId, text: 'Install app' }),
      el('input', { id: installId, name: 'app', type: 'text', autocomplete: 'off', placeholder: 'com.example.other' }),
      el('label', { for: `${installId}-kind`, text: 'kind' }),
      el('input', { id: `${installId}-kind`, name: 'kind', type: 'text', autocomplete: 'off', placeholder: 'remote', size: 10 }),
      el('button', { type: 'submit', class: 'small', text: 'Install' })),
    d.managed && inboxView(d, inbox));
}

function inboxView(d, inbox) {
  const title = el('h4', { text: 'Inbox (what the device has shown)' });
  if (inbox === undefined) return el('div', { class: 'inbox' }, title, el('p', { class: 'empty', text: 'loading…' }));
  if (inbox.error) return el('div', { class: 'inbox' }, title, el('p', { class: 'bad', text: inbox.error }));
  if (!inbox.length) {
    return el('div', { class: 'inbox', 'data-testid': 'inbox', 'data-serial': d.serial }, title,
      el('p', { class: 'empty', text: 'Nothing shown yet.' }));
  }
  const items = [...inbox].reverse().map((n) => el('li', { 'data-testid': 'inbox-entry', 'data-apns-id': n.apns_id },
    el('span', { class: 'when', text: time(n.received_at_ms) }),
    el('span', { class: 'badge', text: n.app + (n.kind && n.kind !== 'remote' ? ` (${n.kind})` : '') }),
    el('span', { class: 'alert', text: alertText(n.payload) }),
    n.collapse_id && el('span', { class: 'badge', text: `collapse ${n.collapse_id}` }),
    el('button', { type: 'button', class: 'small link', text: 'details', onclick: () => select(n.apns_id) }),
    el('button', { type: 'button', class: 'small', 'data-testid': 'download-apns', text: 'Download .apns',
      'aria-label': `Download notification ${n.index} of ${d.serial} as an .apns file`,
      onclick: (e) => act(e.target, () => downloadApns(d.serial, n)) })));
  return el('div', { class: 'inbox', 'data-testid': 'inbox', 'data-serial': d.serial }, title, el('ul', { class: 'plain' }, items));
}

/** A payload's alert in a few words. */
function alertText(payload) {
  const alert = payload && payload.aps && payload.aps.alert;
  if (typeof alert === 'string') return alert;
  if (alert && typeof alert === 'object') return [alert.title, alert.subtitle, alert.body].filter(Boolean).join(' — ');
  if (payload && payload.aps && payload.aps['content-available']) return '(background)';
  return JSON.stringify(payload);
}

async function downloadApns(serial, n) {
  const response = await call('GET', API.inboxApns, { params: { serial, index: n.index }, raw: true });
  const blob = await response.blob();
  const disposition = response.headers.get('Content-Disposition') || '';
  const named = /filename="?([^";]+)"?/.exec(disposition);
  const link = el('a', { href: URL.createObjectURL(blob), download: named ? named[1] : `${serial}-${n.index}.apns` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

// ---------------------------------------------------------------------------------------
// The push form

function choosePushTarget(token) {
  const select = $('push-target');
  select.value = token;
  select.focus();
  $('push-panel').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
}

async function sendPush(event) {
  event.preventDefault();
  const result = $('push-result');
  const pick = targets().find((t) => t.app.token === $('push-target').value);
  await act($('push-send'), async () => {
    result.textContent = '';
    result.className = 'result';
    if (!pick) throw new Error('Choose a device and app to push to (no device has an app yet?).');
    let payload;
    try {
      payload = JSON.parse($('push-payload').value);
    } catch (e) {
      throw new Error(`The payload is not JSON: ${e.message}`);
    }
    // A device's main (remote) token is named by serial and app, as a learner thinks of it;
    // any other kind of token by the token itself.
    const body = pick.app.kind === 'remote'
      ? { serial: pick.device.serial, app: pick.app.app }
      : { token: pick.app.token };
    body.api = $('push-api').value;
    body.payload = payload;
    if ($('push-type').value) body.push_type = $('push-type').value;
    if ($('push-priority').value) body.priority = Number($('push-priority').value);
    if ($('push-collapse').value.trim()) body.collapse_id = $('push-collapse').value.trim();
    if ($('push-expiry').value !== '') body.expiry = Number($('push-expiry').value);
    if ($('push-topic').value.trim()) body.topic = $('push-topic').value.trim();
    result.textContent = 'sending…';
    const answer = await call('POST', API.push, { body });
    const accepted = answer.api === 'binary' ? answer.status === 0 : answer.status === 200;
    const status = answer.api === 'binary'
      ? (answer.status === 0 ? 'no error response (accepted)' : `error status ${answer.status}`)
      : `HTTP ${answer.status}`;
    result.textContent = `${answer.api === 'binary' ? 'binary gateway' : 'HTTP/2'}: ${status}`
      + `${answer.reason ? ` ${answer.reason}` : ''}, apns-id ${answer.apns_id}`;
    result.className = `result ${accepted ? 'ok' : 'bad'}`;
    result.dataset.apnsId = answer.apns_id || '';
    if (answer.apns_id) {
      state.selectedPush = answer.apns_id;
      redraw('notifications');
    }
  });
  if (!result.textContent || result.textContent === 'sending…') result.textContent = 'not sent (see the error above)';
}

function renderPushTargets() {
  const select = $('push-target');
  const keep = select.value;
  const list = targets();
  select.replaceChildren(...list.map(({ device, app }) => el('option', { value: app.token,
    text: `${device.serial} · ${app.app}${app.kind !== 'remote' ? ` (${app.kind})` : ''}`
      + `${device.online ? '' : ' — offline'}` })));
  if (!list.length) select.append(el('option', { value: '', text: 'no device with an app yet' }));
  if (list.some((t) => t.app.token === keep)) select.value = keep;
}

// ---------------------------------------------------------------------------------------
// Notifications

// Which step of the lane an outcome lights, and how. A lane has four steps: the provider,
// the API it came through (binary gateway or HTTP/2), the hub, and where it ended (the
// device, the store for an offline device, or feedback for an uninstalled app).
const OUTCOMES = {
  sent: { hub: 'ok', end: 'wait', where: 'device', words: 'sent to the device, waiting for its acknowledgement' },
  acknowledged: { hub: 'ok', end: 'ok', where: 'device', words: 'delivered: the device acknowledged it' },
  requeued: { hub: 'ok', end: 'wait', where: 'device', words: 'the device went away before acknowledging; routed again' },
  stored: { hub: 'ok', end: 'wait', where: 'store', words: 'stored for the offline device' },
  superseded: { hub: 'ok', end: 'bad', where: 'store', words: 'dropped from the store: a newer one for the same app replaced it' },
  expired: { hub: 'ok', end: 'bad', where: 'store', words: 'expired before the device came back' },
  discarded: { hub: 'ok', end: 'bad', where: 'store', words: 'discarded: expiry 0 and the device was offline' },
  not_installed: { hub: 'ok', end: 'bad', where: 'feedback', words: 'the app is not installed: the token is now on the feedback list' },
  unregistered: { hub: 'bad', end: 'bad', where: 'feedback', words: 'the token was already unregistered (410 Unregistered)' },
  throttled: { hub: 'bad', words: 'over the per-token push limit: not delivered' },
  rejected: { api: 'bad', words: 'rejected' },
};

function onNotification(ev) {
  const id = ev.apns_id;
  if (!id) return;
  let note = state.notes.get(id);
  if (!note) {
    note = { apns_id: id, fields: {}, events: [], firstSeq: Number(ev.seq) || 0 };
    state.notes.set(id, note);
    if (state.notes.size > MAX_NOTIFICATIONS) {
      const oldest = state.notes.keys().next().value;
      state.notes.delete(oldest);
    }
  }
  note.events.push(ev);
  // Later events fill in what earlier ones did not know (a token, a serial, the frame).
  for (const [k, v] of Object.entries(ev)) {
    if (v !== null && v !== undefined && v !== '' && k !== 'event' && k !== 'seq') note.fields[k] = v;
  }
  const serial = ev.serial || (deviceOfToken(ev.token) || {}).serial;
  if (serial && ['acknowledged', 'superseded', 'sent'].includes(ev.outcome)) refreshInboxSoon(serial);
  if (['not_installed', 'unregistered'].includes(ev.outcome)) refreshFeedbackSoon();
  if (ev.fault) refreshFaultsSoon(); // its hits and what remains changed
  redraw('notifications');
  if (state.selected === id) redraw('detail');
}

/** The lane of a notification: each step's state, and the words for where it is now. */
function lane(note) {
  const steps = { provider: 'ok', api: 'ok', hub: '', end: '' };
  let where = 'device';
  let words = '';
  for (const ev of note.events) {
    const o = OUTCOMES[ev.outcome] || { words: ev.outcome };
    if (o.api) steps.api = o.api;
    if (o.hub) steps.hub = o.hub;
    if (o.end) steps.end = o.end;
    if (o.where) where = o.where;
    words = o.words + (ev.detail ? ` (${ev.detail})` : '');
    if (ev.outcome === 'rejected') {
      steps.hub = '';
      steps.end = '';
    }
  }
  return { steps, where, words };
}

function apiName(api) {
  return api === 'binary' ? 'binary gateway' : api === 'http2' ? 'HTTP/2' : (api || 'API');
}

function step(label, status, testid) {
  return el('span', { class: `step ${status || 'idle'}`, 'data-testid': testid, 'data-state': status || 'idle' }, label);
}

function renderNotifications() {
  const list = $('notifications');
  const notes = [...state.notes.values()].reverse();
  $('notifications-empty').hidden = notes.length > 0;
  list.replaceChildren(...notes.map((note) => {
    const f = note.fields;
    const last = note.events[note.events.length - 1] || {};
    const { steps, where, words } = lane(note);
    const endLabel = { device: `device${f.serial ? ' ' + f.serial : ''}`, store: 'store', feedback: 'feedback' }[where];
    return el('li', { 'data-testid': 'notification', 'data-apns-id': note.apns_id, 'data-outcome': last.outcome,
      'data-api': f.api, class: `${state.selected === note.apns_id ? 'selected' : ''} ${state.selectedPush === note.apns_id ? 'mine' : ''}` },
      el('button', { type: 'button', class: 'lane', 'aria-label': `Notification ${note.apns_id}: ${words}. Show details.`,
        onclick: () => select(note.apns_id) },
        el('span', { class: 'meta' },
          el('span', { class: 'when', text: time(f.at_ms) }),
          el('span', { class: 'topic', text: f.topic || '' }),
          el('code', { text: short(f.token) })),
        el('span', { class: 'steps' },
          step('provider', steps.provider, 'step-provider'),
          el('span', { class: 'arrow', 'aria-hidden': 'true', text: '→' }),
          step(apiName(f.api), steps.api, 'step-api'),
          el('span', { class: 'arrow', 'aria-hidden': 'true', text: '→' }),
          step('hub', steps.hub, 'step-hub'),
          el('span', { class: 'arrow', 'aria-hidden': 'true', text: '→' }),
          step(endLabel, steps.end, 'step-end')),
        el('span', { class: 'words', 'data-testid': 'notification-outcome', text: words }),
        f.fault && el('span', { class: 'badge bad', text: `fault ${f.fault}` })));
  }));
}

async function select(apnsId) {
  state.selected = apnsId;
  $('detail-panel').hidden = false;
  redraw('detail', 'notifications');
  const note = state.notes.get(apnsId);
  // The events carry a binary notification's bytes; their labels come with the log's record
  // (GET API.notifications), read from just before the notification's first event.
  if (note && note.fields.api === 'binary' && !note.fields.frame_fields && !note.askedLog) {
    note.askedLog = true;
    await act(null, async () => {
      const query = { api: 'binary', since: Math.max(0, note.firstSeq - 1), limit: LOG_LOOKAHEAD };
      if (note.fields.token) query.token = note.fields.token;
      const body = await call('GET', API.notifications, { query });
      for (const record of body.notifications || []) {
        if (record.apns_id !== apnsId) continue;
        for (const [k, v] of Object.entries(record)) {
          if (v !== null && v !== undefined && v !== '' && !(k in note.fields)) note.fields[k] = v;
        }
      }
      redraw('detail');
    });
  }
  $('detail-panel').scrollIntoView({ behavior: 'smooth', block: 'nearest' });
}

// The fields the detail panel lists, in order, with their labels.
const DETAIL_FIELDS = [
  ['apns_id', 'apns-id'], ['api', 'API'], ['identifier', 'binary identifier'], ['topic', 'topic'],
  ['token', 'device token'], ['serial', 'device serial'], ['push_type', 'push type'],
  ['priority', 'priority'], ['expiry', 'expiry'], ['collapse_id', 'collapse id'], ['fault', 'fault that hit it'],
];

function renderDetail() {
  const box = $('detail');
  const note = state.notes.get(state.selected);
  if (!note) {
    const shown = [...state.inboxes.values()].flat().find((n) => n && n.apns_id === state.selected);
    box.replaceChildren(el('p', { class: 'empty', text: shown
      ? `This notification (${state.selected}) is older than the page's log; the inbox shows: ${json(shown.payload)}`
      : 'This notification is no longer in the page\'s log.' }));
    return;
  }
  const f = note.fields;
  const { words } = lane(note);
  const dl = el('dl', { class: 'fields' });
  for (const [key, label] of DETAIL_FIELDS) {
    if (f[key] === undefined) continue;
    dl.append(el('dt', { text: label }), el('dd', { 'data-field': key }, key === 'api' ? apiName(f[key]) : String(f[key])));
  }
  dl.append(el('dt', { text: 'now' }), el('dd', { 'data-field': 'outcome', text: words }));
  box.replaceChildren(
    dl,
    f.payload !== undefined && el('div', {}, el('h3', { text: 'Payload' }), el('pre', { 'data-testid': 'detail-payload', text: json(f.payload) })),
    el('h3', { text: 'What happened' }),
    el('table', { class: 'timeline' },
      el('thead', {}, el('tr', {}, el('th', { text: 'time' }), el('th', { text: 'outcome' }), el('th', { text: 'detail' }))),
      el('tbody', {}, note.events.map((ev) => el('tr', {},
        el('td', { text: time(ev.at_ms) }), el('td', { text: ev.outcome }), el('td', { text: ev.detail || '' }))))),
    f.frame ? frameView(f.frame, f.frame_fields || [])
      : f.api === 'binary' && el('p', { class: 'empty', text: 'The bytes of this binary notification are not in the log.' }));
}

/** The binary command's bytes as a hex dump, each byte coloured by the field it belongs to. */
function frameView(hex, fields) {
  const bytes = hex.match(/[0-9a-fA-F]{2}/g) || [];
  // The field of each byte: the narrowest one that covers it (fields may nest: an item's
  // header inside the frame data).
  const owner = bytes.map((_, i) => {
    let best = -1;
    fields.forEach((fd, k) => {
      if (i >= fd.offset && i < fd.offset + fd.length && (best < 0 || fd.length < fields[best].length)) best = k;
    });
    return best;
  });
  const rows = [];
  const PER_ROW = 16;
  for (let start = 0; start < bytes.length; start += PER_ROW) {
    rows.push(el('div', { class: 'hexrow' },
      el('span', { class: 'offset', text: start.toString(16).padStart(4, '0') }),
      bytes.slice(start, start + PER_ROW).map((b, j) => {
        const k = owner[start + j];
        return el('span', { class: `byte f${k < 0 ? 'x' : k % 8}`, title: k < 0 ? '' : fields[k].name, text: b });
      })));
  }
  return el('div', { class: 'frame', 'data-testid': 'frame' },
    el('h3', { text: `The bytes as received (${bytes.length})` }),
    el('div', { class: 'hex', role: 'img', 'aria-label': 'hex dump of the binary command, coloured by field' }, rows),
    el('table', { class: 'legend', 'data-testid': 'frame-fields' },
      el('thead', {}, el('tr', {}, el('th', { text: '' }), el('th', { text: 'offset' }), el('th', { text: 'length' }),
        el('th', { text: 'field' }), el('th', { text: 'value' }))),
      el('tbody', {}, fields.map((fd, k) => el('tr', {},
        el('td', {}, el('span', { class: `swatch f${k % 8}`, 'aria-hidden': 'true' })),
        el('td', { text: fd.offset }), el('td', { text: fd.length }), el('td', { text: fd.name }),
        el('td', {}, el('code', { text: typeof fd.value === 'string' ? fd.value : JSON.stringify(fd.value) })))))));
}

// ---------------------------------------------------------------------------------------
// Providers

function renderProviders() {
  const list = $('providers');
  // Open connections first, then the recently closed ones, newest first.
  const providers = [...state.providers.values()].reverse()
    .sort((a, b) => Number(Boolean(a.closed_at_ms)) - Number(Boolean(b.closed_at_ms)));
  $('providers-empty').hidden = providers.some((p) => !p.closed_at_ms);
  list.replaceChildren(...providers.map((p) => el('li', { 'data-testid': 'provider', 'data-connection': p.connection,
    'data-open': String(!p.closed_at_ms), class: p.closed_at_ms ? 'closed' : '' },
    el('span', { class: 'badge', text: { gateway: 'binary gateway', http2: 'HTTP/2', feedback: 'feedback' }[p.endpoint] || p.endpoint }),
    el('span', { text: ` #${p.connection} from ${p.peer || p.addr || '?'}: ` }),
    el('span', { class: 'identity', text: identity(p.identity) }),
    el('span', { class: 'when', text: p.closed_at_ms
      ? ` ${time(p.at_ms)}–${time(p.closed_at_ms)}, closed`
      : ` since ${time(p.at_ms)}` }))));
}

function identity(id) {
  if (!id) return '';
  if (typeof id === 'string') return id;
  if (Array.isArray(id)) return id.join(', ');
  return Object.entries(id).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(', ') : v}`).join('; ');
}

// ---------------------------------------------------------------------------------------
// Feedback

/** The (topic, environment) pairs to show: every app of every device, and the one typed in. */
function feedbackKeys() {
  const keys = new Map();
  for (const { device, app } of targets()) {
    keys.set(`${app.app}|${device.environment}`, { topic: app.app, environment: device.environment });
  }
  const topic = $('feedback-topic').value.trim();
  if (topic) {
    const environment = $('feedback-env').value;
    keys.set(`${topic}|${environment}`, { topic, environment });
  }
  return keys;
}

async function loadFeedback() {
  const keys = feedbackKeys();
  const next = new Map();
  await Promise.all([...keys].map(async ([key, { topic, environment }]) => {
    try {
      next.set(key, await call('GET', API.feedback, { query: { topic, environment } }));
    } catch (e) {
      next.set(key, { topic, environment, error: e.message });
    }
  }));
  state.feedback = next;
  redraw('feedback');
}
const refreshFeedbackSoon = debounced(loadFeedback);

function renderFeedback() {
  const box = $('feedback');
  const lists = [...state.feedback.values()];
  if (!lists.length) {
    box.replaceChildren(el('p', { class: 'empty', text: 'No topic to read yet.' }));
    return;
  }
  box.replaceChildren(...lists.map((l) => el('div', { class: 'fblist', 'data-testid': 'feedback-list', 'data-topic': l.topic, 'data-environment': l.environment },
    el('h3', { text: `${l.topic} (${l.environment})` }),
    l.error ? el('p', { class: 'bad', text: l.error })
      : (l.tuples || []).length === 0 ? el('p', { class: 'empty', text: 'No unread tuple.' })
        : el('ul', { class: 'plain' }, l.tuples.map((t) => el('li', { 'data-testid': 'feedback-tuple' },
          el('span', { class: 'when', text: new Date(t.timestamp * 1000).toLocaleString() }), ' ',
          el('code', { class: 'token', text: t.token })))))));
}

// ---------------------------------------------------------------------------------------
// Faults

async function loadFaults() {
  const body = await call('GET', API.faults);
  state.faults = body.faults || [];
  redraw('faults');
}
const refreshFaultsSoon = debounced(loadFaults);

function renderFaults() {
  $('faults-empty').hidden = state.faults.length > 0;
  $('faults').replaceChildren(...state.faults.map((f) => {
    const { id, hits, remaining, expires_at_ms: until, ...spec } = f;
    const left = remaining !== undefined && remaining !== null ? `, ${remaining} left` : '';
    return el('li', { 'data-testid': 'fault', 'data-fault-id': id },
      el('span', { class: 'badge', text: id }), ' ',
      el('code', { class: 'spec', text: JSON.stringify(spec) }),
      el('span', { class: 'when', text: ` hits ${hits ?? 0}${left}${until ? `, until ${time(until)}` : ''} ` }),
      el('button', { type: 'button', class: 'small', text: 'Remove', 'aria-label': `Remove fault ${id}`,
        onclick: (e) => act(e.target, async () => {
          await call('DELETE', API.fault, { params: { id } });
          await loadFaults();
        }) }));
  }));
}

function renderFaultExample() {
  const area = $('fault-spec');
  if (area.dataset.edited) return;
  const first = targets().find((t) => t.device.online);
  const example = { ...FAULT_EXAMPLE, match: { token: first ? first.app.token : FAULT_EXAMPLE.match.token } };
  area.value = json(example);
}

async function addFault(event) {
  event.preventDefault();
  await act($('fault-add'), async () => {
    let spec;
    try {
      spec = JSON.parse($('fault-spec').value);
    } catch (e) {
      throw new Error(`The fault is not JSON: ${e.message}`);
    }
    await call('POST', API.faults, { body: spec });
    await loadFaults();
  });
}

// ---------------------------------------------------------------------------------------
// The event stream

function streamStatus(text, kind) {
  const s = $('stream-status');
  s.textContent = text;
  s.className = `status ${kind}`;
  s.dataset.state = kind;
}

function onEvent(message) {
  if (message.type === 'truncated') {
    // Whatever its data: the events before the first one now coming had left the log.
    streamStatus('live — some older events had already left the log and are not shown', 'ok');
    refreshDevicesSoon();
    return;
  }
  let ev;
  try {
    ev = JSON.parse(message.data);
  } catch (e) {
    showError(`An event of the stream is not JSON: ${e.message}`);
    return;
  }
  const tag = ev.event || message.type;
  const seq = Number(ev.seq ?? message.lastEventId);
  if (Number.isFinite(seq) && seq > 0) {
    if (seq <= state.lastSeq) return; // replayed: already applied
    state.lastSeq = seq;
  }
  switch (tag) {
    case 'device_online':
    case 'device_offline': {
      const d = state.devices.get(ev.serial);
      if (d) d.online = tag === 'device_online';
      redraw('devices', 'pushTargets', 'faultExample');
      refreshDevicesSoon();
      break;
    }
    case 'registered': {
      const d = state.devices.get(ev.serial);
      if (d) {
        d.apps = (d.apps || []).filter((a) => !(a.app === ev.app && a.kind === ev.kind));
        d.apps.push({ app: ev.app, kind: ev.kind, token: ev.token });
      }
      redraw('devices', 'pushTargets', 'faultExample');
      refreshDevicesSoon();
      break;
    }
    case 'notification':
      onNotification(ev);
      break;
    case 'provider_connected':
      state.providers.set(String(ev.connection), ev);
      redraw('providers');
      break;
    case 'provider_disconnected': {
      // Kept a while, greyed: the test provider connects for one push and leaves.
      const p = state.providers.get(String(ev.connection));
      if (p) p.closed_at_ms = ev.at_ms || Date.now();
      const closed = [...state.providers.values()].filter((q) => q.closed_at_ms);
      for (const q of closed.slice(0, Math.max(0, closed.length - MAX_CLOSED_PROVIDERS))) {
        state.providers.delete(String(q.connection));
      }
      redraw('providers');
      break;
    }
    case 'fault_added':
    case 'fault_removed':
      refreshFaultsSoon();
      break;
    case 'reset':
      state.notes.clear();
      state.selected = null;
      $('detail-panel').hidden = true;
      redraw('notifications');
      refreshDevicesSoon();
      refreshFaultsSoon();
      refreshFeedbackSoon();
      break;
    default:
      break; // a tag this page does not know yet
  }
}

function openStream() {
  if (state.source) state.source.close();
  // `since` replays the log from the start the first time and from the last event seen when
  // the page opens a new stream itself; EventSource's own reconnects send Last-Event-ID.
  const source = new EventSource(url(API.events, {}, { since: state.lastSeq, access_token: ACCESS_TOKEN }));
  state.source = source;
  source.onopen = () => streamStatus('live: connected to the event stream', 'ok');
  source.onerror = () => {
    if (source.readyState === EventSource.CONNECTING) {
      streamStatus('event stream lost: reconnecting (it resumes where it left off)…', 'wait');
    } else {
      streamStatus(`event stream closed by the simulator (is it running? is the access token right?); retrying in ${STREAM_RETRY_MS / 1000} s`, 'bad');
      setTimeout(() => { if (state.source === source) openStream(); }, STREAM_RETRY_MS);
    }
  };
  for (const tag of EVENT_TAGS) source.addEventListener(tag, onEvent);
  source.onmessage = onEvent;
}

// ---------------------------------------------------------------------------------------
// Start

const RENDER = {
  devices() {
    const devices = [...state.devices.values()].sort((a, b) => a.serial.localeCompare(b.serial));
    $('devices-empty').hidden = devices.length > 0;
    $('devices').replaceChildren(...devices.map(deviceCard));
  },
  pushTargets: renderPushTargets,
  notifications: renderNotifications,
  detail: renderDetail,
  providers: renderProviders,
  feedback: renderFeedback,
  faults: renderFaults,
  faultExample: renderFaultExample,
};

function start() {
  $('push-form').addEventListener('submit', sendPush);
  $('fault-form').addEventListener('submit', addFault);
  $('fault-spec').addEventListener('input', (e) => { e.target.dataset.edited = 'yes'; });
  $('faults-clear').addEventListener('click', (e) => act(e.target, async () => {
    await call('DELETE', API.faults);
    await loadFaults();
  }));
  $('feedback-form').addEventListener('submit', (e) => {
    e.preventDefault();
    act($('feedback-refresh'), loadFeedback);
  });
  $('device-form').addEventListener('submit', (e) => {
    e.preventDefault();
    act($('device-add'), async () => {
      const body = { environment: $('device-env').value };
      const serial = $('device-serial').value.trim();
      if (serial) body.serial = serial;
      body.apps = $('device-apps').value.split(/[\s,]+/).filter(Boolean);
      await call('POST', API.devices, { body });
      $('device-serial').value = '';
      await loadDevices();
    });
  });
  for (const [id, devices] of [['reset-keep', 'keep'], ['reset-remove', 'remove']]) {
    $(id).addEventListener('click', (e) => act(e.target, async () => {
      await call('POST', API.reset, { body: { devices } });
      await Promise.all([loadDevices(), loadFaults(), loadFeedback()]);
    }));
  }
  $('detail-close').addEventListener('click', () => {
    state.selected = null;
    $('detail-panel').hidden = true;
    redraw('notifications');
  });
  renderFaultExample();
  redraw('notifications', 'providers', 'feedback', 'faults', 'pushTargets');
  openStream();
  loadDevices().catch(showError);
  loadFaults().catch(showError);
}

document.addEventListener('DOMContentLoaded', start);
