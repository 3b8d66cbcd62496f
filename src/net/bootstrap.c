#define _GNU_SOURCE 1 /* sched_getaffinity, CPU_COUNT */
#include "config.h"
#include "net/bootstrap.h"

#include <sched.h>

#include <errno.h>
#include <limits.h>
#include <pmix.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

struct pb_bootstrap {
    bool pmix;            /* PMIx_Init succeeded */
    bool singleton;
    pmix_proc_t me;
    int rank, size, local_rank, local_size;
    char node[256];
    char job[PMIX_MAX_NSLEN + 1];
};

/* Environment variables by which launchers announce more than one task. */
static const char *const multi_task_vars[] = {
    "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE",
};

/* The first variable above whose value is an integer > 1, or NULL. */
static const char *multi_task_env(long *n)
{
    for (size_t i = 0; i < sizeof multi_task_vars / sizeof multi_task_vars[0]; i++) {
        const char *v = getenv(multi_task_vars[i]);
        if (!v || !*v)
            continue;
        char *end;
        errno = 0;
        long x = strtol(v, &end, 10);
        if (errno == 0 && end != v && x > 1) {
            *n = x;
            return multi_task_vars[i];
        }
    }
    return NULL;
}

/* Whether the environment says a PMIx server launched us. */
static bool pmix_env_present(void)
{
    extern char **environ;
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "PMIX_SERVER_URI", 15) == 0 || strncmp(*e, "PMIX_NAMESPACE=", 15) == 0)
            return true;
    return false;
}

static void info_timeout(pmix_info_t *info, int timeout_s)
{
    int t = timeout_s > 0 ? timeout_s : PB_BOOTSTRAP_TIMEOUT_S;
    PMIX_INFO_CONSTRUCT(info);
    PMIx_Info_load(info, PMIX_TIMEOUT, &t, PMIX_INT);
}

/* Fetch a job- or proc-level attribute as an unsigned integer. */
static pb_status get_uint(pb_bootstrap *b, uint32_t rank, const char *key, uint64_t *out)
{
    pmix_proc_t p;
    PMIX_PROC_CONSTRUCT(&p);
    PMIX_LOAD_PROCID(&p, b->me.nspace, rank);
    pmix_info_t info;
    info_timeout(&info, 30);
    pmix_value_t *val = NULL;
    pmix_status_t rc = PMIx_Get(&p, key, &info, 1, &val);
    PMIX_INFO_DESTRUCT(&info);
    if (rc != PMIX_SUCCESS || !val)
        return pb_error(PB_ERR_NET, "PMIx_Get(%s): %s", key, PMIx_Error_string(rc));
    pb_status st = PB_OK;
    switch (val->type) {
    case PMIX_UINT32: *out = val->data.uint32; break;
    case PMIX_UINT16: *out = val->data.uint16; break;
    case PMIX_UINT64: *out = val->data.uint64; break;
    case PMIX_UINT8: *out = val->data.uint8; break;
    case PMIX_INT: *out = val->data.integer < 0 ? 0 : (uint64_t)val->data.integer; break;
    case PMIX_PROC_RANK: *out = val->data.rank; break;
    default:
        st = pb_error(PB_ERR_NET, "PMIx_Get(%s): unexpected value type %d", key, (int)val->type);
    }
    PMIX_VALUE_RELEASE(val);
    return st;
}

