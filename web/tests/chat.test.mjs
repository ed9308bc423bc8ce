// Scenarios 1, 3 and 6 of issue 15: a chat both ways with typing and a
// countdown; two inbox tabs of one agent; the French interface and an XSS
// payload that stays text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { openInbox, openDemo, screenshot, withSalesOfferedToDemoAgent } from './support.mjs';

const fx = withSalesOfferedToDemoAgent();

test('1: visitor asks on /demo/, the inbox shows the offer with a countdown, accepts, both chat and see typing', async () => {
  const inbox = await openInbox(fx.browser, fx.daemon, 'demo-agent');
  const { page: site, widget, context } = await openDemo(fx.browser, fx.daemon);

  await widget.locator('textarea').fill('Hello, I need a quote');
  await widget.locator('form button').click();

  const offer = inbox.locator('.offer');
  await offer.waitFor();
  const first = await offer.locator('.countdown').textContent();
  assert.match(first, /\d+ s left/);
  await inbox.waitForFunction((before) => document.querySelector('.countdown')?.textContent !== before, first);
  await screenshot(inbox, 'inbox-offer');
  await offer.locator('button.accept').click();

  await inbox.locator('#messages .message.from-visitor', { hasText: 'Hello, I need a quote' }).waitFor();
  await widget.locator('li.note', { hasText: 'Demo Agent joined the chat.' }).waitFor();

  // Typing, both ways.
  await inbox.locator('#message').pressSequentially('Hi the');
  await widget.locator('.typing', { hasText: 'Demo Agent is typing' }).waitFor();
  await inbox.locator('#message').fill('Hi there, how can I help?');
  await inbox.locator('#message').press('Enter');
  await widget.locator('li.agent', { hasText: 'Hi there, how can I help?' }).waitFor();

  await widget.locator('textarea').pressSequentially('I wo');
  await inbox.locator('#typing', { hasText: 'is typing' }).waitFor();
  await widget.locator('textarea').fill('I would like 40 seats');
  await widget.locator('textarea').press('Enter');
  await inbox.locator('#messages .message.from-visitor', { hasText: 'I would like 40 seats' }).waitFor();

  // The site's script cannot reach into the widget (closed shadow root), and its CSS does not style it.
  const isolated = await fx.browser.newContext().then(async (plain) => {
    const page = await plain.newPage();
    await page.goto(`${fx.daemon.base}/demo/`);
    await page.locator('parley-chat').waitFor({ state: 'attached' });
    const result = await page.evaluate(() => document.querySelector('parley-chat').shadowRoot === null);
    await plain.close();
    return result;
  });
  assert.equal(isolated, true);
  const launcherColour = await widget.locator('form button').evaluate((b) => getComputedStyle(b).backgroundColor);
  assert.equal(launcherColour, 'rgb(36, 86, 214)');

  await screenshot(inbox, 'inbox-chat');
  await screenshot(site, 'widget-chat');

  // Score, and a colleague's calendar picked from list_agents.
  await inbox.locator('#score').selectOption('3');
  await inbox.locator('#calendar-agent option[value="demo-agent-2"]').waitFor({ state: 'attached' });
  await inbox.locator('#calendar-agent').selectOption('demo-agent-2');
  await inbox.locator('#share-calendar').click();
  const booking = widget.locator('li.agent a', { hasText: 'Book a meeting with Second Agent' });
  await booking.waitFor();
  assert.equal(await booking.getAttribute('href'), 'https://calendar.example.com/demo-agent-2');

  // A reload continues the same conversation: same messages, each once, no second chat.
  await site.reload();
  await widget.locator('.launcher').click();
  await widget.locator('li.agent', { hasText: 'Hi there, how can I help?' }).waitFor();
  assert.equal(await widget.locator('li.visitor', { hasText: 'Hello, I need a quote' }).count(), 1);
  assert.equal(await inbox.locator('.offer').count(), 0);
  // Ending from the inbox: the visitor sees it.
  await inbox.keyboard.press('Alt+E');
  await widget.locator('li.note', { hasText: 'The chat has ended.' }).waitFor();
  await context.close();
  await inbox.context().close();
});

