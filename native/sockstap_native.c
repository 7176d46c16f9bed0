/*
 * sockstap_native: the few socket options Node's net module does not expose, for the transparent
 * door (src/frontdoors/transparent.ts) and SPOOF=client (src/net/spoof.ts). Linux only; plain
 * Node-API (node_api.h), no C++.
 *
 *   originalDst(fd)          -> { address, port, family }  getsockopt SO_ORIGINAL_DST (iptables REDIRECT/DNAT)
 *   setTransparent(fd)       -> undefined                  setsockopt IP_TRANSPARENT / IPV6_TRANSPARENT (TPROXY)
 *   bindTransparent(address) -> fd                         socket + IP_TRANSPARENT + bind(address, port 0),
 *                                                          non-blocking, not connected (Node connects it)
 *
 * Errors are thrown as Error objects whose `code` is the errno name ("EPERM", "ENOENT", ...).
 *
 * The relay thread's loop is loop.c; the splice tunnels (spliceInit, spliceStart, spliceAbort,
 * spliceStats) are splice.c; the SOCKS5 accept path (doorInit, ...) is door_*.c (door.h).
 */
#define _GNU_SOURCE
#include <node_api.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "door.h"
#include "hit.h"
#include "splice.h"

#include <linux/netfilter_ipv4.h> /* SO_ORIGINAL_DST */
#include <linux/netfilter_ipv6/ip6_tables.h> /* IP6T_SO_ORIGINAL_DST */

#ifndef IP_TRANSPARENT
#define IP_TRANSPARENT 19
#endif
#ifndef IPV6_TRANSPARENT
#define IPV6_TRANSPARENT 75
#endif
#ifndef SOL_IPV6
#define SOL_IPV6 IPPROTO_IPV6
#endif

static const char *errno_name(int e) {
  switch (e) {
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EBADF: return "EBADF";
    case EINVAL: return "EINVAL";
    case ENOTSOCK: return "ENOTSOCK";
    case ENOPROTOOPT: return "ENOPROTOOPT";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EAFNOSUPPORT: return "EAFNOSUPPORT";
    case EADDRINUSE: return "EADDRINUSE";
    case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
    case ENOTCONN: return "ENOTCONN";
    case EMFILE: return "EMFILE";
    case ENFILE: return "ENFILE";
    case ENOBUFS: return "ENOBUFS";
    case ENOMEM: return "ENOMEM";
    default: return "ENATIVE";
  }
}

/* Throw an Error with code = errno name and a message naming the call. */
static napi_value throw_errno(napi_env env, const char *what, int e) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(e));
  napi_throw_error(env, errno_name(e), msg);
  return NULL;
}

static int arg_fd(napi_env env, napi_callback_info info, int *fd) {
  size_t argc = 1;
  napi_value argv[1];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1) {
    napi_throw_type_error(env, "EINVAL", "expected a file descriptor");
    return 0;
  }
  int32_t v;
  if (napi_get_value_int32(env, argv[0], &v) != napi_ok || v < 0) {
    napi_throw_type_error(env, "EINVAL", "expected a file descriptor (a non-negative integer)");
    return 0;
  }
  *fd = v;
  return 1;
}

static napi_value make_address(napi_env env, const struct sockaddr_storage *ss) {
  char text[INET6_ADDRSTRLEN];
  int port, family;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
    inet_ntop(AF_INET, &sin->sin_addr, text, sizeof text);
    port = ntohs(sin->sin_port);
    family = 4;
  } else {
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
    inet_ntop(AF_INET6, &sin6->sin6_addr, text, sizeof text);
    port = ntohs(sin6->sin6_port);
    family = 6;
  }
  napi_value obj, v;
  napi_create_object(env, &obj);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, obj, "address", v);
  napi_create_int32(env, port, &v);
  napi_set_named_property(env, obj, "port", v);
  napi_create_int32(env, family, &v);
  napi_set_named_property(env, obj, "family", v);
  return obj;
}

