import { randomBytes } from 'node:crypto';

/**
 * Random bytes drawn 8 KiB at a time, as hex: ids made per request or per task (request, task,
 * trace and span ids) called the kernel's random source once each, 6-7 % of a busy server's CPU.
 */
let pool = Buffer.alloc(0);
let offset = 0;

export function randomHex(bytes: number): string {
  if (bytes > 1024) return randomBytes(bytes).toString('hex');
  if (offset + bytes > pool.length) {
    pool = randomBytes(8 * 1024);
    offset = 0;
  }
  offset += bytes;
  return pool.toString('hex', offset - bytes, offset);
}