static pb_status init_pmix(pb_bootstrap *b)
{
    uint64_t size = 0, lrank = 0, lsize = 0;
    b->rank = (int)b->me.rank;
    PB_CHECK(get_uint(b, PMIX_RANK_WILDCARD, PMIX_JOB_SIZE, &size));
    if (size < 1 || size > INT_MAX || b->me.rank >= size)
        return pb_error(PB_ERR_NET, "PMIx: rank %u out of job size %llu", b->me.rank,
                        (unsigned long long)size);
    b->size = (int)size;
    /* Local rank and size are informative; fall back when the server lacks them. */
    if (get_uint(b, b->me.rank, PMIX_LOCAL_RANK, &lrank) != PB_OK || lrank >= size)
        lrank = 0;
    if (get_uint(b, PMIX_RANK_WILDCARD, PMIX_LOCAL_SIZE, &lsize) != PB_OK || lsize < 1 || lsize > size)
        lsize = 1;
    b->local_rank = (int)lrank;
    b->local_size = (int)lsize;

    pmix_proc_t p;
    PMIX_PROC_CONSTRUCT(&p);
    PMIX_LOAD_PROCID(&p, b->me.nspace, b->me.rank);
    pmix_value_t *val = NULL;
    if (PMIx_Get(&p, PMIX_HOSTNAME, NULL, 0, &val) == PMIX_SUCCESS && val &&
        val->type == PMIX_STRING && val->data.string)
        snprintf(b->node, sizeof b->node, "%s", val->data.string);
    if (val)
        PMIX_VALUE_RELEASE(val);
    snprintf(b->job, sizeof b->job, "%s", b->me.nspace);
    return PB_OK;
}

pb_status pb_bootstrap_init(pb_bootstrap **out)
{
    *out = NULL;
    pb_bootstrap *b;
    PB_CHECK(pb_calloc(1, sizeof *b, &b));
    if (gethostname(b->node, sizeof b->node - 1) != 0)
        snprintf(b->node, sizeof b->node, "localhost");

    PMIX_PROC_CONSTRUCT(&b->me);
    pmix_status_t rc = PMIx_Init(&b->me, NULL, 0);
    if (rc == PMIX_SUCCESS) {
        b->pmix = true;
        pb_status st = init_pmix(b);
        if (st != PB_OK) {
            pb_bootstrap_free(b);
            return pb_error_ctx(st, "PMIx bootstrap");
        }
        pb_log_set_rank(b->rank, b->size);
        pb_log_debug("PMIx: rank %d of %d (local %d of %d) on %s, namespace %s", b->rank,
                     b->size, b->local_rank, b->local_size, b->node, b->job);
        *out = b;
        return PB_OK;
    }

    long n = 0;
    const char *var = multi_task_env(&n);
    if (var || pmix_env_present()) {
        pb_status st;
        if (var)
            st = pb_error(PB_ERR_CONFIG,
                          "%s=%ld says this job has %ld tasks, but no PMIx server is reachable "
                          "(PMIx_Init: %s); refusing to run %ld independent copies. Launch with "
                          "'srun --mpi=pmix' or 'mpirun', or with a single task",
                          var, n, n, PMIx_Error_string(rc), n);
        else
            st = pb_error(PB_ERR_NET,
                          "launched by a PMIx server (PMIX_* in the environment) but PMIx_Init "
                          "failed: %s",
                          PMIx_Error_string(rc));
        free(b);
        return st;
    }
    /* Alone: a job of one. */
    b->singleton = true;
    b->rank = 0;
    b->size = 1;
    b->local_rank = 0;
    b->local_size = 1;
    snprintf(b->job, sizeof b->job, "singleton");
    pb_log_debug("no PMIx server (%s): running as a single rank", PMIx_Error_string(rc));
    *out = b;
    return PB_OK;
}

void pb_bootstrap_free(pb_bootstrap *b)
{
    if (!b)
        return;
    if (b->pmix)
        PMIx_Finalize(NULL, 0);
    free(b);
}

int pb_bootstrap_rank(const pb_bootstrap *b) { return b->rank; }
int pb_bootstrap_size(const pb_bootstrap *b) { return b->size; }
int pb_bootstrap_local_rank(const pb_bootstrap *b) { return b->local_rank; }
int pb_bootstrap_local_size(const pb_bootstrap *b) { return b->local_size; }
const char *pb_bootstrap_node(const pb_bootstrap *b) { return b->node; }
const char *pb_bootstrap_job_id(const pb_bootstrap *b) { return b->job; }
bool pb_bootstrap_is_singleton(const pb_bootstrap *b) { return b->singleton; }

