/**
 * The live dashboard served at GET / of the admin endpoint: one self-contained page (HTML, CSS and
 * a small script; no build step, no CDN). It lives on the SSE stream `api/events` (a snapshot a
 * second), draws the throughput chart as inline SVG, closes sessions through
 * `POST api/sessions/ID/close` and shows quota use from `api/quotas` when a quota service runs.
 * The client script avoids template literals so that this file can hold it in one.
 */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sockstap</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<style>
:root{--bg:#f4f6f9;--panel:#fff;--ink:#17202a;--muted:#5b6673;--line:#e2e6eb;--head:#f0f3f6;--up:#c2570c;--down:#1f6feb;--ok:#1a7f37;--bad:#b42318;--bar:#dbe7fb;--shadow:0 1px 2px #0000000f,0 1px 6px #0000000d}
@media (prefers-color-scheme:dark){:root{--bg:#0f1419;--panel:#182028;--ink:#e6edf3;--muted:#9aa7b4;--line:#2a343f;--head:#1e2831;--up:#f0883e;--down:#58a6ff;--ok:#3fb950;--bad:#ff7b72;--bar:#1f3a5f;--shadow:none}}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:var(--ink);background:var(--bg)}
header{display:flex;align-items:center;gap:1rem;flex-wrap:wrap;padding:.9rem 1.5rem;background:var(--panel);border-bottom:1px solid var(--line)}
header h1{font-size:1.25rem;margin:0;letter-spacing:.02em}
header h1 span{color:var(--down)}
.meta{color:var(--muted);font-size:.85rem}
.pill{display:inline-flex;align-items:center;gap:.4rem;padding:.15rem .6rem;border-radius:999px;font-size:.8rem;font-weight:600;background:var(--head)}
.pill::before{content:"";width:.55rem;height:.55rem;border-radius:50%;background:var(--muted)}
.pill.live::before{background:var(--ok)} .pill.down::before{background:var(--bad)}
main{padding:1.2rem 1.5rem 2rem;display:grid;gap:1.1rem;max-width:1500px;margin:0 auto}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(10.5rem,1fr));gap:.8rem}
.card,section{background:var(--panel);border:1px solid var(--line);border-radius:10px;box-shadow:var(--shadow)}
.card{padding:.7rem .9rem}
.card .k{color:var(--muted);font-size:.8rem;text-transform:uppercase;letter-spacing:.04em}
.card .v{display:block;font-size:1.45rem;font-weight:650;font-variant-numeric:tabular-nums;margin-top:.15rem;white-space:nowrap}
.card .s{color:var(--muted);font-size:.8rem;font-variant-numeric:tabular-nums}
.v.up{color:var(--up)} .v.down{color:var(--down)}
section{padding:.9rem 1rem;min-width:0}
section h2{font-size:1rem;margin:0 0 .6rem;display:flex;align-items:baseline;gap:.6rem;flex-wrap:wrap}
section h2 small{font-weight:400;color:var(--muted);font-size:.8rem}
.grid3{display:grid;grid-template-columns:repeat(auto-fit,minmax(20rem,1fr));gap:1.1rem}
.legend{display:flex;gap:1rem;font-size:.85rem;color:var(--muted);margin-left:auto}
.legend i{display:inline-block;width:.8rem;height:.25rem;border-radius:2px;vertical-align:middle;margin-right:.3rem}
#chart{width:100%;height:220px;display:block}
#chart .grid{stroke:var(--line);stroke-width:1}
#chart text{fill:var(--muted);font-size:11px;font-variant-numeric:tabular-nums}
.tablewrap{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{padding:.4rem .55rem;border-bottom:1px solid var(--line);text-align:left;font-variant-numeric:tabular-nums;white-space:nowrap}
th{background:var(--head);font-weight:600;font-size:.8rem;color:var(--muted);text-transform:uppercase;letter-spacing:.03em}
td.num,th.num{text-align:right}
td.dst{max-width:22rem;overflow:hidden;text-overflow:ellipsis}
tbody tr:hover{background:var(--head)}
.tag{display:inline-block;padding:0 .45rem;border-radius:4px;background:var(--head);border:1px solid var(--line);font-size:.8rem}
.muted{color:var(--muted)}
.empty{color:var(--muted);padding:.8rem .2rem;font-style:italic}
button{font:inherit;font-size:.8rem;cursor:pointer;padding:.2rem .65rem;border-radius:6px;border:1px solid var(--bad);color:var(--bad);background:transparent}
button:hover{background:var(--bad);color:#fff}
button:disabled{opacity:.5;cursor:default;background:transparent;color:var(--bad)}
:focus-visible{outline:3px solid var(--down);outline-offset:2px}
.bar{position:relative}
.bar>span{position:relative}
.bar::before{content:"";position:absolute;left:0;top:.3rem;bottom:.3rem;width:var(--w,0%);background:var(--bar);border-radius:3px}
meter{width:7rem;height:.9rem;vertical-align:middle}
dl.kv{display:grid;grid-template-columns:auto 1fr;gap:.35rem 1rem;margin:0 0 .8rem}
dl.kv dt{color:var(--muted)} dl.kv dd{margin:0;text-align:right;font-variant-numeric:tabular-nums}
dl.kv dd.wide{grid-column:1/-1} dl.kv dd.wide meter{width:100%}
table.quota meter{display:block;width:100%;margin-top:.25rem}
.sr-only{position:absolute;width:1px;height:1px;padding:0;margin:-1px;overflow:hidden;clip:rect(0,0,0,0);border:0}
</style></head><body>
<header>
 <h1><span aria-hidden="true">&#9679;</span> sockstap</h1>
 <span id="conn" class="pill" role="status" aria-live="polite">connecting&hellip;</span>
 <span class="meta" id="uptime"></span>
 <span class="meta" id="listeners"></span>
 <span class="meta" id="notice" role="alert"></span>
 <span class="pill down" id="logs-failing" role="alert" hidden></span>
</header>
<main>
 <div class="cards" aria-label="Totals">
  <div class="card"><span class="k">Live sessions</span><b class="v" id="c-live">&ndash;</b><span class="s" id="c-total"></span></div>
  <div class="card"><span class="k">Download now</span><b class="v down" id="c-rdown">&ndash;</b><span class="s" id="c-bdown"></span></div>
  <div class="card"><span class="k">Upload now</span><b class="v up" id="c-rup">&ndash;</b><span class="s" id="c-bup"></span></div>
  <div class="card"><span class="k">Cache hit ratio</span><b class="v" id="c-hit">&ndash;</b><span class="s" id="c-hits"></span></div>
  <div class="card"><span class="k">Refused</span><b class="v" id="c-refused">&ndash;</b><span class="s">by policy</span></div>
  <div class="card"><span class="k">Errors</span><b class="v" id="c-errors">&ndash;</b><span class="s">sessions ended in error</span></div>
 </div>

 <section aria-labelledby="h-chart">
  <h2 id="h-chart">Throughput <small id="chart-span">last 5 minutes, bytes per second</small>
   <span class="legend"><span><i style="background:var(--down)"></i>down (server &rarr; client)</span><span><i style="background:var(--up)"></i>up (client &rarr; server)</span></span></h2>
  <svg id="chart" role="img" aria-labelledby="chart-title"><title id="chart-title">Throughput chart: no data yet</title></svg>
 </section>

 <section aria-labelledby="h-sessions">
  <h2 id="h-sessions">Live sessions <small id="s-count"></small></h2>
  <div class="tablewrap"><table>
   <caption class="sr-only">Connections open now; each row has a button that closes the session</caption>
   <thead><tr><th scope="col">client</th><th scope="col">user</th><th scope="col">door</th><th scope="col">destination</th><th scope="col">protocol</th><th scope="col" class="num">up</th><th scope="col" class="num">down</th><th scope="col" class="num">age</th><th scope="col"><span class="sr-only">action</span></th></tr></thead>
   <tbody id="sessions"></tbody>
  </table></div>
  <p class="empty" id="s-empty">No live sessions.</p>
 </section>

 <div class="grid3">
  <section aria-labelledby="h-dst">
   <h2 id="h-dst">Top destinations <small>by bytes</small></h2>
   <table><caption class="sr-only">Destinations with the most traffic</caption>
    <thead><tr><th scope="col">host</th><th scope="col" class="num">sessions</th><th scope="col" class="num">bytes</th></tr></thead><tbody id="top-dst"></tbody></table>
  </section>
  <section aria-labelledby="h-users">
   <h2 id="h-users">Top users <small>by bytes</small></h2>
   <table><caption class="sr-only">Users with the most traffic</caption>
    <thead><tr><th scope="col">user</th><th scope="col" class="num">sessions</th><th scope="col" class="num">bytes</th></tr></thead><tbody id="top-users"></tbody></table>
  </section>
  <section aria-labelledby="h-proto">
   <h2 id="h-proto">By protocol <small>what the tunnels carried</small></h2>
   <table><caption class="sr-only">Sessions and bytes per protocol</caption>
    <thead><tr><th scope="col">protocol</th><th scope="col" class="num">live</th><th scope="col" class="num">ended</th><th scope="col" class="num">bytes</th></tr></thead><tbody id="protos"></tbody></table>
  </section>
 </div>

 <div class="grid3">
  <section aria-labelledby="h-cache">
   <h2 id="h-cache">HTTP cache</h2>
   <div id="cache"></div>
  </section>
  <section aria-labelledby="h-quota">
   <h2 id="h-quota">Quota use</h2>
   <div id="quotas"><p class="empty">Loading&hellip;</p></div>
  </section>
  <section aria-labelledby="h-results">
   <h2 id="h-results">Refusals and errors <small>by code</small></h2>
   <div id="results"></div>
  </section>
 </div>
</main>
<script>
(function () {
"use strict";
var $ = function (id) { return document.getElementById(id); };
var points = [];
var HISTORY_MS = 300000;
/* The chart's time axis: the shortest window that holds the history (it fills up after a start). */
var WINDOWS = [{ ms: 30000, tick: 5000, label: '30 seconds' }, { ms: 120000, tick: 30000, label: '2 minutes' }, { ms: 300000, tick: 60000, label: '5 minutes' }];
function fmtBytes(n) {
  n = Number(n) || 0;
  var u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'], i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + ' ' + u[i];
}
function fmtRate(n) { return fmtBytes(n) + '/s'; }
function fmtAge(ms) {
  var s = Math.floor(ms / 1000);
  if (s < 60) return s + 's';
  var m = Math.floor(s / 60); s %= 60;
  if (m < 60) return m + 'm ' + (s < 10 ? '0' : '') + s + 's';
  var h = Math.floor(m / 60); m %= 60;
  if (h < 24) return h + 'h ' + (m < 10 ? '0' : '') + m + 'm';
  return Math.floor(h / 24) + 'd ' + (h % 24) + 'h';
}
function esc(s) {
  return String(s === null || s === undefined ? '\\u2013' : s).replace(/[&<>"']/g, function (c) {
    return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }[c];
  });
}
function setText(id, text) { var e = $(id); if (e.textContent !== text) e.textContent = text; }

/* ---- throughput chart (inline SVG) ---- */
function niceMax(v) {
  if (v <= 0) return 1024;
  var p = Math.pow(2, Math.ceil(Math.log2(v)));
  return p * 0.75 >= v ? p * 0.75 : p;
}
function drawChart() {
  var svg = $('chart');
  var W = Math.max(200, Math.round(svg.getBoundingClientRect().width)), H = 220;
  var L = 78, R = 12, T = 10, B = 24, pw = W - L - R, ph = H - T - B;
  var now = points.length ? points[points.length - 1].t : Date.now();
  var span = points.length ? now - points[0].t : 0;
  var win = WINDOWS.filter(function (w) { return w.ms >= span; })[0] || WINDOWS[WINDOWS.length - 1];
  var pts = points.filter(function (p) { return p.t > now - win.ms; });
  var max = niceMax(pts.reduce(function (m, p) { return Math.max(m, p.up, p.down); }, 0));
  var x = function (t) { return L + pw * (1 - (now - t) / win.ms); };
  var y = function (v) { return T + ph * (1 - v / max); };
  var out = [];
  var last = pts.length ? pts[pts.length - 1] : null;
  out.push('<title id="chart-title">Throughput over the last ' + win.label + ': now ' + esc(last ? fmtRate(last.down) : '0 B/s') + ' down, ' + esc(last ? fmtRate(last.up) : '0 B/s') + ' up</title>');
  for (var i = 0; i <= 4; i++) {
    var v = max * i / 4, yy = y(v).toFixed(1);
    out.push('<line class="grid" x1="' + L + '" x2="' + (W - R) + '" y1="' + yy + '" y2="' + yy + '"/>');
    out.push('<text x="' + (L - 8) + '" y="' + (Number(yy) + 4) + '" text-anchor="end">' + esc(fmtRate(v)) + '</text>');
  }
  for (var m = 0; m * win.tick <= win.ms; m++) {
    var xx = x(now - m * win.tick).toFixed(1);
    var label = m === 0 ? 'now' : '\\u2212' + (win.tick >= 60000 ? (m * win.tick / 60000) + ' min' : (m * win.tick / 1000) + ' s');
    out.push('<text x="' + xx + '" y="' + (H - 6) + '" text-anchor="' + (m === 0 ? 'end' : 'middle') + '">' + label + '</text>');
  }
  setText('chart-span', 'last ' + win.label + ', bytes per second');
  if (pts.length > 1) {
    var line = function (key) { return pts.map(function (p, j) { return (j ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p[key]).toFixed(1); }).join(' '); };
    var down = line('down');
    out.push('<path d="' + down + ' L' + x(pts[pts.length - 1].t).toFixed(1) + ' ' + y(0) + ' L' + x(pts[0].t).toFixed(1) + ' ' + y(0) + ' Z" fill="var(--down)" fill-opacity=".16"/>');
    out.push('<path d="' + down + '" fill="none" stroke="var(--down)" stroke-width="2" stroke-linejoin="round"/>');
    out.push('<path d="' + line('up') + '" fill="none" stroke="var(--up)" stroke-width="2" stroke-linejoin="round"/>');
  } else {
    out.push('<text x="' + (L + pw / 2) + '" y="' + (T + ph / 2) + '" text-anchor="middle">collecting\\u2026</text>');
  }
  svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
  svg.innerHTML = out.join('');
}
window.addEventListener('resize', drawChart);

/* ---- live sessions, updated in place so focus and rows stay put ---- */
var rows = new Map();
function sessionRow(s) {
  var tr = document.createElement('tr');
  tr.dataset.id = s.id;
  for (var i = 0; i < 8; i++) tr.appendChild(document.createElement('td'));
  tr.cells[3].className = 'dst';
  tr.cells[5].className = tr.cells[6].className = tr.cells[7].className = 'num';
  var td = document.createElement('td');
  var b = document.createElement('button');
  b.type = 'button';
  b.textContent = 'close';
  b.dataset.id = s.id;
  b.setAttribute('aria-label', 'Close session ' + s.id + ' from ' + s.client + ' to ' + (s.dst || 'unknown'));
  td.appendChild(b);
  tr.appendChild(td);
  return tr;
}
function renderSessions(list, total) {
  var body = $('sessions'), seen = new Set();
  list.forEach(function (s) {
    seen.add(s.id);
    var tr = rows.get(s.id);
    if (!tr) { tr = sessionRow(s); rows.set(s.id, tr); body.appendChild(tr); }
    var c = tr.cells;
    var vals = [s.client, s.user || '\\u2013', s.door, s.dst || '\\u2013', s.proto, fmtBytes(s.bytesUp), fmtBytes(s.bytesDown), fmtAge(s.ageMs)];
    for (var i = 0; i < vals.length; i++) if (c[i].textContent !== vals[i]) c[i].textContent = vals[i];
    c[3].title = s.dst || '';
  });
  rows.forEach(function (tr, id) { if (!seen.has(id)) { tr.remove(); rows.delete(id); } });
  $('s-empty').hidden = list.length > 0;
  setText('s-count', total > list.length ? 'showing the ' + list.length + ' busiest of ' + total : total + ' open');
}
/* A POST needs the ADMINAUTH credentials (the browser sends them) or the admin token
   (STATEDIR/admin.token): asked for once, on the first 401, and kept in localStorage. */
var TOKEN_KEY = 'sockstap-admin-token';
function storedToken() { try { return localStorage.getItem(TOKEN_KEY) || ''; } catch (err) { return ''; } }
function postAdmin(path) {
  var send = function (token) { return fetch(path, { method: 'POST', headers: token ? { authorization: 'Bearer ' + token } : {} }); };
  return send(storedToken()).then(function (r) {
    if (r.status !== 401) return r;
    try { localStorage.removeItem(TOKEN_KEY); } catch (err) { /* private mode */ }
    var t = (window.prompt('Admin token: the contents of STATEDIR/admin.token (sockstap.log names the file)') || '').trim();
    if (!t) return r;
    return send(t).then(function (r2) {
      if (r2.ok || r2.status === 404) { try { localStorage.setItem(TOKEN_KEY, t); } catch (err) { /* private mode */ } }
      return r2;
    });
  });
}
$('sessions').addEventListener('click', function (e) {
  var b = e.target.closest('button[data-id]');
  if (!b) return;
  b.disabled = true;
  b.textContent = 'closing\\u2026';
  postAdmin('api/sessions/' + encodeURIComponent(b.dataset.id) + '/close').then(function (r) {
    if (r.ok || r.status === 404) { var tr = rows.get(b.dataset.id); if (tr) tr.style.opacity = '.45'; b.textContent = 'closed'; }
    else { b.disabled = false; b.textContent = 'close'; setText('notice', 'could not close: HTTP ' + r.status); }
  }, function () { b.disabled = false; b.textContent = 'close'; setText('notice', 'could not close: admin unreachable'); });
});

/* ---- tables ---- */
function topRows(list) {
  if (!list.length) return '<tr><td colspan="3" class="empty">Nothing yet.</td></tr>';
  var max = list.reduce(function (m, r) { return Math.max(m, r.bytesUp + r.bytesDown); }, 1);
  return list.map(function (r) {
    var t = r.bytesUp + r.bytesDown;
    return '<tr><td class="bar" style="--w:' + (100 * t / max).toFixed(1) + '%"><span>' + esc(r.name) + '</span></td><td class="num">' + r.sessions +
      '</td><td class="num" title="' + esc(fmtBytes(r.bytesDown) + ' down, ' + fmtBytes(r.bytesUp) + ' up') + '">' + esc(fmtBytes(t)) + '</td></tr>';
  }).join('');
}
function setHtml(id, html) { var e = $(id); if (e.innerHTML !== html) e.innerHTML = html; }
function kv(obj) {
  var keys = Object.keys(obj || {});
  if (!keys.length) return '';
  return keys.sort(function (a, b) { return obj[b] - obj[a]; }).map(function (k) { return '<tr><td><span class="tag">' + esc(k) + '</span></td><td class="num">' + obj[k] + '</td></tr>'; }).join('');
}
function render(snap) {
  var st = snap.stats;
  setText('uptime', 'up ' + fmtAge(st.uptimeMs));
  setText('listeners', (st.listeners || []).map(function (l) { return l.door + ' ' + (l.host.indexOf(':') >= 0 ? '[' + l.host + ']' : l.host) + ':' + l.port; }).join(' \\u00b7 '));
  setText('c-live', String(st.sessionsLive));
  setText('c-total', st.sessionsTotal + ' since start');
  setText('c-rdown', fmtRate(st.throughput.down));
  setText('c-rup', fmtRate(st.throughput.up));
  setText('c-bdown', fmtBytes(st.bytesDown) + ' total');
  setText('c-bup', fmtBytes(st.bytesUp) + ' total');
  var h = st.http;
  setText('c-hit', h.hitRatio === null ? '\\u2013' : (100 * h.hitRatio).toFixed(1) + ' %');
  setText('c-hits', h.cacheHits + ' hits \\u00b7 ' + h.cacheMisses + ' misses');
  setText('c-refused', String(st.refused));
  setText('c-errors', String(st.errors));
  var failing = st.logFilesFailing || [];
  var lf = document.getElementById('logs-failing');
  if (lf) {
    lf.hidden = failing.length === 0;
    lf.textContent = failing.length ? 'not writing ' + failing.map(function (f) { return f.file + ' (' + f.code + ')'; }).join(', ') + '; lines wait and are retried' : '';
  }
  renderSessions(snap.sessions, st.sessionsLive);
  setHtml('top-dst', topRows(st.topDestinations));
  setHtml('top-users', topRows(st.topUsers));
  var protos = Object.keys(st.protocols).sort();
  setHtml('protos', protos.length ? protos.map(function (p) {
    var f = st.protocols[p];
    return '<tr><td><span class="tag">' + esc(p) + '</span></td><td class="num">' + f.live + '</td><td class="num">' + f.sessions + '</td><td class="num">' + esc(fmtBytes(f.bytesUp + f.bytesDown)) + '</td></tr>';
  }).join('') : '<tr><td colspan="4" class="empty">Nothing yet.</td></tr>');
  var c = st.cache;
  var cache = c ? '<dl class="kv"><dt>stored</dt><dd>' + esc(fmtBytes(c.bytes)) + ' of ' + esc(fmtBytes(c.maxBytes)) + '</dd>' +
    '<dd class="wide"><meter min="0" max="' + c.maxBytes + '" value="' + c.bytes + '" aria-label="cache fill"></meter></dd>' +
    '<dt>entries</dt><dd>' + c.entries + '</dd>' : '<p class="empty">No cache open (CACHE=do turns it on).</p><dl class="kv">';
  cache += '<dt>hit ratio</dt><dd>' + (h.hitRatio === null ? '\\u2013' : (100 * h.hitRatio).toFixed(1) + ' %') + '</dd>' +
    '<dt>served from cache</dt><dd>' + esc(fmtBytes(h.hitBytes)) + '</dd>' +
    '<dt>HTTP requests</dt><dd>' + h.requests + '</dd></dl>';
  var codes = kv(h.byResultCode);
  if (codes) cache += '<table><caption class="sr-only">requests by result code</caption><thead><tr><th scope="col">result code</th><th scope="col" class="num">requests</th></tr></thead><tbody>' + codes + '</tbody></table>';
  setHtml('cache', cache);
  var ref = kv(st.refusalsByCode), err = kv(st.errorsByCode);
  setHtml('results', (ref || err) ? '<table><caption class="sr-only">refusals and errors by code</caption><thead><tr><th scope="col">code</th><th scope="col" class="num">sessions</th></tr></thead><tbody>' +
    (ref ? '<tr><th colspan="2" scope="rowgroup">refused</th></tr>' + ref : '') + (err ? '<tr><th colspan="2" scope="rowgroup">errors</th></tr>' + err : '') + '</tbody></table>' : '<p class="empty">None so far.</p>');
}

/* ---- quotas: GET api/quotas, [{scope, period, direction, limitBytes, usedBytes}] ---- */
function loadQuotas() {
  fetch('api/quotas').then(function (r) { return r.status === 404 ? [] : r.ok ? r.json() : Promise.reject(new Error('HTTP ' + r.status)); }).then(function (list) {
    if (!Array.isArray(list) || !list.length) { setHtml('quotas', '<p class="empty">No quotas configured.</p>'); return; }
    setHtml('quotas', '<table class="quota"><caption class="sr-only">quota use</caption><thead><tr><th scope="col">scope</th><th scope="col">period</th><th scope="col" class="num">used</th></tr></thead><tbody>' +
      list.map(function (q) {
        var pct = q.limitBytes > 0 ? Math.min(100, 100 * q.usedBytes / q.limitBytes) : 0;
        return '<tr><td>' + esc(q.scope) + '</td><td>' + esc(q.period) + ' <span class="muted">' + esc(q.direction) + '</span></td><td class="num">' + esc(fmtBytes(q.usedBytes)) + ' of ' + esc(fmtBytes(q.limitBytes)) +
          ' <span class="muted">(' + pct.toFixed(pct < 10 ? 1 : 0) + ' %)</span><meter min="0" max="100" low="70" high="90" optimum="0" value="' + pct.toFixed(1) + '" aria-label="' + esc(q.scope + ' ' + pct.toFixed(0) + ' percent used') + '"></meter></td></tr>';
      }).join('') + '</tbody></table>');
  }, function (e) { setHtml('quotas', '<p class="empty">Quota use unavailable (' + esc(e.message) + ').</p>'); });
}

/* ---- the stream ---- */
function setStatus(text, cls) { var e = $('conn'); e.className = 'pill ' + cls; setText('conn', text); }
var es = new EventSource('api/events');
es.addEventListener('open', function () { setStatus('live', 'live'); setText('notice', ''); });
es.addEventListener('error', function () { setStatus(es.readyState === 2 ? 'disconnected' : 'reconnecting\\u2026', 'down'); });
es.addEventListener('history', function (e) { points = JSON.parse(e.data); drawChart(); });
es.addEventListener('snapshot', function (e) {
  var snap = JSON.parse(e.data);
  var p = snap.point;
  if (p && (!points.length || points[points.length - 1].t < p.t)) points.push(p);
  while (points.length && points[0].t < snap.time - HISTORY_MS - 2000) points.shift();
  render(snap);
  drawChart();
});
window.addEventListener('pagehide', function () { es.close(); });
loadQuotas();
setInterval(loadQuotas, 5000);
drawChart();
})();
</script></body></html>
`;
