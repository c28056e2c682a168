import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { contractNames, contractPath, type ContractName } from '@duplex/contracts';
import { repositoryRoot } from '@duplex/testkit';

// The TypeScript types in @duplex/contracts are generated from the contracts; this fails when
// a contract changed and `pnpm generate` was not run (openapi-typescript --check, as the
// package's `check` script does).

const contractsPackage = join(repositoryRoot, 'packages', 'contracts');
const generator = join(contractsPackage, 'node_modules', '.bin', 'openapi-typescript');
const generatedFile = (name: ContractName): string => join(contractsPackage, 'src', 'generated', `${name}.ts`);

interface Outcome {
  code: number;
  output: string;
}

/** Runs `openapi-typescript <contract> -o <output> --check` where the package's script runs it. */
function check(name: ContractName, output: string): Promise<Outcome> {
  return new Promise((resolve) => {
    execFile(generator, [contractPath(name), '-o', output, '--check'], { cwd: contractsPackage, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
      resolve({ code, output: `${stdout}${stderr}` });
    });
  });
}

describe('generated contract types', () => {
  for (const name of contractNames) {
    it(`are up to date for the ${name} contract`, async () => {
      const { code, output } = await check(name, generatedFile(name));
      assert.equal(code, 0, `packages/contracts/src/generated/${name}.ts is stale: run \`pnpm generate\`\n${output}`);
    });
  }

  it('are reported stale when the generated file differs from what the contract gives', async (t) => {
    // A copy is edited, never the real file, so a failing run leaves the package untouched.
    const directory = await mkdtemp(join(tmpdir(), 'duplex-generated-'));
    t.after(() => rm(directory, { recursive: true, force: true }));
    const copy = join(directory, 'driver.ts');
    await copyFile(generatedFile('driver'), copy);
    assert.equal((await check('driver', copy)).code, 0, 'an unedited copy is up to date');
    const original = await readFile(copy, 'utf8');
    await writeFile(copy, original.replace('outcome: "succeeded" | "failed";', 'outcome: "succeeded";'));
    assert.notEqual(await readFile(copy, 'utf8'), original, 'the edit changed the copy');
    const stale = await check('driver', copy);
    assert.equal(stale.code, 1, stale.output);
    assert.match(stale.output, /not up-to-date/);
  });
});
