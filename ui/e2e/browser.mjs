// What the dashboard's browser tests share: Debian's chromium, headless, driven by
// playwright-core; signing in with a token.

import { chromium } from 'playwright-core';

/** Debian's chromium (`executablePath`), headless, without background traffic. */
export function launchChromium(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    timeout: 30_000,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}

/** Signs in at `url` with `token`, waits for the header to show `role`; returns the token's name. */
export async function signIn(page, url, token, role) {
  await page.goto(url + '/', { waitUntil: 'domcontentloaded', timeout: 15_000 });
  await page.getByLabel('API token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByTestId('user-role').filter({ hasText: role }).waitFor({ state: 'visible', timeout: 10_000 });
  const name = (await page.getByTestId('user-name').textContent())?.trim();
  if (!name) throw new Error('the header shows no user name');
  return name;
}
