// Profiles the process it is loaded into, like `node --cpu-prof`, which Node 20 refuses in
// NODE_OPTIONS: the harness can hand a preload to every process (and the agents the
// cluster-managers start) only through the environment, as
//   NODE_OPTIONS="--import /abs/path/bench/lib/cpu-profiler.mjs" DUPLEX_CPU_PROFILE_DIR=/abs/dir
// It is plain JavaScript because it loads before the tsx loader of the process's own command line.
// The profile is written at exit (a clean end or a handled SIGTERM; a SIGKILL leaves none), named
// as --cpu-prof names its files, so bench/lib/profile-summary.ts reads both.
import { mkdirSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';

const directory = process.env.DUPLEX_CPU_PROFILE_DIR;
if (directory) {
  const session = new Session();
  session.connect();
  session.post('Profiler.enable');
  session.post('Profiler.setSamplingInterval', { interval: 1000 });
  session.post('Profiler.start');
  process.once('exit', () => {
    // An in-process inspector session answers synchronously, so this completes inside 'exit'.
    session.post('Profiler.stop', (error, result) => {
      if (error || !result) return;
      const stamp = new Date().toISOString().replace(/[-:]/g, '').replace('T', '.').slice(0, 15);
      mkdirSync(directory, { recursive: true });
      writeFileSync(join(directory, `CPU.${stamp}.${process.pid}.0.001.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
