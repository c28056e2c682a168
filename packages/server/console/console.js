// The duplex console: the whole system on one page, kept live from the server's event stream.
// Plain modules, no build step: it talks to the server that serves it, with the user's API token.

const tokenKey = 'duplex.token';
const $ = (selector) => document.querySelector(selector);

const view = { systems: [], clusters: [], devices: [], agents: [], tasks: new Map() };

class Unauthenticated extends Error {}

async function api(method, path, body, headers = {}) {
  const token = sessionStorage.getItem(tokenKey);
  const response = await fetch(path, {
    method,
    headers: { accept: 'application/json', authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}), ...headers },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  const data = text ? JSON.parse(text) : undefined;
  if (response.status === 401) throw new Unauthenticated(data?.detail ?? 'the token was refused');
  if (!response.ok) throw new Error(`${response.status} ${data?.title ?? response.statusText}${data?.detail ? `: ${data.detail}` : ''}`);
  return data;
}

/** Table rows from arrays of cells; a cell `{ text, state }` is coloured by its state. */
function fill(table, rows) {
  const body = $(`${table} tbody`);
  body.replaceChildren(
    ...rows.map((cells) => {
      const row = document.createElement('tr');
      for (const cell of cells) {
        const td = document.createElement('td');
        const { text, state } = typeof cell === 'object' && cell !== null ? cell : { text: cell };
        td.textContent = text === null || text === undefined || text === '' ? '–' : String(text);
        if (state) td.dataset.state = state;
        row.append(td);
      }
      return row;
    }),
  );
}

const bytes = (value) => {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let scaled = value;
  let unit = 0;
  while (scaled >= 1024 && unit < units.length - 1) [scaled, unit] = [scaled / 1024, unit + 1];
  return `${Number.isInteger(scaled) ? scaled : scaled.toFixed(1)} ${units[unit]}`;
};
const ago = (iso) => (iso ? `${Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000))} s ago` : '');

function options(select, values, keep = true) {
  const current = select.value;
  select.replaceChildren(...values.map(([value, label]) => Object.assign(document.createElement('option'), { value, textContent: label ?? value })));
  if (keep && values.some(([value]) => value === current)) select.value = current;
}

function renderSystem() {
  fill(
    '#clusters',
    view.clusters.map((cluster) => {
      const owned = view.devices.filter((d) => d.storage_system_id === cluster.storage_system_id && d.owner_cluster === cluster.id).map((d) => d.id);
      const away = view.devices
        .filter((d) => d.storage_system_id === cluster.storage_system_id && d.home_cluster === cluster.id && d.owner_cluster !== cluster.id)
        .map((d) => `${d.id} → ${d.owner_cluster}`);
      return [cluster.storage_system_id, cluster.id, { text: cluster.state, state: cluster.state }, cluster.epoch, owned.join(' '), away.join(' '), `v${cluster.inventory_version}`];
    }),
  );
  fill(
    '#devices',
    view.devices.map((d) => [d.storage_system_id, d.id, d.home_cluster, d.owner_cluster, { text: d.state, state: d.state }, bytes(d.used_bytes), bytes(d.capacity_bytes), d.volume_count, d.reason]),
  );
  options($('#failback-form select[name=cluster]'), view.clusters.map((c) => [`${c.storage_system_id}/${c.id}`, `${c.storage_system_id}/${c.id} (${c.state})`]));
  const devices = view.devices.map((d) => [`${d.storage_system_id}/${d.id}`]);
  options($('#task-form select[name=device]'), devices);
  options($('#task-form select[name=target_device]'), [[''], ...devices]);
}

function renderAgents() {
  const sorted = [...view.agents].sort((a, b) => `${a.server_id} ${a.cluster_id} ${a.name}`.localeCompare(`${b.server_id} ${b.cluster_id} ${b.name}`));
  fill(
    '#agents',
    sorted.map((agent) => [
      agent.server_id,
      `${agent.storage_system_id}/${agent.cluster_id}`,
      agent.name,
      { text: agent.state === 'active' ? 'active' : 'lost', state: agent.state },
      agent.incarnation,
      ago(agent.heartbeat_at),
    ]),
  );
}

function renderTasks() {
  const tasks = [...view.tasks.values()].sort((a, b) => b.created_at.localeCompare(a.created_at)).slice(0, 50);
  fill(
    '#tasks',
    tasks.map((task) => [task.id, task.kind, `${task.storage_system_id}/${task.device}`, { text: task.state, state: task.state }, task.attempt, task.agent_id, ago(task.updated_at)]),
  );
}

async function loadSystem() {
  view.systems = (await api('GET', '/v1/storage-systems?limit=500')).items;
  const parts = await Promise.all(
    view.systems.map(async (system) => {
      const id = encodeURIComponent(system.id);
      const [clusters, devices] = await Promise.all([api('GET', `/v1/storage-systems/${id}/clusters?limit=500`), api('GET', `/v1/storage-systems/${id}/devices?limit=500`)]);
      return { clusters: clusters.items, devices: devices.items };
    }),
  );
  view.clusters = parts.flatMap((part) => part.clusters);
  view.devices = parts.flatMap((part) => part.devices);
  renderSystem();
}

