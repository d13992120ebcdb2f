// Browser test of e-mail decision links, run by tests/links.rs against a real `ciclo serve`.
// CICLO_STEP=tampered: a link with one character changed shows the refusal page.
// CICLO_STEP=approve: the real Approve link shows the decision page with approve fixed and a
// Confirm button; Confirm decides; the link opened again says who approved and when.
// Prints one line per check; exits 1 on the first failure.
import { chromium } from 'playwright-core';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const step = env('CICLO_STEP');
const approve = env('CICLO_APPROVE');
const tampered = env('CICLO_TAMPERED');
const text = env('CICLO_TEXT');
const shots = env('CICLO_SCREENSHOTS');

function check(condition, what) {
  if (!condition) throw new Error(`FAILED: ${what}`);
  console.log(`ok: ${what}`);
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
  const body = () => page.evaluate(() => document.body.innerText);

  if (step === 'tampered') {
    const response = await page.goto(tampered);
    check(response.status() === 404, 'a changed link answers 404');
    const shown = await body();
    check(shown.includes('This link is not valid'), 'the refusal page');
    check(!shown.includes('Confirm'), 'no form on the refusal page');
  } else {
    const response = await page.goto(approve);
    check(response.status() === 200, 'the link opens');
    const shown = await body();
    check(shown.includes(text), 'the customer name shows as text');
    check((await page.textContent('#decision-decision')) === 'approve', 'approve is the fixed decision');
    check((await page.locator('input[type=radio][name=decision]').count()) === 0, 'no other decision to pick');
    check(await page.isVisible('textarea[name=comment]'), 'the comment field');
    await page.screenshot({ path: join(shots, 'link-decision.png'), fullPage: true });
    await page.fill('textarea[name=comment]', 'Fine by me');
    await page.click('button:has-text("Confirm")');
    await page.waitForLoadState();
    const after = await body();
    check(/Approved by Anna Rossi <anna@example\.com> at \d{4}-\d\d-\d\d \d\d:\d\d UTC/.test(after), 'after Confirm: approved by ... at ...');
    await page.goto(approve);
    const again = await body();
    check(/Approved by Anna Rossi <anna@example\.com> at /.test(again), 'opened again: approved by ... at ...');
    check((await page.locator('form[action^="/links/"]').count()) === 0, 'no form any more');
    await page.screenshot({ path: join(shots, 'link-used.png'), fullPage: true });
  }
  const xss = await page.evaluate(() => window.__xss);
  check(xss === undefined, 'no injected script ran');
} catch (error) {
  failed = true;
  console.log(error.message);
} finally {
  await browser.close();
}
if (failed) process.exit(1);
console.log('all browser checks passed');
