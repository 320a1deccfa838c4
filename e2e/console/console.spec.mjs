// The web console's browser test: Debian's Chromium driven by playwright-core (no test runner,
// no browser download) against a real mesh that e2e/console_browser_test.go starts. It does
// what a person does in the console: signs in, creates and runs a campaign, watches its
// numbers arrive, manages keys, and checks that an analyst cannot do what the role does not
// allow; on every page it checks the layout at a desktop and a phone width, and it fails on
// any Content-Security-Policy violation, script error or unexpected dialog.
//
// The run is a list of named steps; a step whose prerequisite failed is skipped. A failed step
// prints its name, the error, the page's address and a screenshot path. Screenshots of the main
// screens go to CM_SCREENSHOTS_DIR only when every step passed (a failing run's pictures are
// left in the artifacts directory instead).
//
// Environment (set by the Go test):
//   CM_CONSOLE_URL        the gateway's origin, e.g. https://localhost:8443 (dev CA: not checked)
//   CM_TENANT             the organization both users belong to
//   CM_ADMIN_EMAIL, CM_ADMIN_PASSWORD       an admin
//   CM_ANALYST_EMAIL, CM_ANALYST_PASSWORD   an analyst
//   CM_CHROMIUM           the browser (default /usr/bin/chromium)
//   CM_SCREENSHOTS_DIR    where the screens' pictures go (default docs/console of the repository)
//   CM_ARTIFACTS_DIR      where failure screenshots go (default a directory under the system's tmp)
// Exit status: 0 when every step passed, 1 otherwise.

import { chromium, request as playwrightRequest } from 'playwright-core';
import { mkdirSync, mkdtempSync, copyFileSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`console.spec: environment variable ${name} is not set (e2e/console_browser_test.go sets it)`);
    process.exit(2);
  }
  return v;
}

const cfg = {
  base: need('CM_CONSOLE_URL').replace(/\/+$/, ''),
  tenant: need('CM_TENANT'),
  admin: { email: need('CM_ADMIN_EMAIL'), password: need('CM_ADMIN_PASSWORD') },
  analyst: { email: need('CM_ANALYST_EMAIL'), password: need('CM_ANALYST_PASSWORD') },
  chromium: process.env.CM_CHROMIUM || '/usr/bin/chromium',
  screenshots: process.env.CM_SCREENSHOTS_DIR || join(here, '..', '..', 'docs', 'console'),
  artifacts: process.env.CM_ARTIFACTS_DIR || join(tmpdir(), 'campaignmesh-console-browser'),
};

// Without the background-networking flags Chromium keeps calling Google's hosts, which this
// machine's closed network refuses (the machines' notes, go.md); --no-sandbox because the
// tests run as root.
const chromiumArgs = ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };
const ACTION_TIMEOUT = 20_000; // one click, one page load (make test runs meshes in parallel)
const DATA_TIMEOUT = 60_000; // events through ingest, the writer and ClickHouse to a page

// A run id keeps names unique when the test runs twice against one database.
const run = Date.now().toString(36);
const XSS = '<img src=x onerror=alert(1)>';

// ---------------------------------------------------------------------------------------------
// Steps.

const steps = [];
function step(name, needs, fn) {
  steps.push({ name, needs, fn });
}

// What the steps share.
const state = {
  admin: null, // the admin's browser context and page
  analyst: null, // the analyst's, in a context of its own
  campaign: null, // { id, name } created through the form
  sent: { a: { impressions: 0, clicks: 0, conversions: 0 }, b: { impressions: 0, clicks: 0, conversions: 0 } },
};

// problems collects what the listeners see on any page (CSP violations, script errors, alert
// dialogs); the step during which one appears fails.
const problems = [];
const confirms = [];

function watch(page) {
  page.setDefaultTimeout(ACTION_TIMEOUT);
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) problems.push(`CSP violation on ${page.url()}: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`script error on ${page.url()}: ${err.message}`));
  page.on('dialog', async (d) => {
    // Destructive forms ask with window.confirm (data-confirm); anything else (an alert from
    // injected markup, above all) is a failure.
    if (d.type() === 'confirm') {
      confirms.push(d.message());
      await d.accept();
      return;
    }
    problems.push(`a ${d.type()} dialog fired on ${page.url()}: ${JSON.stringify(d.message())}`);
    await d.dismiss();
  });
  return page;
}

// ---------------------------------------------------------------------------------------------
// Helpers.

function fail(msg) {
  throw new Error(msg);
}

function expect(cond, msg) {
  if (!cond) fail(msg);
}

async function waitUntil(what, timeout, fn, every = 500) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) {
      fail(`timed out after ${timeout / 1000}s waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, every));
  }
}

