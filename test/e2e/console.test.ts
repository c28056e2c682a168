import assert from 'node:assert/strict';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it, type TestContext } from 'node:test';
import { TopologyHarness } from '@duplex/harness';
import { repositoryRoot, testAdminToken, waitFor } from '@duplex/testkit';
import { chromium, type Browser, type Page } from 'playwright-core';

// The web console in a real browser (Debian's chromium, driven by playwright-core) against the
// whole topology: it logs in with a token, shows the four agents, runs a task submitted from
// its form to succeeded, shows a killed agent lost (and its cluster failed over) and then back,
// and fails the cluster back from its form, all kept live from the event stream. Screenshots of
// each step are kept in test-artifacts/console/.

const chromiumPath = '/usr/bin/chromium';
const artifacts = join(repositoryRoot, 'test-artifacts', 'console');
const skip = existsSync(chromiumPath) ? false : `no browser at ${chromiumPath} (apt-get install chromium)`;

describe('the web console in headless Chromium', { timeout: 300_000, skip }, () => {
  let harness: TopologyHarness;
  let browser: Browser;
  let page: Page;

  const screenshot = async (t: TestContext, name: string) => {
    const path = join(artifacts, `${name}.png`);
    await page.screenshot({ path, fullPage: true });
    t.diagnostic(`screenshot: ${path}`);
  };
  const agentRow = (name: string) => page.locator('#agents tbody tr', { hasText: name });

  before(async () => {
    mkdirSync(artifacts, { recursive: true });
    harness = await TopologyHarness.start();
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
    page.on('pageerror', (error) => console.error(`console page error: ${error.message}`));
  });
  after(async () => {
    // The page as it was when the tests ended, passed or not.
    await page?.screenshot({ path: join(artifacts, 'last.png'), fullPage: true }).catch(() => {});
    await browser?.close();
    await harness?.stop();
  });

  it('refuses a wrong token and logs in with a good one', async (t) => {
    await page.goto(`${harness.serverUrl('A')}/console`);
    await page.fill('#login-form input[name=token]', 'dpx_not-a-token-of-this-system');
    await page.click('#login-form button');
    await page.locator('#login-error').filter({ hasText: /refused|unknown|401/i }).waitFor();
    await page.fill('#login-form input[name=token]', testAdminToken);
    await page.click('#login-form button');
    await page.locator('#live[data-state=live]').waitFor({ timeout: 15_000 });
    await screenshot(t, '1-logged-in');
  });

  it('shows the clusters, the devices, and the four agents by server and cluster', async (t) => {
    // The page fills its tables as their answers come, and shows an agent active from its first
    // heartbeat: on a busy machine the last may come after the fourth row appears.
    const expected = [['A', 'c0'], ['A', 'c1'], ['B', 'c0'], ['B', 'c1']].map(([server, cluster]) => `${server}\tss1/${cluster}\tss1-${cluster}-${server}\tactive`);
    await waitFor('the four agents active, the two clusters and the eight devices', async () => {
      const agents = await page.locator('#agents tbody tr').allInnerTexts();
      const shown = agents.length === 4 && expected.every((start) => agents.some((row) => row.startsWith(start)));
      const clusters = await page.locator('#clusters tbody tr').count();
      const devices = await page.locator('#devices tbody tr').count();
      if (!shown || clusters !== 2 || devices !== 8) throw new Error(`agents ${agents.join(' | ')}; ${clusters} clusters; ${devices} devices`);
      return true;
    });
    assert.match(await page.locator('#clusters tbody tr', { hasText: 'c0' }).innerText(), /online/);
    await screenshot(t, '2-system');
  });

  it('submits a task from its form and shows it reach succeeded, live', async (t) => {
    await page.selectOption('#task-form select[name=kind]', 'volume.create');
    await page.selectOption('#task-form select[name=device]', 'ss1/d4');
    await page.fill('#task-form input[name=name]', 'from-the-console');
    await page.fill('#task-form input[name=size_mib]', '2');
    await page.click('#task-form button');
    const submitted = await page.locator('#task-result').filter({ hasText: /submitted tsk_/ }).innerText({ timeout: 10_000 });
    const id = submitted.replace('submitted ', '').trim();
    const row = page.locator('#tasks tbody tr', { hasText: id });
    await row.locator('td[data-state=succeeded]').waitFor({ timeout: 30_000 });
    assert.equal(statSync(join(harness.deviceRoot, 'd4', 'volumes', 'from-the-console')).size, 2 * 1024 * 1024);
    await screenshot(t, '3-task-succeeded');
  });

  it('shows a killed agent lost and its cluster failed over, then both back, and fails the cluster back from its form', async (t) => {
    // The cluster-manager is held still first, so that nothing restarts the agent before its
    // lease runs out (a cluster-manager restarts a dead agent at once), and its cluster fails over.
    harness.signal('cluster-manager-ss1-c1', 'SIGSTOP');
    try {
      await harness.signalAgent('ss1-c1-A', 'SIGKILL');
      await agentRow('ss1-c1-A').locator('td[data-state=expired]').waitFor({ timeout: 20_000 });
      assert.match(await agentRow('ss1-c1-A').innerText(), /lost/);
      // c0 took c1's devices over: they show in c0's row, and as away in c1's.
      await page.locator('#clusters tbody tr', { hasText: 'd4 → c0 d5 → c0 d6 → c0 d7 → c0' }).waitFor({ timeout: 20_000 });
      assert.match(await page.locator('#clusters tbody tr').first().innerText(), /^ss1\tc0\tonline\t2\td0 d1 d2 d3 d4 d5 d6 d7/);
      await screenshot(t, '4-agent-lost-cluster-failed');
    } finally {
      harness.signal('cluster-manager-ss1-c1', 'SIGCONT');
    }
    await agentRow('ss1-c1-A').locator('td[data-state=active]').waitFor({ timeout: 30_000 });
    assert.match(await agentRow('ss1-c1-A').innerText(), /active\t2\t/);
    await page.locator('#clusters tbody tr', { hasText: 'c1' }).locator('td[data-state=recovering]').waitFor({ timeout: 60_000 });
    await screenshot(t, '5-agent-back-cluster-recovering');

    await page.selectOption('#failback-form select[name=cluster]', 'ss1/c1');
    await page.click('#failback-form button');
    await page.locator('#failback-result').filter({ hasText: 'ss1/c1 is online again' }).waitFor({ timeout: 30_000 });
    const c1 = page.locator('#clusters tbody tr', { hasText: 'c1' });
    await c1.locator('td[data-state=online]').waitFor({ timeout: 10_000 });
    await c1.filter({ hasText: 'd4 d5 d6 d7' }).waitFor({ timeout: 10_000 });
    const owners: { id: string; owner_cluster: string }[] = await harness.db('devices').whereIn('id', ['d4', 'd5', 'd6', 'd7']).select('id', 'owner_cluster');
    assert.deepEqual([...new Set(owners.map((device) => device.owner_cluster))], ['c1']);
    await screenshot(t, '6-failed-back');
  });
});
