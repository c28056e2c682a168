/**
 * Driver execution cost against the number of volumes on a device (issue 5): one driver on the
 * file backend in a temporary directory, two devices, `empty` (no volumes) and `full`
 * (--volumes volume files added by hand first, the way an operator or a restore would leave
 * them), then --executions sequential `volume.create` executions (POST /v1/executions) on
 * each. An execution's cost should not grow with the volumes already on its device.
 *
 *   node --import tsx bench/driver-executions.ts                       # 5,000 volumes, 1,000 creates per device
 *   node --import tsx bench/driver-executions.ts --volumes 500 --executions 100   # a quick check
 *
 * Each device's phase stops at --executions or after --phase-budget-s, whichever comes first,
 * so a slow driver still finishes in bounded time (the figures say how many ran).
 */
import { mkdtemp, open, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, startProcess, waitFor } from '@duplex/testkit';
import { percentile } from './lib/stats.ts';

const usage = `usage: node --import tsx bench/driver-executions.ts [--volumes N] [--executions N] [--warmup N] [--phase-budget-s S] [--driver-entry PATH]

  --volumes N         volume files put on the full device before the driver runs anything (default 5000)
  --executions N      measured volume.create executions per device (default 1000)
  --warmup N          unmeasured executions per device first (default 10); the first one is shown on its own
  --phase-budget-s S  a device's measured phase stops after this long even if fewer ran (default 40)
  --driver-entry PATH the driver's server.ts to run (default packages/driver/src/server.ts), e.g. a copy
                      of another revision, to compare two drivers back to back on the same machine`;

const { values } = parseArgs({
  options: {
    volumes: { type: 'string', default: '5000' },
    executions: { type: 'string', default: '1000' },
    warmup: { type: 'string', default: '10' },
    'phase-budget-s': { type: 'string', default: '40' },
    'driver-entry': { type: 'string', default: 'packages/driver/src/server.ts' },
    help: { type: 'boolean', short: 'h', default: false },
  },
  strict: true,
});
if (values.help) {
  console.log(usage);
  process.exit(0);
}

function count(name: string, raw: string, minimum: number): number {
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < minimum) throw new Error(`--${name} must be an integer >= ${minimum}, not '${raw}'\n${usage}`);
  return value;
}

const volumeCount = count('volumes', values.volumes, 0);
const executions = count('executions', values.executions, 1);
const warmup = count('warmup', values.warmup, 1);
const phaseBudgetMs = count('phase-budget-s', values['phase-budget-s'], 1) * 1000;
const volumeBytes = 4096;
/** Far more than the volumes will ever take, so no create fails for capacity. */
const capacityBytes = 2 ** 50;

interface Phase {
  device: string;
  existing: number;
  first_ms: number;
  ran: number;
  elapsed_ms: number;
  per_second: number;
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

const load = () => loadavg().map((value) => value.toFixed(2)).join(' ');

const root = await mkdtemp(join(tmpdir(), 'duplex-bench-driver-'));
const port = await freePort();
const driver = startProcess('driver', values['driver-entry'], {
  DRIVER_PORT: String(port),
  DRIVER_BACKEND: 'file',
  DRIVER_DEVICE_ROOT: root,
  // The probe is not what is measured; keep it at its default pace.
  DRIVER_PROBE_INTERVAL_MS: '500',
});
const base = `http://127.0.0.1:${port}`;
let sequence = 0;

async function post<T>(path: string, body: unknown): Promise<{ status: number; body: T }> {
  const response = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, body: (await response.json()) as T };
}

/** One volume.create on the device; its latency in milliseconds. */
async function createOne(device: string): Promise<number> {
  sequence += 1;
  const started = performance.now();
  const { status, body } = await post<{ outcome?: string; detail?: string }>('/v1/executions', {
    task_id: `bench_${process.pid}_${sequence}`,
    kind: 'volume.create',
    device,
    params: { name: `bench-${sequence}`, size_bytes: volumeBytes },
    attempt: 1,
    fencing: { token: 1, epoch: 1 },
  });
  const elapsed = performance.now() - started;
  if (status !== 200 || body.outcome !== 'succeeded') throw new Error(`volume.create on ${device} answered ${status}: ${JSON.stringify(body)}`);
  return elapsed;
}

