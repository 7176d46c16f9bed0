/*
 * sockstap's benchmark load generator and target server (Linux, epoll). Loopback only.
 *
 *   loadgen target BASE                      echo on BASE+1, source on BASE+2, sink on BASE+3,
 *                                            echo-once on BASE+4
 *   loadgen bulk    --proxy P --target BASE --dir down|up --bytes N [--pid PID]
 *   loadgen rate    --proxy P --target BASE --conc 50 --secs 10
 *   loadgen lat     --proxy P --target BASE --count N        round trips on one open tunnel
 *   loadgen connlat --proxy P --target BASE --count N        connect + handshake + 1st response
 *   loadgen idle    --proxy P --target BASE --count N --pid PID [--settle S]
 *
 * P is HOST:PORT of a SOCKS5 proxy (no auth, CONNECT) or "none" for a direct connection.
 * Every client mode prints one JSON line. Every mode stops by itself: alarm() bounds the run.
 * Source: the client sends an 8-byte big-endian N, the server sends N bytes and closes.
 * Sink: the client sends an 8-byte N and N bytes, the server answers 'K' and closes.
 * Echo: a message that starts with 'Q' makes the server close (so the server closes first).
 * Echo-once: the server echoes one 64-byte message and closes.
 * The server closes first on purpose: TIME_WAIT then stays on the target's side, and a proxy that
 * binds its outgoing address before connect() (Dante) does not run out of ports over a run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BULK_BUF (256 * 1024)
#define MSG 64
#define MAX_SAMPLES (4 * 1024 * 1024)

static char bulkbuf[BULK_BUF];

static void die(const char *what) {
  fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void raise_nofile(void) {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

static void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static struct sockaddr_in addr_of(const char *host, int port) {
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) {
    fprintf(stderr, "loadgen: not an IPv4 address: %s\n", host);
    exit(2);
  }
  return a;
}

/* ---------- process tree figures (for proxies that fork, like Dante) ---------- */

static int parent_of(int pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  int ppid = -1;
  if (p) sscanf(p + 2, "%*c %d", &ppid);
  return ppid;
}

static int in_tree(int pid, int root) {
  for (int i = 0; i < 16 && pid > 1; i++) {
    if (pid == root) return 1;
    pid = parent_of(pid);
  }
  return pid == root;
}

/* Sum of VmRSS (KiB) or CPU ticks (utime+stime) over root and its descendants. */
static long long tree_sum(int root, int want_cpu) {
  if (root <= 0) return -1;
  DIR *d = opendir("/proc");
  if (!d) return -1;
  long long total = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    int pid = atoi(e->d_name);
    if (pid <= 0 || !in_tree(pid, root)) continue;
    char path[64], buf[2048];
    if (want_cpu) {
      snprintf(path, sizeof path, "/proc/%d/stat", pid);
      FILE *f = fopen(path, "r");
      if (!f) continue;
      size_t n = fread(buf, 1, sizeof buf - 1, f);
      fclose(f);
      buf[n] = 0;
      char *p = strrchr(buf, ')');
      unsigned long ut = 0, st = 0;
      if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2) total += (long long)(ut + st);
    } else {
      snprintf(path, sizeof path, "/proc/%d/status", pid);
      FILE *f = fopen(path, "r");
      if (!f) continue;
      while (fgets(buf, sizeof buf, f)) {
        long long kb;
        if (sscanf(buf, "VmRSS: %lld kB", &kb) == 1) total += kb;
      }
      fclose(f);
    }
  }
  closedir(d);
  return total;
}

/* ---------- target server ---------- */

enum { K_LISTEN_ECHO = 1, K_LISTEN_SOURCE, K_LISTEN_SINK, K_LISTEN_ONCE, K_ECHO, K_SOURCE, K_SINK, K_ONCE };

