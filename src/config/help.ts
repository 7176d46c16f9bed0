/**
 * The text of `sockstap --help`: one line per parameter with its default (generated from the
 * parameter table, table.ts), exit codes, examples.
 */
import { parameterHelp } from './table.js';

export const HELP_TEXT = `usage: sockstap [-f FILE.yaml] [-P[HOST:]PORT[/DOOR]]... [NAME=VALUE]...
       sockstap check [ARGS]    validate ARGS and print the settings in force; nothing listens
       sockstap report [--since DATE] [--format table|csv|json]
       sockstap demo [HTTP=8000] [FTP=2121] [BANNER=2525]    a local origin for the README tour
       sockstap ca [--der]      print the TLS interception CA (created under STATEDIR/ca if needed)
A SOCKS4/4a/5 + HTTP proxy that taps the application protocols inside its tunnels.
With no argument it runs: -P127.0.0.1:1080/auto SOCKSTAP=all CACHE=do STATEDIR=./var ADMIN=127.0.0.1:9180
(npm start -- ARGS: that main job with ARGS added; a parameter in ARGS replaces the main job's)

  -P[HOST:]PORT[/DOOR]     listen (repeatable); IPv6 as [::1]:1080; no HOST = every interface;
                           DOOR socks|http|auto|tcprelay|udprelay|transparent, default SERVER's
                           (no -P at all: 127.0.0.1:1080)
                           or the TLS doors https and socks+tls (with CERTFILE=, KEYFILE=)
  -f FILE.yaml             settings in structured form (schema/sockstap.schema.json);
                           the command line overrides the file
${parameterHelp()}
Host lists: comma-separated; * any; *.example.com; .example.com (domain and subdomains);
10.0.0.0/8; [::1]; .localnet; user@host; host:80, host:8000-8080, host:80/443; !elem negates.
Durations: 300ms 30s 2m 1h 1d (bare number = seconds). Sizes: 512k 64m 1g (bare = bytes).

Exit status: 0 clean shutdown, 1 failure at start (port in use, LOGDIR unwritable), 2 configuration error.
Quote values with braces and commas: 'AUTHORIZER=-list{a:b,c:d}' (the shell splits them otherwise).
Signals: SIGHUP reloads (and reopens the logs), SIGUSR1 reopens every log file (logrotate;
the pid is in STATEDIR/sockstap.pid), SIGTERM/SIGINT drain (TIMEOUT=drain) and stop.

Examples:
  sockstap -P1080 SERVER=socks CACHE=do SOCKSTAP=http,ftp
  sockstap -P127.0.0.1:8080/http AUTHORIZER=-htpasswd{users.htpasswd} REJECT=*:*.ads.example:*
  sockstap -f contrib/sockstap.yaml -P[::1]:1080/auto
See docs/configuration.md for the full reference.
`;