test('3: two inbox tabs of one agent: accepting in one removes the offer from the other', async () => {
  const context = await fx.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const tabA = await openInbox(fx.browser, fx.daemon, 'demo-agent', { context });
  const tabB = await openInbox(fx.browser, fx.daemon, 'demo-agent', { context });
  const { widget, context: siteContext } = await openDemo(fx.browser, fx.daemon);
  await widget.locator('textarea').fill('Two tabs?');
  await widget.locator('textarea').press('Enter');
  await tabA.locator('.offer button.accept').waitFor();
  await tabB.locator('.offer button.accept').waitFor();
  await tabA.keyboard.press('Alt+A');  // the keyboard shortcut accepts the current offer
  await tabA.locator('#messages .message', { hasText: 'Two tabs?' }).waitFor();
  await tabB.locator('.offer .offer-gone', { hasText: 'Accepted in another tab' }).waitFor();
  await tabB.locator('.offer').waitFor({ state: 'detached', timeout: 10_000 });
  // Availability follows in every tab.
  await tabA.locator('#availability-toggle').click();
  await tabB.locator('#availability-toggle[aria-checked="false"]').waitFor();
  assert.match(await tabB.locator('#availability-source').textContent(), /until/);
  await tabB.locator('#availability-toggle').click();
  await tabA.locator('#availability-toggle[aria-checked="true"]').waitFor();
  await tabA.locator('#end-chat').click();
  await widget.locator('li.note', { hasText: 'The chat has ended.' }).waitFor();
  await siteContext.close();
  await context.close();
});

test('6: the French interface; an XSS payload stays text on both sides', async () => {
  const payload = '<img src=x onerror=alert(1)>';
  const inbox = await openInbox(fx.browser, fx.daemon, 'demo-agent', { locale: 'fr-FR' });
  assert.equal(await inbox.locator('#tab-all').textContent(), 'Toutes');
  assert.equal(await inbox.locator('#availability-label').textContent(), 'Disponible');
  let dialogs = 0;
  inbox.on('dialog', (d) => { dialogs += 1; d.dismiss(); });
  const { page: site, widget, context } = await openDemo(fx.browser, fx.daemon, { locale: 'fr-FR' });
  site.on('dialog', (d) => { dialogs += 1; d.dismiss(); });
  assert.equal(await widget.locator('.launcher').count(), 1);
  await widget.locator('textarea').fill(payload);
  await widget.locator('textarea').press('Enter');
  await inbox.locator('.offer button.accept', { hasText: 'Accepter' }).click();
  const shown = inbox.locator('#messages .message.from-visitor p.text');
  await shown.waitFor();
  assert.equal(await shown.textContent(), payload);
  assert.equal(await inbox.locator('#messages img').count(), 0);
  await inbox.locator('#message').fill(payload);
  await inbox.locator('#message').press('Enter');
  const echoed = widget.locator('li.agent');
  await echoed.waitFor();
  assert.equal(await echoed.textContent(), payload);
  assert.equal(await widget.locator('img[src="x"]').count(), 0);
  assert.equal(dialogs, 0);
  await widget.locator('li.note', { hasText: 'a rejoint le chat' }).waitFor();
  await screenshot(inbox, 'inbox-fr');
  // Switching the language in the page, and back.
  await inbox.locator('#language').selectOption('en');
  assert.equal(await inbox.locator('#tab-all').textContent(), 'All');
  await inbox.setViewportSize({ width: 390, height: 844 });
  await screenshot(inbox, 'inbox-phone');
  await site.setViewportSize({ width: 390, height: 844 });
  await screenshot(site, 'widget-phone');
  await inbox.locator('#end-chat').click();
  await context.close();
  await inbox.context().close();
});

test('served: HEAD gives the length without a body; a public_url-less CSP names this host\'s WebSocket origins', async () => {
  const head = await fetch(`${fx.daemon.base}/inbox/app.js`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-type'), 'text/javascript; charset=utf-8');
  assert.ok(Number(head.headers.get('content-length')) > 1000);
  assert.equal((await head.arrayBuffer()).byteLength, 0);
  const page = await fetch(`${fx.daemon.base}/inbox/`);
  assert.match(page.headers.get('content-security-policy'), new RegExp(`connect-src 'self' ws://127\\.0\\.0\\.1:${fx.daemon.port} `));
});
