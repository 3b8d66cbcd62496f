/* Socket addresses of the stage transport (addr.h). */
#include "config.h"
#include "net/addr.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

pb_status pb_ip_family_parse(const char *s, int *family)
{
    if (!strcmp(s, "auto"))
        *family = PB_IP_AUTO;
    else if (!strcmp(s, "4") || !strcmp(s, "ipv4") || !strcmp(s, "inet"))
        *family = PB_IP_4;
    else if (!strcmp(s, "6") || !strcmp(s, "ipv6") || !strcmp(s, "inet6"))
        *family = PB_IP_6;
    else
        return pb_error(PB_ERR_USAGE, "--ip-family %s: expected auto, 4 or 6", s);
    return PB_OK;
}

static bool v6_link_local(const struct in6_addr *a)
{
    return a->s6_addr[0] == 0xfe && (a->s6_addr[1] & 0xc0) == 0x80;
}

int pb_net_is_link_local(const pb_netaddr *a)
{
    return a->sa.ss_family == AF_INET6 &&
           v6_link_local(&((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_addr);
}

void pb_net_from_sockaddr(const struct sockaddr *sa, socklen_t len, pb_netaddr *out)
{
    memset(out, 0, sizeof *out);
    size_t n = sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (n > (size_t)len)
        n = (size_t)len;
    memcpy(&out->sa, sa, n);
    out->len = (socklen_t)n;
}

static void set_v4(pb_netaddr *out, struct in_addr a)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in *s = (struct sockaddr_in *)(void *)&out->sa;
    s->sin_family = AF_INET;
    s->sin_addr = a;
    out->len = sizeof *s;
}

static void set_v6(pb_netaddr *out, const struct in6_addr *a, uint32_t scope)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)(void *)&out->sa;
    s->sin6_family = AF_INET6;
    s->sin6_addr = *a;
    s->sin6_scope_id = scope;
    out->len = sizeof *s;
}

/* "lo (IPv4, IPv6), eth0 (IPv6)": the interfaces that are up, for messages */
static void list_up(const struct ifaddrs *ifs, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || !(i->ifa_flags & IFF_UP) ||
            (i->ifa_addr->sa_family != AF_INET && i->ifa_addr->sa_family != AF_INET6))
            continue;
        bool seen = false; /* listed at an earlier entry of the same name */
        for (const struct ifaddrs *j = ifs; j != i && !seen; j = j->ifa_next)
            seen = j->ifa_addr && (j->ifa_flags & IFF_UP) && !strcmp(j->ifa_name, i->ifa_name) &&
                   (j->ifa_addr->sa_family == AF_INET || j->ifa_addr->sa_family == AF_INET6);
        if (seen)
            continue;
        bool v4 = false, v6 = false;
        for (const struct ifaddrs *j = i; j; j = j->ifa_next)
            if (j->ifa_addr && (j->ifa_flags & IFF_UP) && !strcmp(j->ifa_name, i->ifa_name)) {
                v4 |= j->ifa_addr->sa_family == AF_INET;
                v6 |= j->ifa_addr->sa_family == AF_INET6;
            }
        size_t used = strlen(buf);
        snprintf(buf + used, cap - used, "%s%s (%s%s%s)", used ? ", " : "", i->ifa_name, v4 ? "IPv4" : "",
                 v4 && v6 ? ", " : "", v6 ? "IPv6" : "");
    }
    if (!buf[0])
        snprintf(buf, cap, "none");
}

/* The first address of family af (AF_INET: any; AF_INET6: routable when
 * want_ll is false, link-local when true) on an interface that is up: named
 * iface, or any but loopback. */
static bool find(const struct ifaddrs *ifs, const char *iface, int af, bool want_ll, pb_netaddr *out)
{
    for (const struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != af || !(i->ifa_flags & IFF_UP))
            continue;
        if (iface ? strcmp(i->ifa_name, iface) != 0 : (i->ifa_flags & IFF_LOOPBACK) != 0)
            continue;
        if (af == AF_INET) {
            set_v4(out, ((const struct sockaddr_in *)(const void *)i->ifa_addr)->sin_addr);
            return true;
        }
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)(const void *)i->ifa_addr;
        if (v6_link_local(&s->sin6_addr) != want_ll)
            continue;
        /* getifaddrs gives a link-local address its interface as scope */
        uint32_t scope = want_ll ? (s->sin6_scope_id ? s->sin6_scope_id : if_nametoindex(i->ifa_name)) : 0;
        set_v6(out, &s->sin6_addr, scope);
        return true;
    }
    return false;
}