static pb_status check_key(const char *key)
{
    if (!key || !*key || strlen(key) >= PMIX_MAX_KEYLEN)
        return pb_error(PB_ERR_INTERNAL, "bootstrap key '%s' is empty or longer than %d bytes",
                        key ? key : "(null)", PMIX_MAX_KEYLEN - 1);
    return PB_OK;
}

pb_status pb_bootstrap_put(pb_bootstrap *b, const char *key, const void *data, size_t len)
{
    PB_CHECK(check_key(key));
    if (!b->pmix)
        return PB_OK; /* a singleton has nobody to tell */
    pmix_value_t val;
    PMIX_VALUE_CONSTRUCT(&val);
    pmix_byte_object_t bo = {.bytes = (char *)(uintptr_t)data, .size = len};
    pmix_status_t rc = PMIx_Value_load(&val, &bo, PMIX_BYTE_OBJECT);
    if (rc == PMIX_SUCCESS)
        rc = PMIx_Put(PMIX_GLOBAL, key, &val);
    PMIX_VALUE_DESTRUCT(&val);
    if (rc != PMIX_SUCCESS)
        return pb_error(PB_ERR_NET, "PMIx_Put(%s): %s", key, PMIx_Error_string(rc));
    return PB_OK;
}

pb_status pb_bootstrap_commit(pb_bootstrap *b)
{
    if (!b->pmix)
        return PB_OK;
    pmix_status_t rc = PMIx_Commit();
    if (rc != PMIX_SUCCESS)
        return pb_error(PB_ERR_NET, "PMIx_Commit: %s", PMIx_Error_string(rc));
    return PB_OK;
}

pb_status pb_bootstrap_fence(pb_bootstrap *b, int timeout_s)
{
    if (!b->pmix)
        return PB_OK;
    pmix_info_t info[2];
    bool collect = true;
    info_timeout(&info[0], timeout_s);
    PMIX_INFO_CONSTRUCT(&info[1]);
    PMIx_Info_load(&info[1], PMIX_COLLECT_DATA, &collect, PMIX_BOOL);
    pmix_proc_t all;
    PMIX_PROC_CONSTRUCT(&all);
    PMIX_LOAD_PROCID(&all, b->me.nspace, PMIX_RANK_WILDCARD);
    pmix_status_t rc = PMIx_Fence(&all, 1, info, 2);
    PMIX_INFO_DESTRUCT(&info[0]);
    PMIX_INFO_DESTRUCT(&info[1]);
    if (rc != PMIX_SUCCESS)
        return pb_error(PB_ERR_NET, "PMIx_Fence over %d ranks%s: %s", b->size,
                        rc == PMIX_ERR_TIMEOUT ? " timed out" : "", PMIx_Error_string(rc));
    return PB_OK;
}

pb_status pb_bootstrap_get(pb_bootstrap *b, int rank, const char *key, int timeout_s,
                           void **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    PB_CHECK(check_key(key));
    if (rank < 0 || rank >= b->size)
        return pb_error(PB_ERR_INTERNAL, "bootstrap get '%s': rank %d out of world %d", key,
                        rank, b->size);
    if (!b->pmix)
        return pb_error(PB_ERR_NET, "bootstrap get '%s': no PMIx server (single rank)", key);
    pmix_proc_t p;
    PMIX_PROC_CONSTRUCT(&p);
    PMIX_LOAD_PROCID(&p, b->me.nspace, (pmix_rank_t)rank);
    pmix_info_t info;
    info_timeout(&info, timeout_s);
    pmix_value_t *val = NULL;
    pmix_status_t rc = PMIx_Get(&p, key, &info, 1, &val);
    PMIX_INFO_DESTRUCT(&info);
    if (rc != PMIX_SUCCESS || !val)
        return pb_error(PB_ERR_NET, "PMIx_Get(rank %d, %s)%s: %s", rank, key,
                        rc == PMIX_ERR_TIMEOUT ? " timed out" : "", PMIx_Error_string(rc));
    pb_status st = PB_OK;
    if (val->type != PMIX_BYTE_OBJECT) {
        st = pb_error(PB_ERR_NET, "PMIx_Get(rank %d, %s): value of type %d, expected bytes",
                      rank, key, (int)val->type);
    } else {
        size_t n = val->data.bo.size, cap;
        char *buf = NULL;
        if (!pb_add_ok(n, 1, &cap))
            st = pb_error(PB_ERR_NET, "PMIx_Get(rank %d, %s): size overflow", rank, key);
        else if ((st = pb_malloc(cap, &buf)) == PB_OK) {
            if (n)
                memcpy(buf, val->data.bo.bytes, n);
            buf[n] = '\0';
            *data = buf;
            *len = n;
        }
    }
    PMIX_VALUE_RELEASE(val);
    return st;
}

