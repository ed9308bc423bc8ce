// The Agent Inbox: signs in, keeps the store in step with the server, and
// turns what the agent does into protocol v1 requests (shared/protocol.md §4–5).
import { AgentConnection } from './connection.js';
import { detectLanguage, setLanguage, translatePage, language, t } from './i18n.js';
import { store, conversation, changed, onChange } from './store.js';
import * as view from './views.js';

const { $ } = view;
const tokenKey = 'parley.agent.token';
const languageKey = 'parley.language';
const typingRepeatMs = 3000;
const withdrawnNoticeMs = 5000;

let connection = null;

// ---- Sign-in -------------------------------------------------------------

// The token arrives in the URL fragment (never sent to a server, never in a
// log), is kept for this tab only, and the fragment is wiped from the address bar.
function takeToken() {
  const fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has('token')) {
    sessionStorage.setItem(tokenKey, fragment.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }
  return sessionStorage.getItem(tokenKey);
}

function showSignIn(message) {
  $('sign-in').hidden = false;
  $('workspace').hidden = true;
  $('sign-out').hidden = true;
  $('sign-in-error').textContent = message ?? '';
  $('token').focus();
}

function start(token) {
  $('sign-in').hidden = true;
  $('workspace').hidden = false;
  $('sign-out').hidden = false;
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  connection = new AgentConnection(`${scheme}://${location.host}/v1/agent`, token);
  connection.addEventListener('status', (e) => { store.status = e.detail; changed(); });
  connection.addEventListener('ready', (e) => onHello(e.detail));
  connection.addEventListener('event', (e) => onEvent(e.detail));
  connection.addEventListener('unauthorized', () => {
    sessionStorage.removeItem(tokenKey);
    showSignIn(t('signed_out_bad_token'));
  });
  connection.start();
}

// ---- From the server -----------------------------------------------------

function onHello(hello) {
  store.agent = hello.agent;
  store.availability = hello.availability;
  const offered = new Set(hello.offers.map((o) => o.offer_id));
  for (const id of store.offers.keys()) if (!offered.has(id) && !store.offers.get(id).goneReason) store.offers.delete(id);
  for (const offer of hello.offers) store.offers.set(offer.offer_id, offer);
  store.activeIds = hello.active.map((entry) => conversation(entry).id);
  // Resume every conversation this tab holds messages of, from the last one it holds.
  for (const c of store.conversations.values()) {
    if (c.loaded && (c.state === 'active' || store.activeIds.includes(c.id))) resume(c);
  }
  if (store.selectedId) load(store.selectedId);
  if (!store.colleagues) {
    connection.request('list_agents').then((reply) => { store.colleagues = reply.agents; view.renderCalendarChoices(); changed(); }, showError);
  }
  if (store.tab === 'all' && !store.allList.loaded) loadAll();
  changed();
}

function resume(c) {
  c.loaded = true;
  return connection.request('resume', { conversation_id: c.id, after_seq: c.contiguousSeq }).catch(showError);
}

function onEvent(event) {
  switch (event.type) {
    case 'availability':
      store.availability = { available: event.available, source: event.source, until_at: event.until_at };
      break;
    case 'offer':
      store.offers.set(event.offer_id, event);
      alertAgent(event);
      break;
    case 'offer_withdrawn':
      offerGone(event.offer_id, event.reason);
      break;
    case 'message': {
      const c = store.conversations.get(event.conversation_id);
      if (!c) break;
      const isNew = c.add(event, event.conversation_id !== store.selectedId || document.hidden);
      if (isNew && event.from === 'visitor') c.visitorTyping = false;
      break;
    }
    case 'typing': {
      const c = store.conversations.get(event.conversation_id);
      if (!c || event.from !== 'visitor') break;
      c.visitorTyping = event.on;
      clearTimeout(c.typingTimer);
      if (event.on) c.typingTimer = setTimeout(() => { c.visitorTyping = false; changed(); }, 3 * typingRepeatMs);
      break;
    }
    case 'ended': {
      const c = store.conversations.get(event.conversation_id);
      if (c) c.update({ state: 'ended', ended_at: Date.now() });
      store.activeIds = store.activeIds.filter((id) => id !== event.conversation_id);
      break;
    }
    default:
      return;
  }
  changed();
}

