/*
 * The SOCKS5 greeting and CONNECT request as the native accept path reads them (RFC 1928 §3,
 * §4, §5). Pure: no socket, no state. Anything this path does not take — another version, a
 * listener that must authenticate, BIND or UDP ASSOCIATE, a name with characters a host name does
 * not have, bytes after the request — is WIRE_HANDOFF, and JavaScript's door answers it as always.
 */
#include <arpa/inet.h>
#include <string.h>

#include "door.h"

wire_result wire_greeting(const uint8_t *buf, size_t len, int noauth, size_t *used) {
  if (len < 1) return WIRE_MORE;
  if (buf[0] != 5) return WIRE_HANDOFF;
  if (len < 2) return WIRE_MORE;
  size_t n = buf[1];
  if (n == 0 || !noauth) return WIRE_HANDOFF;
  if (len < 2 + n) return WIRE_MORE;
  if (!memchr(buf + 2, 0x00, n)) return WIRE_HANDOFF;
  *used = 2 + n;
  return WIRE_DONE;
}

static int domain_ok(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint8_t ch = p[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
      return 0;
  }
  return 1;
}

wire_result wire_connect(const uint8_t *q, size_t have, char host[256], int *port) {
  size_t need;
  if (have < 4) return WIRE_MORE;
  if (q[0] != 5 || q[1] != 1 || q[2] != 0) return WIRE_HANDOFF; /* BIND, UDP, malformed */
  switch (q[3]) {
    case 1: need = 4 + 4 + 2; break;
    case 4: need = 4 + 16 + 2; break;
    case 3:
      if (have < 5) return WIRE_MORE;
      if (q[4] == 0) return WIRE_HANDOFF;
      need = 5 + (size_t)q[4] + 2;
      break;
    default: return WIRE_HANDOFF;
  }
  if (have < need) return WIRE_MORE;
  if (have > need) return WIRE_HANDOFF; /* bytes after the request: JavaScript keeps them */
  if (q[3] == 1) inet_ntop(AF_INET, q + 4, host, 256);
  else if (q[3] == 4) inet_ntop(AF_INET6, q + 4, host, 256);
  else {
    if (!domain_ok(q + 5, q[4])) return WIRE_HANDOFF;
    memcpy(host, q + 5, q[4]);
    host[q[4]] = 0;
  }
  *port = (q[need - 2] << 8) | q[need - 1];
  return WIRE_DONE;
}