struct tconn {
  int fd, kind;
  uint8_t hdr[8];
  int hdrlen;
  uint64_t left; /* source: bytes still to send; sink: bytes still to read */
  char *pend;    /* echo: bytes not yet written back */
  size_t pendlen, pendoff;
};

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = addr_of("127.0.0.1", port);
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) die("bind");
  if (listen(fd, 4096) < 0) die("listen");
  return fd;
}

static void tclose(int ep, struct tconn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->pend);
  free(c);
}

static void tmod(int ep, struct tconn *c, uint32_t ev) {
  struct epoll_event e = {.events = ev, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

/* Returns 0 to keep the connection, -1 when it was closed. */
static int target_io(int ep, struct tconn *c, uint32_t ev) {
  static char rbuf[BULK_BUF];
  if (c->kind == K_ECHO || c->kind == K_ONCE) {
    if (c->pend) {
      ssize_t w = write(c->fd, c->pend + c->pendoff, c->pendlen - c->pendoff);
      if (w < 0 && errno != EAGAIN) return tclose(ep, c), -1;
      if (w > 0) c->pendoff += (size_t)w;
      if (c->pendoff < c->pendlen) return 0;
      free(c->pend);
      c->pend = NULL;
      tmod(ep, c, EPOLLIN);
    }
    for (;;) {
      ssize_t n = read(c->fd, rbuf, 65536);
      if (n == 0) return tclose(ep, c), -1;
      if (n < 0) return errno == EAGAIN ? 0 : (tclose(ep, c), -1);
      if (rbuf[0] == 'Q' && c->kind == K_ECHO) return tclose(ep, c), -1;
      ssize_t w = write(c->fd, rbuf, (size_t)n);
      if (w < 0) {
        if (errno != EAGAIN) return tclose(ep, c), -1;
        w = 0;
      }
      if (w < n) {
        /* The peer reads slower than it writes: keep the rest and stop reading until it is out. */
        c->pendlen = (size_t)(n - w);
        c->pendoff = 0;
        c->pend = malloc(c->pendlen);
        memcpy(c->pend, rbuf + w, c->pendlen);
        tmod(ep, c, EPOLLOUT);
        return 0;
      }
      if (c->kind == K_ONCE && (c->left += (uint64_t)n) >= MSG) return tclose(ep, c), -1;
    }
  }
  while (c->hdrlen < 8) {
    ssize_t n = read(c->fd, c->hdr + c->hdrlen, (size_t)(8 - c->hdrlen));
    if (n == 0) return tclose(ep, c), -1;
    if (n < 0) return errno == EAGAIN ? 0 : (tclose(ep, c), -1);
    c->hdrlen += (int)n;
    if (c->hdrlen == 8) {
      uint64_t v = 0;
      for (int i = 0; i < 8; i++) v = (v << 8) | c->hdr[i];
      c->left = v;
      if (c->kind == K_SOURCE) tmod(ep, c, EPOLLOUT);
    }
  }
  if (c->kind == K_SOURCE) {
    (void)ev;
    while (c->left > 0) {
      size_t want = c->left < BULK_BUF ? (size_t)c->left : BULK_BUF;
      ssize_t w = write(c->fd, bulkbuf, want);
      if (w < 0) return errno == EAGAIN ? 0 : (tclose(ep, c), -1);
      c->left -= (uint64_t)w;
    }
    return tclose(ep, c), -1;
  }
  /* sink */
  while (c->left > 0) {
    ssize_t n = read(c->fd, rbuf, c->left < BULK_BUF ? (size_t)c->left : BULK_BUF);
    if (n == 0) return tclose(ep, c), -1;
    if (n < 0) return errno == EAGAIN ? 0 : (tclose(ep, c), -1);
    c->left -= (uint64_t)n;
  }
  if (write(c->fd, "K", 1) != 1) { /* the peer is gone; nothing to report */ }
  return tclose(ep, c), -1;
}

static _Noreturn void run_target(int base) {
  raise_nofile();
  signal(SIGPIPE, SIG_IGN);
  int ep = epoll_create1(0);
  int kinds[4] = {K_LISTEN_ECHO, K_LISTEN_SOURCE, K_LISTEN_SINK, K_LISTEN_ONCE};
  for (int i = 0; i < 4; i++) {
    struct tconn *l = calloc(1, sizeof *l);
    l->fd = listen_on(base + 1 + i);
    l->kind = kinds[i];
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, l->fd, &e);
  }
  printf("ready %d\n", base);
  fflush(stdout);
  struct epoll_event evs[256];
  for (;;) {
    int n = epoll_wait(ep, evs, 256, -1);
    if (n < 0 && errno == EINTR) continue;
    for (int i = 0; i < n; i++) {
      struct tconn *c = evs[i].data.ptr;
      if (c->kind <= K_LISTEN_ONCE) {
        for (;;) {
          int fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK);
          if (fd < 0) break;
          set_nodelay(fd);
          struct tconn *t = calloc(1, sizeof *t);
          t->fd = fd;
          t->kind = c->kind + 4;
          struct epoll_event e = {.events = EPOLLIN, .data.ptr = t};
          epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e);
        }
      } else {
        target_io(ep, c, evs[i].events);
      }
    }
  }
}

