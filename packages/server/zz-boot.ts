// CPU of the server's start phases, from source (tsx); run from packages/server.
const cpu = () => { const c = process.cpuUsage(); return (c.user + c.system) / 1000; };
const t0 = cpu();
const { loadServerConfig } = await import('./src/config.ts');
const { buildApp } = await import('./src/app.ts');
const t1 = cpu();
const config = loadServerConfig({ ...process.env, DATABASE_URL: 'postgres://postgres@127.0.0.1:5432/probe1', SERVER_ID: 'A', JOIN_TOKEN: 'x'.repeat(32), SERVICE_TOKEN: 'y'.repeat(32), ADMIN_TOKEN: 'z'.repeat(32), PORT: '0' } as never);
const t2 = cpu();
const app = await buildApp({ config, logger: false });
const t3 = cpu();
await app.ready();
const t4 = cpu();
console.log(`import ${(t1 - t0).toFixed(0)} ms, config ${(t2 - t1).toFixed(0)} ms, buildApp ${(t3 - t2).toFixed(0)} ms, ready ${(t4 - t3).toFixed(0)} ms`);
await app.close();
