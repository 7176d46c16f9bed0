/**
 * DeleGate MountOptions, the third word of `MOUNT="vURL rURL [opt,opt]"`: comma-separated, a list
 * value in braces (`from={10.0.0.0/8,::1},method={GET,HEAD}`). sockstap honours the conditions
 * that make sense for an HTTP proxy and refuses every other option at start (exit 2), so an option
 * is never accepted and ignored:
 *
 *   from={HostList}           the client is in the list (address; `user@host` elements name the user)
 *   dst={HostList}            the host:port the request names (absolute URL, Host field, tunnel
 *                             destination), before the rewrite
 *   method={GET,HEAD}         the request method is one of these
 *   vhost={HostList}          the request's Host field names one of these hosts (name only, no port)
 *   nvhost={HostList}         the same (DeleGate's textual form: hosts match as names)
 *   direction=fb | fo         fb (default): rewrite requests and map a response's Location back;
 *                             fo: rewrite requests only
 *
 * Refused, with the reason: `direction=bo` (responses only), DeleGate's other conditions (via,
 * path, auth, withssl, sni, odst, udst, qmatch, dstproto), its server controls (rserv, nvserv,
 * avserv, genvhost, `nvhost=-thru`) and anything else.
 */
import { parseHostList } from './hostlist.js';
import { splitTopLevel, stripBraces } from './split.js';
import { ConfigError, type HostList, type Mount, type MountConditions } from './types.js';

const SUPPORTED = 'from=, dst=, method=, vhost=, nvhost=, direction=fb|fo';

/** DeleGate options sockstap knows and does not implement, with why. */
const NOT_HERE: Readonly<Record<string, string>> = {
  via: 'sockstap does not see the hosts a request passed through',
  path: 'sockstap does not see the hosts a request passed through',
  auth: 'AUTHORIZER hosts are not DeleGate servers here; use PERMIT with user@host in the source list',
  withssl: 'real URLs are http:// only: TLS to the backend is not offered for MOUNT',
  sni: 'origin-form requests arrive in plain HTTP here: there is no SNI to match',
  odst: 'a reverse-proxy request has no original destination apart from the door itself',
  udst: 'sockstap does not rewrite Referer',
  qmatch: 'use a vURL with a query pattern instead',
  dstproto: 'only http is mounted',
  rserv: 'name the real server in rURL',
  nvserv: 'the real URL names the server and its Host',
  avserv: 'name the real server in rURL',
  genvhost: 'obsolete in DeleGate too',
  referer: 'no Referer rewriting',
};

const METHOD_RE = /^[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*$/;

function hostList(value: string, label: string, name: string): HostList {
  if (value === '') throw new ConfigError(label, `${name}= needs a host list, e.g. ${name}={127.0.0.1,::1}`);
  return parseHostList(value, `${label} ${name}`);
}

/** The options of one MOUNT, typed. `text` is the third word of the parameter. */
export function parseMountOptions(text: string, label: string): Pick<Mount, 'options' | 'when' | 'forwardOnly'> {
  const options = splitTopLevel(text, ',').map((o) => o.trim()).filter(Boolean);
  const when: MountConditions = {};
  let forwardOnly = false;
  let any = false;
  for (const option of options) {
    const eq = option.indexOf('=');
    const name = (eq < 0 ? option : option.slice(0, eq)).toLowerCase();
    const value = eq < 0 ? '' : option.slice(eq + 1).trim();
    const seen = (key: keyof MountConditions): void => {
      if (when[key] !== undefined) throw new ConfigError(label, `MountOption ${name}= given twice`);
      any = true;
    };
    switch (name) {
      case 'from':
        seen('client');
        when.client = hostList(value, label, name);
        break;
      case 'dst':
        seen('dst');
        when.dst = hostList(value, label, name);
        break;
      case 'method': {
        seen('methods');
        const methods = stripBraces(value)
          .split(',')
          .map((m) => m.trim())
          .filter(Boolean);
        if (methods.length === 0) throw new ConfigError(label, 'method= needs methods, e.g. method={GET,HEAD}');
        for (const m of methods) {
          if (!METHOD_RE.test(m)) throw new ConfigError(label, `method=: ${JSON.stringify(m)} is not an HTTP method`);
        }
        when.methods = methods.map((m) => m.toUpperCase());
        break;
      }
      case 'vhost':
      case 'nvhost': {
        seen('vhost');
        if (value === '-thru') {
          throw new ConfigError(label, `MountOption ${name}=-thru is not supported by sockstap (the real URL names the server and its Host)`);
        }
        // DeleGate's `-name` forces a textual match; sockstap matches names as names anyway.
        const list = stripBraces(value)
          .split(',')
          .map((h) => h.trim().replace(/^-(?=[^!])/, ''))
          .join(',');
        when.vhost = hostList(list, label, name);
        break;
      }
      case 'direction':
        if (value === 'fb') forwardOnly = false;
        else if (value === 'fo') forwardOnly = true;
        else if (value === 'bo') {
          throw new ConfigError(label, 'MountOption direction=bo (rewrite responses only) is not supported by sockstap; use fb or fo');
        } else throw new ConfigError(label, `direction= is fb or fo, not ${JSON.stringify(value)}`);
        break;
      default: {
        const why = NOT_HERE[name];
        if (why !== undefined) {
          throw new ConfigError(label, `MountOption ${JSON.stringify(option)} is not supported by sockstap (${why}); supported: ${SUPPORTED}`);
        }
        const hint = eq < 0 ? ' (a list value needs braces: from={a,b})' : '';
        throw new ConfigError(label, `unknown MountOption ${JSON.stringify(option)}${hint}; supported: ${SUPPORTED}`);
      }
    }
  }
  return { options, ...(any ? { when } : {}), ...(forwardOnly ? { forwardOnly } : {}) };
}
