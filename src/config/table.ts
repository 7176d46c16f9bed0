/**
 * The one table of sockstap's NAME=VALUE parameters: name, whether it repeats, whether a SOCKSTAP
 * rule may set it for the tunnels it picks, its synopsis and help text. `--help` (help.ts), the
 * per-rule list that parseTapRule accepts (params.ts TAP_PARAMETERS) and the description of a
 * YAML tap rule's `params` (schema.ts, hence schema/sockstap.schema.json) are generated from it.
 * Each value's parser is the parameter's case in params.ts `applyParameter` (per rule too: a
 * rule's value is parsed by the same code, once, at load); test/unit/config.test.ts checks that
 * this table and `PARAMETERS` name the same parameters with the same repeatability.
 */

export interface ParameterSpec {
  name: string;
  /** Repeatable values accumulate (SOCKSTAP, PERMIT, ...); the others replace. */
  repeatable: boolean;
  /** A SOCKSTAP rule may set it (`SOCKSTAP="http:::CACHE=do EXPIRE=1h"`) for the tunnels it picks. */
  perRule: boolean;
  /** Only inside a SOCKSTAP rule (MAXSIZE), never on its own. */
  ruleOnly?: boolean;
  /** How --help's per-rule list shows it, when not just by name. */
  ruleNote?: string;
  /** `CACHE=do|no`, as --help shows it. */
  synopsis: string;
  /** --help lines after (or beside) the synopsis. */
  help: readonly string[];
}