pb_status pb_net_pick(const struct ifaddrs *ifs, const char *iface, int family, pb_netaddr *out)
{
    if (family != PB_IP_4 && family != PB_IP_6)
        family = PB_IP_AUTO;
    if (family != PB_IP_6 && find(ifs, iface, AF_INET, false, out))
        return PB_OK;
    if (family != PB_IP_4 && find(ifs, iface, AF_INET6, false, out))
        return PB_OK;
    if (iface && family != PB_IP_4 && find(ifs, iface, AF_INET6, true, out))
        return PB_OK;
    if (iface) {
        char up[512];
        list_up(ifs, up, sizeof up);
        bool exists = false;
        for (const struct ifaddrs *i = ifs; i && !exists; i = i->ifa_next)
            exists = i->ifa_addr && (i->ifa_flags & IFF_UP) && !strcmp(i->ifa_name, iface) &&
                     (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6);
        if (!exists)
            return pb_error(PB_ERR_USAGE, "--iface %s: no interface of that name is up with an IP address "
                            "(up: %s)", iface, up);
        return pb_error(PB_ERR_USAGE, "--iface %s: the interface has no %s address (up: %s)", iface,
                        family == PB_IP_6 ? "IPv6" : "IPv4", up);
    }
    if (family == PB_IP_6)
        set_v6(out, &in6addr_loopback, 0);
    else
        set_v4(out, (struct in_addr){.s_addr = htonl(INADDR_LOOPBACK)});
    return PB_OK;
}

pb_status pb_net_peer(const char *text, uint16_t port, const char *scope_iface, pb_netaddr *out)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (strlen(text) < INET6_ADDRSTRLEN && inet_pton(AF_INET, text, &a4) == 1) {
        set_v4(out, a4);
    } else if (strlen(text) < INET6_ADDRSTRLEN && inet_pton(AF_INET6, text, &a6) == 1) {
        uint32_t scope = 0;
        if (v6_link_local(&a6)) {
            scope = scope_iface ? if_nametoindex(scope_iface) : 0;
            if (!scope)
                return pb_error(PB_ERR_NET, "%s is a link-local address, reachable only through an "
                                "interface named by --iface%s%s%s", text, scope_iface ? " (this host has no " : "",
                                scope_iface ? scope_iface : "", scope_iface ? ")" : "");
        }
        set_v6(out, &a6, scope);
    } else {
        return pb_error(PB_ERR_NET, "'%.64s' is not a numeric IPv4 or IPv6 address", text);
    }
    pb_net_set_port(out, port);
    return PB_OK;
}

void pb_net_loopback_of(const pb_netaddr *a, pb_netaddr *out)
{
    uint16_t port = pb_net_port(a);
    if (a->sa.ss_family == AF_INET6)
        set_v6(out, &in6addr_loopback, 0);
    else
        set_v4(out, (struct in_addr){.s_addr = htonl(INADDR_LOOPBACK)});
    pb_net_set_port(out, port);
}

void pb_net_any(int af, pb_netaddr *out)
{
    if (af == AF_INET6)
        set_v6(out, &in6addr_any, 0);
    else
        set_v4(out, (struct in_addr){.s_addr = htonl(INADDR_ANY)});
}

int pb_net_af(const pb_netaddr *a)
{
    return a->sa.ss_family == AF_INET6 ? AF_INET6 : AF_INET;
}

uint16_t pb_net_port(const pb_netaddr *a)
{
    if (a->sa.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)&a->sa)->sin_port);
}

void pb_net_set_port(pb_netaddr *a, uint16_t port)
{
    if (a->sa.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)(void *)&a->sa)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)(void *)&a->sa)->sin_port = htons(port);
}

void pb_net_host_text(const pb_netaddr *a, char *buf, size_t cap)
{
    const void *p = a->sa.ss_family == AF_INET6
                        ? (const void *)&((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_addr
                        : (const void *)&((const struct sockaddr_in *)(const void *)&a->sa)->sin_addr;
    if (!inet_ntop(pb_net_af(a), p, buf, (socklen_t)cap))
        snprintf(buf, cap, "?");
}

void pb_net_text(const pb_netaddr *a, char *buf, size_t cap)
{
    char h[INET6_ADDRSTRLEN];
    pb_net_host_text(a, h, sizeof h);
    if (a->sa.ss_family != AF_INET6) {
        snprintf(buf, cap, "%s:%u", h, (unsigned)pb_net_port(a));
        return;
    }
    char scope[IF_NAMESIZE + 2] = "";
    uint32_t id = ((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_scope_id;
    char name[IF_NAMESIZE];
    if (id && if_indextoname(id, name))
        snprintf(scope, sizeof scope, "%%%s", name);
    else if (id)
        snprintf(scope, sizeof scope, "%%%u", (unsigned)id);
    snprintf(buf, cap, "[%s%s]:%u", h, scope, (unsigned)pb_net_port(a));
}
