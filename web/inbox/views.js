// Drawing the store into the page. Text from visitors and agents only ever
// goes through textContent (h() below): it is never parsed as HTML.
import { t, formatTime, formatDateTime } from './i18n.js';
import { store } from './store.js';

export const $ = (id) => document.getElementById(id);

export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'text') node.textContent = value;
    else if (key === 'class') node.className = value;
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) if (child) node.append(child);
  return node;
}

export const dash = (value) => (value === null || value === undefined || value === '' ? '-' : String(value));
export const visitorName = (visitor) => visitor?.name || t('anonymous');

// How many messages the transcript shows at first; earlier ones on demand,
// so that a conversation of 10,000 messages opens as fast as one of 50.
const initialWindow = 200;

export function renderConnection() {
  const status = store.status;
  $('connection').textContent = status === 'online' ? '' : t(status === 'connecting' ? 'connecting' : 'reconnecting');
  $('connection').className = `connection ${status}`;
}

export function renderAvailability() {
  const availability = store.availability;
  $('availability').hidden = !availability;
  if (!availability) return;
  const toggle = $('availability-toggle');
  toggle.setAttribute('aria-checked', String(availability.available));
  toggle.classList.toggle('on', availability.available);
  $('availability-label').textContent = t(availability.available ? 'available' : 'unavailable');
  let source = t('from_schedule');
  if (availability.source === 'override') {
    source = availability.until_at ? t('override_until', { time: formatTime(availability.until_at) }) : t('override_until_back');
  }
  $('availability-source').textContent = source;
}

export function renderOffers(actions) {
  const section = $('offers');
  section.replaceChildren();
  const now = Date.now();
  for (const offer of store.offers.values()) {
    const visitor = offer.visitor ?? {};
    const details = [visitor.job_title, visitor.company, visitor.email].filter(Boolean).join(' · ');
    const card = h('article', { class: `offer${offer.goneReason ? ' gone' : ''}`, 'aria-label': t('incoming_chat'), dataset: { offerId: offer.offer_id } },
      h('div', { class: 'offer-who' },
        h('strong', { text: `${t('incoming_chat')}: ${visitorName(visitor)}` }),
        h('span', { class: 'offer-details', text: details }),
        h('span', { class: 'offer-route', text: t('route', { route: offer.route }) })));
    if (offer.goneReason) {
      card.append(h('p', { class: 'offer-gone', role: 'status', text: t(`offer_gone_${offer.goneReason}`) }));
    } else {
      const seconds = Math.max(0, Math.ceil((offer.expires_at - now) / 1000));
      card.append(
        h('span', { class: 'countdown', role: 'timer', text: t('seconds_left', { n: seconds }) }),
        h('div', { class: 'offer-actions' },
          h('button', { type: 'button', class: 'accept', text: t('accept'), onclick: () => actions.accept(offer.offer_id) }),
          h('button', { type: 'button', class: 'decline', text: t('decline'), onclick: () => actions.decline(offer.offer_id) })));
    }
    section.append(card);
  }
}

// Only the countdowns change every second: no full redraw for them.
export function tickCountdowns() {
  const now = Date.now();
  for (const card of $('offers').querySelectorAll('.offer:not(.gone)')) {
    const offer = store.offers.get(card.dataset.offerId);
    const timer = card.querySelector('.countdown');
    if (offer && timer) timer.textContent = t('seconds_left', { n: Math.max(0, Math.ceil((offer.expires_at - now) / 1000)) });
  }
}

export function listedIds() {
  return store.tab === 'active' ? store.activeIds : store.allList.ids;
}

export function renderList(actions) {
  $('tab-active').setAttribute('aria-selected', String(store.tab === 'active'));
  $('tab-all').setAttribute('aria-selected', String(store.tab === 'all'));
  const list = $('conversation-list');
  const ids = listedIds();
  const items = ids.map((id) => {
    const c = store.conversations.get(id);
    const last = c.lastMessage;
    const preview = last ? (last.kind === 'calendar' ? t('calendar_of', { name: last.calendar.agent_name }) : last.text) : '';
    const selected = id === store.selectedId;
    return h('li', { class: `conversation-item${selected ? ' selected' : ''}` },
      h('button', { type: 'button', 'aria-current': selected ? 'true' : undefined, onclick: () => actions.select(id), dataset: { conversationId: id } },
        h('span', { class: 'item-name', text: visitorName(c.visitor) }),
        c.unread > 0 ? h('span', { class: 'unread', 'aria-label': `${c.unread}`, text: String(c.unread) }) : null,
        h('span', { class: 'item-preview', text: preview }),
        h('span', { class: 'item-meta', text: `${t(`state_${c.state}`)} · ${formatDateTime(last?.at ?? c.entry.started_at)}` })));
  });
  if (items.length === 0) items.push(h('li', { class: 'empty', text: t('no_conversations') }));
  list.replaceChildren(...items);
  $('load-more').hidden = !(store.tab === 'all' && store.allList.cursor);
}

function messageNode(message, agentNames) {
  const mine = message.from === 'agent';
  const author = mine ? (message.agent_id === store.agent?.id ? t('you') : agentNames.get(message.agent_id) ?? message.agent_id) : t('visitor');
  let body;
  if (message.kind === 'calendar') {
    body = h('p', { class: 'calendar', text: t('calendar_of', { name: message.calendar.agent_name }) });
    if (/^https?:\/\//.test(message.calendar.booking_url)) {
      body.append(' ', h('a', { href: message.calendar.booking_url, target: '_blank', rel: 'noopener noreferrer', text: message.calendar.booking_url }));
    }
  } else {
    body = h('p', { class: 'text', text: message.text });
  }
  return h('li', { class: `message ${mine ? 'from-agent' : 'from-visitor'}${message.pending ? ' pending' : ''}`, dataset: { seq: message.seq ?? '' } },
    h('span', { class: 'author', text: author }), body,
    h('time', { text: message.pending ? t('sending') : formatTime(message.at) }));
}