// go opens a console address and checks the answer's status.
async function go(page, path, status = 200) {
  const resp = await page.goto(cfg.base + path);
  expect(resp, `no answer for ${path}`);
  expect(resp.status() === status, `${path} answered ${resp.status()}, want ${status}`);
  return resp;
}

// field finds a form control by its label: the exact text first (so "Name" is not "Variant 1
// name"), else a label that starts with the text (a label with a hint after it).
async function field(page, label) {
  const exact = page.getByLabel(label, { exact: true });
  if (await exact.count()) return exact.first();
  const esc = label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const loose = page.getByLabel(new RegExp(`^\\s*${esc}\\b`));
  if (await loose.count()) return loose.first();
  fail(`no form field labelled "${label}" on ${page.url()}`);
}

// setField fills a control whatever its kind: a <select> gets the first option whose value or
// text is one of the candidates; date and time inputs get the format their type wants.
async function setField(page, label, value) {
  const el = await field(page, label);
  const kind = await el.evaluate((e) => (e.tagName === 'SELECT' ? 'select' : (e.type || 'text')));
  if (kind === 'select') {
    const want = [].concat(value).map((s) => String(s).toLowerCase());
    const options = await el.evaluate((e) => [...e.options].map((o) => ({ value: o.value, text: o.textContent.trim() })));
    const hit = options.find((o) => want.includes(o.value.toLowerCase()) || want.includes(o.text.toLowerCase()));
    expect(hit, `"${label}" offers none of ${want.join(', ')} (it offers ${options.map((o) => o.text).join(', ')})`);
    await el.selectOption(hit.value);
    return;
  }
  let v = [].concat(value)[0];
  if (v && typeof v === 'object') { // { date: 'YYYY-MM-DD', time: 'HH:MM' }
    v = kind === 'date' ? v.date : kind === 'time' ? v.time : `${v.date}T${v.time}`;
  }
  await el.fill(String(v));
}

// button is a button or a link with exactly this text (the console uses both for actions).
function button(page, name) {
  return page.getByRole('button', { name, exact: true }).or(page.getByRole('link', { name, exact: true }));
}

// number reads a formatted count ("1,234") off the page.
function number(text) {
  const digits = String(text ?? '').replace(/[^0-9-]/g, '');
  return digits === '' || digits === '-' ? NaN : Number(digits);
}

// layout checks the page at a phone and a desktop width: nothing scrolls the whole page
// sideways (wide tables scroll inside their .table-wrap), and it leaves the page at 1280x800.
async function layout(page, screen) {
  for (const size of [PHONE, DESKTOP]) {
    await page.setViewportSize(size);
    const r = await page.evaluate(() => ({
      scroll: document.documentElement.scrollWidth,
      inner: window.innerWidth,
      unwrapped: [...document.querySelectorAll('table')].filter((t) => !t.closest('.table-wrap')).map((t) => t.id || t.className || 'table'),
    }));
    expect(r.scroll <= r.inner, `${screen} at ${size.width}px: the page scrolls sideways (scrollWidth ${r.scroll} > ${r.inner}); wide content belongs in a .table-wrap`);
    expect(r.unwrapped.length === 0, `${screen}: tables outside a .table-wrap (${r.unwrapped.join(', ')}) make a phone scroll the page`);
  }
}

// shot keeps a picture of a screen at 1280x800; they are copied to CM_SCREENSHOTS_DIR at the
// end of a run in which every step passed.
let staging;
async function shot(page, screen) {
  await page.setViewportSize(DESKTOP);
  await page.screenshot({ path: join(staging, `${screen}.png`) });
}

// ---------------------------------------------------------------------------------------------
// The public API, for setting things up, sending events and reading the numbers the pages must
// show. Signs in as the admin with the same credentials as the browser.

let api;
let apiToken;
async function rest(method, path, body, token) {
  const resp = await api.fetch(cfg.base + path, {
    method,
    headers: { Authorization: `Bearer ${token ?? apiToken}` },
    data: body === undefined ? undefined : body,
  });
  const text = await resp.text();
  let json = {};
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    json = { text };
  }
  return { status: resp.status(), json };
}

async function restOK(method, path, body) {
  let r = await rest(method, path, body);
  if (r.status === 401) { // the token expired during a long run: sign in again once
    await apiSignIn();
    r = await rest(method, path, body);
  }
  expect(r.status === 200, `${method} ${path}: ${r.status} ${JSON.stringify(r.json).slice(0, 300)}`);
  return r.json;
}

async function apiSignIn() {
  const resp = await api.post(cfg.base + '/v1/auth/login', { data: { tenant: cfg.tenant, ...cfg.admin } });
  expect(resp.status() === 200, `API sign-in as the admin: ${resp.status()}`);
  apiToken = (await resp.json()).accessToken;
}

let eventSeq = 0;
function event(type, variant, extra = {}) {
  eventSeq++;
  return {
    eventId: `browser-${run}-${eventSeq}`,
    type,
    userId: `browser-user-${eventSeq % 4}`,
    campaignId: state.campaign.id,
    variant,
    ...extra,
  };
}