export const PARAMETER_TABLE: readonly ParameterSpec[] = [
  { name: 'SERVER', repeatable: false, perRule: false, synopsis: 'SERVER=socks|http|auto|transparent|tcprelay://HOST:PORT|udprelay://HOST:PORT', help: ['door of -P ports without /DOOR (default auto)'] },
  { name: 'SOCKSTAP', repeatable: true, perRule: false, synopsis: 'SOCKSTAP=ProtoList[:[dstHostList][:[srcHostList][:NAME=VALUE ...]]]', help: ['tunnels to interpret (repeatable); http,tls,ftp,smtp,pop,imap,nntp,', 'ssh,telnet or all; NAME=VALUE: parameters for the tunnels it picks:'] },
  { name: 'CACHE', repeatable: false, perRule: true, synopsis: 'CACHE=do|no', help: ['HTTP cache (default no)'] },
  { name: 'CACHEDIR', repeatable: false, perRule: false, synopsis: 'CACHEDIR=DIR', help: ['cache store (default STATEDIR/cache)'] },
  { name: 'CACHESIZE', repeatable: false, perRule: false, synopsis: 'CACHESIZE=SIZE', help: ['bound of the disk cache (default 1g)'] },
  { name: 'CACHEMEM', repeatable: false, perRule: false, synopsis: 'CACHEMEM=SIZE', help: ['memory tier of the HTTP cache for hot objects (default 64m; 0 = off)'] },
  { name: 'EXPIRE', repeatable: false, perRule: true, synopsis: 'EXPIRE=DURATION', help: ['heuristic freshness when a response gives none (default: the cache\'s)'] },
  { name: 'STATEDIR', repeatable: false, perRule: false, synopsis: 'STATEDIR=DIR', help: ['persistent state (default ./var)'] },
  { name: 'LOGDIR', repeatable: false, perRule: false, synopsis: 'LOGDIR=DIR', help: ['logs (default STATEDIR/log)'] },
  { name: 'LOGFORMAT', repeatable: false, perRule: false, synopsis: 'LOGFORMAT=squid|common|combined', help: ['access.log format (default squid)'] },
  { name: 'RELIABLE', repeatable: false, perRule: false, synopsis: 'RELIABLE=hostList', help: ['sources allowed to use the proxy (default .localnet)'] },
  { name: 'PERMIT', repeatable: true, perRule: true, synopsis: 'PERMIT=protoList:dstHostList:srcHostList[:WHEN]', help: [] },
  { name: 'REJECT', repeatable: true, perRule: true, synopsis: 'REJECT=protoList:dstHostList:srcHostList[:WHEN]', help: ['allow/deny rules in order, first match wins, none matching permits;', 'a list with ports or IPv6 goes in braces: {*:443,[::1]:80};', 'WHEN e.g. mon-fri/0900-1800,sat/1000-1300'] },
  { name: 'AUTHORIZER', repeatable: false, perRule: false, synopsis: 'AUTHORIZER=-list{USER:PASS,...} | -htpasswd{FILE} | -cmd{PROGRAM ARGS}[,concurrency=N,children=N,timeout=D] | -ldap{URL,BASEDN,FILTER}[,binddn={DN},bindpass=P,groupbase={DN},timeout=D] | -radius{HOST:PORT,SECRET}[,timeout=D,retries=N]', help: ['accounts for SOCKS5, SOCKS4 user ids and HTTP Basic (default none);', '-cmd: a Squid basic-auth helper (basic_ncsa_auth, basic_ldap_auth, ...);', '-ldap: search FILTER (%s = user) under BASEDN, bind as the entry; its', 'groups (memberOf, groupOfNames, posixGroup) are group:NAME scopes;', '-radius: a PAP Access-Request; Filter-Id values are its groups'] },
  { name: 'AUTHTTL', repeatable: false, perRule: false, synopsis: 'AUTHTTL=DURATION[/DURATION]', help: ['cache of -cmd, -ldap, -radius answers: successes/failures', '(default 60s/10s)'] },
  { name: 'PROXY', repeatable: true, perRule: true, synopsis: 'PROXY=[https://][USER:PASS@]HOST:PORT[/proxy-v1|/proxy-v2][:dstHostList]', help: ['upstream HTTP proxy (repeatable, tried in order); https:// reaches it', 'over TLS, its certificate verified (system store + TLSCAFILE);', '/proxy-v1, /proxy-v2: send it (or a SOCKS= hop) a PROXY protocol', 'header naming the client first'] },
  { name: 'SOCKS', repeatable: true, perRule: true, synopsis: 'SOCKS=[USER:PASS@]HOST:PORT[/4|/4a|/5][/proxy-v1|/proxy-v2][:dstHostList]', help: ['upstream SOCKS proxy (repeatable, tried in order; default /5)'] },
  { name: 'POOL', repeatable: true, perRule: false, synopsis: 'POOL=BALANCE[/maxfails=N][/failtimeout=D]:{VIA[*W],...}[:dstHostList[:srcHostList]]', help: ['upstream pool (repeatable; after YAML routes, before PROXY/SOCKS):', 'BALANCE round-robin|weighted|hash-src|hash-dst|first-up; VIA a hop', 'URL (http://, https://, socks5://...) or direct; *W a weight'] },
  { name: 'SRCIF', repeatable: true, perRule: false, synopsis: 'SRCIF=ADDRESS[:dstHostList[:srcHostList]]', help: ['source address of direct dials (repeatable, first match wins; [IPv6];', 'must be an address of this host)'] },
  { name: 'MOUNT', repeatable: true, perRule: true, synopsis: 'MOUNT="vURL rURL [opts]"', help: ['rewrite an HTTP URL prefix (repeatable); a /... vURL also serves', 'origin-form requests (reverse proxy: -P8080 SERVER=http', 'MOUNT="/* http://backend:80/*"), http://site/* those with Host site;', 'opts: from= dst= method= vhost= nvhost= direction=fb|fo'] },
  { name: 'TIMEOUT', repeatable: false, perRule: true, ruleNote: 'TIMEOUT (not drain)', synopsis: 'TIMEOUT=NAME:DURATION,...', help: ['connect:2m handshake:10s idle:15m sniff:300ms drain:10s (defaults)'] },
  { name: 'MAXIMA', repeatable: false, perRule: false, synopsis: 'MAXIMA=conn:N,peruser:N,persrc:N,perdoor:N,group:NAME:N', help: ['connection limits (default 0 = unlimited); group:NAME:N for the', 'members of a group together'] },
  { name: 'IDENT', repeatable: false, perRule: false, synopsis: 'IDENT=do|no', help: ['check SOCKS4 user ids with the client\'s identd, RFC 1413 (default no)'] },
  { name: 'SOCKS4AUTH', repeatable: false, perRule: false, synopsis: 'SOCKS4AUTH=userid|none', help: ['with AUTHORIZER: userid lets a known SOCKS4 user id in without a', 'password (weak: anyone may send any name); none refuses SOCKS4', 'unless IDENT=do confirms the id (default none)'] },
  { name: 'SPOOF', repeatable: false, perRule: false, synopsis: 'SPOOF=client|no', help: ['transparent doors: dial from the client\'s address (default no)'] },
  { name: 'RELAY', repeatable: false, perRule: false, synopsis: 'RELAY=splice|js', help: ['untapped tunnels: splice(2) on a native thread, which also accepts', 'SOCKS5 CONNECTs on socks/auto ports (remembering a direct decision', 'per source and destination for the DNS TTL, until a reload) and', 'answers a source\'s repeated fresh cache hits; or all in JavaScript', '(default splice; js when the addon is missing)'] },
  { name: 'WORKERS', repeatable: false, perRule: false, synopsis: 'WORKERS=N|auto', help: ['processes sharing the listeners, for connection rate (default 1;', 'fixed ports); one cache store, ADMIN in the primary, and BANDWIDTH,', 'MAXIMA and QUOTA hold across them'] },
  { name: 'REDIS', repeatable: false, perRule: false, synopsis: 'REDIS=redis://[USER:PASS@]HOST:PORT[/DB]', help: ['shared state for several nodes: QUOTA usage, MAXIMA counters,', 'BANDWIDTH buckets (default none: this machine\'s own)'] },
  { name: 'BANDWIDTH', repeatable: true, perRule: true, synopsis: 'BANDWIDTH=RATE[/up|/down]:SCOPE', help: ['rate limit of relayed, tapped and HTTP-door traffic (repeatable);', 'SCOPE conn|all|user:NAME[,NAME]|group:NAME[,NAME]|src:hostList|door:PORT'] },
  { name: 'QUOTA', repeatable: true, perRule: true, synopsis: 'QUOTA=SIZE/PERIOD[/up|/down]:SCOPE', help: ['volume limit per hour|day|week|month (repeatable)'] },
  { name: 'TIMEZONE', repeatable: false, perRule: false, synopsis: 'TIMEZONE=ZONE', help: ['IANA zone of time windows that name none (default: the machine\'s)'] },
  { name: 'STLS', repeatable: true, perRule: false, synopsis: 'STLS=mitm[:dstHostList[:srcHostList]] | STLS=-mitm:dstHostList', help: ['TLS interception (repeatable, first match wins; none = no interception)', 'of tunnels a SOCKSTAP rule with tls (or all) picks: a leaf for the SNI', 'signed by sockstap\'s CA, HTTPS into the HTTP tap (https:// cache, rules,', 'access.log); -mitm never intercepts those destinations'] },
  { name: 'CAFILE', repeatable: false, perRule: false, synopsis: 'CAFILE=FILE', help: ['CA certificate (PEM, may hold the chain) (default STATEDIR/ca/ca.pem,', 'created at the first start that needs it)'] },
  { name: 'CAKEY', repeatable: false, perRule: false, synopsis: 'CAKEY=FILE', help: ['its private key, PEM (default STATEDIR/ca/ca.key, mode 0600)'] },
  { name: 'TLSVERIFY', repeatable: false, perRule: false, synopsis: 'TLSVERIFY=do|no', help: ['verify servers\' certificates before intercepting (default do)'] },
  { name: 'TLSCAFILE', repeatable: false, perRule: false, synopsis: 'TLSCAFILE=FILE', help: ['extra trust anchors for servers and https:// upstreams, PEM bundle', '(default: system store only)'] },
  { name: 'CERTFILE', repeatable: false, perRule: false, synopsis: 'CERTFILE=FILE', help: ['certificate of TLS doors -PPORT/https and -PPORT/socks+tls (PEM, may', 'hold the chain; read again at SIGHUP)'] },
  { name: 'KEYFILE', repeatable: false, perRule: false, synopsis: 'KEYFILE=FILE', help: ['its private key, PEM (default: in CERTFILE)'] },
  { name: 'HOSTS', repeatable: true, perRule: false, synopsis: 'HOSTS=NAME/ADDR[,NAME/ADDR...]', help: ['static names, answered before DNS (repeatable; YAML dns.hosts)'] },
  { name: 'ADMIN', repeatable: false, perRule: false, synopsis: 'ADMIN=HOST:PORT', help: ['dashboard, JSON API and /metrics (default off); GET /proxy.pac', '(and /wpad.dat) there and on http/auto ports: a PAC file for browsers'] },
  { name: 'ADMINAUTH', repeatable: false, perRule: false, synopsis: 'ADMINAUTH=-list{USER:PASS}', help: ['accounts for ADMIN (default none)'] },
  { name: 'PROXYPROTOCOL', repeatable: false, perRule: false, synopsis: 'PROXYPROTOCOL=hostList', help: ['load balancers that send a PROXY protocol v1/v2 header (HAProxy', 'send-proxy[-v2]); from them the header names the client; a header from', 'any other source, or none from these, is refused (default none;', 'turns the native accept path off)'] },
  { name: 'MAXSIZE', repeatable: false, perRule: true, ruleOnly: true, ruleNote: 'MAXSIZE=SIZE (SMTP message limit, 552)', synopsis: 'MAXSIZE=SIZE', help: ['(in a SOCKSTAP rule only) the SMTP tap\'s message size limit, 552'] },
  { name: 'STRATEGY', repeatable: false, perRule: true, ruleOnly: true, ruleNote: 'STRATEGY=auto|dial-first|cache-first (when the server is dialed; dial-first: the client always gets the real connect outcome)', synopsis: 'STRATEGY=auto|dial-first|cache-first', help: ['(in a SOCKSTAP rule only) the connect strategy of its tunnels'] },
];

