/*
 * What the native hit path may answer, on the relay thread only (no locks):
 *   - objects: cache entries JavaScript published, by its handle (a hash of at most OBJECT_SLOTS
 *     chains). JavaScript bounds their bytes (CACHEMEM) and drops each when its entry changes or
 *     goes; a dropped object lives on only while a response still writes from it;
 *   - grants: (door, source, exact target) → object, until a deadline. Direct-mapped: a newer
 *     grant replaces an older one in its slot, so the table is bounded. A grant whose object was
 *     dropped or went stale is cleared when met, and by the sweep.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hit.h"

#define OBJECT_SLOTS 1024 /* power of two */
#define GRANT_SLOTS 4096  /* power of two */

typedef struct grant {
  uint32_t door;
  uint8_t src[16];
  char *target;
  size_t ntarget;
  int64_t expires;
  hit_object *obj; /* NULL: free */
} grant;

static hit_object *objects[OBJECT_SLOTS];
static grant grants[GRANT_SLOTS];
size_t hit_table_bytes;
volatile long hit_memfds;
long hit_table_objects;

static uint32_t grant_hash(uint32_t door, const uint8_t src[16], const char *target, size_t n) {
  uint32_t h = 2166136261u ^ door;
  for (int i = 0; i < 16; i++) h = (h ^ src[i]) * 16777619u;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)target[i]) * 16777619u;
  return h;
}

void hit_object_release(hit_object *obj) {
  if (--obj->refs > 0 || !obj->dropped) return;
  hit_table_bytes -= obj->npre + obj->npost + obj->nbody;
  hit_table_objects--;
  free(obj->pre);
  free(obj->post);
  free(obj->body);
  if (obj->body_fd >= 0) {
    close(obj->body_fd);
    __sync_fetch_and_sub(&hit_memfds, 1);
  }
  free(obj);
}

static void grant_clear(grant *g) {
  if (!g->obj) return;
  hit_object_release(g->obj);
  g->obj = NULL;
  free(g->target);
  g->target = NULL;
}

/* Unlink the object of this handle from the index; it is freed once nothing refers to it. */
static void unlink_handle(uint32_t handle) {
  hit_object **p = &objects[handle & (OBJECT_SLOTS - 1)];
  while (*p && (*p)->handle != handle) p = &(*p)->hnext;
  hit_object *obj = *p;
  if (!obj) return;
  *p = obj->hnext;
  obj->dropped = 1;
  obj->refs++; /* the index's own reference, released now */
  hit_object_release(obj);
}

void hit_table_publish(hit_object *obj) {
  unlink_handle(obj->handle);
  obj->refs = 0;
  obj->dropped = 0;
  hit_object **slot = &objects[obj->handle & (OBJECT_SLOTS - 1)];
  obj->hnext = *slot;
  *slot = obj;
  hit_table_bytes += obj->npre + obj->npost + obj->nbody;
  hit_table_objects++;
}

void hit_table_drop(uint32_t handle) {
  unlink_handle(handle);
}

static hit_object *find_object(uint32_t handle) {
  for (hit_object *o = objects[handle & (OBJECT_SLOTS - 1)]; o; o = o->hnext)
    if (o->handle == handle) return o;
  return NULL;
}

int hit_table_grant(uint32_t door, const uint8_t src[16], const char *target, size_t ntarget, uint32_t handle, int64_t expires) {
  hit_object *obj = find_object(handle);
  if (!obj) return 0;
  char *copy = malloc(ntarget);
  if (!copy) return 0;
  memcpy(copy, target, ntarget);
  grant *g = &grants[grant_hash(door, src, target, ntarget) & (GRANT_SLOTS - 1)];
  grant_clear(g);
  g->door = door;
  memcpy(g->src, src, 16);
  g->target = copy;
  g->ntarget = ntarget;
  g->expires = expires;
  g->obj = obj;
  obj->refs++;
  return 1;
}

void hit_table_revoke(uint32_t door) {
  for (int i = 0; i < GRANT_SLOTS; i++)
    if (grants[i].obj && (door == 0 || grants[i].door == door)) grant_clear(&grants[i]);
}

hit_object *hit_table_find(uint32_t door, const uint8_t src[16], const char *target, size_t ntarget, int64_t now) {
  grant *g = &grants[grant_hash(door, src, target, ntarget) & (GRANT_SLOTS - 1)];
  if (!g->obj || g->door != door || g->ntarget != ntarget || memcmp(g->src, src, 16) != 0 || memcmp(g->target, target, ntarget) != 0)
    return NULL;
  if (g->obj->dropped || now >= g->expires || now >= g->obj->fresh_until) {
    grant_clear(g);
    return NULL;
  }
  g->obj->refs++;
  return g->obj;
}

void hit_table_sweep(int64_t now) {
  for (int i = 0; i < GRANT_SLOTS; i++) {
    grant *g = &grants[i];
    if (g->obj && (g->obj->dropped || now >= g->expires || now >= g->obj->fresh_until)) grant_clear(g);
  }
}
