// The Ignis console: a page over the Lambda, SQS and CloudWatch Logs APIs and
// Ignis's own activity and worker calls, every request signed here with SigV4
// under the key pair its user typed in (kept in sessionStorage only). It never
// retries a refused call: a refused key sends the user back to sign in.
'use strict';

// ---- SHA-256 and HMAC (FIPS 180-4, RFC 2104) ----

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);
const ror = (x, n) => (x >>> n) | (x << (32 - n));

function sha256(data) {
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[data.length] = 0x80;
  const view = new DataView(padded.buffer);
  const bits = data.length * 8;
  view.setUint32(padded.length - 8, Math.floor(bits / 0x100000000));
  view.setUint32(padded.length - 4, bits >>> 0);
  const w = new Uint32Array(64);
  for (let block = 0; block < padded.length; block += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    let [a, b, c, d, e, f, g, k] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      const t2 = ((ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) | 0;
      k = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += k;
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  h.forEach((word, i) => outView.setUint32(i * 4, word));
  return out;
}

const utf8 = new TextEncoder();
const bytesOf = (value) => (typeof value === 'string' ? utf8.encode(value) : value);

function hmac(key, message) {
  let k = bytesOf(key);
  if (k.length > 64) k = sha256(k);
  const inner = new Uint8Array(64 + bytesOf(message).length);
  const outer = new Uint8Array(64 + 32);
  for (let i = 0; i < 64; i++) {
    inner[i] = (k[i] || 0) ^ 0x36;
    outer[i] = (k[i] || 0) ^ 0x5c;
  }
  inner.set(bytesOf(message), 64);
  outer.set(sha256(inner), 64);
  return sha256(outer);
}

const hex = (bytes) => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');

// The hash of a request body: the browser's own digest where it has one (a secure context), else ours.
async function payloadHash(body) {
  if (globalThis.crypto && crypto.subtle) return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', body)));
  return hex(sha256(body));
}

// ---- SigV4 ----

// RFC 3986 encoding of everything but A-Z a-z 0-9 - _ . ~ (and '/' when kept).
function uriEncode(text, keepSlash) {
  return Array.from(utf8.encode(text), (b) => {
    const c = String.fromCharCode(b);
    if (/[A-Za-z0-9\-_.~]/.test(c) || (keepSlash && c === '/')) return c;
    return '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }).join('');
}

const REGION = document.querySelector('meta[name="ignis-region"]').content || 'us-east-1';

// The headers that sign `request` ({service, method, path as sent, query, headers, body}) with `creds` at
// `now`, and the query string to send. The canonical path is the sent one encoded again, as for every service
// but S3.
async function sign(request, creds, now) {
  const amzDate = now.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
  const day = amzDate.slice(0, 8);
  const hash = await payloadHash(request.body);
  const headers = { ...request.headers, host: location.host, 'x-amz-date': amzDate, 'x-amz-content-sha256': hash };
  const names = Object.keys(headers).map((n) => n.toLowerCase()).sort();
  const lower = Object.fromEntries(Object.entries(headers).map(([n, v]) => [n.toLowerCase(), String(v).trim()]));
  const query = Object.entries(request.query || {})
    .map(([k, v]) => [uriEncode(k), uriEncode(String(v))])
    .sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : x[1] < y[1] ? -1 : 1))
    .map(([k, v]) => `${k}=${v}`)
    .join('&');
  const canonical = [
    request.method, uriEncode(request.path, true), query,
    names.map((n) => `${n}:${lower[n]}\n`).join(''), names.join(';'), hash,
  ].join('\n');
  const scope = `${day}/${REGION}/${request.service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, hex(sha256(utf8.encode(canonical)))].join('\n');
  let key = hmac('AWS4' + creds.secret, day);
  for (const part of [REGION, request.service, 'aws4_request']) key = hmac(key, part);
  const signature = hex(hmac(key, toSign));
  delete headers.host;
  headers.authorization =
    `AWS4-HMAC-SHA256 Credential=${creds.key}/${scope}, SignedHeaders=${names.join(';')}, Signature=${signature}`;
  return { headers, query };
}

// ---- Calls ----

class ApiError extends Error {
  constructor(status, type, message) {
    super(message || type || `HTTP ${status}`);
    this.status = status;
    this.type = type || '';
  }
  // Whether the key itself was refused (nothing is retried; the user signs in again).
  get refusedKey() {
    return /UnrecognizedClient|InvalidSignature|SignatureDoesNotMatch|InvalidClientTokenId|IncompleteSignature|SecurityToken|MissingAuthenticationToken/.test(this.type)
      || (this.status === 403 && /signature|security token|access key/i.test(this.message));
  }
}

const session = {
  get creds() {
    const key = sessionStorage.getItem('ignis.key');
    const secret = sessionStorage.getItem('ignis.secret');
    return key && secret ? { key, secret } : null;
  },
  set(key, secret) {
    sessionStorage.setItem('ignis.key', key);
    sessionStorage.setItem('ignis.secret', secret);
  },
  clear() {
    sessionStorage.removeItem('ignis.key');
    sessionStorage.removeItem('ignis.secret');
  },
};

// One signed call: {service, method, path, query, headers, body (string or bytes), target}. Answers
// {status, headers, text, json}; throws ApiError for an error answer.
async function call(request, creds = session.creds) {
  if (!creds) throw new ApiError(0, 'NotSignedIn', 'Not signed in');
  const body = bytesOf(request.body || '');
  const headers = { ...(request.headers || {}) };
  if (request.target) {
    headers['x-amz-target'] = request.target;
    headers['content-type'] = request.service === 'sqs' ? 'application/x-amz-json-1.0' : 'application/x-amz-json-1.1';
  } else if (request.body !== undefined) {
    headers['content-type'] = headers['content-type'] || 'application/json';
  }
  // The path as sent: each segment encoded strictly (the signature covers it so).
  const path = request.path.split('/').map((s) => uriEncode(decodeURIComponent(s))).join('/');
  const signed = await sign({ ...request, path, headers, body }, creds, new Date());
  const url = path + (signed.query ? '?' + signed.query : '');
  const response = await fetch(url, {
    method: request.method,
    headers: signed.headers,
    body: request.method === 'GET' || request.method === 'HEAD' ? undefined : body,
    cache: 'no-store',
    credentials: 'omit',
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!response.ok) {
    const type = (response.headers.get('x-amzn-errortype') || (json && (json.__type || json.Type || json.code)) || '')
      .split(':')[0].split('#').pop();
    const message = json && (json.message || json.Message || json.errorMessage);
    throw new ApiError(response.status, type, message || text.slice(0, 300));
  }
  return { status: response.status, headers: response.headers, text, json };
}

const lambda = (method, path, query, body, headers) =>
  call({ service: 'lambda', method, path, query, body: body === undefined ? undefined : JSON.stringify(body), headers });
const ignis = (path) => call({ service: 'ignis', method: 'GET', path });
const jsonRpc = (service, target, body) =>
  call({ service, method: 'POST', path: '/', target, body: JSON.stringify(body) }).then((r) => r.json || {});
const logs = (action, body) => jsonRpc('logs', `Logs_20140328.${action}`, body);
const sqs = (action, body) => jsonRpc('sqs', `AmazonSQS.${action}`, body);

// Every page of a Lambda list call, following its marker (at most `pages` pages).
async function allPages(path, field, query = {}, pages = 100) {
  const items = [];
  let marker;
  for (let page = 0; page < pages; page++) {
    const q = { MaxItems: 1000, ...query };
    if (marker) q.Marker = marker;
    const { json } = await lambda('GET', path, q);
    items.push(...(json[field] || []));
    marker = json.NextMarker;
    if (!marker) break;
  }
  return items;
}

// ---- Rendering helpers ----

const main = () => document.getElementById('main');
const escapeHtml = (value) => String(value ?? '').replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const fnPath = (name) => `/2015-03-31/functions/${encodeURIComponent(name)}`;

function fromBase64(text) {
  const binary = atob(text);
  return new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0)));
}

function toBase64(bytes) {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function describe(error) {
  return error instanceof ApiError && error.type ? `${error.type}: ${error.message}` : String(error.message || error);
}

// The timers of the view on screen; a new view, or a refused key, stops them all.
let timers = [];
let viewToken = 0;
function every(ms, task) {
  const token = viewToken;
  let running = false;
  const id = setInterval(async () => {
    if (running || token !== viewToken) return;
    running = true;
    try { await task(); } catch (e) { failed(e); } finally { running = false; }
  }, ms);
  timers.push(id);
}
function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
  viewToken++;
}

// A failed call: a refused key ends the session; anything else is shown where it happened, or here.
function failed(error, where) {
  if (error instanceof ApiError && error.refusedKey) {
    signOut(`The key was refused: ${describe(error)}`);
    return;
  }
  if (where) {
    where.textContent = describe(error);
    where.classList.add('error');
  } else {
    console.error(error);
  }
}

// ---- Sign-in ----

function showLogin(message) {
  document.getElementById('nav').hidden = true;
  document.getElementById('login').hidden = false;
  main().replaceChildren();
  document.getElementById('login-error').textContent = message || '';
}

function signOut(message) {
  stopTimers();
  session.clear();
  showLogin(message);
}

async function signIn(event) {
  event.preventDefault();
  const key = document.getElementById('access-key').value.trim();
  const secret = document.getElementById('secret-key').value;
  const button = event.target.querySelector('button');
  const error = document.getElementById('login-error');
  error.textContent = '';
  button.disabled = true;
  try {
    await call({ service: 'lambda', method: 'GET', path: '/2016-08-19/account-settings' }, { key, secret });
    session.set(key, secret);
    document.getElementById('secret-key').value = '';
    start();
  } catch (e) {
    error.textContent = e instanceof ApiError && e.refusedKey
      ? `Sign-in refused: ${describe(e).replace(/\.*$/, '.')} Check the access key ID and secret.`
      : `Sign-in failed: ${describe(e)}`;
  } finally {
    button.disabled = false;
  }
}

// ---- Views ----

function route() {
  stopTimers();
  if (!session.creds) return showLogin();
  document.getElementById('login').hidden = true;
  document.getElementById('nav').hidden = false;
  document.getElementById('who').textContent = session.creds.key;
  const parts = location.hash.replace(/^#\/?/, '').split('/').map(decodeURIComponent);
  const view = parts[0] || 'functions';
  document.querySelectorAll('nav a').forEach((a) => a.classList.toggle('current', a.dataset.view === view));
  const token = viewToken;
  const render = {
    functions: () => (parts[1] ? functionPage(parts[1]) : functionsPage()),
    queues: queuesPage,
    workers: workersPage,
  }[view] || functionsPage;
  render().catch((e) => { if (token === viewToken) failed(e, main()); });
}

function start() {
  if (!location.hash) history.replaceState(null, '', '#/functions');
  route();
}

// ---- Functions ----

async function functionsPage() {
  main().innerHTML = `
    <h1>Functions</h1>
    <div class="toolbar">
      <label>Filter <input id="filter" placeholder="name contains" spellcheck="false"></label>
      <span id="summary" class="muted"></span>
    </div>
    <details class="panel" id="create"><summary>Create function</summary>
      <form id="create-form" class="form-grid">
        <label>Name <input name="name" required pattern="[A-Za-z0-9_\\-]{1,64}" spellcheck="false"></label>
        <label>Runtime <select name="runtime"></select></label>
        <label>Handler <input name="handler" value="function.handler" spellcheck="false"></label>
        <label>Memory (MB) <input name="memory" type="number" min="128" max="10240" value="128"></label>
        <label>Timeout (s) <input name="timeout" type="number" min="1" max="900" value="3"></label>
        <label>Code (.zip) <input name="zip" type="file" accept=".zip,application/zip" required></label>
        <button type="submit">Create</button>
        <p id="create-result" role="status"></p>
      </form>
    </details>
    <table id="functions"><thead><tr>
      <th>Name</th><th>State</th><th>Runtime</th><th class="num">Memory (MB)</th>
      <th class="num">Invocations (1 h)</th><th class="num">Errors (1 h)</th><th>Last modified</th>
    </tr></thead><tbody><tr><td colspan="7" class="muted">Loading…</td></tr></tbody></table>`;
  document.getElementById('create-form').addEventListener('submit', createFunction);
  fillRuntimes();
  const token = viewToken;
  const [functions, activity, settings] = await Promise.all([
    allPages('/2015-03-31/functions', 'Functions'),
    ignis('/ignis/activity').then((r) => r.json.Functions || []),
    lambda('GET', '/2016-08-19/account-settings').then((r) => r.json),
  ]);
  if (token !== viewToken) return;
  const byName = new Map(activity.map((a) => [a.FunctionName, a]));
  const rows = functions.map((f) => {
    const a = byName.get(f.FunctionName) || {};
    return `<tr data-name="${escapeHtml(f.FunctionName)}">
      <td><a href="#/functions/${encodeURIComponent(f.FunctionName)}">${escapeHtml(f.FunctionName)}</a></td>
      <td><span class="tag ${escapeHtml(f.State)}">${escapeHtml(f.State || '')}</span></td>
      <td>${escapeHtml(f.Runtime || f.PackageType || '')}</td>
      <td class="num">${escapeHtml(f.MemorySize)}</td>
      <td class="num">${a.Invocations || 0}</td><td class="num">${a.Errors || 0}</td>
      <td>${escapeHtml((f.LastModified || '').replace('T', ' ').slice(0, 19))}</td></tr>`;
  });
  const body = document.querySelector('#functions tbody');
  body.innerHTML = rows.length ? rows.join('') : '<tr><td colspan="7" class="muted">No functions yet.</td></tr>';
  const usage = settings.AccountUsage || {};
  const limit = settings.AccountLimit || {};
  document.getElementById('summary').textContent = `${functions.length} functions · concurrency limit `
    + `${limit.ConcurrentExecutions ?? '?'} (unreserved ${limit.UnreservedConcurrentExecutions ?? '?'}) · code `
    + `${formatBytes(usage.TotalCodeSize || 0)} of ${formatBytes(limit.TotalCodeSize || 0)}`;
  const all = Array.from(body.rows);
  document.getElementById('filter').addEventListener('input', (e) => {
    const text = e.target.value.toLowerCase();
    for (const row of all) row.hidden = !!text && !(row.dataset.name || '').toLowerCase().includes(text);
  });
}

function formatBytes(n) {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

async function fillRuntimes() {
  const select = document.querySelector('#create-form select[name="runtime"]');
  const names = ['provided.al2023', 'provided.al2'];
  try {
    const { json } = await ignis('/ignis/runtimes');
    for (const r of json.Runtimes || []) if (!names.includes(r.Name)) names.push(r.Name);
  } catch (e) {
    if (e instanceof ApiError && e.refusedKey) return failed(e);
  }
  select.innerHTML = names.map((n) => `<option>${escapeHtml(n)}</option>`).join('');
}

async function createFunction(event) {
  event.preventDefault();
  const form = event.target;
  const result = document.getElementById('create-result');
  result.className = '';
  const file = form.zip.files[0];
  if (!file) return;
  const button = form.querySelector('button');
  button.disabled = true;
  result.textContent = 'Uploading…';
  try {
    const zip = new Uint8Array(await file.arrayBuffer());
    const name = form.name.value.trim();
    await lambda('POST', '/2015-03-31/functions', undefined, {
      FunctionName: name,
      Runtime: form.runtime.value,
      Handler: form.handler.value,
      MemorySize: Number(form.memory.value),
      Timeout: Number(form.timeout.value),
      Code: { ZipFile: toBase64(zip) },
    });
    location.hash = `#/functions/${encodeURIComponent(name)}`;
  } catch (e) {
    failed(e, result);
  } finally {
    button.disabled = false;
  }
}

// ---- One function ----

async function functionPage(name) {
  main().innerHTML = `
    <p><a href="#/functions">Functions</a> /</p>
    <h1 id="function-name">${escapeHtml(name)}</h1>
    <div class="grid2">
      <section class="panel"><h2>Configuration</h2><dl id="configuration"><dd class="muted">Loading…</dd></dl></section>
      <section class="panel"><h2>Test</h2>
        <form id="test-form">
          <label>Event (JSON) <textarea id="event" spellcheck="false">{"key": "value"}</textarea></label>
          <button type="submit">Invoke</button>
        </form>
        <p id="test-status" role="status"></p>
        <div id="test-output" hidden><h2>Response</h2><pre id="test-payload"></pre>
          <h2>Log tail</h2><pre id="test-log"></pre></div>
      </section>
    </div>
    <h2>Last hour <span class="muted" id="charts-updated"></span></h2>
    <div class="charts" id="charts"></div>
    <div class="grid2">
      <section><h2>Versions</h2><table id="versions"><tbody></tbody></table></section>
      <section><h2>Aliases</h2><table id="aliases"><tbody></tbody></table></section>
    </div>
    <h2>Recent logs <label class="inline muted"><input type="checkbox" id="follow"> follow</label></h2>
    <pre id="logs" class="logs"></pre>`;
  document.getElementById('test-form').addEventListener('submit', (e) => testInvoke(e, name));
  const { json } = await lambda('GET', fnPath(name));
  const config = json.Configuration || {};
  const group = (config.LoggingConfig && config.LoggingConfig.LogGroup) || `/aws/lambda/${name}`;
  showConfiguration(json);
  const token = viewToken;
  const tail = new LogTail(group);
  await Promise.all([showVersions(name), showAliases(name), drawCharts(name), tail.load()]);
  if (token !== viewToken) return;
  every(10000, () => drawCharts(name));
  const follow = document.getElementById('follow');
  follow.addEventListener('change', () => {
    if (follow.checked && !follow.dataset.started) {
      follow.dataset.started = '1';
      every(2000, () => (follow.checked ? tail.more() : null));
    }
  });
}

function showConfiguration(fn) {
  const c = fn.Configuration || {};
  const rows = [
    ['ARN', c.FunctionArn], ['State', c.State + (c.StateReason ? ` (${c.StateReason})` : '')],
    ['Runtime', c.Runtime || c.PackageType], ['Handler', c.Handler], ['Memory', `${c.MemorySize} MB`],
    ['Timeout', `${c.Timeout} s`], ['Ephemeral storage', c.EphemeralStorage && `${c.EphemeralStorage.Size} MB`],
    ['Architectures', (c.Architectures || []).join(', ')], ['Code size', formatBytes(c.CodeSize || 0)],
    ['Code SHA-256', c.CodeSha256], ['Image', fn.Code && fn.Code.ImageUri],
    ['Reserved concurrency', fn.Concurrency && fn.Concurrency.ReservedConcurrentExecutions],
    ['Layers', (c.Layers || []).map((l) => l.Arn).join('\n')],
    ['Environment', c.Environment && Object.keys(c.Environment.Variables || {}).join(', ')],
    ['Log group', c.LoggingConfig && c.LoggingConfig.LogGroup],
    ['Log format', c.LoggingConfig && c.LoggingConfig.LogFormat],
    ['Tags', Object.entries(fn.Tags || {}).map(([k, v]) => `${k}=${v}`).join(', ')],
    ['Last modified', c.LastModified], ['Revision', c.RevisionId],
  ].filter(([, v]) => v !== undefined && v !== null && v !== '');
  document.getElementById('configuration').innerHTML =
    rows.map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join('');
}

async function showVersions(name) {
  const versions = await allPages(`${fnPath(name)}/versions`, 'Versions', {}, 10);
  document.querySelector('#versions tbody').innerHTML = '<tr><th>Version</th><th>Description</th><th>Modified</th></tr>'
    + versions.map((v) => `<tr><td>${escapeHtml(v.Version)}</td><td>${escapeHtml(v.Description)}</td>
      <td>${escapeHtml((v.LastModified || '').slice(0, 19))}</td></tr>`).join('');
}

async function showAliases(name) {
  const aliases = await allPages(`${fnPath(name)}/aliases`, 'Aliases', {}, 10);
  const weights = (a) => Object.entries((a.RoutingConfig && a.RoutingConfig.AdditionalVersionWeights) || {})
    .map(([v, w]) => ` + ${v} at ${w}`).join('');
  document.querySelector('#aliases tbody').innerHTML = '<tr><th>Alias</th><th>Version</th></tr>'
    + (aliases.length ? aliases.map((a) => `<tr><td>${escapeHtml(a.Name)}</td>
      <td>${escapeHtml(a.FunctionVersion + weights(a))}</td></tr>`).join('')
      : '<tr><td colspan="2" class="muted">None</td></tr>');
}

async function testInvoke(event, name) {
  event.preventDefault();
  const status = document.getElementById('test-status');
  status.className = '';
  const text = document.getElementById('event').value;
  try {
    JSON.parse(text);
  } catch (e) {
    status.textContent = `The event is not JSON: ${e.message}`;
    status.className = 'error';
    return;
  }
  const button = event.target.querySelector('button');
  button.disabled = true;
  status.textContent = 'Invoking…';
  try {
    const started = performance.now();
    const answer = await call({
      service: 'lambda', method: 'POST', path: `${fnPath(name)}/invocations`, body: text,
      headers: { 'x-amz-log-type': 'Tail', 'content-type': 'application/json' },
    });
    const ms = Math.round(performance.now() - started);
    const error = answer.headers.get('x-amz-function-error');
    status.textContent = error
      ? `Function error (${error}) in ${ms} ms, version ${answer.headers.get('x-amz-executed-version')}`
      : `Succeeded in ${ms} ms, version ${answer.headers.get('x-amz-executed-version')}`;
    status.className = error ? 'error' : 'ok';
    document.getElementById('test-output').hidden = false;
    let payload = answer.text;
    try { payload = JSON.stringify(JSON.parse(payload), null, 2); } catch (_) { /* shown as it came */ }
    document.getElementById('test-payload').textContent = payload;
    const log = answer.headers.get('x-amz-log-result');
    document.getElementById('test-log').textContent = log ? fromBase64(log) : '';
    await drawCharts(name);
  } catch (e) {
    failed(e, status);
  } finally {
    button.disabled = false;
  }
}

// The log group's events from the last hour (up to LOG_LINES), then, when following, the ones after.
const LOG_LINES = 500;
class LogTail {
  constructor(group) {
    this.group = group;
    this.lines = [];
    this.seen = new Set();
    this.since = Date.now() - 3600 * 1000;
  }

  async fetch(pages) {
    const request = { logGroupName: this.group, startTime: this.since, limit: 1000 };
    for (let page = 0; page < pages; page++) {
      let answer;
      try {
        answer = await logs('FilterLogEvents', request);
      } catch (e) {
        if (e instanceof ApiError && e.type === 'ResourceNotFoundException') return;
        throw e;
      }
      for (const event of answer.events || []) {
        if (this.seen.has(event.eventId)) continue;
        this.seen.add(event.eventId);
        this.lines.push(event);
        this.since = Math.max(this.since, event.timestamp);
      }
      if (!answer.nextToken) break;
      request.nextToken = answer.nextToken;
    }
    this.lines.sort((a, b) => a.timestamp - b.timestamp);
    if (this.lines.length > LOG_LINES) this.lines = this.lines.slice(-LOG_LINES);
    if (this.seen.size > 4 * LOG_LINES) this.seen = new Set(this.lines.map((e) => e.eventId));
    const pre = document.getElementById('logs');
    if (!pre) return;
    const stick = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = this.lines.length
      ? this.lines.map((e) => `${new Date(e.timestamp).toISOString().slice(11, 23)}  ${e.message.replace(/\n$/, '')}`).join('\n')
      : 'No log events in the last hour.';
    if (stick) pre.scrollTop = pre.scrollHeight;
  }

  load() { return this.fetch(10); }
  more() { return this.fetch(3); }
}

// ---- Charts ----

async function drawCharts(name) {
  const { json } = await ignis(`/ignis/activity/${encodeURIComponent(name)}`);
  const minutes = json.Minutes || [];
  const box = document.getElementById('charts');
  if (!box) return;
  const sum = (field) => minutes.reduce((n, m) => n + (m[field] || 0), 0);
  const peak = (field) => minutes.reduce((n, m) => Math.max(n, m[field] || 0), 0);
  box.innerHTML = [
    chart('invocations', 'Invocations', sum('Invocations'), bars(minutes, 'Invocations', 'bar')),
    chart('errors', 'Errors', sum('Errors'), bars(minutes, 'Errors', 'bar error')),
    chart('duration', 'Duration p50 / p99 (ms)', Math.round(peak('DurationP99')),
      lines(minutes, [['DurationP50', 'p50'], ['DurationP99', 'p99']])),
    chart('concurrency', 'Concurrent executions', peak('ConcurrentExecutions'),
      lines(minutes, [['ConcurrentExecutions', 'level']])),
  ].join('');
  document.getElementById('charts-updated').textContent = `(updated ${new Date().toLocaleTimeString()})`;
}

const W = 300;
const H = 100;

function chart(metric, title, total, svg) {
  return `<figure class="chart" data-metric="${metric}" data-total="${total}">
    <figcaption><span>${escapeHtml(title)}</span><span>${total}</span></figcaption>
    <svg viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" role="img" aria-label="${escapeHtml(title)}">
      <line class="axis" x1="0" y1="${H - 0.5}" x2="${W}" y2="${H - 0.5}"/>${svg}</svg></figure>`;
}

function bars(minutes, field, cls) {
  const max = Math.max(1, ...minutes.map((m) => m[field] || 0));
  const width = W / Math.max(1, minutes.length);
  return minutes.map((m, i) => {
    const h = ((m[field] || 0) / max) * (H - 4);
    return h > 0 ? `<rect class="${cls}" x="${(i * width).toFixed(1)}" y="${(H - h).toFixed(1)}" `
      + `width="${Math.max(1, width - 1).toFixed(1)}" height="${h.toFixed(1)}"><title>${m[field]}</title></rect>` : '';
  }).join('');
}

function lines(minutes, series) {
  const max = Math.max(1, ...minutes.flatMap((m) => series.map(([field]) => m[field] || 0)));
  // Each minute at the middle of its slot, as the bars are.
  const step = W / Math.max(1, minutes.length);
  return series.map(([field, cls]) => {
    // A minute without a value breaks the line into runs; a run of one point is a dot.
    const runs = [[]];
    minutes.forEach((m, i) => {
      if (m[field] === null || m[field] === undefined) return runs.push([]);
      runs[runs.length - 1].push([((i + 0.5) * step).toFixed(1), (H - 2 - (m[field] / max) * (H - 4)).toFixed(1)]);
    });
    return runs.filter((run) => run.length).map((run) => (run.length > 1
      ? `<polyline class="${cls}" points="${run.map((p) => p.join(',')).join(' ')}"/>`
      : `<circle class="${cls}" cx="${run[0][0]}" cy="${run[0][1]}" r="3"/>`)).join('');
  }).join('');
}

// ---- Queues ----

async function queuesPage() {
  main().innerHTML = `
    <h1>Queues</h1>
    <table id="queues"><thead><tr><th>Queue</th><th class="num">Messages</th><th class="num">In flight</th>
      <th class="num">Delayed</th></tr></thead><tbody><tr><td colspan="4" class="muted">Loading…</td></tr></tbody></table>
    <h2>Event source mappings</h2>
    <table id="mappings"><thead><tr><th>Source</th><th>Function</th><th>State</th><th class="num">Batch size</th>
      <th>UUID</th></tr></thead><tbody></tbody></table>`;
  const token = viewToken;
  const show = async () => {
    const [queues, mappings] = await Promise.all([listQueues(), allPages('/2015-03-31/event-source-mappings',
      'EventSourceMappings', {}, 20)]);
    if (token !== viewToken) return;
    const attribute = (q, name) => escapeHtml(q.Attributes[name] ?? '');
    document.querySelector('#queues tbody').innerHTML = queues.length ? queues.map((q) => `<tr>
      <td>${escapeHtml(q.url.split('/').pop())}</td><td class="num">${attribute(q, 'ApproximateNumberOfMessages')}</td>
      <td class="num">${attribute(q, 'ApproximateNumberOfMessagesNotVisible')}</td>
      <td class="num">${attribute(q, 'ApproximateNumberOfMessagesDelayed')}</td></tr>`).join('')
      : '<tr><td colspan="4" class="muted">No queues.</td></tr>';
    document.querySelector('#mappings tbody').innerHTML = mappings.length ? mappings.map((m) => `<tr>
      <td>${escapeHtml(m.EventSourceArn)}</td>
      <td><a href="#/functions/${encodeURIComponent(m.FunctionArn.split(':')[6])}">${escapeHtml(m.FunctionArn.split(':').slice(6).join(':'))}</a></td>
      <td>${escapeHtml(m.State)}</td><td class="num">${escapeHtml(m.BatchSize)}</td><td>${escapeHtml(m.UUID)}</td></tr>`).join('')
      : '<tr><td colspan="5" class="muted">No mappings.</td></tr>';
  };
  await show();
  every(5000, show);
}

async function listQueues() {
  const urls = [];
  let token;
  for (let page = 0; page < 10; page++) {
    const answer = await sqs('ListQueues', token ? { MaxResults: 1000, NextToken: token } : { MaxResults: 1000 });
    urls.push(...(answer.QueueUrls || []));
    token = answer.NextToken;
    if (!token) break;
  }
  const queues = [];
  for (const url of urls) {
    const answer = await sqs('GetQueueAttributes', {
      QueueUrl: url,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible',
        'ApproximateNumberOfMessagesDelayed'],
    });
    queues.push({ url, Attributes: answer.Attributes || {} });
  }
  return queues;
}

