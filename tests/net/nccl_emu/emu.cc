// The CPU stand-in of CUDA and NCCL for tests/net/nccl-emu.sh (see nccl.h).
// Objects live in registries until exit (detached threads may still hold them).
#include "nccl.h"
#include <stdio.h>
#include <vector>
#include <arpa/inet.h>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <poll.h>

struct fake_stream {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> q;
    bool busy = false, stop = false;
    std::thread th;
    fake_stream() { th = std::thread([this] { run(); }); th.detach(); }
    fake_stream(const fake_stream &) = delete;
    void run()
    {
        std::unique_lock<std::mutex> l(mu);
        for (;;) {
            cv.wait(l, [&] { return stop || !q.empty(); });
            if (q.empty())
                return;
            auto f = q.front();
            q.pop_front();
            busy = true;
            l.unlock();
            f();
            l.lock();
            busy = false;
            cv.notify_all();
        }
    }
    void push(std::function<void()> f)
    {
        std::lock_guard<std::mutex> g(mu);
        q.push_back(std::move(f));
        cv.notify_all();
    }
    void sync()
    {
        std::unique_lock<std::mutex> l(mu);
        cv.wait(l, [&] { return q.empty() && !busy; });
    }
};
struct fake_event {
    std::atomic<bool> done{true};
};
struct fake_comm {
    int fd = -1;
    int rank = 0;
    std::atomic<int> state{ncclInProgress};
    std::atomic<bool> aborted{false};
    std::mutex mu;
    std::condition_variable cv;
};

static std::mutex reg_mu;
static std::vector<void *> registry; // keeps every stream, event and comm reachable
template <class T> static T *keep(T *p)
{
    std::lock_guard<std::mutex> g(reg_mu);
    registry.push_back(p);
    return p;
}

const char *cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "ok" : "fake cuda error"; }
const char *cudaGetErrorName(cudaError_t) { return "fakeError"; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
static thread_local int cur_dev = 0;
cudaError_t cudaGetDevice(int *d) { *d = cur_dev; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { cur_dev = d; return cudaSuccess; }
cudaError_t cudaGetDeviceCount(int *n) { *n = 1; return cudaSuccess; }
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr, int) { *v = 1; return cudaSuccess; }
cudaError_t cudaDeviceGetPCIBusId(char *b, int n, int) { snprintf(b, n, "0000:00:00.0"); return cudaSuccess; }
cudaError_t cudaDeviceGetStreamPriorityRange(int *a, int *b) { *a = 0; *b = -1; return cudaSuccess; }
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned, int) { *s = keep(new fake_stream); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    s->sync();
    { std::lock_guard<std::mutex> g(s->mu); s->stop = true; s->cv.notify_all(); }
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) { s->sync(); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned) { *e = keep(new fake_event); return cudaSuccess; }
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    e->done = false;
    s->push([e] { e->done = true; });
    return cudaSuccess;
}
cudaError_t cudaEventQuery(cudaEvent_t e) { return e->done ? cudaSuccess : cudaErrorNotReady; }
cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t) { *p = malloc(n); return *p ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaFreeAsync(void *p, cudaStream_t s) { s->push([p] { free(p); }); return cudaSuccess; }
cudaError_t cudaMemcpyAsync(void *d, const void *src, size_t n, cudaMemcpyKind, cudaStream_t s)
{
    s->sync();
    memcpy(d, src, n);
    return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void *d, int v, size_t n, cudaStream_t s) { s->sync(); memset(d, v, n); return cudaSuccess; }

// ---- NCCL ----
static int listen_fds[65536];

ncclResult_t ncclGetUniqueId(ncclUniqueId *id)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) || listen(fd, 4) || getsockname(fd, (struct sockaddr *)&sa, &sl))
        return ncclSystemError;
    memset(id, 0, sizeof *id);
    unsigned port = ntohs(sa.sin_port);
    listen_fds[port] = fd;
    snprintf(id->internal, sizeof id->internal, "fake %u", port);
    return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *out, int n, ncclUniqueId id, int rank, ncclConfig_t *cfg)
{
    if (n != 2)
        return ncclInvalidUsage;
    unsigned port = 0;
    if (sscanf(id.internal, "fake %u", &port) != 1)
        return ncclInvalidUsage;
    fake_comm *c = keep(new fake_comm);
    c->rank = rank;
    *out = c;
    std::thread th([c, port, rank] {
        int fd = -1;
        if (rank == 0) {
            fd = accept(listen_fds[port], NULL, NULL);
        } else {
            for (int i = 0; i < 6000 && fd < 0; i++) {
                fd = socket(AF_INET, SOCK_STREAM, 0);
                struct sockaddr_in sa;
                memset(&sa, 0, sizeof sa);
                sa.sin_family = AF_INET;
                sa.sin_port = htons((uint16_t)port);
                sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
                if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
                    close(fd);
                    fd = -1;
                    usleep(10000);
                }
            }
        }
        c->fd = fd;
        c->state = fd >= 0 ? ncclSuccess : ncclSystemError;
    });
    if (cfg && cfg->blocking) {
        th.join();
        return (ncclResult_t)c->state.load();
    }
    th.detach();
    return ncclInProgress;
}
ncclResult_t ncclGroupStart(void) { return ncclSuccess; }
ncclResult_t ncclGroupEnd(void) { return ncclSuccess; }

static bool io(fake_comm *c, bool wr, void *p, size_t n)
{
    char *b = (char *)p;
    while (n) {
        ssize_t r = wr ? send(c->fd, b, n, MSG_NOSIGNAL) : recv(c->fd, b, n, 0);
        if (r <= 0)
            return false;
        b += r;
        n -= (size_t)r;
    }
    return true;
}
// A failed transfer leaves its "kernel" stuck until the communicator is aborted.
static void fail_op(fake_comm *c)
{
    if (!c->aborted)
        c->state = ncclRemoteError;
    std::unique_lock<std::mutex> l(c->mu);
    c->cv.wait(l, [&] { return c->aborted.load(); });
}
ncclResult_t ncclSend(const void *p, size_t n, ncclDataType_t, int, ncclComm_t c, cudaStream_t s)
{
    s->push([=] {
        char ready = 0;
        if (!io(c, false, &ready, 1) || !io(c, true, (void *)p, n))
            fail_op(c);
    });
    return ncclSuccess;
}
ncclResult_t ncclRecv(void *p, size_t n, ncclDataType_t, int, ncclComm_t c, cudaStream_t s)
{
    s->push([=] {
        char ready = 1;
        if (!io(c, true, &ready, 1) || !io(c, false, p, n))
            fail_op(c);
    });
    return ncclSuccess;
}
ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *r) { *r = (ncclResult_t)c->state.load(); return ncclSuccess; }
ncclResult_t ncclCommAbort(ncclComm_t c)
{
    { std::lock_guard<std::mutex> g(c->mu); c->aborted = true; c->cv.notify_all(); }
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    return ncclSuccess;
}
ncclResult_t ncclCommFinalize(ncclComm_t) { return ncclSuccess; }
ncclResult_t ncclCommDestroy(ncclComm_t c) { if (c->fd >= 0) close(c->fd); return ncclSuccess; }
const char *ncclGetErrorString(ncclResult_t r) { return r == ncclRemoteError ? "remote process exited or there was a network error" : "fake nccl error"; }
const char *ncclGetLastError(ncclComm_t) { return "fake"; }

// tests built with -Dpb_cuda_device_count=pb_emu_device_count see one device
extern "C" int pb_emu_device_count(const char **why)
{
    if (why)
        *why = "CPU stand-in";
    return 1;
}