/* The socket's own address family (an AF_INET6 socket may carry IPv4-mapped connections). */
static int socket_family(int fd, struct sockaddr_storage *local) {
  socklen_t len = sizeof *local;
  memset(local, 0, sizeof *local);
  if (getsockname(fd, (struct sockaddr *)local, &len) != 0) return -1;
  return local->ss_family;
}

static napi_value original_dst(napi_env env, napi_callback_info info) {
  int fd;
  if (!arg_fd(env, info, &fd)) return NULL;
  struct sockaddr_storage local, dst;
  int family = socket_family(fd, &local);
  if (family < 0) return throw_errno(env, "getsockname", errno);
  socklen_t len;
  if (family == AF_INET6) {
    const struct sockaddr_in6 *l6 = (const struct sockaddr_in6 *)&local;
    if (!IN6_IS_ADDR_V4MAPPED(&l6->sin6_addr)) {
      memset(&dst, 0, sizeof dst);
      len = sizeof(struct sockaddr_in6);
      if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &dst, &len) != 0)
        return throw_errno(env, "getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST)", errno);
      return make_address(env, &dst);
    }
    /* An IPv4 connection on a dual-stack socket: conntrack knows it as IPv4. */
  } else if (family != AF_INET) {
    return throw_errno(env, "originalDst", EAFNOSUPPORT);
  }
  memset(&dst, 0, sizeof dst);
  len = sizeof(struct sockaddr_in);
  if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &dst, &len) != 0)
    return throw_errno(env, "getsockopt(SOL_IP, SO_ORIGINAL_DST)", errno);
  return make_address(env, &dst);
}

/* IP_TRANSPARENT, and IPV6_TRANSPARENT too on an IPv6 socket (dual-stack sockets need both). */
static int set_transparent(int fd, int family, const char **what) {
  int one = 1;
  if (family == AF_INET6) {
    *what = "setsockopt(SOL_IPV6, IPV6_TRANSPARENT)";
    if (setsockopt(fd, SOL_IPV6, IPV6_TRANSPARENT, &one, sizeof one) != 0) return -1;
    /* Best effort: a v6-only socket may refuse the IPv4 option; IPV6_TRANSPARENT is what counts. */
    (void)setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
    return 0;
  }
  *what = "setsockopt(SOL_IP, IP_TRANSPARENT)";
  return setsockopt(fd, SOL_IP, IP_TRANSPARENT, &one, sizeof one);
}

static napi_value set_transparent_js(napi_env env, napi_callback_info info) {
  int fd;
  if (!arg_fd(env, info, &fd)) return NULL;
  struct sockaddr_storage local;
  int family = socket_family(fd, &local);
  if (family < 0) return throw_errno(env, "getsockname", errno);
  const char *what = "setsockopt";
  if (set_transparent(fd, family, &what) != 0) return throw_errno(env, what, errno);
  return NULL;
}

static napi_value bind_transparent(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  char text[INET6_ADDRSTRLEN + 1];
  size_t n = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_string_utf8(env, argv[0], text, sizeof text, &n) != napi_ok) {
    napi_throw_type_error(env, "EINVAL", "expected an IP address");
    return NULL;
  }
  struct sockaddr_storage ss;
  socklen_t sslen;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sslen = sizeof *sin;
  } else if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sslen = sizeof *sin6;
  } else {
    napi_throw_type_error(env, "EINVAL", "bindTransparent: not an IP address");
    return NULL;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  const char *what = "setsockopt";
  /* Before bind: the kernel lets a transparent socket bind an address that is not local. */
  if (set_transparent(fd, ss.ss_family, &what) != 0 || (what = "bind", bind(fd, (struct sockaddr *)&ss, sslen) != 0)) {
    int e = errno;
    close(fd);
    return throw_errno(env, what, e);
  }
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}


static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
    { "originalDst", NULL, original_dst, NULL, NULL, NULL, napi_enumerable, NULL },
    { "setTransparent", NULL, set_transparent_js, NULL, NULL, NULL, napi_enumerable, NULL },
    { "bindTransparent", NULL, bind_transparent, NULL, NULL, NULL, napi_enumerable, NULL },
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  splice_register(env, exports);
  door_register(env, exports);
  hit_register(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
