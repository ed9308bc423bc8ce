// Parley chat widget: one self-contained script a site adds with
//   <script src="https://chat.example/widget.js" data-tenant="acme" data-route="sales" async></script>
// Optional attributes: data-visitor-token (a JWT the site signs), data-name,
// data-email, data-job-title, data-phone, data-company, data-crm-status,
// data-lang (en|fr). Or, before the script runs: window.ParleySettings =
// {visitorToken, profile}; afterwards: Parley.open(), Parley.close(),
// Parley.setVisitor(visitorToken, profile).
//
// It lives in a closed Shadow DOM: the site's CSS and scripts neither style
// it nor read it. Its styles are a constructed stylesheet, so a site's
// Content-Security-Policy needs no 'unsafe-inline' for it. Text is only ever
// set with textContent. Protocol: shared/protocol.md §3 and §5.
(() => {
  'use strict';
  const script = document.currentScript;
  if (!script || window.Parley) return;
  const attrs = script.dataset;
  const settings = window.ParleySettings || {};
  const tenant = attrs.tenant;
  const route = attrs.route || 'sales';
  const origin = new URL(script.src, location.href);
  const endpoint = `${origin.protocol === 'https:' ? 'wss' : 'ws'}://${origin.host}/v1/visitor`;
  const storageKey = `parley:${tenant}`;

  const texts = {
    en: { open: 'Chat with us', title: 'Chat', close: 'Close chat', start: 'Hi! Ask us anything.', placeholder: 'Type your message…', send: 'Send',
      waiting: 'Finding someone for you…', queued: 'You are number {n} in line.', joined: '{name} joined the chat.', away: 'The agent lost connection; they will be back.',
      back: 'The agent is back.', typing: '{name} is typing…', agent: 'Agent', you: 'You', end: 'End chat', ended: 'The chat has ended.', book: 'Book a meeting with {name}',
      reconnecting: 'Reconnecting…', sending: 'sending…', new_chat: 'Start a new chat' },
    fr: { open: 'Discutons', title: 'Chat', close: 'Fermer le chat', start: 'Bonjour ! Posez-nous vos questions.', placeholder: 'Écrivez votre message…', send: 'Envoyer',
      waiting: 'Nous cherchons quelqu’un pour vous…', queued: 'Vous êtes numéro {n} dans la file.', joined: '{name} a rejoint le chat.', away: 'L’agent a perdu la connexion ; il revient.',
      back: 'L’agent est de retour.', typing: '{name} écrit…', agent: 'Agent', you: 'Vous', end: 'Terminer', ended: 'Le chat est terminé.', book: 'Prendre rendez-vous avec {name}',
      reconnecting: 'Reconnexion…', sending: 'envoi…', new_chat: 'Nouveau chat' },
  };
  const lang = texts[attrs.lang] ? attrs.lang : (navigator.language || 'en').slice(0, 2) === 'fr' ? 'fr' : 'en';
  const t = (key, vars = {}) => texts[lang][key].replace(/\{(\w+)\}/g, (_, k) => vars[k] ?? '');

  // ---- State kept across reloads and tabs (localStorage) ----
  const saved = (() => { try { return JSON.parse(localStorage.getItem(storageKey)) || {}; } catch { return {}; } })();
  const state = {
    resumeToken: saved.resumeToken || null,
    clientKey: saved.clientKey || `k-${crypto.randomUUID()}`,
    visitorToken: attrs.visitorToken || settings.visitorToken || null,
    profile: settings.profile || pick(attrs, ['name', 'email', 'jobTitle', 'phone', 'company', 'crmStatus']),
    conversationId: null,
    conversationState: null,
    messages: new Map(),      // seq -> message; shown in seq order, each once
    contiguousSeq: 0,
    pending: [],              // {id, clientMsgId, text}: sent again after a reconnect until answered
    agent: null,
  };
  const save = () => localStorage.setItem(storageKey, JSON.stringify({ resumeToken: state.resumeToken, clientKey: state.clientKey }));
  save();

  function pick(source, keys) {
    const profile = {};
    for (const key of keys) if (source[key]) profile[key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)] = source[key];
    return Object.keys(profile).length ? profile : null;
  }

  // ---- UI in a closed shadow root ----
  const host = document.createElement('parley-chat');
  const root = host.attachShadow({ mode: 'closed' });
  const sheet = new CSSStyleSheet();
  sheet.replaceSync(`
    :host { all: initial; position: fixed; right: 20px; bottom: 20px; z-index: 2147483000; font: 15px/1.4 system-ui, sans-serif; color: #1d2330; }
    * { box-sizing: border-box; }
    button { font: inherit; cursor: pointer; border-radius: 8px; border: 1px solid #c9d0dc; background: #fff; padding: 6px 12px; }
    button:focus-visible, textarea:focus-visible, a:focus-visible { outline: 3px solid #2456d6; outline-offset: 1px; }
    .launcher { background: #2456d6; color: #fff; border: 0; border-radius: 24px; padding: 12px 20px; font-weight: 600; box-shadow: 0 4px 14px rgba(0,0,0,.2); }
    .panel { display: flex; flex-direction: column; width: min(360px, calc(100vw - 40px)); height: min(520px, calc(100vh - 100px)); background: #fff; border: 1px solid #d9dde5; border-radius: 12px; box-shadow: 0 8px 28px rgba(0,0,0,.22); overflow: hidden; }
    .panel[hidden], [hidden] { display: none; }
    header { display: flex; align-items: center; gap: 8px; padding: 10px 12px; background: #2456d6; color: #fff; }
    header img { width: 28px; height: 28px; border-radius: 50%; }
    header h2 { font-size: 16px; margin: 0; flex: 1; }
    header button { background: transparent; color: #fff; border: 0; font-size: 20px; padding: 0 6px; }
    .status { margin: 0; padding: 6px 12px; font-size: 13px; color: #5b6475; background: #f4f6f9; }
    .status:empty { display: none; }
    ol { list-style: none; margin: 0; padding: 12px; flex: 1; overflow-y: auto; display: flex; flex-direction: column; gap: 6px; }
    li { max-width: 85%; padding: 6px 10px; border-radius: 10px; background: #f0f2f6; white-space: pre-wrap; overflow-wrap: anywhere; align-self: flex-start; }
    li.visitor { align-self: flex-end; background: #2456d6; color: #fff; }
    li.pending { opacity: .6; }
    li.note { align-self: center; background: none; color: #5b6475; font-size: 13px; text-align: center; }
    li a { color: inherit; font-weight: 600; }
    .typing { margin: 0 12px; min-height: 18px; font-size: 13px; color: #5b6475; font-style: italic; }
    form { display: flex; gap: 6px; padding: 8px; border-top: 1px solid #d9dde5; }
    textarea { flex: 1; font: inherit; resize: none; border: 1px solid #c9d0dc; border-radius: 8px; padding: 6px; }
    form button { background: #2456d6; color: #fff; border: 0; }
    .end { margin: 0 8px 8px; font-size: 13px; }
  `);
  root.adoptedStyleSheets = [sheet];

  const h = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === 'text') node.textContent = value;
      else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    node.append(...children);
    return node;
  };
  const launcher = h('button', { class: 'launcher', type: 'button', 'aria-expanded': 'false', text: t('open') });
  const title = h('h2', { text: t('title') });
  const avatar = h('img', { alt: '', hidden: '' });
  const closeButton = h('button', { type: 'button', 'aria-label': t('close'), text: '×' });
  const status = h('p', { class: 'status', role: 'status' });
  const log = h('ol', { role: 'log', 'aria-live': 'polite' });
  const typing = h('p', { class: 'typing', 'aria-live': 'polite' });
  const input = h('textarea', { rows: '2', placeholder: t('placeholder'), 'aria-label': t('placeholder') });
  const form = h('form', {}, input, h('button', { type: 'submit', text: t('send') }));
  const endButton = h('button', { class: 'end', type: 'button', text: t('end'), hidden: '' });
  const panel = h('section', { class: 'panel', role: 'dialog', 'aria-label': t('title'), hidden: '' },
    h('header', {}, avatar, title, closeButton), status, log, typing, form, endButton);
  root.append(launcher, panel);

  function setOpen(open) {
    panel.hidden = !open;
    launcher.hidden = open;
    launcher.setAttribute('aria-expanded', String(open));
    if (open) { input.focus(); render(); }
  }
  launcher.addEventListener('click', () => setOpen(true));
  closeButton.addEventListener('click', () => { setOpen(false); launcher.focus(); });

  // ---- Drawing ----
  let notes = [];           // status lines kept in the log (joined, ended, fallback) keyed by after-seq
  function render() {
    const items = [...state.messages.values()].sort((a, b) => a.seq - b.seq);
    const nodes = [];
    if (!state.conversationId && items.length === 0) nodes.push(h('li', { class: 'note', text: t('start') }));
    let noteIndex = 0;
    for (const message of items) {
      while (noteIndex < notes.length && notes[noteIndex].afterSeq < message.seq) nodes.push(noteNode(notes[noteIndex++]));
      nodes.push(messageNode(message));
    }
    while (noteIndex < notes.length) nodes.push(noteNode(notes[noteIndex++]));
    for (const p of state.pending) nodes.push(h('li', { class: 'visitor pending', text: p.text }));
    log.replaceChildren(...nodes);
    log.scrollTop = log.scrollHeight;
    endButton.hidden = !state.conversationId || state.conversationState === 'ended';
    if (state.agent) {
      title.textContent = state.agent.name;
      if (state.agent.avatar_url && /^https?:/.test(state.agent.avatar_url)) { avatar.src = state.agent.avatar_url; avatar.hidden = false; }
    }
  }
  function messageNode(message) {
    const node = h('li', { class: message.from, 'data-seq': String(message.seq) });
    if (message.kind === 'calendar') node.append(calendarLink(message.calendar));
    else node.textContent = message.text;
    return node;
  }
  function noteNode(note) {
    const node = h('li', { class: 'note', text: note.text });
    if (note.calendar) node.append(h('br'), calendarLink(note.calendar));
    return node;
  }
  function calendarLink(calendar) {
    const link = h('a', { target: '_blank', rel: 'noopener noreferrer', text: t('book', { name: calendar.agent_name }) });
    if (/^https?:\/\//.test(calendar.booking_url)) link.href = calendar.booking_url;
    link.addEventListener('click', () => request('meeting_booked', { conversation_id: state.conversationId, agent_id: calendar.agent_id, start_at: Date.now() }));
    return link;
  }
  function addNote(text, calendar) {
    notes.push({ afterSeq: state.contiguousSeq, text, calendar });
    render();
  }
  function addMessage(message) {
    if (state.messages.has(message.seq)) return;
    state.messages.set(message.seq, message);
    while (state.messages.has(state.contiguousSeq + 1)) state.contiguousSeq += 1;
  }

  // ---- Connection ----
  let socket = null;
  let online = false;
  let backoff = 500;
  let retryTimer = null;
  let nextId = 1;
  const replies = new Map();

  function connect() {
    clearTimeout(retryTimer);
    const current = new WebSocket(endpoint);
    socket = current;
    current.onopen = () => {
      const hello = { type: 'hello', id: 'hello', tenant };
      if (state.visitorToken) hello.visitor_token = state.visitorToken;
      if (state.resumeToken) hello.resume_token = state.resumeToken;
      if (state.profile) hello.profile = state.profile;
      current.send(JSON.stringify(hello));
    };
    current.onmessage = (e) => receive(JSON.parse(e.data));
    current.onclose = () => {
      if (socket !== current) return;
      online = false;
      replies.clear();
      status.textContent = t('reconnecting');
      retryTimer = setTimeout(connect, backoff + Math.random() * backoff * 0.3);
      backoff = Math.min(backoff * 2, 10000);
    };
  }
  addEventListener('offline', () => socket && socket.close());
  addEventListener('online', () => {
    if (online) return;
    if (socket) { socket.onclose = socket.onmessage = null; socket.close(); }
    connect();
  });

  function request(type, fields, onReply) {
    if (!online) return false;
    const id = `w${nextId++}`;
    if (onReply) replies.set(id, onReply);
    socket.send(JSON.stringify({ type, id, ...fields }));
    return true;
  }

  function receive(frame) {
    if (frame.re === 'hello') return onHello(frame);
    if (frame.re && replies.has(frame.re)) {
      const onReply = replies.get(frame.re);
      replies.delete(frame.re);
      return onReply(frame);
    }
    if (frame.conversation_id && !state.conversationId) {
      // This visitor's other tab started a chat: follow it here too.
      state.conversationId = frame.conversation_id;
      state.conversationState = 'routing';
      request('resume', { conversation_id: frame.conversation_id, after_seq: 0 }, () => render());
    }
    const mine = frame.conversation_id && frame.conversation_id === state.conversationId;
    switch (frame.type) {
      case 'message': if (mine) { addMessage(frame); typing.textContent = ''; } break;
      case 'typing': if (mine) typing.textContent = frame.on ? t('typing', { name: state.agent ? state.agent.name : t('agent') }) : ''; break;
      case 'queued': if (mine) status.textContent = t('queued', { n: frame.position }); break;
      case 'agent_joined':
        if (!mine) break;
        state.agent = frame.agent;
        state.conversationState = 'active';
        status.textContent = '';
        addNote(t('joined', { name: frame.agent.name }));
        break;
      case 'agent_away': if (mine) status.textContent = t('away'); break;
      case 'agent_back': if (mine) status.textContent = t('back'); break;
      case 'fallback': if (mine) { status.textContent = ''; addNote(frame.message || '', frame.calendar); } break;
      case 'ended':
        if (!mine) break;
        state.conversationState = 'ended';
        typing.textContent = '';
        addNote(t('ended'));
        break;
      default: return;
    }
    render();
  }

  function onHello(frame) {
    if (frame.type === 'error') {
      // A stale resume token (another tenant's, expired): start afresh as a new visitor.
      if (state.resumeToken) { state.resumeToken = null; save(); socket.close(); }
      return;
    }
    online = true;
    backoff = 500;
    status.textContent = '';
    state.resumeToken = frame.resume_token;
    save();
    const open = frame.conversation;
    if (open && open.id !== state.conversationId) {
      // Another tab or an earlier page view started this conversation: continue it here.
      state.conversationId = open.id;
      state.messages.clear();
      state.contiguousSeq = 0;
      notes = [];
    }
    if (open) {
      state.conversationState = open.state;
      if (open.state === 'routing' || open.state === 'queued') status.textContent = t('waiting');
      request('resume', { conversation_id: open.id, after_seq: state.contiguousSeq }, () => render());
    }
    for (const p of state.pending) sendPending(p);
    render();
  }

  // ---- Visitor actions ----
  function startChat(then) {
    status.textContent = t('waiting');
    request('request_agent', { route, client_key: state.clientKey }, (reply) => {
      if (reply.type !== 'ok') { status.textContent = reply.message; return; }
      if (reply.conversation_id !== state.conversationId) { state.messages.clear(); state.contiguousSeq = 0; notes = []; }
      state.conversationId = reply.conversation_id;
      state.conversationState = reply.state;
      then();
    });
  }
  function sendPending(p) {
    if (!state.conversationId) return startChat(() => sendPending(p));
    request('send', { conversation_id: state.conversationId, text: p.text, client_msg_id: p.clientMsgId }, (reply) => {
      state.pending = state.pending.filter((x) => x !== p);
      if (reply.type === 'ok') addMessage({ seq: reply.seq, from: 'visitor', kind: 'text', text: p.text, at: reply.at });
      render();
    });
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = '';
    sendTypingState(false);
    if (state.conversationState === 'ended') {
      // A new chat after an ended one: a fresh client_key, so the server opens a new conversation.
      state.conversationId = null;
      state.conversationState = null;
      state.clientKey = `k-${crypto.randomUUID()}`;
      save();
    }
    const p = { clientMsgId: `m-${crypto.randomUUID()}`, text };
    state.pending.push(p);
    render();
    sendPending(p);
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });
  let typingSentAt = 0;
  function sendTypingState(on) {
    if (!state.conversationId || state.conversationState === 'ended') return;
    if (on && Date.now() - typingSentAt < 3000) return;
    if (!on && typingSentAt === 0) return;
    typingSentAt = on ? Date.now() : 0;
    request('typing', { conversation_id: state.conversationId, on });
  }
  input.addEventListener('input', () => sendTypingState(input.value.length > 0));
  input.addEventListener('blur', () => sendTypingState(false));
  endButton.addEventListener('click', () => request('end_chat', { conversation_id: state.conversationId }, () => render()));

  window.Parley = {
    open: () => setOpen(true),
    close: () => setOpen(false),
    setVisitor(visitorToken, profile) {
      state.visitorToken = visitorToken || null;
      state.profile = profile || state.profile;
      if (socket) socket.close();
    },
  };

  const mount = () => { document.body.append(host); connect(); };
  if (document.body) mount();
  else addEventListener('DOMContentLoaded', mount);
})();
