/* The small-batch products' thread pool (kpool_run, kernels_impl.h).
 *
 * Why not OpenMP: decoding one token runs about 200 weight products of tens of microseconds each.
 * With OMP_WAIT_POLICY=passive (what a shared machine needs) every parallel region wakes sleeping
 * threads through the kernel, which cost a fifth of decode time; with active waiting, idle OpenMP
 * threads spin for a long time and fight other processes. These workers spin for KPOOL_SPIN_NS
 * after each job (long enough to cover the gap to the next product of a decode step, short enough
 * to cost little on a busy machine), then sleep on a condition variable. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "engine/kernels_impl.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define KPOOL_MAX 64
#define KPOOL_SPIN_NS 50000L

typedef struct kpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;       /* bumped once per job */
    atomic_int pending;    /* workers still running the current job */
    atomic_int sleepers;   /* workers waiting on cv */
    atomic_flag busy;      /* held by the thread submitting jobs */
    int n_workers;
    kpool_fn fn;
    void *arg;
    int nt;
} kpool;

static kpool pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, ATOMIC_FLAG_INIT, 0, NULL, NULL, 0};
/* The job generation at each worker's creation: a worker that starts late must not take the job
 * its creator submits next for one it has already seen. */
static unsigned start_gen[KPOOL_MAX];

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static void *worker(void *p)
{
    const int id = (int)(intptr_t)p; /* 1.. */
    unsigned seen = start_gen[id];
    for (;;) {
        unsigned g;
        long t0 = now_ns();
        int spins = 0;
        while ((g = atomic_load_explicit(&pool.gen, memory_order_acquire)) == seen) {
            CPU_RELAX();
            if (++spins % 64 || now_ns() - t0 < KPOOL_SPIN_NS)
                continue;
            /* sleepers is raised before gen is read again; the submitter bumps gen before it reads
             * sleepers (both sequentially consistent), so one of them sees the other. */
            pthread_mutex_lock(&pool.mu);
            atomic_fetch_add(&pool.sleepers, 1);
            while (atomic_load(&pool.gen) == seen)
                pthread_cond_wait(&pool.cv, &pool.mu);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.mu);
            t0 = now_ns();
        }
        seen = g;
        if (id < pool.nt)
            pool.fn(pool.arg, id, pool.nt);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
    }
    return NULL;
}

void kpool_run(kpool_fn fn, void *arg, int nt)
{
    if (nt > KPOOL_MAX)
        nt = KPOOL_MAX;
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    if (nt <= 1 || nested || atomic_flag_test_and_set(&pool.busy)) {
        for (int t = 0; t < nt; t++)
            fn(arg, t, nt);
        return;
    }
    while (pool.n_workers < nt - 1) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        start_gen[pool.n_workers + 1] = atomic_load(&pool.gen);
        int rc = pthread_create(&th, &at, worker, (void *)(intptr_t)(pool.n_workers + 1));
        pthread_attr_destroy(&at);
        if (rc)
            break;
        pool.n_workers++;
    }
    if (nt - 1 > pool.n_workers) /* fewer workers than asked: the caller runs the rest */
        nt = pool.n_workers + 1;
    pool.fn = fn;
    pool.arg = arg;
    pool.nt = nt;
    atomic_store(&pool.pending, pool.n_workers);
    atomic_fetch_add(&pool.gen, 1);
    if (atomic_load(&pool.sleepers)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
    fn(arg, 0, nt);
    /* A worker descheduled on a busy machine: yield the core to it instead of spinning. */
    for (int spins = 0; atomic_load_explicit(&pool.pending, memory_order_acquire) > 0; spins++) {
        if (spins < 2000)
            CPU_RELAX();
        else
            sched_yield();
    }
    atomic_flag_clear(&pool.busy);
}
