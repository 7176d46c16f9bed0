/*
 * Per listener, two bounded tables the accept path keeps so a known client's CONNECT needs no
 * JavaScript turn:
 *   - approved sources: addresses JavaScript found RELIABLE (open addressing, at most half full;
 *     past that the rest simply go through JavaScript);
 *   - remembered decisions: when JavaScript dials a CONNECT with rememberMs > 0, the address
 *     that answered, under (source, host, port), until it expires. Direct-mapped: a newer
 *     decision replaces an older one in its slot.
 * Both are forgotten together at doorConfigure (a reload), and decisions alone at doorForget.
 */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>

#include "door.h"

#define APPROVED_MAX 4096   /* open addressing, power of two */
#define REMEMBER_SLOTS 1024 /* direct-mapped, power of two */

void memo_address_key(const struct sockaddr_storage *ss, uint8_t key[16]) {
  if (ss->ss_family == AF_INET) {
    memset(key, 0, 10);
    key[10] = key[11] = 0xff;
    memcpy(key + 12, &((const struct sockaddr_in *)ss)->sin_addr, 4);
  } else {
    memcpy(key, &((const struct sockaddr_in6 *)ss)->sin6_addr, 16);
  }
}

static uint32_t key_hash(const uint8_t key[16]) {
  uint32_t h = 2166136261u;
  for (int i = 0; i < 16; i++) h = (h ^ key[i]) * 16777619u;
  return h;
}

int memo_approved(const door_memo *m, const uint8_t key[16]) {
  if (!m->approved) return 0;
  for (uint32_t i = key_hash(key) & (APPROVED_MAX - 1), k = 0; k < APPROVED_MAX; k++, i = (i + 1) & (APPROVED_MAX - 1)) {
    if (!m->approved[i][0]) return 0;
    if (memcmp(m->approved[i] + 1, key, 16) == 0) return 1;
  }
  return 0;
}

void memo_approve(door_memo *m, const uint8_t key[16]) {
  if (m->n_approved >= APPROVED_MAX / 2) return; /* full enough: the rest go through JavaScript */
  if (!m->approved && !(m->approved = calloc(APPROVED_MAX, sizeof *m->approved))) return;
  for (uint32_t i = key_hash(key) & (APPROVED_MAX - 1);; i = (i + 1) & (APPROVED_MAX - 1)) {
    if (!m->approved[i][0]) {
      m->approved[i][0] = 1;
      memcpy(m->approved[i] + 1, key, 16);
      m->n_approved++;
      return;
    }
    if (memcmp(m->approved[i] + 1, key, 16) == 0) return;
  }
}

void memo_forget_approved(door_memo *m) {
  free(m->approved);
  m->approved = NULL;
  m->n_approved = 0;
}

static remembered *slot(door_memo *m, const uint8_t src[16], const char *host, int port) {
  uint32_t h = key_hash(src);
  for (const char *p = host; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
  h = (h ^ (uint32_t)port) * 16777619u;
  return &m->memory[h & (REMEMBER_SLOTS - 1)];
}

static int matches(const remembered *r, const uint8_t src[16], const char *host, int port) {
  return r->expires && r->port == port && memcmp(r->src, src, 16) == 0 && strcmp(r->host, host) == 0;
}

static void clear_slot(remembered *r) {
  free(r->host);
  memset(r, 0, sizeof *r);
}

remembered *memo_recall(door_memo *m, const uint8_t src[16], const char *host, int port, int64_t now) {
  if (!m->memory) return NULL;
  remembered *r = slot(m, src, host, port);
  if (!matches(r, src, host, port)) return NULL;
  if (now >= r->expires) {
    clear_slot(r);
    return NULL;
  }
  return r;
}

void memo_remember(door_memo *m, const remembered *decision) {
  if (!m->memory && !(m->memory = calloc(REMEMBER_SLOTS, sizeof *m->memory))) return;
  char *host = strdup(decision->host);
  if (!host) return;
  remembered *r = slot(m, decision->src, decision->host, decision->port);
  clear_slot(r);
  *r = *decision;
  r->host = host;
}

void memo_forget(door_memo *m, const uint8_t src[16], const char *host, int port) {
  if (!m->memory) return;
  remembered *r = slot(m, src, host, port);
  if (matches(r, src, host, port)) clear_slot(r);
}

void memo_forget_all(door_memo *m) {
  if (!m->memory) return;
  for (int i = 0; i < REMEMBER_SLOTS; i++) free(m->memory[i].host);
  free(m->memory);
  m->memory = NULL;
}
