/** The live page served at GET / of the admin endpoint: plain HTML and a few lines of script. */
export const DASHBOARD_HTML = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>sockstap</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:1.5rem;color:#1d232a;background:#f6f7f9}
 h1{font-size:1.3rem;margin:0 0 1rem} .cards{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem}
 .card{background:#fff;border-radius:8px;padding:.8rem 1rem;box-shadow:0 1px 3px #0002;min-width:9rem}
 .card b{display:block;font-size:1.4rem} table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 3px #0002}
 th,td{padding:.35rem .6rem;border-bottom:1px solid #e3e6ea;text-align:left;font-variant-numeric:tabular-nums}
 th{background:#eef1f4} button{cursor:pointer}
</style></head><body>
<h1>sockstap <small id="up"></small></h1>
<div class="cards">
 <div class="card">live sessions<b id="live">–</b></div>
 <div class="card">sessions total<b id="total">–</b></div>
 <div class="card">refused<b id="refused">–</b></div>
 <div class="card">bytes up<b id="bup">–</b></div>
 <div class="card">bytes down<b id="bdown">–</b></div>
</div>
<table><thead><tr><th>id</th><th>client</th><th>user</th><th>door</th><th>destination</th><th>proto</th><th>up</th><th>down</th><th>age</th><th></th></tr></thead>
<tbody id="rows"></tbody></table>
<script>
const fmt = (n) => n < 1024 ? n + ' B' : n < 1048576 ? (n/1024).toFixed(1) + ' KiB' : n < 1073741824 ? (n/1048576).toFixed(1) + ' MiB' : (n/1073741824).toFixed(2) + ' GiB';
const esc = (s) => String(s ?? '–').replace(/[&<>"]/g, (c) => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
async function tick() {
  try {
    const [stats, sessions] = await Promise.all([fetch('api/stats').then(r => r.json()), fetch('api/sessions').then(r => r.json())]);
    document.getElementById('up').textContent = 'up ' + Math.round(stats.uptimeMs / 1000) + ' s';
    document.getElementById('live').textContent = stats.sessionsLive;
    document.getElementById('total').textContent = stats.sessionsTotal;
    document.getElementById('refused').textContent = stats.refused;
    document.getElementById('bup').textContent = fmt(stats.bytesUp);
    document.getElementById('bdown').textContent = fmt(stats.bytesDown);
    document.getElementById('rows').innerHTML = sessions.map((s) => '<tr><td>' + esc(s.id) + '</td><td>' + esc(s.client) + '</td><td>' + esc(s.user) +
      '</td><td>' + esc(s.door) + '</td><td>' + esc(s.dst) + '</td><td>' + esc(s.proto) + '</td><td>' + fmt(s.bytesUp) + '</td><td>' + fmt(s.bytesDown) +
      '</td><td>' + Math.round(s.ageMs / 1000) + ' s</td><td><button data-id="' + esc(s.id) + '">close</button></td></tr>').join('');
  } catch (e) { document.getElementById('up').textContent = '(disconnected)'; }
}
document.getElementById('rows').addEventListener('click', async (e) => {
  const id = e.target && e.target.dataset && e.target.dataset.id;
  if (id) { await fetch('api/sessions/' + encodeURIComponent(id) + '/close', { method: 'POST' }); tick(); }
});
tick(); setInterval(tick, 1000);
</script></body></html>
`;
