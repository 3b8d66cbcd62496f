/* The stage transport's addresses (net/addr.h): which address a rank picks
 * from interface lists made here (IPv4 only, IPv6 only, both, link-local
 * only, loopback only; with and without --iface and --ip-family), the
 * messages that name what is up, parsing what a peer published, the text
 * of addresses; then real sockets on this host: a listener on ::1 and on
 * each link-local IPv6 address found, reached through pb_net_peer's
 * address (with the interface as scope). */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/status.h"
#include "net/addr.h"
#include "../check.h"


/* an interface list of up to 8 entries */
typedef struct {
    struct ifaddrs e[8];
    struct sockaddr_storage sa[8];
    int n;
} iflist;

static void add(iflist *l, const char *name, unsigned flags, const char *addr, unsigned scope)
{
    int i = l->n++;
    memset(&l->e[i], 0, sizeof l->e[i]);
    memset(&l->sa[i], 0, sizeof l->sa[i]);
    l->e[i].ifa_name = (char *)name;
    l->e[i].ifa_flags = flags;
    if (strchr(addr, ':')) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)(void *)&l->sa[i];
        s->sin6_family = AF_INET6;
        s->sin6_scope_id = scope;
        if (inet_pton(AF_INET6, addr, &s->sin6_addr) != 1)
            abort();
    } else if (strcmp(addr, "packet") == 0) {
        l->sa[i].ss_family = AF_PACKET; /* as getifaddrs lists each link */
    } else {
        struct sockaddr_in *s = (struct sockaddr_in *)(void *)&l->sa[i];
        s->sin_family = AF_INET;
        if (inet_pton(AF_INET, addr, &s->sin_addr) != 1)
            abort();
    }
    l->e[i].ifa_addr = (struct sockaddr *)&l->sa[i];
    for (int j = 0; j < l->n; j++)
        l->e[j].ifa_next = j + 1 < l->n ? &l->e[j + 1] : NULL;
}

#define UP (IFF_UP | IFF_RUNNING)
#define LO (IFF_UP | IFF_RUNNING | IFF_LOOPBACK)

/* pick and compare the text "[addr%scope]:0" / "addr:0", or expect an error containing want_err */
static void expect_pick(const iflist *l, const char *iface, int family, const char *want, const char *what)
{
    pb_netaddr a;
    pb_status st = pb_net_pick(l->n ? &l->e[0] : NULL, iface, family, &a);
    if (want[0] == '!') {
        CHECK(st == PB_ERR_USAGE, "%s: expected an error, got %d", what, st);
        CHECK(st == PB_OK || strstr(pb_last_error(), want + 1), "%s: message '%s' lacks '%s'", what,
              pb_last_error(), want + 1);
        return;
    }
    CHECK(st == PB_OK, "%s: %s", what, st == PB_OK ? "" : pb_last_error());
    if (st != PB_OK)
        return;
    char got[PB_NETADDR_TEXT];
    pb_net_text(&a, got, sizeof got);
    CHECK(strcmp(got, want) == 0, "%s: picked %s, expected %s", what, got, want);
}