/* ---------- client side ---------- */

static const char *proxy_host; /* NULL = direct */
static int proxy_port;
static int target_base;

static int dial_blocking(int target_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  set_nodelay(fd);
  struct timeval tv = {.tv_sec = 60};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = proxy_host ? addr_of(proxy_host, proxy_port) : addr_of("127.0.0.1", target_port);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) die("connect");
  if (!proxy_host) return fd;
  uint8_t req[10] = {5, 1, 0, 1, 127, 0, 0, 1, (uint8_t)(target_port >> 8), (uint8_t)target_port};
  uint8_t rep[10];
  if (write(fd, "\x05\x01\x00", 3) != 3 || recv(fd, rep, 2, MSG_WAITALL) != 2 || rep[1] != 0) die("socks greeting");
  if (write(fd, req, 10) != 10 || recv(fd, rep, 10, MSG_WAITALL) != 10 || rep[1] != 0) die("socks connect");
  return fd;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static uint64_t pct(uint64_t *v, size_t n, double p) {
  if (n == 0) return 0;
  size_t i = (size_t)(p * (double)(n - 1) + 0.5);
  return v[i];
}

static int run_bulk(const char *dir, uint64_t bytes, int pid) {
  int up = strcmp(dir, "up") == 0;
  int fd = dial_blocking(target_base + (up ? 3 : 2));
  uint8_t hdr[8];
  for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(bytes >> (56 - 8 * i));
  long long cpu0 = tree_sum(pid, 1);
  uint64_t t0 = now_ns();
  if (write(fd, hdr, 8) != 8) die("write header");
  uint64_t done = 0;
  if (up) {
    while (done < bytes) {
      size_t want = bytes - done < BULK_BUF ? (size_t)(bytes - done) : BULK_BUF;
      ssize_t w = write(fd, bulkbuf, want);
      if (w <= 0) die("bulk write");
      done += (uint64_t)w;
    }
    char k;
    if (read(fd, &k, 1) != 1 || k != 'K') die("sink ack");
  } else {
    while (done < bytes) {
      ssize_t n = read(fd, bulkbuf, BULK_BUF);
      if (n <= 0) die("bulk read");
      done += (uint64_t)n;
    }
  }
  double secs = (double)(now_ns() - t0) / 1e9;
  long long cpu1 = tree_sum(pid, 1);
  close(fd);
  double cpu = cpu0 >= 0 && cpu1 >= 0 ? (double)(cpu1 - cpu0) / (double)sysconf(_SC_CLK_TCK) : -1;
  printf("{\"test\":\"bulk_%s\",\"bytes\":%llu,\"secs\":%.3f,\"mbps\":%.1f,\"proxy_cpu_s\":%.2f}\n", dir,
         (unsigned long long)bytes, secs, (double)bytes / 1e6 / secs, cpu);
  return 0;
}

