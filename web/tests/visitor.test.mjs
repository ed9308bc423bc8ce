// Scenario 5 of issue 15: the visitor card shows "-" for what nobody
// supplied; the activity history pages; a transcript downloads as .txt with
// the messages in it (the token goes in a header, never in the URL).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { openInbox, visitorClient, withSalesOfferedToDemoAgent } from './support.mjs';

const fx = withSalesOfferedToDemoAgent();

test('5: visitor card dashes, activity history in pages, transcript download', async () => {
  const visitor = await visitorClient(fx.daemon, { name: 'Ada Lovelace', email: 'ada@example.org' });
  const visitorId = visitor.hello.visitor_id;
  const now = Date.now();
  for (let i = 0; i < 45; i++) {
    await fx.daemon.admin('POST', `/visitors/${visitorId}/activities`, { type: 'visited_webpage', at: now - (i + 1) * 60_000, details: { url: `https://example.org/page-${i}` } });
  }
  const inbox = await openInbox(fx.browser, fx.daemon, 'demo-agent');
  const { conversation_id: conversationId } = await visitor.request('request_agent', { route: 'sales', client_key: 'k-5' });
  await visitor.request('send', { conversation_id: conversationId, text: 'Transcript line from Ada', client_msg_id: 'v1' });
  await inbox.locator('.offer button.accept').click();
  await inbox.locator('#messages .message', { hasText: 'Transcript line from Ada' }).waitFor();
  await inbox.locator('#message').fill('Reply from the agent');
  await inbox.locator('#message').press('Enter');
  await inbox.locator('#messages .message.from-agent:not(.pending)').waitFor();

  const field = (name) => inbox.locator(`#visitor-card dd[data-field="${name}"]`).textContent();
  await inbox.locator('#visitor-card dd[data-field="email"]', { hasText: 'ada@example.org' }).waitFor();
  assert.equal(await field('name'), 'Ada Lovelace');
  for (const missing of ['job_title', 'phone', 'crm_status', 'company']) assert.equal(await field(missing), '-', missing);

  // Newest first, 20 a page: the chat's own activities plus 45 page visits.
  await inbox.locator('#activity .activity-item').first().waitFor();
  const firstPage = await inbox.locator('#activity .activity-item').count();
  assert.equal(firstPage, 20);
  assert.match(await inbox.locator('#activity .activity-item').first().textContent(), /Chat requested|Agent joined/);
  await inbox.locator('#activity-more').click();
  await inbox.waitForFunction(() => document.querySelectorAll('#activity .activity-item').length === 40);
  await inbox.locator('#activity-more').click();
  await inbox.waitForFunction(() => document.querySelectorAll('#activity .activity-item').length > 40);
  await inbox.locator('#activity-more').waitFor({ state: 'hidden' });
  assert.ok(await inbox.locator('#activity .activity-item', { hasText: 'https://example.org/page-44' }).count() === 1);

  // Download the transcript of this chat from its activity entry.
  const download = inbox.waitForEvent('download');
  await inbox.locator('#activity button.download').first().click();
  const file = await (await download).path();
  const text = readFileSync(file, 'utf8');
  assert.match(text, /Transcript line from Ada/);
  assert.match(text, /Reply from the agent/);
  await inbox.locator('#end-chat').click();
  visitor.close();
  await inbox.context().close();
});