// ---- Workers ----

async function workersPage() {
  main().innerHTML = `
    <h1>Worker hosts</h1>
    <table id="workers"><thead><tr><th>Worker</th><th>Address</th><th>Health</th><th class="num">Sandboxes</th>
      <th class="num">Memory used (MB)</th><th class="num">Memory (MB)</th><th class="num">CPUs</th></tr></thead>
      <tbody><tr><td colspan="7" class="muted">Loading…</td></tr></tbody></table>`;
  const token = viewToken;
  const show = async () => {
    let workers;
    try {
      workers = (await ignis('/ignis/workers')).json.Workers || [];
    } catch (e) {
      if (e instanceof ApiError && e.status === 403 && !e.refusedKey) {
        document.querySelector('#workers tbody').innerHTML =
          '<tr><td colspan="7" class="muted">Only the administrator sees the worker hosts.</td></tr>';
        stopTimers();
        return;
      }
      throw e;
    }
    if (token !== viewToken) return;
    document.querySelector('#workers tbody').innerHTML = workers.map((w) => {
      const health = w.Healthy ? 'Healthy' : 'Unhealthy';
      return `<tr><td>${escapeHtml(w.WorkerId)}${w.Local ? ' (local)' : ''}</td><td>${escapeHtml(w.Address)}</td>
        <td><span class="tag ${health}">${health}</span></td><td class="num">${escapeHtml(w.Sandboxes)}</td>
        <td class="num">${escapeHtml(w.UsedMemoryMb)}</td><td class="num">${escapeHtml(w.MemoryMb)}</td>
        <td class="num">${escapeHtml(w.Cpus)}</td></tr>`;
    }).join('');
  };
  await show();
  every(5000, show);
}

// ---- Start ----

document.getElementById('login-form').addEventListener('submit', signIn);
document.getElementById('sign-out').addEventListener('click', () => signOut());
window.addEventListener('hashchange', route);
start();
