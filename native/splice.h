/*
 * The splice tunnels (splice.c): what other relay-thread code may ask of them.
 */
#ifndef SOCKSTAP_SPLICE_H
#define SOCKSTAP_SPLICE_H

#include <node_api.h>
#include <stdint.h>

/*
 * On the relay thread: make a spliced tunnel of two connected sockets that are not in the epoll
 * set. The tunnel takes both descriptors; `id` is what spliceAbort and onDone use.
 */
void splice_adopt(uint32_t id, int cfd, int sfd, int64_t idle_ms, double *live);

/* On the relay thread: end the tunnel with this id ("aborted"); 0 when there is none. */
int splice_abort_tunnel(uint32_t id);

void splice_register(napi_env env, napi_value exports);

#endif
