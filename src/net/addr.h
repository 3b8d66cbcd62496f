/* Socket addresses of the stage transport, IPv4 or IPv6: which address of
 * this host a rank listens on and publishes, parsing a peer's published
 * address, and printing one for messages. */
#ifndef PB_NET_ADDR_H
#define PB_NET_ADDR_H

#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/status.h"

/* --ip-family */
enum { PB_IP_AUTO = 0, PB_IP_4 = 4, PB_IP_6 = 6 };

typedef struct pb_netaddr {
    struct sockaddr_storage sa; /* sockaddr_in or sockaddr_in6 */
    socklen_t len;
} pb_netaddr;

/* Longest text of an address with its port: "[" IPv6 "%" scope "]:" port. */
#define PB_NETADDR_TEXT 80

/* Parse "auto", "4" or "6" (also "ipv4", "ipv6", "inet", "inet6"). */
pb_status pb_ip_family_parse(const char *s, int *family);

/* The address to listen on and publish, from the interface list `ifs`
 * (getifaddrs'), port 0:
 *   iface NULL: the first non-loopback interface that is up with an IPv4
 *     address; under PB_IP_AUTO, where there is none, the first with an IPv6
 *     address that is not link-local; else loopback (::1 under PB_IP_6).
 *   iface set: that interface's IPv4 address, or (PB_IP_AUTO where it has no
 *     IPv4 one, or PB_IP_6) its IPv6 address, a routable one before a
 *     link-local one (whose scope is that interface).
 * PB_ERR_USAGE naming the interfaces that are up where `iface` has no such
 * address. */
pb_status pb_net_pick(const struct ifaddrs *ifs, const char *iface, int family, pb_netaddr *out);

/* A numeric IPv4 or IPv6 address (no scope, no brackets) and a port, as a
 * rank published it. A link-local IPv6 address takes its scope from
 * scope_iface, this host's interface that reaches it (NULL: refused). */
pb_status pb_net_peer(const char *text, uint16_t port, const char *scope_iface, pb_netaddr *out);

/* Loopback of a's family, a's port. */
void pb_net_loopback_of(const pb_netaddr *a, pb_netaddr *out);

/* The family's wildcard address (listen on every interface), port 0. */
void pb_net_any(int af, pb_netaddr *out);

uint16_t pb_net_port(const pb_netaddr *a);
void pb_net_set_port(pb_netaddr *a, uint16_t port);
int pb_net_af(const pb_netaddr *a); /* AF_INET or AF_INET6 */
int pb_net_is_link_local(const pb_netaddr *a);

/* The address without port or scope ("10.0.0.5", "fd00::2"): what a rank
 * publishes. cap >= INET6_ADDRSTRLEN. */
void pb_net_host_text(const pb_netaddr *a, char *buf, size_t cap);

/* "10.0.0.5:4242", "[fd00::2]:4242", "[fe80::1%eth0]:4242": for messages.
 * cap >= PB_NETADDR_TEXT. */
void pb_net_text(const pb_netaddr *a, char *buf, size_t cap);

/* From accept(2)/getsockname(2)'s result. */
void pb_net_from_sockaddr(const struct sockaddr *sa, socklen_t len, pb_netaddr *out);

#endif