function offerGone(offerId, reason) {
  const offer = store.offers.get(offerId);
  if (!offer) return;
  offer.goneReason = reason;
  setTimeout(() => { store.offers.delete(offerId); changed(); }, withdrawnNoticeMs);
  changed();
}

// A sound and a desktop notification, only when the agent is not looking at this tab.
function alertAgent(offer) {
  if (!document.hidden) return;
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.setValueAtTime(0.2, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.6);
  } catch { /* no audio: the notification and the banner remain */ }
  if ('Notification' in window && Notification.permission === 'granted') {
    const notification = new Notification(t('new_chat_notification', { name: view.visitorName(offer.visitor) }), { tag: offer.offer_id });
    notification.onclick = () => { focus(); notification.close(); };
  }
}

// Asked once, on the agent's first click (browsers allow asking only then).
function askNotificationPermissionOnce() {
  if (!('Notification' in window) || Notification.permission !== 'default' || localStorage.getItem('parley.notifications.asked')) return;
  localStorage.setItem('parley.notifications.asked', '1');
  Notification.requestPermission().catch(() => {});
}

function showError(error) {
  if (error?.code === 'unavailable' && store.status !== 'online') return;  // the reconnect banner says it
  console.warn('parley:', error);
}

// ---- Agent actions -------------------------------------------------------