// Keyed by conversation: appends what is new instead of redrawing 1,000 messages.
const drawn = { id: null, count: 0, first: 0, pending: 0, windowStart: 0 };

export function showEarlier() {
  drawn.windowStart = Math.max(0, drawn.windowStart - initialWindow);
  drawn.id = null;
}

export function renderConversation() {
  const c = store.conversations.get(store.selectedId);
  $('no-selection').hidden = Boolean(c);
  $('conversation-view').hidden = !c;
  document.body.classList.toggle('has-selection', Boolean(c));
  if (!c) return;
  $('conversation-title').textContent = visitorName(c.visitor);
  $('conversation-state').textContent = t(`state_${c.state}`);
  const open = c.state === 'active' && c.entry.agent_id === store.agent?.id;
  for (const id of ['end-chat', 'share-calendar', 'calendar-agent', 'message']) $(id).disabled = !open;
  $('composer').querySelector('button').disabled = !open;
  $('score').value = c.entry.score ?? '';
  $('score').disabled = c.entry.agent_id !== store.agent?.id;
  $('typing').textContent = c.visitorTyping ? t('typing', { name: visitorName(c.visitor) }) : '';

  const messages = c.orderedMessages();
  const agentNames = new Map((store.colleagues ?? []).map((a) => [a.id, a.name]));
  const list = $('messages');
  const pendingNodes = c.pending.map((p) => messageNode({ from: 'agent', agent_id: store.agent?.id, kind: 'text', text: p.text, pending: true }, agentNames));
  const appendOnly = drawn.id === c.id && messages.length >= drawn.count && (drawn.count === 0 || messages[drawn.count - 1]?.seq === drawn.last);
  if (!appendOnly) {
    if (drawn.id !== c.id) drawn.windowStart = Math.max(0, messages.length - initialWindow);
    list.replaceChildren(...messages.slice(drawn.windowStart).map((m) => messageNode(m, agentNames)));
  } else {
    for (const node of list.querySelectorAll('.pending')) node.remove();
    list.append(...messages.slice(drawn.count).map((m) => messageNode(m, agentNames)));
  }
  list.append(...pendingNodes);
  const grew = !appendOnly || messages.length > drawn.count || pendingNodes.length !== drawn.pending;
  Object.assign(drawn, { id: c.id, count: messages.length, last: messages.at(-1)?.seq, pending: pendingNodes.length });
  $('earlier').hidden = drawn.windowStart === 0;
  if (c.state === 'ended' && !list.querySelector('.ended-note')) list.append(h('li', { class: 'ended-note', text: t('chat_ended') }));
  if (grew) list.scrollTop = list.scrollHeight;
}

export function resetConversationView() { drawn.id = null; }

export function renderCalendarChoices() {
  const select = $('calendar-agent');
  const selected = select.value;
  const options = (store.colleagues ?? []).map((agent) => h('option', {
    value: agent.id, disabled: !agent.has_calendar,
    text: agent.id === store.agent?.id ? t('my_calendar', { name: agent.name }) : agent.has_calendar ? agent.name : t('no_calendar', { name: agent.name }),
  }));
  select.replaceChildren(...options);
  select.value = selected || store.agent?.id || '';
}

export function renderVisitor(actions) {
  const c = store.conversations.get(store.selectedId);
  $('visitor-pane-content').hidden = !c;
  const visitorId = c?.visitor.id;
  const card = (visitorId && store.visitorCards.get(visitorId)) || c?.visitor || {};
  const fields = ['name', 'job_title', 'email', 'phone', 'crm_status', 'company'];
  $('visitor-card').replaceChildren(...fields.flatMap((field) => [
    h('dt', { text: t(field) }), h('dd', { dataset: { field }, text: dash(card[field]) })]));
  const history = visitorId ? store.activities.get(visitorId) : null;
  const items = (history?.items ?? []).map((activity) => {
    const label = t(`activity_${activity.type}`) === `activity_${activity.type}` ? activity.type : t(`activity_${activity.type}`);
    const row = h('li', { class: 'activity-item' }, h('span', { class: 'activity-type', text: label }), h('time', { text: formatDateTime(activity.at) }));
    if (activity.details?.url) row.append(h('span', { class: 'activity-detail', text: String(activity.details.url) }));
    if (activity.conversation_id) {
      row.append(h('span', { class: 'activity-links' },
        h('button', { type: 'button', class: 'link', text: t('transcript'), 'aria-label': t('open_transcript'), onclick: () => actions.openTranscript(activity.conversation_id, visitorId) }),
        h('button', { type: 'button', class: 'link download', text: t('download_txt'), 'aria-label': t('download_label'), onclick: () => actions.download(activity.conversation_id) })));
    }
    return row;
  });
  if (history?.loaded && items.length === 0) items.push(h('li', { class: 'empty', text: t('no_activity') }));
  $('activity').replaceChildren(...items);
  $('activity-more').hidden = !history?.cursor;
}

export function renderKeys(shortcuts) {
  $('key-list').replaceChildren(...shortcuts.flatMap(([keys, label]) => [h('dt', {}, h('kbd', { text: keys })), h('dd', { text: t(label) })]));
}