static int run_lat(int count) {
  int fd = dial_blocking(target_base + 1);
  static uint64_t samples[100000];
  if (count > 100000) count = 100000;
  char msg[MSG], back[MSG];
  memset(msg, 'x', sizeof msg);
  for (int i = -100; i < count; i++) { /* 100 warm-up round trips */
    uint64_t t0 = now_ns();
    if (write(fd, msg, MSG) != MSG || recv(fd, back, MSG, MSG_WAITALL) != MSG) die("echo");
    if (i >= 0) samples[i] = now_ns() - t0;
  }
  close(fd);
  qsort(samples, (size_t)count, sizeof samples[0], cmp_u64);
  printf("{\"test\":\"lat\",\"count\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", count,
         (double)pct(samples, (size_t)count, 0.5) / 1e3, (double)pct(samples, (size_t)count, 0.99) / 1e3);
  return 0;
}

static int run_connlat(int count) {
  static uint64_t samples[100000];
  if (count > 100000) count = 100000;
  char msg[MSG], back[MSG];
  memset(msg, 'y', sizeof msg);
  for (int i = -20; i < count; i++) {
    uint64_t t0 = now_ns();
    int fd = dial_blocking(target_base + 4);
    if (write(fd, msg, MSG) != MSG || recv(fd, back, MSG, MSG_WAITALL) != MSG) die("echo");
    if (i >= 0) samples[i] = now_ns() - t0;
    close(fd);
  }
  qsort(samples, (size_t)count, sizeof samples[0], cmp_u64);
  printf("{\"test\":\"connlat\",\"count\":%d,\"p50_us\":%.1f,\"p99_us\":%.1f}\n", count,
         (double)pct(samples, (size_t)count, 0.5) / 1e3, (double)pct(samples, (size_t)count, 0.99) / 1e3);
  return 0;
}

/* Non-blocking tunnels: connect → greeting → CONNECT → 64-byte echo. */
enum { S_CONNECTING, S_GREET, S_REQ, S_ECHO, S_OPEN };

struct cconn {
  int fd, state, got;
  uint64_t t0;
};

static const uint8_t greet[3] = {5, 1, 0};
static uint8_t connreq[10];
static int tunnel_port; /* target port of the non-blocking tunnels */
static char echo_msg[MSG];

static int cstart(int ep, struct cconn *c) {
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (c->fd < 0) return -1;
  set_nodelay(c->fd);
  struct sockaddr_in a = proxy_host ? addr_of(proxy_host, proxy_port) : addr_of("127.0.0.1", tunnel_port);
  c->state = S_CONNECTING;
  c->got = 0;
  c->t0 = now_ns();
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0 && errno != EINPROGRESS) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
  epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
  return 0;
}

static void cclose(int ep, struct cconn *c) {
  if (c->fd < 0) return;
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  c->fd = -1;
}

/* Advances one tunnel; 1 = its echo came back (now S_OPEN), 0 = waiting, -1 = failed. */
static int cstep(int ep, struct cconn *c) {
  char buf[MSG];
  if (c->state == S_CONNECTING) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err) return -1;
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
    if (proxy_host) {
      if (write(c->fd, greet, 3) != 3) return -1;
      c->state = S_GREET;
    } else {
      if (write(c->fd, echo_msg, MSG) != MSG) return -1;
      c->state = S_ECHO;
    }
    return 0;
  }
  int need = c->state == S_GREET ? 2 : c->state == S_REQ ? 10 : MSG;
  ssize_t n = read(c->fd, buf, (size_t)(need - c->got));
  if (n == 0) return -1;
  if (n < 0) return errno == EAGAIN ? 0 : -1;
  c->got += (int)n;
  if (c->got < need) return 0;
  c->got = 0;
  if (c->state == S_GREET) {
    if (buf[1] != 0 || write(c->fd, connreq, 10) != 10) return -1;
    c->state = S_REQ;
  } else if (c->state == S_REQ) {
    if (buf[1] != 0 || write(c->fd, echo_msg, MSG) != MSG) return -1;
    c->state = S_ECHO;
  } else {
    c->state = S_OPEN;
    return 1;
  }
  return 0;
}

