// End-to-end test of the operator dashboard: Debian's chromium (headless) driven by
// playwright-core against a running aggregator, with MQTT messages published to its broker.
//
//   node ui/e2e/dashboard.mjs
//
// Environment (set by tests/dashboard.rs, or by hand):
//   SIGHTLINE_URL                 http://127.0.0.1:PORT of the aggregator's HTTP API (serves the UI at /)
//   SIGHTLINE_MQTT_HOST/_PORT     its MQTT broker (SIGHTLINE_MQTT_USERNAME/_PASSWORD when it wants a login)
//   SIGHTLINE_SITE                the site id
//   SIGHTLINE_CAMERAS             comma-separated camera ids with positions; the first is alerted on and taken offline
//   SIGHTLINE_TOKEN_OPERATOR/_INTEGRATOR/_ADMIN   API tokens of each role
//   SIGHTLINE_PHOTO               lin-manuel-miranda.png
//   SIGHTLINE_MIRANDA_TRAJECTORY  the trajectory id the photo search must show
//   SIGHTLINE_SEARCH_PURPOSE      purpose typed for the search
//   SIGHTLINE_AUDIT_PURPOSE       purpose typed by the admin to read the audit log (default "quarterly audit review")
//   SIGHTLINE_ALERT_ID            event id (UUID) of the alert published
//   SIGHTLINE_CROWD_CAMERA        a streaming camera (not the first) with stored crowd measurements
//   SIGHTLINE_CROWD_ZONE          one of its zones
//   SIGHTLINE_CROWD_ZONES         how many zones its latest measurement has
//   SIGHTLINE_CROWD_TOTAL         its latest total, rounded
//   SIGHTLINE_CROWD_GRID          its latest density grid's shape, COLSxROWS
//   SIGHTLINE_CROWD_MEASUREMENTS  how many measurements it has over the last ~10 minutes
//   SIGHTLINE_ARTIFACTS           directory for screenshots (created)
//   SIGHTLINE_CHROMIUM            chromium binary (default /usr/bin/chromium)
//   SIGHTLINE_AGENT               agent id in the published camera status (default e2e-agent)
//
// Each step logs a line. On failure: `failure.png` in the artifacts directory, the error, exit 1.
// No fixed sleeps: every wait is on a condition with its own timeout; the whole run is bounded.

import { randomUUID } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import mqtt from 'mqtt';
import { launchChromium, signIn as signInAt } from './browser.mjs';

const TOTAL_TIMEOUT_MS = 120_000;
const ALERT_LATENCY_LIMIT_MS = 2_000;
const OFFLINE_LIMIT_MS = 5_000;

function env(name, fallback) {
  const v = process.env[name] ?? fallback;
  if (v === undefined || v === '') throw new Error(`environment variable ${name} is required`);
  return v;
}

