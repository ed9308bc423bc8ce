// Scenario 2 of issue 15: nobody accepts. The countdown runs out, the second
// agent's inbox gets the offer; when it runs out there too, the visitor gets
// the fallback message with the calendar link, and following it reports
// meeting_booked.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, launchBrowser, openInbox, openDemo, screenshot, agentClient, sleep } from './support.mjs';

let daemon;
let browser;

before(async () => {
  daemon = await startDaemon();
  await daemon.admin('PUT', '/routes/sales', {
    type: 'round_robin', offer_timeout_s: 4, max_attempts: 2,
    fallback_message: 'Nobody is free right now; book a call instead.', fallback_calendar: true,
  });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await daemon?.stop();
});

test('2: an offer nobody accepts moves to the second agent, then the visitor gets the fallback and calendar', async () => {
  const first = await openInbox(browser, daemon, 'demo-agent');
  const second = await openInbox(browser, daemon, 'demo-agent-2');
  const { page: site, widget, context } = await openDemo(browser, daemon);
  await widget.locator('textarea').fill('Anyone there?');
  await widget.locator('textarea').press('Enter');

  // Round robin picks either agent first; the other one gets the offer after the timeout.
  const offered = await Promise.race([
    first.locator('.offer .countdown').waitFor().then(() => [first, second]),
    second.locator('.offer .countdown').waitFor().then(() => [second, first]),
  ]);
  const [firstOffered, secondOffered] = offered;
  await firstOffered.locator('.offer .offer-gone', { hasText: 'The offer expired.' }).waitFor({ timeout: 10_000 });
  await secondOffered.locator('.offer .countdown').waitFor({ timeout: 10_000 });
  await secondOffered.locator('.offer .offer-gone', { hasText: 'The offer expired.' }).waitFor({ timeout: 10_000 });

  const fallback = widget.locator('li.note', { hasText: 'Nobody is free right now' });
  await fallback.waitFor({ timeout: 10_000 });
  const link = fallback.locator('a');
  assert.match(await link.textContent(), /Book a meeting with (Demo Agent|Second Agent)/);
  assert.match(await link.getAttribute('href'), /^https:\/\/calendar\.example\.com\/demo-agent/);
  await screenshot(site, 'widget-fallback');

  // Following the link reports meeting_booked: it shows in the visitor's activity history.
  const popup = context.waitForEvent('page');
  await link.click();
  await (await popup).close();
  const agent = await agentClient(daemon, 'demo-agent');
  const [missed] = (await agent.request('list_conversations', { filter: 'all' })).conversations;
  let types = [];
  for (let i = 0; i < 50 && !types.includes('meeting_booked'); i++) {
    await sleep(100);
    types = (await agent.request('get_activity', { visitor_id: missed.visitor.id })).activities.map((a) => a.type);
  }
  assert.ok(types.includes('meeting_booked'), types.join(', '));
  agent.close();
  // The widget keeps its resume token, so a reload continues as the same visitor.
  assert.ok(await site.evaluate(() => JSON.parse(localStorage.getItem('parley:demo')).resumeToken));
  await context.close();
  await first.context().close();
  await second.context().close();
});
