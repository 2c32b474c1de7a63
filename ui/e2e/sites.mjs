// End-to-end test of the dashboard on a center of several sites: the site picker follows the
// tree and the token's scope, and choosing a site scopes the alerts and the camera cards.
//
//   node ui/e2e/sites.mjs
//
// Environment (set by tests/dashboard.rs):
//   SIGHTLINE_URL                 http://127.0.0.1:PORT of the aggregator
//   SIGHTLINE_TOKEN_CITY          an operator token of every site
//   SIGHTLINE_TOKEN_EAST          an operator token scoped to the east township
//   SIGHTLINE_SITES_ALL           the sites in tree order, comma-separated (what the city token sees)
//   SIGHTLINE_SITES_EAST          what the east token sees, likewise
//   SIGHTLINE_ALERTS              site:alert-key pairs of the raised alerts, comma-separated
//   SIGHTLINE_CAMERAS             site:camera pairs, comma-separated
//   SIGHTLINE_ARTIFACTS           directory for screenshots (created)
//   SIGHTLINE_CHROMIUM            chromium binary (default /usr/bin/chromium)
//
// Every wait is on a condition with its own timeout; on failure: `sites-failure.png`, exit 1.

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { launchChromium, signIn } from './browser.mjs';

function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') throw new Error(`environment variable ${name} is required`);
  return v;
}
const list = (name) =>
  env(name)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const pairs = (name) => list(name).map((p) => p.split(':', 2));

const started = Date.now();
const log = (msg) => console.log(`[sites e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
function check(cond, message) {
  if (!cond) throw new Error(message);
}

const cfg = {
  url: env('SIGHTLINE_URL').replace(/\/+$/, ''),
  city: env('SIGHTLINE_TOKEN_CITY'),
  east: env('SIGHTLINE_TOKEN_EAST'),
  sitesAll: list('SIGHTLINE_SITES_ALL'),
  sitesEast: list('SIGHTLINE_SITES_EAST'),
  alerts: pairs('SIGHTLINE_ALERTS'),
  cameras: pairs('SIGHTLINE_CAMERAS'),
  artifacts: env('SIGHTLINE_ARTIFACTS'),
  chromium: env('SIGHTLINE_CHROMIUM', '/usr/bin/chromium'),
};
mkdirSync(cfg.artifacts, { recursive: true });

const problems = [];
let page;

/** The picker's site options (without "All sites"), in order. */
async function pickerSites(p) {
  const values = await p.locator('[data-testid="site-picker"] option').evaluateAll((os) => os.map((o) => o.value));
  check(values[0] === '', `the picker's first option is ${JSON.stringify(values[0])}, not "All sites"`);
  return values.slice(1);
}

/** The sites of the alert rows shown (each raised alert once), sorted. */
async function alertSites(p, expected) {
  const rows = p.locator('[data-testid="alert-row"]');
  await p.waitForFunction(
    (n) => document.querySelectorAll('[data-testid="alert-row"]').length === n,
    expected,
    { timeout: 10_000 },
  );
  const sites = await rows.evaluateAll((rs) => rs.map((r) => r.getAttribute('data-site')));
  return sites.sort();
}

/** The sites of the camera cards shown, one per card, sorted. */
async function cameraSites(p, expected) {
  await p.waitForFunction(
    (n) => document.querySelectorAll('[data-testid^="camera-card-"][data-site]').length === n,
    expected,
    { timeout: 10_000 },
  );
  const cards = p.locator('[data-testid^="camera-card-"][data-site]');
  return (await cards.evaluateAll((cs) => cs.map((c) => c.getAttribute('data-site')))).sort();
}

const count = (items, site) => items.filter(([s]) => s === site).length;