static int run_rate(int conc, double secs) {
  raise_nofile();
  int ep = epoll_create1(0);
  struct cconn *cs = calloc((size_t)conc, sizeof *cs);
  uint64_t *samples = malloc(MAX_SAMPLES * sizeof *samples);
  size_t ns = 0;
  long errors = 0, done = 0;
  uint64_t start = now_ns(), end = start + (uint64_t)(secs * 1e9), hard = end + 5000000000ull;
  for (int i = 0; i < conc; i++)
    if (cstart(ep, &cs[i]) < 0) errors++;
  struct epoll_event evs[256];
  int live = conc;
  while (live > 0) {
    uint64_t t = now_ns();
    if (t > hard) break;
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      struct cconn *c = evs[i].data.ptr;
      if (c->fd < 0) continue;
      int r = cstep(ep, c);
      if (r == 0) continue;
      uint64_t t1 = now_ns();
      if (r > 0 && t1 <= end) {
        done++;
        if (ns < MAX_SAMPLES) samples[ns++] = t1 - c->t0;
      } else if (r < 0) {
        errors++;
      }
      cclose(ep, c);
      if (t1 < end) {
        if (cstart(ep, c) < 0) errors++, live--;
      } else {
        live--;
      }
    }
  }
  for (int i = 0; i < conc; i++) cclose(ep, &cs[i]);
  qsort(samples, ns, sizeof *samples, cmp_u64);
  printf("{\"test\":\"rate\",\"conc\":%d,\"secs\":%.1f,\"conns\":%ld,\"conn_per_s\":%.0f,\"errors\":%ld,"
         "\"p50_ms\":%.2f,\"p99_ms\":%.2f}\n",
         conc, secs, done, (double)done / secs, errors, (double)pct(samples, ns, 0.5) / 1e6,
         (double)pct(samples, ns, 0.99) / 1e6);
  free(samples);
  free(cs);
  return 0;
}