async function loadAgents() {
  view.agents = (await api('GET', '/v1/agents?server_id=*&limit=500')).items;
  renderAgents();
}

async function loadTask(id) {
  const task = await api('GET', `/v1/tasks/${encodeURIComponent(id)}`);
  view.tasks.set(task.id, task);
  renderTasks();
}

async function loadTasks() {
  for (const task of (await api('GET', '/v1/tasks?limit=50')).items) view.tasks.set(task.id, task);
  renderTasks();
}

const refreshers = { system: loadSystem, agents: loadAgents };
const pending = new Set();
/** Coalesces bursts of events into one reload each, `delayMs` after the first. */
function refresh(what, delayMs = 150) {
  const key = `${what}@${delayMs}`;
  if (pending.has(key)) return;
  pending.add(key);
  setTimeout(() => {
    pending.delete(key);
    refreshers[what]().catch(showError);
  }, delayMs);
}

function onEvent(event) {
  if (event.type === 'task.state_changed' && event.task_id) loadTask(event.task_id).catch(showError);
  else if (event.type === 'agent.registered' || event.type === 'agent.lost') refresh('agents');
  else {
    // A cluster's new inventory reaches this server through its agents a moment after the
    // event: read it at once, and again once the agents have reported it.
    refresh('system');
    refresh('system', 1500);
  }
}

/**
 * The event stream over fetch (EventSource cannot send the token), resumed after the last
 * event received whenever it breaks, with a reload of everything after a gap.
 */
async function follow(signal) {
  let lastEventId;
  while (!signal.aborted) {
    try {
      const token = sessionStorage.getItem(tokenKey);
      const response = await fetch('/v1/events?heartbeat_ms=5000', {
        headers: { accept: 'text/event-stream', authorization: `Bearer ${token}`, ...(lastEventId ? { 'last-event-id': lastEventId } : {}) },
        signal,
      });
      if (response.status === 410) lastEventId = undefined;
      if (!response.ok) throw new Error(`the event stream answered ${response.status}`);
      setLive(true);
      if (lastEventId === undefined) await Promise.all([loadSystem(), loadAgents(), loadTasks()]);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) !== -1) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split('\n').filter((line) => line.startsWith('data:')).map((line) => line.slice(5).trimStart()).join('\n');
          const id = block.split('\n').find((line) => line.startsWith('id:'))?.slice(3).trim();
          if (id) lastEventId = id;
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      showError(error);
    }
    setLive(false);
    await new Promise((resolve) => setTimeout(resolve, 1000));
  }
}

function setLive(live) {
  const pill = $('#live');
  pill.dataset.state = live ? 'live' : 'off';
  pill.textContent = live ? 'live' : 'reconnecting';
}

function showError(error) {
  if (error instanceof Unauthenticated) return logOut(error.message);
  $('#error').textContent = error.message;
}

let following;

function logIn() {
  $('#login').hidden = true;
  $('#console').hidden = false;
  $('#logout').hidden = false;
  $('#error').textContent = '';
  following = new AbortController();
  follow(following.signal);
  // Heartbeat ages and lease expiries move without events; so may a report that came late.
  following.signal.addEventListener('abort', () => clearInterval(ticker));
  const ticker = setInterval(() => Promise.all([loadAgents(), loadSystem()]).catch(showError), 5000);
}

function logOut(reason = '') {
  following?.abort();
  sessionStorage.removeItem(tokenKey);
  $('#console').hidden = true;
  $('#logout').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = reason;
}

$('#login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = new FormData(event.target).get('token').trim();
  sessionStorage.setItem(tokenKey, token);
  try {
    await api('GET', '/v1/storage-systems?limit=1');
    event.target.reset();
    logIn();
  } catch (error) {
    logOut(error.message);
  }
});

$('#logout').addEventListener('click', () => logOut());

$('#task-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const form = new FormData(event.target);
  const [system, device] = String(form.get('device')).split('/');
  const kind = form.get('kind');
  const name = form.get('name');
  const size = Number(form.get('size_mib')) * 1024 * 1024;
  const params = {
    'volume.create': { name, size_bytes: size },
    'volume.resize': { name, size_bytes: size },
    'volume.delete': { name },
    'volume.copy': { name, target_device: String(form.get('target_device')).split('/')[1], target_name: form.get('target_name') || name },
  }[kind] ?? {};
  const result = $('#task-result');
  try {
    const task = await api('POST', '/v1/tasks', { kind, storage_system_id: system, device, params }, { 'idempotency-key': crypto.randomUUID() });
    view.tasks.set(task.id, task);
    renderTasks();
    result.textContent = `submitted ${task.id}`;
  } catch (error) {
    result.textContent = error.message;
  }
});

$('#failback-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const [system, cluster] = String(new FormData(event.target).get('cluster')).split('/');
  const result = $('#failback-result');
  try {
    const answer = await api('POST', `/v1/storage-systems/${encodeURIComponent(system)}/clusters/${encodeURIComponent(cluster)}:failback`);
    result.textContent = `${system}/${cluster} is ${answer.state} again (epoch ${answer.epoch})`;
  } catch (error) {
    result.textContent = error.message;
  }
});

$('#server').textContent = location.host;
if (sessionStorage.getItem(tokenKey)) logIn();
else logOut();