static void test_pick(void)
{
    iflist both = {0};
    add(&both, "lo", LO, "packet", 0);
    add(&both, "lo", LO, "127.0.0.1", 0);
    add(&both, "eth0", UP, "packet", 0);
    add(&both, "eth0", UP, "10.1.2.3", 0);
    add(&both, "lo", LO, "::1", 0);
    add(&both, "eth0", UP, "fe80::1", 77);
    add(&both, "eth0", UP, "fd00::5", 0);
    add(&both, "ib0", 0, "10.9.9.9", 0); /* down */
    expect_pick(&both, NULL, PB_IP_AUTO, "10.1.2.3:0", "dual stack, auto");
    expect_pick(&both, NULL, PB_IP_4, "10.1.2.3:0", "dual stack, 4");
    expect_pick(&both, NULL, PB_IP_6, "[fd00::5]:0", "dual stack, 6: the routable one, not fe80");
    expect_pick(&both, "eth0", PB_IP_AUTO, "10.1.2.3:0", "--iface eth0, auto");
    expect_pick(&both, "eth0", PB_IP_6, "[fd00::5]:0", "--iface eth0, 6");
    expect_pick(&both, "lo", PB_IP_AUTO, "127.0.0.1:0", "--iface lo");
    expect_pick(&both, "lo", PB_IP_6, "[::1]:0", "--iface lo, 6");
    expect_pick(&both, "ib0", PB_IP_AUTO, "!--iface ib0: no interface of that name is up", "interface down");
    expect_pick(&both, "eth9", PB_IP_AUTO, "!up: lo (IPv4, IPv6), eth0 (IPv4, IPv6)", "unknown interface");

    iflist v6 = {0}; /* an IPv6-only host: loopback has both, the link only IPv6 */
    add(&v6, "lo", LO, "127.0.0.1", 0);
    add(&v6, "lo", LO, "::1", 0);
    add(&v6, "ens1", UP, "fe80::aa", 3);
    add(&v6, "ens1", UP, "2001:db8::7", 0);
    expect_pick(&v6, NULL, PB_IP_AUTO, "[2001:db8::7]:0", "IPv6-only host, auto");
    expect_pick(&v6, NULL, PB_IP_4, "127.0.0.1:0", "IPv6-only host, 4: loopback");
    expect_pick(&v6, "ens1", PB_IP_AUTO, "[2001:db8::7]:0", "IPv6-only interface, auto");
    expect_pick(&v6, "ens1", PB_IP_4, "!--iface ens1: the interface has no IPv4 address (up: lo (IPv4, IPv6), "
                "ens1 (IPv6))", "--ip-family 4 on an IPv6-only interface");

    iflist ll = {0}; /* a link with a link-local address only */
    add(&ll, "lo", LO, "127.0.0.1", 0);
    add(&ll, "lo", LO, "::1", 0);
    add(&ll, "eth1", UP, "fe80::1234", 5);
    expect_pick(&ll, NULL, PB_IP_AUTO, "127.0.0.1:0", "link-local only, no --iface: loopback");
    expect_pick(&ll, NULL, PB_IP_6, "[::1]:0", "link-local only, 6, no --iface: loopback");
    pb_netaddr a;
    CHECK(pb_net_pick(&ll.e[0], "eth1", PB_IP_AUTO, &a) == PB_OK && pb_net_is_link_local(&a) &&
              ((struct sockaddr_in6 *)(void *)&a.sa)->sin6_scope_id == 5,
          "link-local with --iface: the address with its interface's scope");
    char host[INET6_ADDRSTRLEN];
    pb_net_host_text(&a, host, sizeof host);
    CHECK(strcmp(host, "fe80::1234") == 0, "published text %s", host);

    iflist none = {0};
    expect_pick(&none, NULL, PB_IP_AUTO, "127.0.0.1:0", "no interfaces");
    expect_pick(&none, "eth0", PB_IP_AUTO, "!up: none", "no interfaces, --iface");
}

