/**
 * The structured form of the configuration (`-f FILE.yaml`), as a zod schema. It checks shape
 * only — which keys exist and what kind of value each holds; the values themselves (host lists,
 * durations, sizes, rules) go through the same parsers as the command-line parameters, so both
 * forms accept exactly the same texts. schema/sockstap.schema.json is generated from this
 * (`npx tsx scripts/gen-schema.ts`).
 */
import { z } from 'zod';
import { PER_RULE_NAMES } from './table.js';

const text = z.string();
const textOrList = z.union([text, z.array(text)]);
const durationValue = z.union([text, z.number().nonnegative()]).describe('a duration such as 300ms, 30s, 2m, 1h; a number means seconds');
const sizeValue = z.union([text, z.number().int().nonnegative()]).describe('a size such as 512k, 64m, 1g; a number means bytes');

const door = z.enum(['socks', 'http', 'auto', 'tcprelay', 'udprelay', 'transparent']);

const listenItem = z.union([
  text.describe('[HOST:]PORT[/DOOR], as after -P'),
  z.strictObject({
    host: text.optional().describe("bind address; omitted or '' = every interface"),
    port: z.union([z.number().int().min(0).max(65535), text]),
    door: door.optional().describe('defaults to server'),
    target: text.optional().describe('HOST:PORT, the destination of a tcprelay/udprelay door'),
  }),
]);

const ruleText = text.describe('protoList:dstHostList:srcHostList[:WHEN]');
const ruleItem = z.union([
  z.strictObject({ permit: ruleText }),
  z.strictObject({ reject: ruleText }),
  z.strictObject({
    action: z.enum(['permit', 'reject']),
    protocols: textOrList.optional().describe('protocol names or *; default *'),
    dst: textOrList.optional().describe('destination host list; default *'),
    src: textOrList.optional().describe('source host list; default *'),
    when: text.optional().describe('time window such as mon-fri/0900-1800'),
  }),
]);

const accounts = z.union([
  text.describe('-list{USER:PASS,...}, -htpasswd{FILE} or -cmd{PROGRAM ARGS}[,concurrency=N,children=N,timeout=DURATION]'),
  z.strictObject({ users: z.record(text, text).describe('user name to password') }),
  z.strictObject({ htpasswd: text.describe('htpasswd file, relative to this file') }),
]);

const tapItem = z.union([
  text.describe('ProtoList[:[dstHostList][:[srcHostList][:params]]], as SOCKSTAP='),
  z.strictObject({
    protocols: textOrList.describe('http, tls, ftp, smtp, pop, imap, nntp, ssh, telnet or all'),
    dst: textOrList.optional(),
    src: textOrList.optional(),
    params: z
      .union([text, z.record(text, text)])
      .optional()
      .describe(`NAME=VALUE applied to the tunnels this rule picks: ${PER_RULE_NAMES.join(', ')}`),
  }),
]);

const headerEdits = z.strictObject({
  set: z.record(text, text).optional().describe('field name to value; replaces every field of that name'),
  remove: z.array(text).optional().describe('field names to remove'),
});

const routeItem = z.strictObject({
  match: z
    .strictObject({
      dst: textOrList.optional().describe('destination host list'),
      src: textOrList.optional().describe('source host list'),
      user: textOrList.optional().describe('authenticated user names; * any user, - no user'),
      proto: textOrList.optional().describe('protocols found by the sniffer: http, tls, ftp, ...'),
      door: textOrList.optional().describe('front protocol: socks4, socks4a, socks5, connect, http, tcprelay'),
      when: text.optional().describe('time window such as mon-fri/0900-1800'),
    })
    .optional()
    .describe('every condition given must hold; none = every connection'),
  via: textOrList.describe('ordered fallback list: direct, or SCHEME://[USER:PASS@]HOST:PORT hops joined by commas (a chain)'),
  balance: z.enum(['round-robin', 'weighted', 'hash-src', 'hash-dst', 'first-up']).optional().describe('via is a pool of upstreams spread this way'),
  weights: z.array(z.number().int().min(1).max(1000)).optional().describe('weighted: one weight per via entry (default 1)'),
  maxfails: z.number().int().min(1).max(1000).optional().describe('consecutive failures that mark an upstream dead (default 1)'),
  failtimeout: z.union([text, z.number()]).optional().describe('how long an upstream stays marked dead before it is probed back (default 30s)'),
});

const portmapItem = z.strictObject({
  listen: text.describe('[HOST:]PORT or [HOST:]FIRST-LAST'),
  to: text.describe('HOST:PORT or HOST:FIRST-LAST (as many ports as listen)'),
  proto: z.enum(['tcp', 'udp']).optional().describe('tcp (tcprelay, default) or udp (udprelay)'),
});

const dnsSettings = z.strictObject({
  cache: z.number().int().nonnegative().optional().describe('most names kept; default 1024'),
  ttl: durationValue.optional().describe('how long a resolved name is kept; default 60s'),
  negativeTtl: durationValue.optional().describe('how long a failure is remembered; default 5s'),
  order: z.enum(['auto', 'ipv4first', 'ipv6first', 'ipv4', 'ipv6']).optional().describe('address families and which first'),
  hosts: z.record(text, textOrList).optional().describe('static entries: name to address(es)'),
});