const actions = {
  async accept(offerId) {
    try {
      const reply = await connection.request('accept', { offer_id: offerId });
      store.offers.delete(offerId);
      const c = conversation(reply.conversation);
      for (const message of reply.messages) c.add(message, false);
      c.loaded = true;
      if (!store.activeIds.includes(c.id)) store.activeIds.push(c.id);
      // Older messages than the accept carried (it holds at most 200): read them all.
      if (reply.messages.length === 0 || reply.messages[0].seq > 1) connection.request('resume', { conversation_id: c.id, after_seq: 0 }).catch(showError);
      select(c.id);
    } catch (error) {
      if (error.code === 'conflict') offerGone(offerId, 'conflict');
      else showError(error);
    }
  },
  async decline(offerId) {
    store.offers.delete(offerId);
    changed();
    await connection.request('decline', { offer_id: offerId }).catch(showError);
  },
  select,
  openTranscript(conversationId, visitorId) {
    const c = store.conversations.get(conversationId) ?? conversation({ id: conversationId, state: 'ended', visitor: { id: visitorId } });
    c.transcriptOnly = !store.activeIds.includes(conversationId);
    select(c.id);
  },
  async download(conversationId) {
    const tenant = store.agent ? tenantOfToken() : '';
    const response = await fetch(`/v1/tenants/${encodeURIComponent(tenant)}/conversations/${encodeURIComponent(conversationId)}/transcript.txt`,
      { headers: { Authorization: `Bearer ${sessionStorage.getItem(tokenKey)}` } });
    if (!response.ok) return showError(new Error(`HTTP ${response.status}`));
    const link = view.h('a', { href: URL.createObjectURL(await response.blob()), download: `transcript-${conversationId}.txt` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  },
};

// The tenant is a claim of the agent's own token (a JWT); the server checks it again.
function tenantOfToken() {
  try {
    const payload = sessionStorage.getItem(tokenKey).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(payload)).tenant ?? '';
  } catch {
    return '';
  }
}

function select(id) {
  if (store.selectedId !== id) view.resetConversationView();
  store.selectedId = id;
  const c = store.conversations.get(id);
  if (c) c.unread = 0;
  load(id);
  changed();
}

// What the conversation pane and visitor pane need: messages (resume for an
// active chat, get_transcript pages for a past one), the card, the history.
async function load(id) {
  const c = store.conversations.get(id);
  if (!c || !connection?.online) return;
  if (!c.loaded) {
    c.loaded = true;
    if (c.state === 'ended' || c.transcriptOnly || c.entry.agent_id !== store.agent?.id) await readTranscript(c);
    else await resume(c);
  }
  const visitorId = c.visitor.id;
  if (visitorId && !store.visitorCards.has(visitorId)) {
    connection.request('get_visitor', { visitor_id: visitorId }).then((card) => { store.visitorCards.set(visitorId, card); changed(); }, showError);
  }
  if (visitorId && !store.activities.has(visitorId)) loadActivity(visitorId);
}

async function readTranscript(c) {
  let after = 0;
  for (;;) {
    const page = await connection.request('get_transcript', { conversation_id: c.id, after_seq: after, limit: 1000 }).catch((e) => { showError(e); return null; });
    if (!page) { c.loaded = false; return; }
    for (const message of page.messages) c.add(message, false);
    changed();
    if (page.next_after_seq === null) return;
    after = page.next_after_seq;
  }
}

async function loadActivity(visitorId) {
  const history = store.activities.get(visitorId) ?? { items: [], cursor: null, loaded: false };
  store.activities.set(visitorId, history);
  const page = await connection.request('get_activity', { visitor_id: visitorId, limit: 20, ...(history.cursor ? { cursor: history.cursor } : {}) }).catch(showError);
  if (!page) return;
  history.items.push(...page.activities);
  history.cursor = page.next_cursor;
  history.loaded = true;
  changed();
}

async function loadAll() {
  const list = store.allList;
  if (list.loading) return;
  list.loading = true;
  const page = await connection.request('list_conversations', { filter: 'all', limit: 50, ...(list.cursor ? { cursor: list.cursor } : {}) }).catch(showError);
  list.loading = false;
  if (!page) return;
  for (const entry of page.conversations) {
    const c = conversation(entry);
    if (!list.ids.includes(c.id)) list.ids.push(c.id);
  }
  list.cursor = page.next_cursor;
  list.loaded = true;
  changed();
}

function showTab(tab) {
  store.tab = tab;
  if (tab === 'all') {
    // Newest first: start again from the top each time the list is opened.
    Object.assign(store.allList, { ids: [], cursor: null, loaded: false });
    loadAll();
  }
  changed();
}

// ---- Composer ------------------------------------------------------------

let typingSentAt = 0;
let typingConversation = null;

function sendTyping(on) {
  const id = store.selectedId;
  if (!id) return;
  if (on && typingConversation === id && Date.now() - typingSentAt < typingRepeatMs) return;
  if (!on && typingConversation !== id) return;
  connection.notify('typing', { conversation_id: id, on });
  typingSentAt = on ? Date.now() : 0;
  typingConversation = on ? id : null;
}

// Sent once, whatever happens to the connection: the request is durable and
// its client_msg_id makes a repeat after a reconnect harmless.
function sendMessage() {
  const textarea = $('message');
  const text = textarea.value.trim();
  const c = store.conversations.get(store.selectedId);
  if (!text || !c) return;
  textarea.value = '';
  sendTyping(false);
  const pending = { client_msg_id: `m-${crypto.randomUUID()}`, text };
  c.pending.push(pending);
  changed();
  connection.request('send', { conversation_id: c.id, text, client_msg_id: pending.client_msg_id }, { durable: true })
    .then((ok) => {
      c.add({ conversation_id: c.id, seq: ok.seq, from: 'agent', agent_id: store.agent.id, kind: 'text', text, at: ok.at }, false);
    }, showError)
    .finally(() => {
      c.pending = c.pending.filter((p) => p !== pending);
      changed();
    });
}

// ---- Keyboard ------------------------------------------------------------

const shortcuts = [
  ['Alt+J', 'key_next'], ['Alt+K', 'key_previous'], ['Alt+A', 'key_accept'],
  ['Alt+E', 'key_end'], ['Alt+M', 'key_composer'], ['Alt+U', 'key_availability'],
];

function moveSelection(step) {
  const ids = view.listedIds();
  if (ids.length === 0) return;
  const at = ids.indexOf(store.selectedId);
  const next = at < 0 ? (step > 0 ? 0 : ids.length - 1) : (at + step + ids.length) % ids.length;
  select(ids[next]);
  document.querySelector(`[data-conversation-id="${CSS.escape(ids[next])}"]`)?.focus();
}

function onKey(event) {
  if (!event.altKey || event.ctrlKey || event.metaKey || !connection) return;
  const key = event.code;
  const handlers = {
    KeyJ: () => moveSelection(1),
    KeyK: () => moveSelection(-1),
    KeyA: () => { const offer = [...store.offers.values()].find((o) => !o.goneReason); if (offer) actions.accept(offer.offer_id); },
    KeyE: () => endChat(),
    KeyM: () => $('message').focus(),
    KeyU: () => toggleAvailability(),
  };
  if (!handlers[key]) return;
  event.preventDefault();
  handlers[key]();
}

function endChat() {
  const c = store.conversations.get(store.selectedId);
  if (!c || c.state !== 'active') return;
  connection.request('end_chat', { conversation_id: c.id }).catch(showError);
}

function toggleAvailability() {
  if (!store.availability) return;
  connection.request('set_availability', { available: !store.availability.available }).catch(showError);
}

// ---- Wiring --------------------------------------------------------------

function redraw() {
  view.renderConnection();
  view.renderAvailability();
  view.renderOffers(actions);
  view.renderList(actions);
  view.renderConversation();
  view.renderVisitor(actions);
}

function applyLanguage(choice) {
  setLanguage(choice);
  localStorage.setItem(languageKey, choice);
  $('language').value = choice;
  translatePage();
  view.renderKeys(shortcuts);
  view.renderCalendarChoices();
  view.resetConversationView();
  redraw();
}

function wire() {
  $('language').addEventListener('change', (e) => applyLanguage(e.target.value));
  $('sign-in').addEventListener('submit', (e) => {
    e.preventDefault();
    sessionStorage.setItem(tokenKey, $('token').value.trim());
    start($('token').value.trim());
  });
  $('sign-out').addEventListener('click', () => {
    sessionStorage.removeItem(tokenKey);
    location.reload();
  });
  $('availability-toggle').addEventListener('click', toggleAvailability);
  $('tab-active').addEventListener('click', () => showTab('active'));
  $('tab-all').addEventListener('click', () => showTab('all'));
  $('load-more').addEventListener('click', loadAll);
  $('activity-more').addEventListener('click', () => {
    const visitorId = store.conversations.get(store.selectedId)?.visitor.id;
    if (visitorId) loadActivity(visitorId);
  });
  $('earlier').addEventListener('click', () => { view.showEarlier(); changed(); });
  $('back').addEventListener('click', () => { store.selectedId = null; changed(); });
  $('end-chat').addEventListener('click', endChat);
  $('score').addEventListener('change', (e) => {
    const c = store.conversations.get(store.selectedId);
    if (!c || e.target.value === '') return;
    const score = Number(e.target.value);
    connection.request('set_score', { conversation_id: c.id, score }).then(() => { c.entry.score = score; }, showError);
  });
  $('share-calendar').addEventListener('click', () => {
    const c = store.conversations.get(store.selectedId);
    const agentId = $('calendar-agent').value;
    if (!c || !agentId) return;
    connection.request('share_calendar', { conversation_id: c.id, agent_id: agentId }).catch(showError);
  });
  $('composer').addEventListener('submit', (e) => { e.preventDefault(); sendMessage(); });
  $('message').addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); sendMessage(); }
  });
  $('message').addEventListener('input', (e) => sendTyping(e.target.value.length > 0));
  $('message').addEventListener('blur', () => sendTyping(false));
  document.addEventListener('keydown', onKey);
  document.addEventListener('click', askNotificationPermissionOnce, { once: true });
  document.addEventListener('visibilitychange', () => {
    const c = store.conversations.get(store.selectedId);
    if (!document.hidden && c) { c.unread = 0; changed(); }
  });
  setInterval(view.tickCountdowns, 250);
}

onChange(redraw);
wire();
applyLanguage(detectLanguage(localStorage.getItem(languageKey), navigator.languages));
const token = takeToken();
if (token) start(token);
else showSignIn();

// For the browser tests' measurements and for debugging from the console.
window.parleyInbox = { store, language };
