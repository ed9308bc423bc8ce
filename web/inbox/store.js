// What the inbox knows, in one place. Views read it; app.js changes it and
// calls changed(), which redraws on the next animation frame (one redraw for
// any number of changes in between, e.g. a resume replaying 1,000 messages).

export class Conversation {
  constructor(entry) {
    this.id = entry.id;
    this.messages = new Map();   // seq -> message object; seq is gap-free per conversation
    this.contiguousSeq = 0;      // every message 1..contiguousSeq is held: resume after it
    this.pending = [];           // own messages not yet acknowledged: {client_msg_id, text}
    this.unread = 0;
    this.visitorTyping = false;
    this.update(entry);
  }

  update(entry) {
    this.entry = { ...this.entry, ...entry };
    if (entry.last_message) this.add(entry.last_message, false);
  }

  get visitor() { return this.entry.visitor ?? { id: null }; }
  get state() { return this.entry.state; }
  get lastMessage() { return this.entry.last_message; }
  get lastSeq() { return Math.max(this.contiguousSeq, this.entry.last_message?.seq ?? 0); }

  // Adds a message once, whatever path it came by (accept, resume, live event,
  // send ok): returns whether it was new.
  add(message, countUnread) {
    if (this.messages.has(message.seq)) return false;
    this.messages.set(message.seq, message);
    while (this.messages.has(this.contiguousSeq + 1)) this.contiguousSeq += 1;
    if (!this.entry.last_message || message.seq > this.entry.last_message.seq) this.entry.last_message = message;
    if (countUnread && message.from === 'visitor') this.unread += 1;
    this.sorted = null;
    return true;
  }

  orderedMessages() {
    if (!this.sorted) this.sorted = [...this.messages.values()].sort((a, b) => a.seq - b.seq);
    return this.sorted;
  }
}

export const store = {
  agent: null,
  availability: null,
  status: 'connecting',
  offers: new Map(),          // offer_id -> offer (+ goneReason once withdrawn)
  conversations: new Map(),   // id -> Conversation (active ones and any opened from All)
  activeIds: [],              // the agent's active chats, in the order they came
  tab: 'active',
  allList: { ids: [], cursor: null, loaded: false, loading: false },
  selectedId: null,
  visitorCards: new Map(),    // visitor id -> card
  activities: new Map(),      // visitor id -> {items, cursor, loaded}
  colleagues: null,           // list_agents reply, once asked
  error: null,
};

export function conversation(entry) {
  let existing = store.conversations.get(entry.id);
  if (existing) existing.update(entry);
  else {
    existing = new Conversation(entry);
    store.conversations.set(entry.id, existing);
  }
  return existing;
}

let redraw = null;
let scheduled = false;

export function onChange(callback) { redraw = callback; }

export function changed() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    redraw?.();
  });
}