async function run() {
  const browser = await launchChromium(cfg.chromium);
  log(`chromium ${browser.version()} launched`);
  const context = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  context.setDefaultTimeout(10_000);
  page = await context.newPage();
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });

  // ---- a city operator: every site, the tree in the picker ----
  await signIn(page, cfg.url, cfg.city, 'operator');
  await page.getByTestId('site-picker').waitFor({ timeout: 10_000 });
  const all = await pickerSites(page);
  check(JSON.stringify(all) === JSON.stringify(cfg.sitesAll), `the picker lists ${all}, not ${cfg.sitesAll}`);
  log(`a. the city operator's picker lists the tree: ${all.join(', ')}`);

  await page.getByTestId('nav-alerts').click();
  const everyAlert = await alertSites(page, cfg.alerts.length);
  check(
    JSON.stringify(everyAlert) === JSON.stringify(cfg.alerts.map(([s]) => s).sort()),
    `with "All sites" the alert rows are of ${everyAlert}`,
  );
  const [one] = cfg.alerts[0];
  await page.getByTestId('site-picker').selectOption(one);
  const scoped = await alertSites(page, count(cfg.alerts, one));
  check(scoped.every((s) => s === one), `with ${one} chosen, alert rows of ${scoped} are shown`);
  log(`b. choosing ${one}: its ${scoped.length} alert(s) only`);

  await page.getByTestId('nav-cameras').click();
  const cams = await cameraSites(page, count(cfg.cameras, one));
  check(cams.every((s) => s === one), `with ${one} chosen, camera cards of ${cams} are shown`);
  await page.screenshot({ path: path.join(cfg.artifacts, 'sites-chosen.png') });
  log(`c. its ${cams.length} camera card(s) only; the choice holds across pages`);

  await page.getByTestId('site-picker').selectOption('');
  const everyCam = await cameraSites(page, cfg.cameras.length);
  log(`d. "All sites" again: ${everyCam.length} camera cards of ${[...new Set(everyCam)].join(', ')}`);
  await context.close();

  // ---- a township operator: its subtree only, and nothing of its sibling's ----
  const eastContext = await browser.newContext({ viewport: { width: 1600, height: 1000 } });
  eastContext.setDefaultTimeout(10_000);
  page = await eastContext.newPage();
  page.on('pageerror', (err) => problems.push(`east: page error: ${err.message}`));
  await signIn(page, cfg.url, cfg.east, 'operator');
  await page.getByTestId('site-picker').waitFor({ timeout: 10_000 });
  const east = await pickerSites(page);
  check(JSON.stringify(east) === JSON.stringify(cfg.sitesEast), `the east picker lists ${east}, not ${cfg.sitesEast}`);
  await page.getByTestId('nav-alerts').click();
  const visible = new Set(cfg.sitesEast);
  const eastAlerts = await alertSites(page, cfg.alerts.filter(([s]) => visible.has(s)).length);
  check(eastAlerts.every((s) => visible.has(s)), `the east operator sees alerts of ${eastAlerts}`);
  await page.getByTestId('nav-cameras').click();
  const eastCams = await cameraSites(page, cfg.cameras.filter(([s]) => visible.has(s)).length);
  check(eastCams.every((s) => visible.has(s)), `the east operator sees cameras of ${eastCams}`);
  await page.screenshot({ path: path.join(cfg.artifacts, 'sites-east.png') });
  log(`e. the east operator's picker: ${east.join(', ')}; ${eastAlerts.length} alert(s), ${eastCams.length} camera(s)`);
  await eastContext.close();
  await browser.close();
  check(problems.length === 0, `the browser reported problems:\n${problems.join('\n')}`);
}

const timer = setTimeout(() => {
  console.error('sites e2e: not done within 90 s');
  process.exit(1);
}, 90_000);
run()
  .then(() => {
    clearTimeout(timer);
    log('OK');
    process.exit(0);
  })
  .catch(async (e) => {
    console.error(`sites e2e FAILED: ${e.stack ?? e}`);
    try {
      if (page) await page.screenshot({ path: path.join(cfg.artifacts, 'sites-failure.png') });
    } catch {}
    process.exit(1);
  });
