// Scenario 4 of issue 15: the network drops. While the visitor's browser is
// offline the agent sends three messages; back online, the widget shows each
// exactly once, in order. The same for the inbox, and a message typed while
// offline is sent once, when back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openInbox, openDemo, visitorClient, agentClient, sleep, withSalesOfferedToDemoAgent } from './support.mjs';

const fx = withSalesOfferedToDemoAgent();

const texts = (locator) => locator.evaluateAll((nodes) => nodes.map((n) => n.textContent));

test('4a: the widget offline while the agent sends three messages: each shown once, in order', async () => {
  const agent = await agentClient(fx.daemon, 'demo-agent');
  const { widget, context } = await openDemo(fx.browser, fx.daemon);
  await widget.locator('textarea').fill('Before the tunnel');
  await widget.locator('textarea').press('Enter');
  const offer = await agent.next('offer');
  const accepted = await agent.request('accept', { offer_id: offer.offer_id });
  const conversationId = accepted.conversation.id;
  await widget.locator('li.note', { hasText: 'joined' }).waitFor();

  await context.setOffline(true);
  await widget.locator('.status', { hasText: 'Reconnecting' }).waitFor();
  for (const text of ['one', 'two', 'three']) await agent.request('send', { conversation_id: conversationId, text, client_msg_id: `a-${text}` });
  await widget.locator('textarea').fill('typed in the tunnel');
  await widget.locator('textarea').press('Enter');
  await sleep(500);
  await context.setOffline(false);

  await widget.locator('li.agent', { hasText: 'three' }).waitFor();
  await widget.locator('li.visitor:not(.pending)', { hasText: 'typed in the tunnel' }).waitFor();
  await sleep(300);
  assert.deepEqual(await texts(widget.locator('li.agent')), ['one', 'two', 'three']);
  assert.deepEqual(await texts(widget.locator('li.visitor')), ['Before the tunnel', 'typed in the tunnel']);
  // The server holds the offline message once.
  const transcript = await agent.request('get_transcript', { conversation_id: conversationId });
  assert.deepEqual(transcript.messages.map((m) => m.text), ['Before the tunnel', 'one', 'two', 'three', 'typed in the tunnel']);
  await agent.request('end_chat', { conversation_id: conversationId });
  agent.close();
  await context.close();
});

test('4b: the inbox offline while the visitor sends three messages: each shown once, in order', async () => {
  const inbox = await openInbox(fx.browser, fx.daemon, 'demo-agent');
  const visitor = await visitorClient(fx.daemon, { name: 'Tunnel Visitor' });
  const { conversation_id: conversationId } = await visitor.request('request_agent', { route: 'sales', client_key: 'k-4b' });
  await inbox.locator('.offer button.accept').click();
  await inbox.locator('#conversation-title', { hasText: 'Tunnel Visitor' }).waitFor();

  await inbox.context().setOffline(true);
  await inbox.locator('#connection', { hasText: 'Reconnecting' }).waitFor();
  for (const text of ['uno', 'dos', 'tres']) await visitor.request('send', { conversation_id: conversationId, text, client_msg_id: `v-${text}` });
  await inbox.locator('#message').fill('sent from offline');
  await inbox.locator('#message').press('Enter');
  await sleep(500);
  await inbox.context().setOffline(false);

  await inbox.locator('#messages .message.from-visitor', { hasText: 'tres' }).waitFor();
  await inbox.locator('#messages .message.from-agent:not(.pending)', { hasText: 'sent from offline' }).waitFor();
  await inbox.locator('#connection', { hasText: 'Reconnecting' }).waitFor({ state: 'detached' }).catch(() => {});
  assert.equal(await inbox.locator('#connection').textContent(), '');
  await sleep(300);
  assert.deepEqual(await texts(inbox.locator('#messages .message p.text')), ['uno', 'dos', 'tres', 'sent from offline']);
  const received = await visitor.next('message', (m) => m.text === 'sent from offline');
  assert.ok(received.seq > 0);
  await sleep(300);
  assert.equal(visitor.events.filter((e) => e.type === 'message' && e.text === 'sent from offline').length, 0, 'sent once');
  visitor.close();
  await inbox.context().close();
});