/** Names a SOCKSTAP rule accepts, in the table's order. */
export const PER_RULE_NAMES: readonly string[] = PARAMETER_TABLE.filter((p) => p.perRule).map((p) => p.name);

/** Column where help text starts: two spaces, the synopsis, padding. */
const HELP_COLUMN = 27;

function wrap(words: readonly string[], width: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const w of words) {
    if (line !== '' && line.length + 1 + w.length > width) {
      lines.push(line);
      line = w;
    } else {
      line = line === '' ? w : `${line} ${w}`;
    }
  }
  if (line !== '') lines.push(line);
  return lines;
}

/** The parameter lines of --help, generated from the table. */
export function parameterHelp(): string {
  const out: string[] = [];
  const pad = ' '.repeat(HELP_COLUMN);
  for (const p of PARAMETER_TABLE) {
    if (p.ruleOnly) continue;
    const help = [...p.help];
    if (p.name === 'SOCKSTAP') {
      const names = PARAMETER_TABLE.filter((x) => x.perRule).map((x) => x.ruleNote ?? x.name);
      help.push(...wrap(names.join(' ').split(' '), 70));
    }
    if (p.synopsis.length < HELP_COLUMN - 2 && help.length > 0) {
      out.push(`  ${p.synopsis.padEnd(HELP_COLUMN - 2)}${help[0]}`);
      for (const h of help.slice(1)) out.push(pad + h);
    } else {
      out.push(`  ${p.synopsis}`);
      for (const h of help) out.push(pad + h);
    }
  }
  return out.join('\n') + '\n';
}
