/*
 * An HTTP/1.1 request head as the native hit path reads it (RFC 9112 §2-§5). Pure: no socket, no
 * state. It takes only what it is sure of: a GET or HEAD of an absolute-form http:// target
 * (RFC 9112 §3.2.2) with CRLF line ends, token field names and no obsolete line folding. A request
 * that asks the cache anything but "the stored response, if fresh" is not for this path either:
 * conditionals (RFC 9110 §13.1), Range (§14.2), Cache-Control and Pragma (RFC 9111 §5.2.1, §5.4),
 * credentials (RFC 9111 §3.5), a body or Expect, Upgrade, and Connection other than keep-alive.
 * All of those are HP_HANDOFF, and JavaScript's HTTP door answers them as it always did.
 */
#include <string.h>
#include <strings.h>

#include "hit.h"

#define MAX_TARGET 2048
#define MAX_FIELDS 100

static int tchar(uint8_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int is(const uint8_t *name, size_t n, const char *want) {
  return strlen(want) == n && strncasecmp((const char *)name, want, n) == 0;
}

/* Fields whose presence sends the request to JavaScript. */
static const char *const refused[] = {
  "cache-control", "pragma", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since", "if-range", "range",
  "authorization", "proxy-authorization", "content-length", "transfer-encoding", "expect", "upgrade", "http2-settings",
};

hit_parse_result hit_parse(const uint8_t *buf, size_t len, int origin_form, hit_request *out) {
  const uint8_t *end = NULL;
  for (size_t i = 3; i < len; i++)
    if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r') {
      end = buf + i + 1;
      break;
    }
  if (!end) {
    /* A bare LF or a NUL anywhere so far: not ours, whatever follows. */
    for (size_t i = 0; i < len; i++)
      if (buf[i] == 0 || (buf[i] == '\n' && (i == 0 || buf[i - 1] != '\r'))) return HP_HANDOFF;
    return HP_MORE;
  }
  memset(out, 0, sizeof *out);
  out->length = (size_t)(end - buf);
  const uint8_t *p = buf;
  if (len >= 4 && memcmp(p, "GET ", 4) == 0) p += 4;
  else if (len >= 5 && memcmp(p, "HEAD ", 5) == 0) {
    out->head = 1;
    p += 5;
  } else
    return HP_HANDOFF;
  const uint8_t *t = p;
  while (p < end && *p > 0x20 && *p < 0x7f) p++;
  size_t nt = (size_t)(p - t);
  if (origin_form ? (nt < 1 || nt > MAX_TARGET || t[0] != '/') : (nt < 8 || nt > MAX_TARGET || memcmp(t, "http://", 7) != 0)) return HP_HANDOFF;
  if ((size_t)(end - p) < 11 || memcmp(p, " HTTP/1.1\r\n", 11) != 0) return HP_HANDOFF;
  out->target = (const char *)t;
  out->ntarget = nt;
  p += 11;
  for (int fields = 0; p < end - 2; fields++) {
    if (fields >= MAX_FIELDS) return HP_HANDOFF;
    const uint8_t *name = p;
    while (p < end && tchar(*p)) p++;
    size_t nn = (size_t)(p - name);
    if (nn == 0 || p >= end || *p != ':') return HP_HANDOFF; /* obs-fold, space before the colon, no colon */
    p++;
    while (p < end && (*p == ' ' || *p == '\t')) p++;
    const uint8_t *value = p;
    while (p < end && *p != '\r') {
      if (*p == '\n' || *p == 0 || (*p < 0x20 && *p != '\t') || *p == 0x7f) return HP_HANDOFF;
      p++;
    }
    if (p + 1 >= end || p[1] != '\n') return HP_HANDOFF;
    const uint8_t *vend = p;
    while (vend > value && (vend[-1] == ' ' || vend[-1] == '\t')) vend--;
    size_t nv = (size_t)(vend - value);
    p += 2;
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
      if (is(name, nn, refused[i])) return HP_HANDOFF;
    if (is(name, nn, "connection")) {
      if (!(nv == 10 && strncasecmp((const char *)value, "keep-alive", 10) == 0)) return HP_HANDOFF;
    } else if (is(name, nn, "user-agent")) {
      if (!out->ua) {
        out->ua = (const char *)value;
        out->nua = nv;
      }
    } else if (is(name, nn, "host")) {
      if (!out->host) {
        out->host = (const char *)value;
        out->nhost = nv;
      }
    } else if (is(name, nn, "referer")) {
      if (!out->referer) {
        out->referer = (const char *)value;
        out->nreferer = nv;
      }
    }
  }
  if (origin_form) {
    if (!out->host || out->nhost == 0 || out->nhost > 255) return HP_HANDOFF;
    for (size_t i = 0; i < out->nhost; i++)
      if (out->host[i] <= 0x20 || out->host[i] >= 0x7f) return HP_HANDOFF;
  }
  return HP_OK;
}
