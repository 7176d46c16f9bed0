/** The text of `sockstap --help`: one line per parameter with its default, exit codes, examples. */

export const HELP_TEXT = `usage: sockstap [-f FILE.yaml] [-P[HOST:]PORT[/DOOR]]... [NAME=VALUE]...
       sockstap report [--since DATE] [--format table|csv|json]
A SOCKS4/4a/5 + HTTP proxy that taps the application protocols inside its tunnels.
With no argument it runs: -P127.0.0.1:1080/auto SOCKSTAP=all CACHE=do STATEDIR=./var ADMIN=127.0.0.1:9180

  -P[HOST:]PORT[/DOOR]     listen (repeatable); IPv6 as [::1]:1080; no HOST = every interface;
                           DOOR socks|http|auto|tcprelay|udprelay|transparent, default SERVER's
                           (no -P at all: 127.0.0.1:1080)
  -f FILE.yaml             settings in structured form (schema/sockstap.schema.json);
                           the command line overrides the file
  SERVER=socks|http|auto|transparent|tcprelay://HOST:PORT|udprelay://HOST:PORT
                           door of -P ports without /DOOR (default auto)
  SOCKSTAP=ProtoList[:[dstHostList][:[srcHostList][:NAME=VALUE ...]]]
                           tunnels to interpret (repeatable); http,tls,ftp,smtp,pop,imap,nntp,
                           ssh,telnet or all; params: CACHE EXPIRE PROXY SOCKS MOUNT TIMEOUT
                           BANDWIDTH QUOTA PERMIT REJECT, and MAXSIZE=SIZE (SMTP message limit, 552),
                           STRATEGY=auto|dial-first|cache-first (when the server is dialed:
                           dial-first always gives the client the real connect outcome)
  CACHE=do|no              HTTP cache (default no)
  CACHEDIR=DIR             cache store (default STATEDIR/cache)
  CACHESIZE=SIZE           bound of the disk cache (default 1g)
  CACHEMEM=SIZE            memory tier of the cache for hot objects (default 64m; 0 = none)
  EXPIRE=DURATION          heuristic freshness when a response gives none (default: the cache's)
  STATEDIR=DIR             persistent state (default ./var)
  LOGDIR=DIR               logs (default STATEDIR/log)
  LOGFORMAT=squid|common|combined
                           access.log format (default squid)
  RELIABLE=hostList        sources allowed to use the proxy (default .localnet)
  PERMIT=protoList:dstHostList:srcHostList[:WHEN]
  REJECT=protoList:dstHostList:srcHostList[:WHEN]
                           allow/deny rules in order, first match wins, none matching permits;
                           a list with ports or IPv6 goes in braces: {*:443,[::1]:80};
                           WHEN e.g. mon-fri/0900-1800,sat/1000-1300
  AUTHORIZER=-list{USER:PASS,...} | -htpasswd{FILE}
                           accounts for SOCKS5, SOCKS4 user ids and HTTP Basic (default none)
  PROXY=[USER:PASS@]HOST:PORT[:dstHostList]
                           upstream HTTP proxy (repeatable, tried in order)
  SOCKS=[USER:PASS@]HOST:PORT[/4|/4a|/5][:dstHostList]
                           upstream SOCKS proxy (repeatable, tried in order; default /5)
  MOUNT="vURL rURL [opts]" rewrite an HTTP URL prefix (repeatable); a /... vURL also serves
                           origin-form requests (reverse proxy: -P8080 SERVER=http
                           MOUNT="/* http://backend:80/*"), http://site/* those with Host site;
                           opts: from= dst= method= vhost= nvhost= direction=fb|fo
  TIMEOUT=NAME:DURATION,...
                           connect:2m handshake:10s idle:15m sniff:300ms drain:10s (defaults)
  MAXIMA=conn:N,peruser:N,persrc:N,perdoor:N
                           connection limits (default 0 = unlimited)
  IDENT=do|no              check SOCKS4 user ids with the client's identd, RFC 1413 (default no)
  SPOOF=client|no          transparent doors: dial from the client's address (default no)
  RELAY=splice|js          untapped tunnels: splice(2) on a native thread, which also accepts
                           SOCKS5 CONNECTs on socks/auto ports (remembering a direct decision
                           per source and destination for the DNS TTL, until a reload); or all
                           in JavaScript (default splice; js when the addon is missing)
  WORKERS=N|auto           processes sharing the listeners, for connection rate (default 1;
                           needs CACHE=no, no ADMIN/BANDWIDTH/MAXIMA, fixed ports)
  BANDWIDTH=RATE[/up|/down]:SCOPE
                           rate limit (repeatable); SCOPE conn|all|user:NAME[,NAME]|src:hostList|door:PORT
  QUOTA=SIZE/PERIOD[/up|/down]:SCOPE
                           volume limit per hour|day|week|month (repeatable)
  TIMEZONE=ZONE            IANA zone of time windows that name none (default: the machine's)
  ADMIN=HOST:PORT          dashboard, JSON API and /metrics (default off)
  ADMINAUTH=-list{USER:PASS}
                           accounts for ADMIN (default none)

Host lists: comma-separated; * any; *.example.com; .example.com (domain and subdomains);
10.0.0.0/8; [::1]; .localnet; user@host; host:80, host:8000-8080, host:80/443; !elem negates.
Durations: 300ms 30s 2m 1h 1d (bare number = seconds). Sizes: 512k 64m 1g (bare = bytes).

Exit status: 0 clean shutdown, 1 failure at start (e.g. port in use), 2 configuration error.
Signals: SIGHUP reloads, SIGTERM/SIGINT drain (TIMEOUT=drain) and stop.

Examples:
  sockstap -P1080 SERVER=socks CACHE=do SOCKSTAP=http,ftp
  sockstap -P127.0.0.1:8080/http AUTHORIZER=-htpasswd{users.htpasswd} REJECT=*:*.ads.example:*
  sockstap -f sockstap.yaml -P[::1]:1080/auto
See docs/configuration.md for the full reference.
`;