/** Volume files written straight into the device's volumes/ directory, as sparse files. */
async function addVolumesByHand(device: string, howMany: number): Promise<void> {
  const directory = join(root, device, 'volumes');
  const batch = 64;
  for (let start = 0; start < howMany; start += batch) {
    await Promise.all(
      Array.from({ length: Math.min(batch, howMany - start) }, async (_, offset) => {
        const file = await open(join(directory, `existing-${String(start + offset).padStart(6, '0')}`), 'wx');
        await file.truncate(volumeBytes);
        await file.close();
      }),
    );
  }
}

async function measure(device: string, existing: number): Promise<Phase> {
  const first = await createOne(device);
  for (let index = 1; index < warmup; index += 1) await createOne(device);
  const latencies: number[] = [];
  const started = performance.now();
  while (latencies.length < executions && performance.now() - started < phaseBudgetMs) latencies.push(await createOne(device));
  const elapsed = performance.now() - started;
  return {
    device,
    existing,
    first_ms: first,
    ran: latencies.length,
    elapsed_ms: elapsed,
    per_second: latencies.length / (elapsed / 1000),
    p50_ms: percentile(latencies, 50) ?? Number.NaN,
    p99_ms: percentile(latencies, 99) ?? Number.NaN,
    max_ms: Math.max(...latencies),
  };
}

try {
  await waitFor('the driver to be ready', async () => ((await fetch(`${base}/readyz`)).ok ? true : undefined), 30_000);
  for (const id of ['empty', 'full']) {
    const created = await post('/v1/devices', { id, home_cluster: 'c0', capacity_bytes: capacityBytes });
    if (created.status !== 201) throw new Error(`device ${id} was not created: ${created.status} ${JSON.stringify(created.body)}`);
  }
  const fillStarted = performance.now();
  await addVolumesByHand('full', volumeCount);
  console.log(`# ${volumeCount} volumes added by hand to device full in ${((performance.now() - fillStarted) / 1000).toFixed(1)} s`);
  console.log(`# driver: ${values['driver-entry']}; load average before: ${load()}`);

  const phases = [await measure('empty', 0), await measure('full', volumeCount)];

  const report = await fetch(`${base}/v1/devices/full`).then((response) => response.json() as Promise<{ volume_count: number; used_bytes: number }>);
  const expected = volumeCount + warmup + (phases[1]?.ran ?? 0);
  console.log(`# load average after: ${load()}`);
  console.log(`# GET /v1/devices/full: volume_count ${report.volume_count} (expected ${expected}), used_bytes ${report.used_bytes} (expected ${expected * volumeBytes})`);
  console.log('');
  console.log('| device | volumes before | first execution ms | executions | seconds | executions/s | p50 ms | p99 ms | max ms |');
  console.log('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |');
  for (const phase of phases) {
    console.log(
      `| ${phase.device} | ${phase.existing} | ${phase.first_ms.toFixed(1)} | ${phase.ran} | ${(phase.elapsed_ms / 1000).toFixed(1)} | ${phase.per_second.toFixed(1)} | ${phase.p50_ms.toFixed(2)} | ${phase.p99_ms.toFixed(2)} | ${phase.max_ms.toFixed(2)} |`,
    );
  }
  if (report.volume_count !== expected || report.used_bytes !== expected * volumeBytes) {
    console.error('the device report does not match the volumes on the device');
    process.exitCode = 1;
  }
} catch (error) {
  console.error((error as Error).message);
  console.error(driver.output().slice(-4000));
  process.exitCode = 1;
} finally {
  await driver.stop('SIGTERM');
  await rm(root, { recursive: true, force: true });
}