static void test_parse(void)
{
    int f = -1;
    CHECK(pb_ip_family_parse("auto", &f) == PB_OK && f == PB_IP_AUTO, "auto");
    CHECK(pb_ip_family_parse("4", &f) == PB_OK && f == PB_IP_4, "4");
    CHECK(pb_ip_family_parse("ipv6", &f) == PB_OK && f == PB_IP_6, "ipv6");
    CHECK(pb_ip_family_parse("5", &f) == PB_ERR_USAGE && strstr(pb_last_error(), "--ip-family 5: expected"),
          "5 refused");

    pb_netaddr a;
    char t[PB_NETADDR_TEXT];
    CHECK(pb_net_peer("192.0.2.1", 4242, NULL, &a) == PB_OK, "v4");
    pb_net_text(&a, t, sizeof t);
    CHECK(!strcmp(t, "192.0.2.1:4242") && pb_net_af(&a) == AF_INET, "v4 text %s", t);
    CHECK(pb_net_peer("2001:db8::1", 80, NULL, &a) == PB_OK, "v6");
    pb_net_text(&a, t, sizeof t);
    CHECK(!strcmp(t, "[2001:db8::1]:80") && pb_net_af(&a) == AF_INET6, "v6 text %s", t);
    pb_netaddr lb;
    pb_net_loopback_of(&a, &lb);
    pb_net_text(&lb, t, sizeof t);
    CHECK(!strcmp(t, "[::1]:80"), "v6 loopback %s", t);
    CHECK(pb_net_peer("fe80::1", 80, NULL, &a) == PB_ERR_NET && strstr(pb_last_error(), "link-local"),
          "link-local without an interface refused");
    CHECK(pb_net_peer("fe80::1", 80, "no-such-if9", &a) == PB_ERR_NET &&
              strstr(pb_last_error(), "this host has no no-such-if9"),
          "link-local through a missing interface refused");
    CHECK(pb_net_peer("fe80::1", 80, "lo", &a) == PB_OK &&
              ((struct sockaddr_in6 *)(void *)&a.sa)->sin6_scope_id == if_nametoindex("lo"),
          "link-local takes the interface's scope");
    pb_net_text(&a, t, sizeof t);
    CHECK(!strcmp(t, "[fe80::1%lo]:80"), "scoped text %s", t);
    const char *bad[] = {"", "localhost", "1.2.3", "1.2.3.4.5", "::g", "[::1]", "fe80::1%eth0", "10.0.0.1 ",
                         "0123456789012345678901234567890123456789012345678901234567890"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        CHECK(pb_net_peer(bad[i], 1, "lo", &a) == PB_ERR_NET && strstr(pb_last_error(), "not a numeric"),
              "'%s' refused", bad[i]);
}

/* a listener on `at` (port 0), reached by connecting to pb_net_peer(text, port, scope_iface) */
static void round_trip(const pb_netaddr *at, const char *text, const char *scope_iface)
{
    int l = socket(pb_net_af(at), SOCK_STREAM, 0), c = -1, s = -1;
    pb_netaddr la = *at;
    socklen_t sl = sizeof la.sa;
    if (l < 0 || bind(l, (struct sockaddr *)&la.sa, la.len) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&la.sa, &sl) != 0) {
        CHECK(0, "listening at %s: %s", text, strerror(errno));
        goto out;
    }
    pb_netaddr to;
    if (pb_net_peer(text, pb_net_port(&la), scope_iface, &to) != PB_OK) {
        CHECK(0, "pb_net_peer(%s): %s", text, pb_last_error());
        goto out;
    }
    char t[PB_NETADDR_TEXT];
    pb_net_text(&to, t, sizeof t);
    c = socket(pb_net_af(&to), SOCK_STREAM, 0);
    CHECK(c >= 0 && connect(c, (struct sockaddr *)&to.sa, to.len) == 0, "connecting to %s: %s", t, strerror(errno));
    s = accept(l, NULL, NULL);
    char byte = 0;
    CHECK(s >= 0 && write(c, "x", 1) == 1 && read(s, &byte, 1) == 1 && byte == 'x', "a byte through %s", t);
    printf("addr_test: a connection to %s\n", t);
out:
    if (s >= 0)
        close(s);
    if (c >= 0)
        close(c);
    if (l >= 0)
        close(l);
}

static void test_real(void)
{
    pb_netaddr a;
    CHECK(pb_net_peer("::1", 0, NULL, &a) == PB_OK, "::1");
    round_trip(&a, "::1", NULL);
    CHECK(pb_net_peer("127.0.0.1", 0, NULL, &a) == PB_OK, "127.0.0.1");
    round_trip(&a, "127.0.0.1", NULL);
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0) {
        CHECK(0, "getifaddrs: %s", strerror(errno));
        return;
    }
    int n_ll = 0;
    for (struct ifaddrs *i = ifs; i; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != AF_INET6 || !(i->ifa_flags & IFF_UP))
            continue;
        pb_netaddr x;
        pb_net_from_sockaddr(i->ifa_addr, sizeof(struct sockaddr_in6), &x);
        if (!pb_net_is_link_local(&x))
            continue;
        char host[INET6_ADDRSTRLEN];
        pb_net_host_text(&x, host, sizeof host);
        round_trip(&x, host, i->ifa_name); /* as a peer publishes it: no scope */
        n_ll++;
    }
    freeifaddrs(ifs);
    if (!n_ll)
        printf("addr_test: no link-local IPv6 address is up on this host: that connection not made\n");
}

int main(void)
{
    test_pick();
    test_parse();
    test_real();
    if (check_failures) {
        fprintf(stderr, "addr_test: %d failures\n", check_failures);
        return 1;
    }
    printf("addr_test: ok\n");
    return 0;
}