const started = Date.now();
function log(msg) {
  console.log(`[dashboard e2e +${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

const cfg = {
  url: env('SIGHTLINE_URL').replace(/\/+$/, ''),
  mqttHost: env('SIGHTLINE_MQTT_HOST', '127.0.0.1'),
  mqttPort: Number(env('SIGHTLINE_MQTT_PORT')),
  mqttUser: process.env.SIGHTLINE_MQTT_USERNAME,
  mqttPassword: process.env.SIGHTLINE_MQTT_PASSWORD,
  site: env('SIGHTLINE_SITE'),
  cameras: env('SIGHTLINE_CAMERAS')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean),
  tokens: {
    operator: env('SIGHTLINE_TOKEN_OPERATOR'),
    integrator: env('SIGHTLINE_TOKEN_INTEGRATOR'),
    admin: env('SIGHTLINE_TOKEN_ADMIN'),
  },
  photo: env('SIGHTLINE_PHOTO'),
  miranda: env('SIGHTLINE_MIRANDA_TRAJECTORY'),
  purpose: env('SIGHTLINE_SEARCH_PURPOSE'),
  auditPurpose: env('SIGHTLINE_AUDIT_PURPOSE', 'quarterly audit review'),
  alertId: env('SIGHTLINE_ALERT_ID'),
  crowd: {
    camera: env('SIGHTLINE_CROWD_CAMERA'),
    zone: env('SIGHTLINE_CROWD_ZONE'),
    zones: Number(env('SIGHTLINE_CROWD_ZONES')),
    total: Number(env('SIGHTLINE_CROWD_TOTAL')),
    grid: env('SIGHTLINE_CROWD_GRID').split('x').map(Number),
    measurements: Number(env('SIGHTLINE_CROWD_MEASUREMENTS')),
  },
  artifacts: env('SIGHTLINE_ARTIFACTS'),
  chromium: env('SIGHTLINE_CHROMIUM', '/usr/bin/chromium'),
  agent: env('SIGHTLINE_AGENT', 'e2e-agent'),
};
if (cfg.cameras.length === 0) throw new Error('SIGHTLINE_CAMERAS is empty');
mkdirSync(cfg.artifacts, { recursive: true });
const camera = cfg.cameras[0];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** RFC 3339 with milliseconds, UTC (the contract's format). */
const nowTs = () => new Date().toISOString();

// ---- problems seen in the browser -------------------------------------------------------------

const problems = [];
/** Console errors expected while a step runs on purpose (e.g. the 401 of a bad token). */
let expected = [];

function watch(page, who) {
  page.on('console', (msg) => {
    const type = msg.type();
    if (type !== 'error' && type !== 'warning') return;
    const text = msg.text();
    const loc = msg.location();
    const where = loc?.url ? ` (${loc.url}${loc.lineNumber !== undefined ? ':' + loc.lineNumber : ''})` : '';
    const excuse = expected.find((e) => e.type === type && e.test(text, loc?.url ?? ''));
    if (excuse) {
      log(`  expected console ${type} (${excuse.why}): ${text}`);
      return;
    }
    problems.push(`${who}: console ${type}: ${text}${where}`);
  });
  page.on('pageerror', (err) => problems.push(`${who}: page error: ${err.message}`));
  page.on('crash', () => problems.push(`${who}: page crashed`));
}

// ---- helpers -------------------------------------------------------------------------------------

let mqttClient;
let browser;
let currentPage;

function connectMqtt() {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect({
      host: cfg.mqttHost,
      port: cfg.mqttPort,
      protocol: 'mqtt',
      protocolVersion: 4,
      clientId: `dashboard-e2e-${randomUUID().slice(0, 8)}`,
      clean: true,
      username: cfg.mqttUser,
      password: cfg.mqttPassword,
      connectTimeout: 10_000,
      reconnectPeriod: 0,
    });
    const timer = setTimeout(() => {
      client.end(true);
      reject(new Error(`MQTT: no CONNACK from ${cfg.mqttHost}:${cfg.mqttPort} within 10 s`));
    }, 10_000);
    client.once('connect', () => {
      clearTimeout(timer);
      resolve(client);
    });
    client.once('error', (e) => {
      clearTimeout(timer);
      reject(new Error(`MQTT: ${e.message}`));
    });
  });
}

function publish(topic, payload) {
  return new Promise((resolve, reject) => {
    mqttClient.publish(topic, JSON.stringify(payload), { qos: 1 }, (err) => (err ? reject(err) : resolve()));
  });
}

async function newPage(viewport, who) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  context.setDefaultTimeout(10_000);
  const page = await context.newPage();
  watch(page, who);
  currentPage = page;
  return { context, page };
}

const signIn = (page, token, role) => signInAt(page, cfg.url, token, role);

async function waitLive(page) {
  await page.locator('[data-testid="live-status"][data-state="live"]').waitFor({ timeout: 10_000 });
}

async function shot(page, name, fullPage = false) {
  const file = path.join(cfg.artifacts, name);
  await page.screenshot({ path: file, fullPage });
  log(`  screenshot ${file}`);
}

function check(cond, message) {
  if (!cond) throw new Error(message);
}

/** A camera card or overview tile shows the crowd camera's latest total, its zones and its heatmap. */
async function checkCrowd(card, what) {
  const c = cfg.crowd;
  const total = card.getByTestId('camera-crowd-total');
  await total.filter({ hasText: new RegExp(`\\b${c.total} people`) }).waitFor({ timeout: 5_000 });
  const zones = await card.locator('[data-testid="camera-zones"] li').count();
  check(zones === c.zones, `the ${what} of ${c.camera} lists ${zones} zone(s), not ${c.zones}`);
  check(
    ((await card.getByTestId('camera-zones').textContent()) ?? '').includes(c.zone),
    `the ${what} of ${c.camera} does not name zone ${c.zone}`,
  );
  const heat = card.getByTestId(`heatmap-${c.camera}`);
  await heat.waitFor({ timeout: 3_000 });
  const [cols, rows] = c.grid;
  const shape = [Number(await heat.getAttribute('data-cols')), Number(await heat.getAttribute('data-rows'))];
  const cells = await heat.locator('rect.cell').count();
  check(shape[0] === cols && shape[1] === rows, `the ${what}'s heatmap is ${shape.join('x')}, not ${cols}x${rows}`);
  check(cells === cols * rows, `the ${what}'s heatmap draws ${cells} cells, not ${cols * rows}`);
  const hb = await heat.boundingBox();
  check(hb && hb.width >= 100 && hb.height >= 50, `the ${what}'s heatmap is too small to read: ${JSON.stringify(hb)}`);
  log(`crowd: the ${what} of ${c.camera} shows ${c.total} people, ${zones} zones and a ${cols}×${rows} heatmap`);
}

// ---- the run -------------------------------------------------------------------------------------

async function run() {
  log(`aggregator ${cfg.url}, broker ${cfg.mqttHost}:${cfg.mqttPort}, site ${cfg.site}, cameras ${cfg.cameras.join(', ')}`);
  mqttClient = await connectMqtt();
  log('MQTT connected');

  browser = await launchChromium(cfg.chromium);
  log(`chromium ${browser.version()} launched`);

  // ---- b. operator signs in (wall screen) ----
  const op = await newPage({ width: 1920, height: 1080 }, 'operator');
  const personal = [];
  op.page.on('request', (req) => {
    const u = new URL(req.url());
    if (/^\/api\/v1\/(trajectories|search|sightings)/.test(u.pathname)) personal.push(`${req.method()} ${u.pathname}`);
  });

  // a bad token first: a clear error, no sign-in
  await op.page.goto(cfg.url + '/', { waitUntil: 'domcontentloaded', timeout: 15_000 });
  expected = [
    {
      type: 'error',
      why: 'the refused sign-in with a bad token',
      test: (text, url) => /401/.test(text) && (url.includes('/api/v1/me') || !url),
    },
  ];
  await op.page.getByLabel('API token').fill('slt_not-a-real-token');
  await op.page.getByRole('button', { name: 'Sign in' }).click();
  const err = op.page.getByTestId('sign-in-error');
  await err.waitFor({ timeout: 5_000 });
  const errText = (await err.textContent()) ?? '';
  check(/unknown or revoked/i.test(errText), `bad-token error is unclear: ${errText}`);
  log(`b. a bad token is refused: "${errText.trim()}"`);

  // the sites the token sees (one here): asked once signed in
  const sitesAnswered = op.page
    .waitForResponse((r) => new URL(r.url()).pathname === '/api/v1/sites', { timeout: 15_000 })
    .catch((e) => e);
  const operatorName = await signIn(op.page, cfg.tokens.operator, 'operator');
  expected = []; // the 401's console line has arrived by now
  await waitLive(op.page);
  await op.page.getByTestId('overview-page').waitFor();
  check(
    (await op.page.getByTestId('nav-overview').getAttribute('aria-current')) === 'page',
    'the overview is not the page after sign-in',
  );
  log(`b. operator "${operatorName}" signed in on the overview; header shows role operator; live stream open`);
  await shot(op.page, 'operator-signed-in.png');
  await op.page.getByTestId('nav-alerts').click();
  await op.page.getByTestId('alerts-page').waitFor();

  // a second screen of the same centre, to see acknowledgements propagate
  const wall2 = await newPage({ width: 1366, height: 768 }, 'operator-2');
  currentPage = op.page;
  await signIn(wall2.page, cfg.tokens.operator, 'operator');
  await waitLive(wall2.page);
  await wall2.page.getByTestId('overview-page').waitFor();

  // ---- c. an alert published on MQTT appears live ----
  const eventId = UUID_RE.test(cfg.alertId) ? cfg.alertId.toLowerCase() : randomUUID();
  const stable = UUID_RE.test(cfg.alertId) ? `${camera}/zone_intrusion/${cfg.alertId}` : cfg.alertId;
  const alert = {
    schema: 'sightline.alert/1',
    id: eventId,
    site: cfg.site,
    camera,
    ts: nowTs(),
    alert: stable,
    state: 'raised',
    kind: 'zone_intrusion',
    severity: 'critical',
    zone: 'platform-edge',
    message: 'person inside the restricted zone (e2e)',
    details: { count: 1 },
  };
  const rowSel = `[data-testid="alert-row"][data-alert-key="${stable.replace(/"/g, '\\"')}"]`;
  const t0 = Date.now();
  await publish(`sightline/v1/${cfg.site}/${camera}/alert`, alert);
  await op.page.locator(rowSel).waitFor({ state: 'visible', timeout: ALERT_LATENCY_LIMIT_MS + 3_000 });
  const latency = Date.now() - t0;
  log(`c. alert ${stable} appeared without reload ${latency} ms after publishing (limit ${ALERT_LATENCY_LIMIT_MS} ms)`);
  check(latency <= ALERT_LATENCY_LIMIT_MS, `the alert took ${latency} ms to appear (limit ${ALERT_LATENCY_LIMIT_MS} ms)`);
  const row = op.page.locator(rowSel);
  check((await row.getAttribute('data-severity')) === 'critical', 'the alert row is not critical');
  check((await row.getAttribute('data-state')) === 'raised', 'the alert row is not raised');
  check((await row.getAttribute('data-site')) === cfg.site, `the alert row's data-site is not ${cfg.site}`);
  const rowText = (await row.textContent()) ?? '';
  for (const want of [camera, 'platform-edge', 'zone intrusion', 'critical', 'raised']) {
    check(rowText.includes(want), `the alert row lacks "${want}": ${rowText}`);
  }
  await op.page.locator(`[data-testid="critical-banner"][data-alert-key="${stable}"]`).waitFor({ timeout: 2_000 });
  // the other screen (a laptop, on the overview) lists it among the active alerts, critical
  const tileSel = `[data-testid="overview-alert"][data-alert-key="${stable.replace(/"/g, '\\"')}"]`;
  const ovAlert = wall2.page.locator(tileSel);
  await ovAlert.waitFor({ timeout: 3_000 });
  check((await ovAlert.getAttribute('data-severity')) === 'critical', 'the overview alert is not critical');
  check(
    (await wall2.page.getByTestId('overview-alert').first().getAttribute('data-alert-key')) === stable,
    'the newest alert is not first on the overview',
  );
  const ovText = (await ovAlert.textContent()) ?? '';
  for (const want of [camera, 'platform-edge', 'zone intrusion', 'critical']) {
    check(ovText.includes(want), `the overview alert lacks "${want}": ${ovText}`);
  }
  await ovAlert.getByTestId('alert-age').filter({ hasText: /\d+ s ago/ }).waitFor({ timeout: 3_000 });
  log('c. the laptop overview lists it first among the active alerts, critical, with its age');
  await wall2.page.getByTestId(`camera-tile-${cfg.crowd.camera}`).getByTestId('camera-crowd-total').waitFor({ timeout: 5_000 });
  await shot(wall2.page, 'overview-laptop.png', true);
  const age = op.page.locator(`${rowSel} [data-testid="alert-age"]`);
  await age.filter({ hasText: /\d+ s ago/ }).waitFor({ timeout: 3_000 });
  log('c. the critical cue (flashing banner) is shown and the row shows its age');
  await shot(op.page, 'alert-critical.png');

  await row.getByTestId('alert-ack').click();
  const ackInfo = row.getByTestId('alert-ack-info');
  await ackInfo.filter({ hasText: `acknowledged by ${operatorName}` }).waitFor({ timeout: 5_000 });
  log(`c. acknowledged: "${((await ackInfo.textContent()) ?? '').trim()}"`);
  await op.page.getByTestId('critical-banner').waitFor({ state: 'hidden', timeout: 3_000 });
  await wall2.page
    .locator(`${tileSel} [data-testid="alert-ack-info"]`)
    .filter({ hasText: `acknowledged by ${operatorName}` })
    .waitFor({ timeout: 3_000 });
  log('c. the other screen (overview) shows the acknowledgement live (alert_ack)');
  await shot(op.page, 'alert-live.png');

  await wall2.context.close();

  // ---- d. a camera goes offline ----
  await op.page.getByTestId('nav-cameras').click();
  const card = op.page.getByTestId(`camera-card-${camera}`);
  await card.waitFor({ timeout: 5_000 });
  for (const c of cfg.cameras) await op.page.getByTestId(`camera-card-${c}`).waitFor({ timeout: 5_000 });
  const before = await card.getAttribute('data-status');
  log(`d. camera grid shows ${cfg.cameras.length} cameras; ${camera} is ${before}`);
  // one site: no site picker (long after /sites answered), the site's id in the header, no site tags
  const sites = await sitesAnswered;
  check(!(sites instanceof Error), `GET /api/v1/sites was not asked or not answered: ${sites.message}`);
  check(sites.ok(), `GET /api/v1/sites answered ${sites.status()}`);
  const siteCount = ((await sites.json()).items ?? []).length;
  check(siteCount === 1, `GET /api/v1/sites lists ${siteCount} sites, not 1`);
  check((await op.page.getByTestId('site-picker').count()) === 0, 'the site picker is shown with one site');
  check((await op.page.getByTestId('header-site').textContent())?.trim() === cfg.site, `the header does not show the site ${cfg.site}`);
  check((await op.page.locator('.site-tag').count()) === 0, 'cameras show a site tag with one site');
  check((await card.getAttribute('data-site')) === cfg.site, `the camera card's data-site is not ${cfg.site}`);
  log(`d. one site: no site picker, the header shows ${cfg.site}, cards carry data-site`);
  if (before === 'offline') {
    // (a rerun against the same aggregator): bring it back first, or the change proves nothing
    await publish(`sightline/v1/${cfg.site}/${camera}/status`, {
      schema: 'sightline.camera_status/1',
      site: cfg.site,
      camera,
      ts: nowTs(),
      agent: cfg.agent,
      state: 'streaming',
    });
    await op.page.locator(`[data-testid="camera-card-${camera}"][data-status="streaming"]`).waitFor({ timeout: OFFLINE_LIMIT_MS });
    log(`d. ${camera} was offline already: published streaming first`);
  }
  const t1 = Date.now();
  await publish(`sightline/v1/${cfg.site}/${camera}/status`, {
    schema: 'sightline.camera_status/1',
    site: cfg.site,
    camera,
    ts: nowTs(),
    agent: cfg.agent,
    state: 'offline',
    detail: 'e2e: RTSP connection refused',
  });
  await op.page
    .locator(`[data-testid="camera-card-${camera}"][data-status="offline"]`)
    .waitFor({ timeout: OFFLINE_LIMIT_MS });
  const offlineMs = Date.now() - t1;
  const pill = ((await card.getByTestId('camera-status').textContent()) ?? '').trim();
  check(pill === 'offline', `the card's status reads "${pill}"`);
  log(`d. ${camera}'s card shows offline ${offlineMs} ms after the status was published`);
  await shot(op.page, 'camera-offline.png');
  await op.page.getByTestId('nav-map').click();
  await op.page.locator(`[data-testid="map-marker-${camera}"][data-status="offline"]`).waitFor({ timeout: 5_000 });
  for (const c of cfg.cameras.slice(1)) await op.page.getByTestId(`map-marker-${c}`).waitFor({ timeout: 5_000 });
  log(`d. the site map shows ${camera} offline and every camera placed`);
  await shot(op.page, 'map-offline.png');

  // ---- crowd: the latest measurement on the card, the series on the chart, the overview ----
  await op.page.getByTestId('nav-cameras').click();
  await checkCrowd(op.page.getByTestId(`camera-card-${cfg.crowd.camera}`), 'camera card');
  await op.page.getByTestId('nav-crowd').click();
  await op.page.getByTestId('crowd-page').waitFor();
  await op.page.getByTestId('crowd-camera').selectOption(cfg.crowd.camera);
  const chart = op.page.locator(`[data-testid="crowd-chart"][data-camera="${cfg.crowd.camera}"][data-zone=""]`);
  await chart.waitFor({ timeout: 5_000 });
  const points = Number(await chart.getAttribute('data-points'));
  const dots = await chart.getByTestId('crowd-point').count();
  check(points >= 2 && dots === points, `the crowd chart of ${cfg.crowd.camera} has ${points} point(s), ${dots} drawn`);
  log(`crowd: the chart of ${cfg.crowd.camera} draws ${points} points (${cfg.crowd.measurements} measurements published)`);
  await shot(op.page, 'crowd.png');
  await op.page.getByTestId('crowd-zone').selectOption(cfg.crowd.zone);
  const zoneChart = op.page.locator(`[data-testid="crowd-chart"][data-camera="${cfg.crowd.camera}"][data-zone="${cfg.crowd.zone}"]`);
  await zoneChart.waitFor({ timeout: 5_000 });
  const zonePoints = Number(await zoneChart.getAttribute('data-points'));
  check(zonePoints >= 2, `the crowd chart of zone ${cfg.crowd.zone} has ${zonePoints} point(s)`);
  log(`crowd: zone ${cfg.crowd.zone} charts ${zonePoints} points`);

  await op.page.getByTestId('nav-overview').click();
  const overview = op.page.getByTestId('overview-page');
  await overview.waitFor();
  await checkCrowd(op.page.getByTestId(`camera-tile-${cfg.crowd.camera}`), 'overview tile');
  await op.page.locator(`[data-testid="camera-tile-${camera}"][data-status="offline"]`).waitFor({ timeout: 3_000 });
  for (const c of cfg.cameras) await op.page.getByTestId(`camera-tile-${c}`).waitFor({ timeout: 3_000 });
  await op.page.locator(`[data-testid="map-marker-${camera}"][data-status="offline"]`).waitFor({ timeout: 3_000 });
  const acked = op.page.locator(`${tileSel} [data-testid="alert-ack-info"]`);
  await acked.waitFor({ timeout: 3_000 });
  // one screen: nothing of the overview below the fold at 1920×1080
  const box = await overview.boundingBox();
  const inner = await op.page.evaluate(() => [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight]);
  check(box && box.y + box.height <= inner[1] + 1, `the overview overflows the 1920×1080 screen: ${JSON.stringify(box)} in ${inner}`);
  check(inner[2] <= inner[1], `the overview page scrolls at 1920×1080 (${inner[2]} px high)`);
  for (const id of ['overview-alerts', 'overview-cameras', 'overview-map']) {
    const b = await op.page.getByTestId(id).boundingBox();
    check(b && b.width > 300 && b.height > 150, `${id} is too small on the wall screen: ${JSON.stringify(b)}`);
  }
  log(`overview (1920×1080): the active alert (acknowledged), ${cfg.cameras.length} camera tiles with ${cfg.crowd.camera}'s crowd, and the map on one screen`);
  await shot(op.page, 'overview.png');

  // ---- e. no investigations for an operator ----
  check((await op.page.getByTestId('nav-investigations').count()) === 0, 'the operator sees an Investigations link');
  check((await op.page.getByTestId('nav-audit').count()) === 0, 'the operator sees an Audit log link');
  await op.page.evaluate(() => {
    location.hash = '#/investigations';
  });
  const denied = op.page.getByTestId('not-permitted');
  await denied.waitFor({ timeout: 3_000 });
  const deniedText = (await denied.textContent()) ?? '';
  check(/not permitted for the operator role/.test(deniedText), `the refusal reads: ${deniedText}`);
  check((await op.page.getByTestId('photo-search').count()) === 0, 'the operator sees the photo search');
  check(personal.length === 0, `the operator's page requested personal data: ${personal.join(', ')}`);
  log('e. operator: no Investigations link; #/investigations says "not permitted for the operator role"; no trajectory/search request made');
  await shot(op.page, 'operator-denied.png');

  // ---- f. integrator: photo search on a laptop ----
  await op.page.getByTestId('sign-out').click();
  await op.page.getByLabel('API token').waitFor({ timeout: 5_000 });
  check(
    (await op.page.evaluate(() => sessionStorage.getItem('sightline.token'))) === null,
    'the token stayed in sessionStorage after sign-out',
  );
  log('f. operator signed out');
  await op.context.close();

  const integ = await newPage({ width: 1366, height: 768 }, 'integrator');
  const integratorName = await signIn(integ.page, cfg.tokens.integrator, 'integrator');
  check((await integ.page.getByTestId('nav-audit').count()) === 0, 'the integrator sees the Audit log link');
  await integ.page.getByTestId('nav-investigations').click();
  const notice = integ.page.getByTestId('audit-notice');
  await notice.waitFor({ timeout: 5_000 });
  check(
    ((await notice.textContent()) ?? '').includes('Searches and trajectory views are recorded in the audit log'),
    'the audit notice is missing',
  );
  log(`f. integrator "${integratorName}" signed in (1366×768); the audit notice is shown`);
  await integ.page.getByTestId('purpose-input').fill(cfg.purpose);
  await integ.page.getByTestId('photo-input').setInputFiles(cfg.photo);
  await integ.page.getByTestId('search-submit').click();
  // the answer (results or an error), then the expected trajectory among the results
  await integ.page.locator('[data-testid="search-results"], [data-testid="search-error"]').first().waitFor({ timeout: 30_000 });
  if (await integ.page.getByTestId('search-error').count()) {
    throw new Error(`the search failed: ${await integ.page.getByTestId('search-error').textContent()}`);
  }
  const result = integ.page.locator(`[data-testid="search-result"][data-trajectory="${cfg.miranda}"]`);
  if ((await result.count()) === 0) {
    const shown = await integ.page
      .getByTestId('search-result')
      .evaluateAll((els) => els.map((e) => e.getAttribute('data-trajectory')));
    throw new Error(`the search does not show trajectory ${cfg.miranda}; it shows [${shown.join(', ')}]`);
  }
  const nResults = await integ.page.getByTestId('search-result').count();
  log(`f. the photo search shows ${nResults} trajectory result(s), including ${cfg.miranda}`);
  await result.getByTestId('search-result-open').click();
  const detail = integ.page.locator(`[data-testid="trajectory-detail"][data-trajectory="${cfg.miranda}"]`);
  await detail.waitFor({ timeout: 10_000 });
  const sightings = detail.getByTestId('trajectory-sighting');
  const n = await sightings.count();
  const cams = new Set(await sightings.evaluateAll((els) => els.map((e) => e.getAttribute('data-camera'))));
  check(n >= 2, `the trajectory lists ${n} sighting(s)`);
  check(cams.size >= 2, `the trajectory covers ${cams.size} camera(s): ${[...cams].join(', ')}`);
  await detail.getByTestId('map-track').waitFor({ timeout: 3_000 });
  const trackPoints = await detail.locator('[data-testid="map-track"] .track-point').count();
  check(trackPoints >= 2, `the map draws ${trackPoints} point(s) of the trajectory`);
  log(`f. trajectory drawn: ${n} ordered sightings on ${cams.size} cameras (${[...cams].join(' → ')}), ${trackPoints} map points`);
  await detail.scrollIntoViewIfNeeded();
  await shot(integ.page, 'search.png');
  await integ.page.getByTestId('sign-out').click();
  await integ.page.getByLabel('API token').waitFor({ timeout: 5_000 });
  await integ.context.close();

  // ---- g. admin reads the audit log ----
  const adm = await newPage({ width: 1920, height: 1080 }, 'admin');
  const adminName = await signIn(adm.page, cfg.tokens.admin, 'admin');
  await adm.page.getByTestId('nav-investigations').waitFor({ timeout: 3_000 });
  await adm.page.getByTestId('nav-audit').click();
  // reading the audit log needs a purpose too: asked for, nothing requested before it is given
  await adm.page.getByTestId('audit-purpose-form').waitFor({ timeout: 5_000 });
  check((await adm.page.getByTestId('audit-row').count()) === 0, 'the audit log was read without a purpose');
  await adm.page.getByTestId('audit-load').click();
  await adm.page.getByTestId('purpose-error').waitFor({ timeout: 3_000 });
  await adm.page.getByTestId('purpose-input').fill(cfg.auditPurpose);
  await adm.page.getByTestId('audit-load').click();
  const auditRow = adm.page
    .locator(`[data-testid="audit-row"][data-action="search"][data-token="${integratorName}"]`)
    .filter({ has: adm.page.getByTestId('audit-purpose').filter({ hasText: cfg.purpose }) });
  await auditRow.first().waitFor({ timeout: 10_000 });
  log(`g. admin "${adminName}" gave the purpose "${cfg.auditPurpose}" and sees ${await auditRow.count()} search row(s) of "${integratorName}" with the purpose`);
  const refused = await adm.page.locator(`[data-testid="audit-row"][data-token="${integratorName}"][data-outcome="refused"]`).count();
  check(refused === 0, `${refused} of the integrator's reads were refused: the dashboard sent one without its purpose`);
  await shot(adm.page, 'audit.png');

  // ---- h. the edge agent goes away: its camera unknown, its alert stale; the admin closes it ----
  // (its Last Will: dated at its connection, long ago; the centre orders agent statuses by receipt)
  await publish(`sightline/v1/${cfg.site}/agent/${cfg.agent}/status`, {
    schema: 'sightline.agent_status/1',
    site: cfg.site,
    agent: cfg.agent,
    ts: '2020-01-01T00:00:00.000Z',
    state: 'offline',
  });
  await adm.page.getByTestId('nav-cameras').click();
  const gone = adm.page.locator(`[data-testid="camera-card-${camera}"][data-status="unknown"]`);
  await gone.waitFor({ timeout: OFFLINE_LIMIT_MS });
  const goneDetail = ((await gone.getByTestId('camera-state-detail').textContent()) ?? '').trim();
  check(goneDetail.startsWith(`edge agent ${cfg.agent} offline since`), `the card's detail reads "${goneDetail}"`);
  log(`h. ${camera}'s card shows unknown: "${goneDetail}"`);
  await adm.page.getByTestId('nav-alerts').click();
  const staleRow = adm.page.locator(`${rowSel}[data-stale="true"]`);
  await staleRow.waitFor({ timeout: 5_000 });
  const mark = ((await staleRow.getByTestId('alert-stale').textContent()) ?? '').trim();
  check(mark.startsWith('stale: agent offline'), `the stale row's mark reads "${mark}"`);
  await shot(adm.page, 'alert-stale.png');
  const reason = 'e2e: edge agent gone, zone checked on site';
  await staleRow.getByTestId('alert-close').click();
  await staleRow.getByTestId('alert-close-reason').fill(reason);
  await staleRow.getByTestId('alert-close-confirm').click();
  await adm.page.locator(`${rowSel}[data-state="cleared"][data-stale="false"]`).waitFor({ timeout: 5_000 });
  log('h. the stale alert was shown greyed with its mark; the admin closed it with a reason');
  await adm.page.getByTestId('nav-audit').click();
  await adm.page
    .locator(`[data-testid="audit-row"][data-action="alert_close"][data-token="${adminName}"]`)
    .filter({ has: adm.page.getByTestId('audit-purpose').filter({ hasText: reason }) })
    .first()
    .waitFor({ timeout: 10_000 });
  log('h. the close is in the audit log with its reason');
  await adm.context.close();
}

// ---- main ----------------------------------------------------------------------------------------

let failed = null;
const watchdog = setTimeout(() => {
  failed = new Error(`the run exceeded ${TOTAL_TIMEOUT_MS / 1000} s`);
  console.error(`[dashboard e2e] FAILED: ${failed.message}`);
  process.exit(1);
}, TOTAL_TIMEOUT_MS);

try {
  await run();
} catch (e) {
  failed = e;
  if (currentPage && !currentPage.isClosed()) {
    try {
      await currentPage.screenshot({ path: path.join(cfg.artifacts, 'failure.png'), timeout: 5_000 });
      log(`failure screenshot ${path.join(cfg.artifacts, 'failure.png')}`);
    } catch (s) {
      log(`no failure screenshot: ${s.message}`);
    }
  }
} finally {
  if (browser) await browser.close().catch(() => {});
  if (mqttClient) mqttClient.end(true);
  clearTimeout(watchdog);
}

if (!failed && problems.length > 0) {
  failed = new Error(`the browser reported ${problems.length} problem(s):\n  ${problems.join('\n  ')}`);
}
if (failed) {
  console.error(`[dashboard e2e] FAILED: ${failed.stack ?? failed}`);
  process.exit(1);
}
log('PASSED');