// sendCampaignEvents sends one batch for the campaign and adds it to what the pages must show.
async function sendCampaignEvents(plan) {
  const events = [];
  for (const [variant, n] of Object.entries(plan)) {
    for (let i = 0; i < n.impressions; i++) events.push(event('EVENT_TYPE_IMPRESSION', variant));
    for (let i = 0; i < n.clicks; i++) events.push(event('EVENT_TYPE_CLICK', variant));
    for (let i = 0; i < n.conversions; i++) {
      events.push(event('EVENT_TYPE_CONVERSION', variant, { name: 'purchase', value: { amountMicros: '25000000', currency: 'EUR' } }));
    }
  }
  const r = await restOK('POST', '/v1/events:batch', { events });
  expect(r.accepted === events.length, `ingest accepted ${r.accepted} of ${events.length} events: ${JSON.stringify(r.rejected ?? [])}`);
  for (const [variant, n] of Object.entries(plan)) {
    for (const k of ['impressions', 'clicks', 'conversions']) state.sent[variant][k] += n[k];
  }
}

function total(k) {
  return state.sent.a[k] + state.sent.b[k];
}

// summary is the API's per-variant numbers of the campaign.
async function summary() {
  const r = await restOK('GET', `/v1/analytics/summary?campaignIds=${state.campaign.id}&byVariant=true`);
  const rows = {};
  for (const row of r.campaigns ?? []) {
    const m = row.metrics ?? {};
    rows[row.variant ?? ''] = { impressions: Number(m.impressions ?? 0), clicks: Number(m.clicks ?? 0), conversions: Number(m.conversions ?? 0) };
  }
  return rows;
}

async function campaignState(id) {
  return (await restOK('GET', `/v1/campaigns/${id}`)).state;
}

// parseCSV reads RFC 4180 text (quoted fields, doubled quotes).
function parseCSV(text) {
  const rows = [];
  let row = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(cell); cell = ''; } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(cell); rows.push(row); row = []; cell = '';
    } else cell += c;
  }
  if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
  return rows.filter((r) => r.length > 1 || r[0] !== '');
}

// signIn completes the sign-in form by its labels.
async function signIn(page, who) {
  await go(page, '/console/signin');
  await (await field(page, 'Organization')).fill(cfg.tenant);
  await (await field(page, 'Email')).fill(who.email);
  await (await field(page, 'Password')).fill(who.password);
  await button(page, 'Sign in').click();
  await page.waitForURL(`${cfg.base}/console/`);
}

// signInByKeyboard completes the form with the keyboard only: the first field has the focus
// (or is reached with Tab), Tab moves on, Enter submits.
async function signInByKeyboard(page, who) {
  await go(page, '/console/signin');
  for (let i = 0; i < 10 && (await page.evaluate(() => document.activeElement?.name)) !== 'tenant'; i++) {
    await page.keyboard.press('Tab');
  }
  expect(await page.evaluate(() => document.activeElement?.name) === 'tenant', 'Tab never reaches the Organization field');
  await page.keyboard.type(cfg.tenant);
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement?.name) === 'email', 'Tab from Organization does not go to Email');
  await page.keyboard.type(who.email);
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement?.name) === 'password', 'Tab from Email does not go to Password');
  await page.keyboard.type(who.password);
  await page.keyboard.press('Enter');
  await page.waitForURL(`${cfg.base}/console/`);
}

async function headerShows(page, role) {
  const header = page.locator('header').first();
  const text = (await header.innerText()).toLowerCase();
  expect(text.includes(cfg.tenant.toLowerCase()), `the header does not show the organization ${cfg.tenant}: ${JSON.stringify(text)}`);
  expect(new RegExp(`\\b${role}\\b`).test(text), `the header does not show the role ${role}: ${JSON.stringify(text)}`);
}

// navTo follows a link of the main navigation and checks the page it opens answered 200.
async function navTo(page, name, path) {
  const link = page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true });
  expect(await link.count() === 1, `the navigation on ${page.url()} has no link "${name}"`);
  const opened = page.waitForResponse((r) => r.request().isNavigationRequest() && new URL(r.url()).pathname === path);
  await link.click();
  const resp = await opened;
  expect(resp.status() === 200, `${path} (the navigation's "${name}") answered ${resp.status()}, want 200`);
  await page.waitForURL(cfg.base + path);
  await page.getByRole('heading', { level: 1 }).first().waitFor();
}

function ymd(d) {
  return d.toISOString().slice(0, 10);
}

// ---------------------------------------------------------------------------------------------
// The admin.

step('sign in as the admin (form labels); tenant and role in the header', [], async () => {
  const page = state.admin.page;
  await signIn(page, cfg.admin);
  await headerShows(page, 'admin');
  await layout(page, 'overview');
});