void pb_bootstrap_abort(pb_bootstrap *b, pb_status st, const char *msg)
{
    if (!b || !b->pmix || b->size <= 1)
        return;
    char full[1024];
    snprintf(full, sizeof full, "pippy-batch: rank %d of %d on %s aborts the job: %s", b->rank,
             b->size, b->node, msg ? msg : pb_strerror(st));
    int code = pb_status_exit_code(st);
    if (code == 0)
        code = 1;
    pmix_status_t rc = PMIx_Abort(code, full, NULL, 0);
    if (rc != PMIX_SUCCESS)
        pb_log_error("PMIx_Abort: %s", PMIx_Error_string(rc));
}

/* This process's affinity mask, or every online CPU when it is unknown. */
static void my_cpus(cpu_set_t *set)
{
    CPU_ZERO(set);
    if (sched_getaffinity(0, sizeof *set, set) == 0 && CPU_COUNT(set) > 0)
        return;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long i = 0; i < (n > 0 ? n : 1) && i < CPU_SETSIZE; i++)
        CPU_SET((int)i, set);
}

#define CPUS_KEY "pb.cpus"

pb_status pb_bootstrap_cpu_share(pb_bootstrap *b, int timeout_s, int *cores)
{
    cpu_set_t mine;
    my_cpus(&mine);
    *cores = CPU_COUNT(&mine);
    if (!b->pmix || b->size <= 1)
        return PB_OK;

    /* Publish "node\0" + the mask as a bitmap; ranks on the same node (same
     * PMIx host name) count which of them may run on each CPU. */
    enum { MAP_BYTES = CPU_SETSIZE / 8 };
    size_t nlen = strlen(b->node) + 1;
    uint8_t buf[sizeof b->node + MAP_BYTES];
    memcpy(buf, b->node, nlen);
    memset(buf + nlen, 0, MAP_BYTES);
    for (int c = 0; c < CPU_SETSIZE; c++)
        if (CPU_ISSET(c, &mine))
            buf[nlen + c / 8] |= (uint8_t)(1u << (c % 8));
    PB_CHECK(pb_bootstrap_put(b, CPUS_KEY, buf, nlen + MAP_BYTES));
    PB_CHECK(pb_bootstrap_commit(b));
    PB_CHECK(pb_bootstrap_fence(b, timeout_s));

    uint16_t *users = calloc(CPU_SETSIZE, sizeof *users); /* ranks here that may use CPU c */
    if (!users)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    pb_status st = PB_OK;
    for (int r = 0; r < b->size && st == PB_OK; r++) {
        void *data = NULL;
        size_t len = 0;
        st = pb_bootstrap_get(b, r, CPUS_KEY, timeout_s, &data, &len);
        if (st != PB_OK)
            break;
        const uint8_t *p = data;
        if (len != nlen + MAP_BYTES || memcmp(p, buf, nlen) != 0) {
            free(data); /* another node (or another layout: not comparable) */
            continue;
        }
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (p[nlen + c / 8] & (1u << (c % 8)))
                users[c]++;
        free(data);
    }
    if (st == PB_OK) {
        double share = 0;
        for (int c = 0; c < CPU_SETSIZE; c++)
            if (CPU_ISSET(c, &mine) && users[c] > 0)
                share += 1.0 / users[c];
        int n = (int)(share + 1e-9);
        *cores = n >= 1 ? n : 1;
    }
    free(users);
    return st;
}
