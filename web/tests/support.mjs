// Shared by the browser tests: a real parleyd on SQLite in a temp dir on a
// free port, a protocol client for seeding data, and Debian's Chromium
// driven by playwright-core (never a browser download).
import { before, after } from 'node:test';
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, rmSync, existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import WebSocket from 'ws';

export const parleyd = process.env.PARLEYD;
export const artifacts = process.env.PARLEY_ARTIFACTS || join(tmpdir(), 'parley-browser-artifacts');
mkdirSync(artifacts, { recursive: true });

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export async function startDaemon({ extraToml = '' } = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'parley-web-'));
  const secret = () => randomBytes(16).toString('hex');
  const admin = secret();
  const config = join(dir, 'parley.toml');
  writeFileSync(config, `[server]
listen_address = "127.0.0.1"
threads = 2
[storage]
url = "sqlite://${dir}/parley.db"
[limits]
frames_per_second = 100000
frame_burst = 100000
abuse_close_after = 100000
[tenants.demo]
allow_anonymous = true
admin_token = "${admin}"
agent_secret = "${secret()}"
widget_secret = "${secret()}"
${extraToml}`);
  const portFile = join(dir, 'port');
  const child = spawn(parleyd, ['-c', config, '-l', 'warn', 'serve', '--seed-demo', '--port', '0', '--port-file', portFile],
    { stdio: ['ignore', 'inherit', 'inherit'] });
  for (let i = 0; i < 300 && !existsSync(portFile); i++) await sleep(50);
  let port = 0;
  for (let i = 0; i < 100 && !port; i++) {
    port = Number(readFileSync(portFile, 'utf8').trim());
    if (!port) await sleep(50);
  }
  if (!port) throw new Error('parleyd did not start');
  const base = `http://127.0.0.1:${port}`;
  return {
    port,
    base,
    dir,
    agentToken(agent) {
      return execFileSync(parleyd, ['-c', config, 'token', '--tenant', 'demo', '--agent', agent, '--ttl-hours', '2'], { encoding: 'utf8' }).trim();
    },
    async admin(method, path, body) {
      const response = await fetch(`${base}/v1/tenants/demo${path}`, {
        method, headers: { Authorization: `Bearer ${admin}`, 'Content-Type': 'application/json' },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`);
      return response.status === 204 ? null : response.json();
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((resolve) => child.once('exit', resolve));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

// A protocol v1 client (the ws package: Node 18, Debian's, has no WebSocket) for seeding data and playing the other side.
export class Client {
  static async open(port, path, hello) {
    const client = new Client(new WebSocket(`ws://127.0.0.1:${port}${path}`));
    await new Promise((resolve, reject) => { client.ws.onopen = resolve; client.ws.onerror = reject; });
    client.hello = await client.request(hello.type ?? 'hello', hello);
    return client;
  }

  constructor(ws) {
    this.ws = ws;
    this.nextId = 1;
    this.waiting = new Map();
    this.events = [];
    this.listeners = [];
    ws.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.re && this.waiting.has(frame.re)) {
        const { resolve, reject } = this.waiting.get(frame.re);
        this.waiting.delete(frame.re);
        if (frame.type === 'ok') resolve(frame);
        else reject(new Error(`${frame.code}: ${frame.message}`));
        return;
      }
      this.events.push(frame);
      for (const listener of [...this.listeners]) listener(frame);
    };
  }

  request(type, fields = {}) {
    const id = `t${this.nextId++}`;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...fields, type, id }));
    });
  }

  // Resolves with the first event (already received or to come) that matches.
  next(type, predicate = () => true, timeoutMs = 20_000) {
    const found = this.events.findIndex((e) => e.type === type && predicate(e));
    if (found >= 0) return Promise.resolve(this.events.splice(found, 1)[0]);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no ${type} event within ${timeoutMs} ms`)), timeoutMs);
      const listener = (frame) => {
        if (frame.type !== type || !predicate(frame)) return;
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
        this.events.splice(this.events.indexOf(frame), 1);
        resolve(frame);
      };
      this.listeners.push(listener);
    });
  }

  close() { this.ws.close(); }
}

export const agentClient = (daemon, agent) => Client.open(daemon.port, '/v1/agent', { token: daemon.agentToken(agent) });
export const visitorClient = (daemon, profile) => Client.open(daemon.port, '/v1/visitor', { tenant: 'demo', ...(profile ? { profile } : {}) });

export function browserAvailable() {
  return existsSync('/usr/bin/chromium');
}

export async function launchBrowser() {
  const args = process.getuid?.() === 0 ? ['--no-sandbox'] : [];
  return chromium.launch({ executablePath: '/usr/bin/chromium', args });
}

// For one test file: a daemon whose `sales` route offers only to demo-agent (so
// offers go to the inbox or client under test) and a browser, both stopped after.
// Their fields are set when the file's tests run.
export function withSalesOfferedToDemoAgent() {
  const fixture = { daemon: undefined, browser: undefined };
  before(async () => {
    fixture.daemon = await startDaemon();
    await fixture.daemon.admin('PUT', '/routes/sales', { type: 'agent', agent_id: 'demo-agent' });
    fixture.browser = await launchBrowser();
  });
  after(async () => {
    await fixture.browser?.close();
    await fixture.daemon?.stop();
  });
  return fixture;
}

// A page of the inbox signed in as `agent` (token in the fragment, as quickstart prints it).
export async function openInbox(browser, daemon, agent, { locale = 'en-US', viewport = { width: 1280, height: 800 }, context } = {}) {
  const ctx = context ?? await browser.newContext({ locale, viewport });
  const page = await ctx.newPage();
  page.on('pageerror', (error) => console.error(`inbox page error: ${error.message}`));
  await page.goto(`${daemon.base}/inbox/#token=${daemon.agentToken(agent)}`);
  await page.locator('#availability-toggle').waitFor();
  return page;
}

export async function openDemo(browser, daemon, { locale = 'en-US', viewport = { width: 1280, height: 800 } } = {}) {
  const context = await browser.newContext({ locale, viewport });
  // The widget's shadow root is closed (the host page cannot read it). Playwright's
  // locators only pierce open ones, so the tests, and only they, open it.
  await context.addInitScript(() => {
    const attach = Element.prototype.attachShadow;
    Element.prototype.attachShadow = function attachOpen(init) { return attach.call(this, { ...init, mode: 'open' }); };
  });
  const page = await context.newPage();
  page.on('pageerror', (error) => console.error(`demo page error: ${error.message}`));
  await page.goto(`${daemon.base}/demo/`);
  const widget = page.locator('parley-chat');
  await widget.locator('.launcher').click();
  return { page, context, widget };
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(artifacts, `${name}.png`) });
}