step('security headers and the session cookie', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  const resp = await go(page, '/console/');
  const h = resp.headers();
  const csp = h['content-security-policy'] ?? '';
  expect(csp.includes("script-src 'self'") && !csp.includes('unsafe-inline') && csp.includes("frame-ancestors 'none'"), `Content-Security-Policy: ${csp}`);
  expect(h['x-frame-options'] === 'DENY', `X-Frame-Options: ${h['x-frame-options']}`);
  expect(h['x-content-type-options'] === 'nosniff', `X-Content-Type-Options: ${h['x-content-type-options']}`);
  const cookies = await state.admin.context.cookies(cfg.base);
  const session = cookies.find((c) => c.name.startsWith('__Host-'));
  expect(session, `no __Host- session cookie: ${cookies.map((c) => c.name).join(', ')}`);
  expect(session.httpOnly && session.secure && session.sameSite === 'Strict', `session cookie ${session.name}: httpOnly=${session.httpOnly} secure=${session.secure} sameSite=${session.sameSite}`);
  expect(!(await page.evaluate(() => document.cookie)).includes(session.name), 'page scripts can read the session cookie');
});

step('navigation and the account page', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  await go(page, '/console/');
  const nav = page.getByRole('navigation', { name: 'Main' });
  for (const name of ['Overview', 'Campaigns', 'Live events', 'API keys', 'Team', 'Audit log', 'Privacy']) {
    expect(await nav.getByRole('link', { name, exact: true }).count() === 1, `the navigation has no link "${name}"`);
  }
  await page.locator('header a[href="/console/account"]').click();
  await page.waitForURL(`${cfg.base}/console/account`);
  await page.getByRole('heading', { name: 'Your account', level: 1 }).waitFor();
  const facts = (await page.locator('main').innerText()).toLowerCase();
  expect(facts.includes(cfg.tenant.toLowerCase()) && /\badmin\b/.test(facts), `the account page does not show the organization and role: ${JSON.stringify(facts)}`);
  await layout(page, 'account');
});

step('create a campaign through the form', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  await navTo(page, 'Campaigns', '/console/campaigns');
  await button(page, 'New campaign').first().click();
  await page.waitForURL(`${cfg.base}/console/campaigns/new`);
  await layout(page, 'new campaign');
  // Starts the day after tomorrow, so the scheduler does not start it before the test does.
  const start = new Date(Date.now() + 2 * 86400_000);
  const end = new Date(Date.now() + 30 * 86400_000);
  const name = `Spring sale ${run}`;
  await setField(page, 'Name', name);
  await setField(page, 'Channel', ['web', 'CHANNEL_WEB']);
  await setField(page, 'Start', { date: ymd(start), time: '09:00' });
  await setField(page, 'End', { date: ymd(end), time: '18:00' });
  await setField(page, 'Time zone', 'Europe/Berlin');
  await setField(page, 'Total budget', '1000');
  await setField(page, 'Currency', 'EUR');
  await setField(page, 'Pacing', ['even', 'PACING_EVEN']);
  await setField(page, 'Goal event', 'purchase');
  await setField(page, 'Variant 1 name', 'a');
  await setField(page, 'Variant 1 weight', '50');
  await setField(page, 'Variant 2 name', 'b');
  await setField(page, 'Variant 2 weight', '50');
  await button(page, 'Create campaign').click();
  await page.waitForURL(/\/console\/campaigns\/[^/]+$/);
  const id = new URL(page.url()).pathname.split('/').pop();
  expect(id && id !== 'new', `after creating, the page is ${page.url()}`);
  state.campaign = { id, name };
  const h1 = await page.getByRole('heading', { level: 1 }).first().innerText();
  expect(h1.trim() === name, `the campaign page's heading is ${JSON.stringify(h1)}, want ${JSON.stringify(name)}`);
  const c = await restOK('GET', `/v1/campaigns/${id}`);
  expect(c.name === name && c.state === 'STATE_DRAFT', `the API has ${c.name} in ${c.state}`);
  expect(c.schedule?.timeZone === 'Europe/Berlin' && String(c.schedule?.start).startsWith(`${ymd(start)}T09:00`),
    `the API has the schedule ${JSON.stringify(c.schedule)}, want ${ymd(start)}T09:00 in Europe/Berlin`);
  expect(c.budget?.currencyCode === 'EUR' && String(c.budget?.totalMicros) === '1000000000', `the API has the budget ${JSON.stringify(c.budget)}, want 1000 EUR`);
  expect(JSON.stringify((c.variants ?? []).map((v) => [v.name, v.weight])) === JSON.stringify([['a', 50], ['b', 50]]), `the API has the variants ${JSON.stringify(c.variants)}`);
  expect(c.goal?.conversionEvent === 'purchase', `the API has the goal ${JSON.stringify(c.goal)}`);
});