export const configFileSchema = z
  .strictObject({
    listen: z.array(listenItem).optional().describe('listeners, as -P'),
    server: text.optional().describe('socks, http, auto, transparent or tcprelay://HOST:PORT'),
    reliable: textOrList.optional().describe('sources allowed to use the proxy; default .localnet'),
    proxyprotocol: textOrList.optional().describe('load balancers that send a PROXY protocol v1/v2 header naming the client (PROXYPROTOCOL=)'),
    rules: z.array(ruleItem).optional().describe('PERMIT/REJECT rules in order; first match wins'),
    authorizer: accounts.optional(),
    timeouts: z
      .strictObject({
        connect: durationValue.optional(),
        handshake: durationValue.optional(),
        idle: durationValue.optional(),
        sniff: durationValue.optional(),
        drain: durationValue.optional(),
      })
      .optional(),
    maxima: z
      .strictObject({
        conn: z.number().int().nonnegative().optional(),
        peruser: z.number().int().nonnegative().optional(),
        persrc: z.number().int().nonnegative().optional(),
        perdoor: z.number().int().nonnegative().optional(),
        groups: z.record(text, z.number().int().nonnegative()).optional().describe('group name to connections at once of its members together (MAXIMA=group:NAME:N)'),
      })
      .optional()
      .describe('connection limits; 0 = unlimited'),
    statedir: text.optional(),
    logdir: text.optional(),
    logformat: z.enum(['squid', 'common', 'combined']).optional(),
    cache: z
      .union([
        z.enum(['do', 'no']),
        z.boolean(),
        z.strictObject({
          enabled: z.boolean().optional(),
          dir: text.optional(),
          size: sizeValue.optional(),
          mem: sizeValue.optional(),
          expire: durationValue.optional(),
        }),
      ])
      .optional(),
    sockstap: z.array(tapItem).optional().describe('tap rules, as SOCKSTAP='),
    proxy: textOrList.optional().describe('upstream HTTP proxies, as PROXY='),
    socks: textOrList.optional().describe('upstream SOCKS proxies, as SOCKS='),
    routes: z.array(routeItem).optional().describe('routing rules, first match wins; tried before proxy/socks'),
    portmap: z.array(portmapItem).optional().describe('port mapping: many ports and ranges to fixed destinations'),
    dns: dnsSettings.optional().describe('name resolution policy'),
    mount: textOrList.optional().describe('"vURL rURL [options]", as MOUNT='),
    http: z
      .strictObject({
        request: headerEdits.optional().describe('edits of requests forwarded to origins'),
        response: headerEdits.optional().describe('edits of responses sent to clients'),
      })
      .optional()
      .describe('HTTP header rules of the HTTP door and the HTTP tap'),
    bandwidth: textOrList.optional().describe('RATE[/up|/down]:SCOPE, as BANDWIDTH='),
    quota: textOrList.optional().describe('SIZE/PERIOD[/up|/down]:SCOPE, as QUOTA='),
    timezone: text.optional().describe('IANA time zone of time windows that name none, as TIMEZONE=; default the machine\'s'),
    users: z
      .record(
        text,
        z.strictObject({
          when: text.optional().describe('time window such as mon-fri/0900-1800[@Zone]'),
          groups: z.array(text).optional().describe('groups of the user, for group:NAME scopes'),
        }),
      )
      .optional()
      .describe('per-user settings: when the user may use the proxy, their groups'),
    admin: text.optional().describe('HOST:PORT of the dashboard'),
    adminauth: accounts.optional(),
    srcif: z.array(text).optional().describe('SRCIF=: ADDRESS[:dstHostList[:srcHostList]] per item, first match wins'),
    authttl: text.optional().describe('AUTHTTL=: how long -cmd{} answers are cached, SUCCESS[/FAILURE] such as 60s/10s'),
    ident: z.boolean().optional(),
    socks4auth: z.enum(['userid', 'none']).optional().describe('with AUTHORIZER, whether a known SOCKS4 user id alone logs in (SOCKS4AUTH=; userid is the weak form)'),
    spoof: z.union([z.literal('client'), z.boolean()]).optional(),
    relay: z.enum(['splice', 'js']).optional().describe('who moves untapped tunnels\' bytes (RELAY=): splice or js'),
    workers: z.union([z.number().int().min(1).max(64), z.literal('auto')]).optional().describe('processes sharing the listeners (WORKERS=)'),
    redis: text.optional().describe('REDIS=: redis://[USER:PASS@]HOST:PORT[/DB], shared MAXIMA, BANDWIDTH and QUOTA for several nodes'),
    stls: textOrList.optional().describe('TLS interception rules in order, as STLS=: mitm[:dstHostList[:srcHostList]] or -mitm:dstHostList'),
    cafile: text.optional().describe('CA certificate for interception leaves (PEM, may hold the chain), as CAFILE='),
    cakey: text.optional().describe('its private key (PEM), as CAKEY='),
    tlsverify: z.union([z.boolean(), z.enum(['do', 'no'])]).optional().describe('verify servers before intercepting (TLSVERIFY=), default do'),
    tlscafile: text.optional().describe('extra trust anchors for servers (PEM bundle), as TLSCAFILE='),
    certfile: text.optional().describe('certificate of the TLS doors (-PPORT/https, -PPORT/socks+tls), PEM, as CERTFILE='),
    keyfile: text.optional().describe('its private key (PEM), as KEYFILE=; default: in certfile'),
  })
  .describe('sockstap configuration (the structured form of its DeleGate-style parameters)');

export type ConfigFile = z.infer<typeof configFileSchema>;

/** The JSON Schema shipped as schema/sockstap.schema.json. */
export function configJsonSchema(): Record<string, unknown> {
  return {
    title: 'sockstap configuration',
    ...(z.toJSONSchema(configFileSchema, { target: 'draft-2020-12' }) as Record<string, unknown>),
  };
}

/** The exact text of schema/sockstap.schema.json (two-space JSON and a final newline). */
export function configJsonSchemaText(): string {
  return JSON.stringify(configJsonSchema(), null, 2) + '\n';
}
