/* The small-batch products' thread pool (kpool_run, kernels_impl.h).
 *
 * Why not OpenMP: decoding one token runs about 200 weight products of tens of microseconds each.
 * With OMP_WAIT_POLICY=passive (what a shared machine needs) every parallel region wakes sleeping
 * threads through the kernel, which cost a fifth of decode time; with active waiting, idle OpenMP
 * threads spin for a long time and fight other processes; and either way a region waits for its
 * slowest thread, which on a busy machine may not be running at all. Here workers spin for
 * KPOOL_SPIN_NS after each job (long enough to cover the gap to the next product of a decode step,
 * short enough to cost little on a busy machine), then sleep on a condition variable; and work is
 * claimed in chunks, so a job never waits for a worker that has not started: the caller does the
 * chunks nobody claimed and waits only for those in progress.
 *
 * A job is published by storing (generation << 32 | next chunk) in one word; a chunk is claimed by
 * a compare-and-swap that also checks the generation, so a worker that wakes late cannot claim
 * from a later job with the earlier job's view, and a finished job is closed (next set past any n)
 * before the next one's fields are written. The caller returns once `done` counts every item. */
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
#define KPOOL_CLOSED 0xffffffffu

typedef struct kpool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t word;  /* generation << 32 | index of the next unclaimed item */
    _Atomic int64_t done;   /* items finished in the current job */
    atomic_int sleepers;    /* workers waiting on cv */
    atomic_flag busy;       /* held by the thread submitting jobs */
    int n_workers;
    /* the current job, written before its generation is published */
    kpool_fn fn;
    void *arg;
    int64_t n, grain;
    int nt;
} kpool;

static kpool pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, ATOMIC_FLAG_INIT, 0,
                     NULL, NULL, 0, 0, 0};

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static uint32_t gen_of(uint64_t w)
{
    return (uint32_t)(w >> 32);
}

/* Claims and runs chunks of generation g until none is left. */
static void run_chunks(uint32_t g)
{
    uint64_t w = atomic_load_explicit(&pool.word, memory_order_acquire);
    for (;;) {
        if (gen_of(w) != g)
            return;
        const int64_t i0 = (int64_t)(uint32_t)w, n = pool.n;
        if (i0 >= n)
            return;
        const int64_t i1 = n - i0 < pool.grain ? n : i0 + pool.grain;
        if (!atomic_compare_exchange_weak_explicit(&pool.word, &w, ((uint64_t)g << 32) | (uint64_t)i1,
                                                   memory_order_acq_rel, memory_order_acquire))
            continue;
        pool.fn(pool.arg, i0, i1);
        atomic_fetch_add_explicit(&pool.done, i1 - i0, memory_order_release);
        w = atomic_load_explicit(&pool.word, memory_order_acquire);
    }
}

static void *worker(void *p)
{
    const int id = (int)(intptr_t)p; /* 1.. */
    uint32_t seen = 0;
    for (;;) {
        uint32_t g;
        long t0 = now_ns();
        int spins = 0;
        while ((g = gen_of(atomic_load_explicit(&pool.word, memory_order_acquire))) == seen) {
            CPU_RELAX();
            if (++spins % 64 || now_ns() - t0 < KPOOL_SPIN_NS)
                continue;
            /* sleepers is raised before the word is read again; the submitter publishes the word
             * before it reads sleepers (both sequentially consistent), so one sees the other. */
            pthread_mutex_lock(&pool.mu);
            atomic_fetch_add(&pool.sleepers, 1);
            while (gen_of(atomic_load(&pool.word)) == seen)
                pthread_cond_wait(&pool.cv, &pool.mu);
            atomic_fetch_sub(&pool.sleepers, 1);
            pthread_mutex_unlock(&pool.mu);
            t0 = now_ns();
        }
        seen = g;
        if (id < pool.nt)
            run_chunks(g);
    }
    return NULL;
}

void kpool_run(kpool_fn fn, void *arg, int64_t n, int nt)
{
    if (n <= 0)
        return;
    if (nt > KPOOL_MAX)
        nt = KPOOL_MAX;
    const int64_t per = n / (16 * (int64_t)(nt > 1 ? nt : 1)), grain = per > 8 ? per : 8;
    int nested = 0;
#ifdef _OPENMP
    nested = omp_in_parallel();
#endif
    if (nt <= 1 || n <= grain || n >= KPOOL_CLOSED || nested || atomic_flag_test_and_set(&pool.busy)) {
        fn(arg, 0, n);
        return;
    }
    while (pool.n_workers < nt - 1) {
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &at, worker, (void *)(intptr_t)(pool.n_workers + 1));
        pthread_attr_destroy(&at);
        if (rc)
            break;
        pool.n_workers++;
    }
    /* The previous job is done and closed (next = KPOOL_CLOSED, which no n reaches), so a worker
     * still between claims claims nothing while the fields below change. */
    pool.fn = fn;
    pool.arg = arg;
    pool.n = n;
    pool.grain = grain;
    pool.nt = nt;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    const uint32_t g = gen_of(atomic_load(&pool.word)) + 1;
    atomic_store(&pool.word, (uint64_t)g << 32);
    if (atomic_load(&pool.sleepers)) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
    run_chunks(g);
    /* Only chunks a worker has claimed remain; a worker descheduled inside one gets the core. */
    for (int spins = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < n; spins++) {
        if (spins < 2000)
            CPU_RELAX();
        else
            sched_yield();
    }
    atomic_store(&pool.word, ((uint64_t)g << 32) | KPOOL_CLOSED);
    atomic_flag_clear(&pool.busy);
}