step('schedule and activate the campaign', ['create a campaign through the form'], async () => {
  const page = state.admin.page;
  await go(page, `/console/campaigns/${state.campaign.id}`);
  await button(page, 'Schedule').click();
  await button(page, 'Activate').waitFor();
  expect(await campaignState(state.campaign.id) === 'STATE_SCHEDULED', 'the API does not show the campaign scheduled');
  await button(page, 'Activate').click();
  await button(page, 'Pause').waitFor();
  expect(await campaignState(state.campaign.id) === 'STATE_ACTIVE', 'the API does not show the campaign active');
  expect(await button(page, 'Edit').count() > 0, 'the campaign page has no "Edit" link');
  expect(await page.getByRole('heading', { name: 'History' }).count() > 0, 'the campaign page has no "History" heading');
  expect(await page.locator('table', { hasText: /scheduled/i }).count() > 0, 'the history table does not show the transition to scheduled');
  await layout(page, 'campaign');
  await shot(page, 'campaign');
});

step('live counters change without a reload; the chart', ['schedule and activate the campaign'], async () => {
  const page = state.admin.page;
  await go(page, `/console/campaigns/${state.campaign.id}`);
  await page.getByRole('link', { name: 'Analytics', exact: true }).click();
  await page.waitForURL(`${cfg.base}/console/campaigns/${state.campaign.id}/analytics`);
  const impressions = page.locator('[data-live="impressions"]');
  const clicks = page.locator('[data-live="clicks"]');
  await impressions.waitFor();
  const before = await waitUntil('the live impressions counter to show a number', DATA_TIMEOUT,
    async () => { const n = number(await impressions.innerText()); return Number.isNaN(n) ? false : { n }; });
  // A mark on the window: a reload would lose it.
  await page.evaluate(() => { window.cmBrowserTestMark = 'still here'; });
  await sendCampaignEvents({ a: { impressions: 6, clicks: 2, conversions: 1 }, b: { impressions: 4, clicks: 1, conversions: 0 } });
  await waitUntil(`the live impressions counter to go from ${before.n} to ${before.n + total('impressions')}`, DATA_TIMEOUT,
    async () => number(await impressions.innerText()) >= before.n + total('impressions'));
  await waitUntil('the live clicks counter to count the clicks', DATA_TIMEOUT,
    async () => number(await clicks.innerText()) >= total('clicks'));
  expect(await page.evaluate(() => window.cmBrowserTestMark) === 'still here', 'the page reloaded to show the new numbers');
  // The chart is drawn on the server: open the page again once the API has every event.
  await waitUntil('the API summary to count every event sent', DATA_TIMEOUT, async () => {
    const s = await summary();
    return ['a', 'b'].every((v) => s[v] && s[v].impressions === state.sent[v].impressions && s[v].clicks === state.sent[v].clicks && s[v].conversions === state.sent[v].conversions);
  }, 1000);
  await go(page, `/console/campaigns/${state.campaign.id}/analytics`);
  const chart = page.locator('svg.chart').first();
  await chart.waitFor();
  expect(await chart.getAttribute('role') === 'img' && (await chart.getAttribute('aria-label') ?? '').trim() !== '',
    'the chart has no role="img" and aria-label');
  expect(await chart.locator('path, polyline, rect, line, circle').count() > 0, 'the chart draws nothing');
  await layout(page, 'campaign analytics');
  await shot(page, 'analytics');
});

step('CSV export matches the API', ['live counters change without a reload; the chart'], async () => {
  const page = state.admin.page;
  await go(page, `/console/campaigns/${state.campaign.id}/analytics`);
  const links = page.getByRole('link', { name: 'Download CSV', exact: true });
  const hrefs = await links.evaluateAll((as) => as.map((a) => a.getAttribute('href')));
  const at = hrefs.findIndex((h) => h && h.split('?')[0].endsWith('/analytics/variants.csv'));
  expect(at >= 0, `no "Download CSV" link to …/analytics/variants.csv (links: ${hrefs.join(', ')})`);
  const want = await summary(); // the previous step waited until it counts every event sent
  let got;
  await waitUntil('the CSV to have the API\'s numbers', DATA_TIMEOUT, async () => {
    // What a person does: click, and the browser saves the file.
    const [download] = await Promise.all([page.waitForEvent('download'), links.nth(at).click()]);
    expect(download.suggestedFilename().endsWith('.csv'), `the download is named ${download.suggestedFilename()}`);
    const rows = parseCSV(readFileSync(await download.path(), 'utf8').replace(/^\uFEFF/, ''));
    const head = rows[0].map((h) => h.trim().toLowerCase());
    const col = (re) => head.findIndex((h) => re.test(h));
    const cv = col(/variant/);
    const cols = { impressions: col(/^impressions$/), clicks: col(/^clicks$/), conversions: col(/^conversions$/) };
    expect(cv >= 0 && Object.values(cols).every((i) => i >= 0), `the CSV's header lacks variant, impressions, clicks or conversions: ${rows[0].join(',')}`);
    got = {};
    for (const r of rows.slice(1)) {
      got[r[cv]] = Object.fromEntries(Object.entries(cols).map(([k, i]) => [k, number(r[i])]));
    }
    return ['a', 'b'].every((v) => got[v] && ['impressions', 'clicks', 'conversions'].every((k) => got[v][k] === want[v][k]));
  }, 1000).catch((e) => fail(`${e.message}\n  CSV: ${JSON.stringify(got)}\n  API: ${JSON.stringify(want)}`));
});

