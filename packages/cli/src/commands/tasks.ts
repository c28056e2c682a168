import { isTerminal, unwrap, type Task, type TaskRequest, type TaskState } from '@duplex/client';
import type { Connection } from './connection.ts';
import { exitCodes, parseBytes, table, UsageError, type Output } from './output.ts';

export interface TaskOptions {
  system?: string;
  device?: string;
  name?: string;
  size?: string;
  'target-device'?: string;
  'target-name'?: string;
  'idempotency-key'?: string;
  wait?: boolean;
  state?: string;
  limit?: string;
}

const kinds = ['volume.create', 'volume.delete', 'volume.resize', 'volume.copy', 'device.format', 'device.probe'] as const;

function required(value: string | undefined, flag: string, kind: string): string {
  if (value === undefined || value === '') throw new UsageError(`${kind} needs --${flag}`);
  return value;
}

export function positional(value: string | undefined, what: string, command: string): string {
  if (value === undefined || value === '') throw new UsageError(`${command} needs ${what}`);
  return value;
}

/** The task a `task submit` command line describes. */
export function taskRequestOf(kind: string | undefined, options: TaskOptions): TaskRequest {
  if (!kind || !(kinds as readonly string[]).includes(kind)) throw new UsageError(`task submit needs a kind: ${kinds.join(', ')}`);
  const target = { storage_system_id: options.system ?? 'ss1', device: required(options.device, 'device', kind) };
  switch (kind) {
    case 'volume.create':
    case 'volume.resize':
      return { kind, ...target, params: { name: required(options.name, 'name', kind), size_bytes: parseBytes(required(options.size, 'size', kind)) } };
    case 'volume.delete':
      return { kind, ...target, params: { name: required(options.name, 'name', kind) } };
    case 'volume.copy':
      return {
        kind,
        ...target,
        params: { name: required(options.name, 'name', kind), target_device: required(options['target-device'], 'target-device', kind), target_name: options['target-name'] ?? options.name! },
      };
    default:
      return { kind: kind as 'device.format' | 'device.probe', ...target, params: {} } as TaskRequest;
  }
}

const describe = (task: Task): string => `${task.id} ${task.kind} on ${task.storage_system_id}/${task.device}`;

function taskLines(task: Task): string {
  const rows: [string, unknown][] = [
    ['id', task.id],
    ['kind', task.kind],
    ['device', `${task.storage_system_id}/${task.device}`],
    ['params', JSON.stringify(task.params)],
    ['state', task.state],
    ['attempt', task.attempt],
    ['runs on', task.agent_id ? `${task.agent_id} (cluster ${task.cluster_id})` : null],
    ['result', task.result ? JSON.stringify(task.result) : null],
    ['error', task.error ? `${task.error.title}${task.error.detail ? `: ${task.error.detail}` : ''}` : null],
    ['created', task.created_at],
    ['finished', task.finished_at],
  ];
  return rows.map(([name, value]) => `${name.padEnd(9)} ${value === null || value === undefined ? '-' : String(value)}`).join('\n');
}

function printTask(output: Output, task: Task): void {
  output.write(output.json ? JSON.stringify(task, null, 2) : taskLines(task));
}

const spinner = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/**
 * Follows a task to its end with a progress display on standard error: one redrawn line with
 * the state and the time so far in a terminal, one line per state otherwise. The exit code
 * says how it ended.
 */
async function watch(connection: Connection, output: Output, id: string): Promise<number> {
  const started = Date.now();
  let current: Task | undefined;
  let frame = 0;
  const line = () => {
    if (!current) return '';
    const elapsed = ((Date.now() - started) / 1000).toFixed(1);
    const where = current.agent_id ? ` on ${current.agent_id}` : '';
    return `${spinner[frame % spinner.length]} ${describe(current)}: ${current.state}${current.attempt > 1 ? ` (attempt ${current.attempt})` : ''}${where}  ${elapsed}s`;
  };
  const ticker = output.interactive
    ? setInterval(() => {
        frame += 1;
        output.note(`\r\x1b[2K${line()}\r`);
      }, 100)
    : undefined;
  try {
    const task = await connection.client.waitForTask(id, {
      onState: (task: Task) => {
        current = task;
        if (!output.interactive) output.note(`${describe(task)}: ${task.state}${task.agent_id ? ` on ${task.agent_id}` : ''}`);
      },
    });
    if (output.interactive) output.note(`\r\x1b[2K${task.state === 'succeeded' ? '✓' : '✗'} ${describe(task)}: ${task.state} in ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
    printTask(output, task);
    return task.state === 'succeeded' ? exitCodes.ok : exitCodes.taskNotSucceeded;
  } finally {
    clearInterval(ticker);
  }
}

export async function runTaskCommand(connection: Connection, output: Output, args: string[], options: TaskOptions): Promise<number> {
  const [action, argument] = args;
  const { api } = connection.client;
  switch (action) {
    case 'submit': {
      const task = await connection.client.submitTask(taskRequestOf(argument, options), { idempotencyKey: options['idempotency-key'] });
      if (!options.wait) {
        printTask(output, task);
        return exitCodes.ok;
      }
      output.note(`submitted ${describe(task)}`);
      return watch(connection, output, task.id);
    }
    case 'get': {
      printTask(output, await connection.client.getTask(positional(argument, 'a task id', 'task get')));
      return exitCodes.ok;
    }
    case 'watch': {
      const id = positional(argument, 'a task id', 'task watch');
      const task = await connection.client.getTask(id);
      if (isTerminal(task.state)) {
        printTask(output, task);
        return task.state === 'succeeded' ? exitCodes.ok : exitCodes.taskNotSucceeded;
      }
      return watch(connection, output, id);
    }
    case 'cancel': {
      const id = positional(argument, 'a task id', 'task cancel');
      printTask(output, unwrap(await api.POST('/v1/tasks/{id}:cancel', { params: { path: { id } } })));
      return exitCodes.ok;
    }
    case 'list': {
      const query = {
        ...(options.state ? { state: options.state as TaskState } : {}),
        ...(options.system ? { storage_system_id: options.system } : {}),
        ...(options.device ? { device: options.device } : {}),
        limit: options.limit ? Number(options.limit) : 20,
      };
      const page = unwrap(await api.GET('/v1/tasks', { params: { query } }));
      if (output.json) output.write(JSON.stringify(page, null, 2));
      else {
        output.write(table(['ID', 'KIND', 'DEVICE', 'STATE', 'ATTEMPT', 'CREATED'], page.items.map((task) => [task.id, task.kind, `${task.storage_system_id}/${task.device}`, task.state, task.attempt, task.created_at])));
        if (page.next_cursor) output.note(`more: there are older tasks (--limit up to 500)`);
      }
      return exitCodes.ok;
    }
    default:
      throw new UsageError(`task needs an action: submit, get, list, watch or cancel`);
  }
}
