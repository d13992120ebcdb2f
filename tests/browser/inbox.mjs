// Browser test of Ciclo's pages, run by tests/pages.rs against a real `ciclo serve`.
// Signs in, finds the task in the inbox, submits a bad value (the error shows next to the
// field), then a good one; checks the instance page highlights the current step and the
// definition page draws every version; checks no script from a variable ever runs and the
// text shows as text; writes full-page screenshots. Prints one line per check; exits 1 on the
// first failure.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = env('CICLO_URL');
const user = env('CICLO_USER');
const password = env('CICLO_PASSWORD');
const instance = env('CICLO_INSTANCE');
const definition = env('CICLO_DEFINITION');
const current = env('CICLO_CURRENT_STEP');
const texts = JSON.parse(env('CICLO_TEXTS'));
const shots = env('CICLO_SCREENSHOTS');
mkdirSync(shots, { recursive: true });

function check(condition, what) {
  if (!condition) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
}

// On every page: no script from a variable ran, and the variable's text is shown as text.
async function safe(page, where, expected = texts) {
  const xss = await page.evaluate(() => window.__xss);
  check(xss === undefined, `${where}: no injected script ran`);
  const body = await page.evaluate(() => document.body.innerText);
  for (const text of expected) {
    check(body.includes(text), `${where}: shows ${JSON.stringify(text)} as text`);
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CICLO_CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 } });
  const page = await context.newPage();
  page.on('dialog', async (dialog) => {
    failed = true;
    console.log(`FAILED: a dialog opened: ${dialog.message()}`);
    await dialog.dismiss();
  });

  await page.goto(`${url}/`);
  check(page.url().endsWith('/sign-in'), 'not signed in: the sign-in page');
  await page.fill('#name', user);
  await page.fill('#password', password);
  await page.click('button[type=submit]');
  await page.waitForURL(`${url}/`);
  check(await page.locator('h1').innerText() === 'Inbox', 'signed in: the inbox');
  await safe(page, 'inbox');
  await page.screenshot({ path: join(shots, 'inbox.png'), fullPage: true });

  const link = page.locator(`a[href^="/tasks/${instance}/"]`);
  check(await link.count() === 1, 'the task is in the inbox');
  await link.click();
  await page.waitForURL(/\/tasks\//);
  await safe(page, 'decision page', [texts[0]]);
  check(await page.locator('#decision table').count() === 1, 'the decision page shows the lines table');
  await page.screenshot({ path: join(shots, 'decision.png'), fullPage: true });

  await page.check('input[name=decision][value=approve]');
  await page.fill('input[name=discount]', '0.9');
  await page.click('form[action$="/complete"] button[type=submit]');
  const error = page.locator('#field-discount .field-error');
  await error.waitFor();
  check((await error.innerText()).includes('must be at most 0.5'), 'a bad value: the error is next to its field');
  check(await page.inputValue('input[name=discount]') === '0.9', 'the value entered is kept');
  await safe(page, 'decision page with an error', [texts[0]]);

  await page.fill('input[name=discount]', '0.15');
  await page.click('form[action$="/complete"] button[type=submit]');
  await page.waitForURL(`${url}/?done=1`);
  check((await page.locator('.flash').innerText()).includes('completed'), 'a good value: back to the inbox with a message');
  check(await page.locator(`a[href^="/tasks/${instance}/"]`).count() === 0, 'the task left the inbox');

  await page.goto(`${url}/cockpit/instances/${instance}`);
  const step = page.locator(`#step-${current}`);
  check(await step.count() === 1, `the instance page draws step ${current}`);
  check((await step.getAttribute('class')).split(/\s+/).includes('current'), `step ${current} is highlighted as current`);
  await safe(page, 'instance page', [texts[0]]);
  await page.screenshot({ path: join(shots, 'instance.png'), fullPage: true });

  await page.goto(`${url}/cockpit/definitions/${definition}`);
  const versions = await page.locator('section.version').count();
  check(versions >= 2, `the definition page shows ${versions} versions`);
  check(await page.locator('section.version .diagram svg').count() === versions, 'each version has its diagram');
  await safe(page, 'definition page', []);
  await page.screenshot({ path: join(shots, 'definition.png'), fullPage: true });

  await page.goto(`${url}/cockpit/instances`);
  await safe(page, 'instance list');
} catch (e) {
  failed = true;
  console.log(e.message);
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log('all browser checks passed');