step('pause and resume with the buttons', ['schedule and activate the campaign'], async () => {
  const page = state.admin.page;
  await go(page, `/console/campaigns/${state.campaign.id}`);
  await button(page, 'Pause').click();
  await button(page, 'Resume').waitFor();
  expect(await campaignState(state.campaign.id) === 'STATE_PAUSED', 'the API does not show the campaign paused');
  expect(await button(page, 'Pause').count() === 0, 'a paused campaign still offers "Pause"');
  await button(page, 'Resume').click();
  await button(page, 'Pause').waitFor();
  expect(await campaignState(state.campaign.id) === 'STATE_ACTIVE', 'the API does not show the campaign active again');
});

step('live events show accepted and rejected events', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  await go(page, '/console/');
  await navTo(page, 'Live events', '/console/events');
  const table = page.locator('table#live-events');
  await table.waitFor();
  // The stream starts when the page's script connects: send until the rows show up. Each
  // event carries its token as both id and name, whichever the table shows.
  let n = 0;
  await waitUntil('rows of the events sent in the live events table', DATA_TIMEOUT, async () => {
    n++;
    await rest('POST', '/v1/events:batch', { events: [
      { eventId: `browser-live-${run}-${n}`, type: 'EVENT_TYPE_TRACK', name: `browser-live-${run}-${n}`, userId: 'browser-live' },
      // No user id or anonymous id: rejected, with the reason.
      { eventId: `browser-live-bad-${run}-${n}`, type: 'EVENT_TYPE_TRACK', name: `browser-live-bad-${run}-${n}` },
    ] });
    const text = await table.innerText();
    return text.includes(`browser-live-${run}-`) && text.includes(`browser-live-bad-${run}-`);
  }, 2000);
  const rejected = table.locator('tr', { hasText: `browser-live-bad-${run}-` }).first();
  expect(/reject/i.test(await rejected.innerText()), `the rejected event's row does not say it was rejected: ${await rejected.innerText()}`);
  const accepted = table.locator('tr', { hasText: new RegExp(`browser-live-${run}-`) }).first();
  expect(/accept/i.test(await accepted.innerText()), `the accepted event's row does not say it was accepted: ${await accepted.innerText()}`);
  await layout(page, 'live events');
  await shot(page, 'events');
});

step('create a key (secret shown once, Copy) and revoke it', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  await state.admin.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: cfg.base });
  await go(page, '/console/');
  await navTo(page, 'API keys', '/console/keys');
  await layout(page, 'API keys');
  const keyName = `browser key ${run}`;
  // The form is on the page, or behind a "Create key" link.
  if (!(await page.getByLabel('Name', { exact: true }).count())) {
    await button(page, 'Create key').first().click();
  }
  await setField(page, 'Name', keyName);
  await (await field(page, 'events.write')).check();
  const expires = page.getByLabel(/^\s*Expires\b/);
  if (await expires.count()) { // optional: a date in a month, or a choice of periods
    if (await expires.first().evaluate((e) => e.tagName === 'SELECT')) {
      const options = await expires.first().evaluate((e) => [...e.options].map((o) => ({ value: o.value, text: o.textContent })));
      const month = options.find((o) => /\b30\b|month/i.test(o.text));
      if (month) await expires.first().selectOption(month.value);
    } else {
      await setField(page, 'Expires', { date: ymd(new Date(Date.now() + 30 * 86400_000)), time: '12:00' });
    }
  }
  await page.getByRole('button', { name: 'Create key', exact: true }).click();
  const secretEl = page.locator('code#secret');
  await secretEl.waitFor();
  const secret = (await secretEl.innerText()).trim();
  expect(secret.length >= 20, 'the secret shown is too short to be a key');
  const copy = page.getByRole('button', { name: 'Copy', exact: true });
  await copy.click();
  await waitUntil('the Copy button to say it copied', ACTION_TIMEOUT, async () => /Copied/.test(await page.locator('[data-copy="secret"]').innerText()));
  expect(await page.evaluate(() => navigator.clipboard.readText()) === secret, 'the clipboard does not hold the secret after "Copy"');
  // The key works: it may send events.
  const used = await rest('POST', '/v1/events:batch', { events: [{ eventId: `browser-key-${run}`, type: 'EVENT_TYPE_TRACK', name: 'key-check', userId: 'browser-key' }] }, secret);
  expect(used.status === 200, `the new key cannot send events: ${used.status}`);
  // Shown once: a reload no longer has it.
  await page.reload();
  expect(await page.locator('code#secret').count() === 0, 'the secret is shown again after a reload');
  expect(!(await page.content()).includes(secret), 'the secret is still in the page after a reload');
  const keys = await restOK('GET', '/v1/apikeys?pageSize=100');
  const key = (keys.apiKeys ?? []).find((k) => k.name === keyName);
  expect(key && !key.revokeTime, `the API does not list the key ${keyName} unrevoked`);
  const row = page.locator('tr', { hasText: keyName });
  const asked = confirms.length;
  const reloaded = page.waitForEvent('load');
  await row.getByRole('button', { name: 'Revoke', exact: true }).click();
  await reloaded;
  await waitUntil('the API to show the key revoked', ACTION_TIMEOUT, async () => (await restOK('GET', `/v1/apikeys/${key.id}`)).revokeTime);
  expect(confirms.length > asked, 'revoking a key did not ask for confirmation');
  await layout(page, 'API keys');
  await shot(page, 'keys');
});