static int open_tunnels(int ep, struct cconn *cs, int from, int to, int conc) {
  int next = from, inflight = 0, ok = 0;
  long errors = 0;
  struct epoll_event evs[256];
  uint64_t deadline = now_ns() + 120000000000ull;
  while ((next < to || inflight > 0) && now_ns() < deadline) {
    while (next < to && inflight < conc) {
      if (cstart(ep, &cs[next]) < 0) {
        errors++;
        next++;
        continue;
      }
      next++;
      inflight++;
    }
    int n = epoll_wait(ep, evs, 256, 100);
    for (int i = 0; i < n; i++) {
      struct cconn *c = evs[i].data.ptr;
      if (c->fd < 0 || c->state == S_OPEN) continue;
      int r = cstep(ep, c);
      if (r == 0) continue;
      inflight--;
      if (r > 0) {
        ok++;
        /* Open tunnels stay registered only for a peer close, which is not expected. */
        struct epoll_event e = {.events = 0, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
      } else {
        errors++;
        cclose(ep, c);
      }
    }
  }
  if (errors) fprintf(stderr, "loadgen: %ld tunnels failed to open\n", errors);
  return ok;
}

static int run_idle(int count, int pid, int settle) {
  raise_nofile();
  int ep = epoll_create1(0);
  struct cconn *cs = calloc((size_t)count, sizeof *cs);
  for (int i = 0; i < count; i++) cs[i].fd = -1;
  sleep((unsigned)settle);
  long long rss0 = tree_sum(pid, 0);
  int stage1 = count < 2000 ? count / 5 : 2000;
  int ok1 = open_tunnels(ep, cs, 0, stage1, 100);
  sleep((unsigned)settle);
  long long rss1 = tree_sum(pid, 0);
  int ok2 = ok1 + open_tunnels(ep, cs, stage1, count, 100);
  sleep((unsigned)settle);
  long long rss2 = tree_sum(pid, 0);
  /* The echo server closes first (TIME_WAIT on its side); give it a moment, then close ours. */
  for (int i = 0; i < count; i++)
    if (cs[i].fd >= 0 && write(cs[i].fd, "Q", 1) != 1) { /* already gone */ }
  sleep(1);
  for (int i = 0; i < count; i++) cclose(ep, &cs[i]);
  free(cs);
  double per = ok2 > ok1 ? (double)(rss2 - rss1) / (double)(ok2 - ok1) : 0;
  printf("{\"test\":\"idle\",\"tunnels\":%d,\"stage1\":%d,\"rss0_kib\":%lld,\"rss1_kib\":%lld,\"rss_kib\":%lld,"
         "\"kib_per_tunnel\":%.2f}\n",
         ok2, ok1, rss0, rss1, rss2, per);
  return 0;
}

static const char *opt(int argc, char **argv, const char *name, const char *def) {
  for (int i = 2; i + 1 < argc; i++)
    if (strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: loadgen target BASE | bulk|rate|lat|connlat|idle --proxy HOST:PORT|none --target BASE ...\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  memset(bulkbuf, 'b', sizeof bulkbuf);
  memset(echo_msg, 'e', sizeof echo_msg);
  const char *mode = argv[1];
  if (strcmp(mode, "target") == 0) run_target(atoi(argv[2]));

  alarm((unsigned)atoi(opt(argc, argv, "--max-secs", "300")));
  static char phost[64];
  const char *p = opt(argc, argv, "--proxy", "none");
  if (strcmp(p, "none") != 0) {
    const char *colon = strrchr(p, ':');
    if (!colon || (size_t)(colon - p) >= sizeof phost) return fprintf(stderr, "loadgen: bad --proxy\n"), 2;
    memcpy(phost, p, (size_t)(colon - p));
    proxy_host = phost;
    proxy_port = atoi(colon + 1);
  }
  target_base = atoi(opt(argc, argv, "--target", "22000"));
  /* Idle tunnels stay open on the echo port; rate tunnels use echo-once (the server closes). */
  int echo_port = tunnel_port = target_base + (strcmp(mode, "idle") == 0 ? 1 : 4);
  uint8_t req[10] = {5, 1, 0, 1, 127, 0, 0, 1, (uint8_t)(echo_port >> 8), (uint8_t)echo_port};
  memcpy(connreq, req, sizeof req);
  int pid = atoi(opt(argc, argv, "--pid", "0"));

  if (strcmp(mode, "bulk") == 0)
    return run_bulk(opt(argc, argv, "--dir", "down"), strtoull(opt(argc, argv, "--bytes", "1073741824"), NULL, 10), pid);
  if (strcmp(mode, "rate") == 0) return run_rate(atoi(opt(argc, argv, "--conc", "50")), atof(opt(argc, argv, "--secs", "10")));
  if (strcmp(mode, "lat") == 0) return run_lat(atoi(opt(argc, argv, "--count", "5000")));
  if (strcmp(mode, "connlat") == 0) return run_connlat(atoi(opt(argc, argv, "--count", "2000")));
  if (strcmp(mode, "idle") == 0)
    return run_idle(atoi(opt(argc, argv, "--count", "2000")), pid, atoi(opt(argc, argv, "--settle", "3")));
  fprintf(stderr, "loadgen: unknown mode %s\n", mode);
  return 2;
}