step('a campaign named like markup is shown as text', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  const c = await restOK('POST', '/v1/campaigns', { name: XSS, channel: 'CHANNEL_WEB' });
  await go(page, '/console/campaigns');
  await (await field(page, 'Search')).fill(XSS);
  await (await field(page, 'Search')).press('Enter');
  await page.waitForURL(/[?&]q=/);
  // Other tests may have made campaigns of the same name: this one is found by its address.
  const link = page.locator(`main a[href="/console/campaigns/${c.id}"]`).first();
  await link.waitFor();
  expect((await link.innerText()).trim() === XSS, `the list's link to the campaign reads ${JSON.stringify(await link.innerText())}, want the name as text`);
  await link.click();
  await page.waitForURL(`${cfg.base}/console/campaigns/${c.id}`);
  const h1 = await page.getByRole('heading', { level: 1 }).first().innerText();
  expect(h1.trim() === XSS, `the heading is ${JSON.stringify(h1)}, want the name as text`);
  for (const path of ['/console/campaigns', `/console/campaigns/${c.id}`]) {
    await go(page, path);
    expect(await page.locator('img[src="x"]').count() === 0, `${path} has an <img src="x"> made from the name`);
  }
});

// The screens without an action of their own: each opens from the navigation, has a heading,
// fits a phone and is pictured.
for (const [name, path, screen] of [['Campaigns', '/console/campaigns', 'campaigns'], ['Team', '/console/team', 'team'],
  ['Audit log', '/console/audit', 'audit'], ['Privacy', '/console/privacy', 'privacy'], ['Usage', '/console/usage', 'usage'],
  ['Overview', '/console/', 'overview']]) {
  step(`screen: ${name}`, ['sign in as the admin (form labels); tenant and role in the header'], async () => {
    const page = state.admin.page;
    await go(page, '/console/account');
    await navTo(page, name, path);
    await layout(page, name);
    await shot(page, screen);
  });
}

step('sign out', ['sign in as the admin (form labels); tenant and role in the header'], async () => {
  const page = state.admin.page;
  await go(page, '/console/');
  await page.getByRole('button', { name: 'Sign out', exact: true }).click();
  await page.waitForURL(/\/console\/signin/);
  await page.goto(`${cfg.base}/console/account`);
  expect(new URL(page.url()).pathname === '/console/signin', `after signing out, /console/account shows ${page.url()}`);
});

// ---------------------------------------------------------------------------------------------
// The analyst, in a fresh context (no cookies of the admin).

step('an analyst signs in with the keyboard', [], async () => {
  const page = state.analyst.page;
  await signInByKeyboard(page, cfg.analyst);
  await headerShows(page, 'analyst');
});

step('an analyst has no "New campaign" and gets 403 forcing its address', ['an analyst signs in with the keyboard'], async () => {
  const page = state.analyst.page;
  await go(page, '/console/campaigns');
  await page.getByRole('heading', { level: 1 }).first().waitFor();
  expect(await button(page, 'New campaign').count() === 0, 'the analyst is offered "New campaign"');
  await layout(page, 'campaigns (analyst)');
  await go(page, '/console/campaigns/new', 403);
  await page.getByRole('heading', { level: 1 }).first().waitFor();
});

step('an analyst is offered no transitions on a campaign', ['an analyst signs in with the keyboard', 'create a campaign through the form'], async () => {
  const page = state.analyst.page;
  await go(page, `/console/campaigns/${state.campaign.id}`);
  await page.getByRole('heading', { level: 1 }).first().waitFor();
  for (const b of ['Schedule', 'Activate', 'Pause', 'Resume', 'Complete', 'Cancel', 'Archive', 'Edit']) {
    expect(await button(page, b).count() === 0, `the analyst is offered "${b}" on a campaign`);
  }
});

step('an analyst has no API keys and gets 403 forcing their address', ['an analyst signs in with the keyboard'], async () => {
  const page = state.analyst.page;
  await go(page, '/console/');
  expect(await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'API keys', exact: true }).count() === 0,
    'the analyst\'s navigation offers API keys');
  await go(page, '/console/keys', 403);
});

step('an analyst has no Usage and gets 403 forcing its address', ['an analyst signs in with the keyboard'], async () => {
  const page = state.analyst.page;
  await go(page, '/console/');
  expect(await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Usage', exact: true }).count() === 0,
    'the analyst\'s navigation offers Usage');
  await go(page, '/console/usage', 403);
});

// ---------------------------------------------------------------------------------------------

async function main() {
  const started = Date.now();
  // The artifacts of an earlier run would be mistaken for this one's.
  mkdirSync(cfg.artifacts, { recursive: true });
  for (const f of readdirSync(cfg.artifacts)) {
    if (/^(failed-.*\.png|screens-.*)$/.test(f)) rmSync(join(cfg.artifacts, f), { recursive: true, force: true });
  }
  staging = mkdtempSync(join(cfg.artifacts, 'screens-'));
  api = await playwrightRequest.newContext({ ignoreHTTPSErrors: true });
  await apiSignIn();
  // launch() gives the browser a new, empty profile directory of its own (removed at close);
  // each user gets a fresh context: no cookies shared.
  const browser = await chromium.launch({ executablePath: cfg.chromium, args: chromiumArgs, headless: true });
  console.log(`browser: Chromium ${browser.version()} (${cfg.chromium}), console ${cfg.base}`);
  const user = async () => {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: DESKTOP, locale: 'en-US', timezoneId: 'Europe/Berlin' });
    return { context, page: watch(await context.newPage()) };
  };
  state.admin = await user();
  state.analyst = await user();

  const results = new Map();
  for (const s of steps) {
    const missing = s.needs.filter((n) => results.get(n) !== 'passed');
    if (missing.length) {
      results.set(s.name, 'skipped');
      console.log(`SKIP  ${s.name} (needs: ${missing.join('; ')})`);
      continue;
    }
    const t0 = Date.now();
    const seen = problems.length;
    let err;
    try {
      await s.fn();
    } catch (e) {
      err = e;
    }
    if (!err && problems.length > seen) err = new Error(problems.slice(seen).join('\n  '));
    const secs = ((Date.now() - t0) / 1000).toFixed(1);
    if (!err) {
      results.set(s.name, 'passed');
      console.log(`PASS  ${s.name} (${secs}s)`);
      continue;
    }
    results.set(s.name, 'failed');
    const page = s.name.startsWith('an analyst') ? state.analyst.page : state.admin.page;
    const file = join(cfg.artifacts, `failed-${s.name.replace(/[^a-z0-9]+/gi, '-').slice(0, 60)}.png`);
    let where = '';
    try {
      where = page.url();
      await page.screenshot({ path: file, fullPage: true });
    } catch (e) {
      where += ` (no screenshot: ${e.message})`;
    }
    const msg = String(err.message).replace(/\x1b\[[0-9;]*m/g, '').trimEnd();
    console.log(`FAIL  ${s.name} (${secs}s)\n  ${msg.split('\n').join('\n  ')}\n  page: ${where}\n  screenshot: ${file}`);
  }
  await browser.close();
  await api.dispose();

  const failed = [...results].filter(([, r]) => r === 'failed').map(([n]) => n);
  const skipped = [...results].filter(([, r]) => r === 'skipped').map(([n]) => n);
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  console.log(`SUMMARY ${results.size - failed.length - skipped.length} passed, ${failed.length} failed, ${skipped.length} skipped in ${secs}s`);
  for (const n of failed) console.log(`  failed: ${n}`);
  for (const n of skipped) console.log(`  skipped: ${n}`);
  if (failed.length || skipped.length) {
    console.log(`screenshots of this run: ${staging} (not copied to ${cfg.screenshots}: a step did not pass)`);
    return 1;
  }
  mkdirSync(cfg.screenshots, { recursive: true });
  for (const f of readdirSync(staging)) copyFileSync(join(staging, f), join(cfg.screenshots, f));
  rmSync(staging, { recursive: true, force: true });
  console.log(`screenshots: ${cfg.screenshots}`);
  return 0;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`console.spec: ${e.stack || e}`);
  process.exit(1);
});
