// Boost.Interprocess primitives behind a C interface, for the shmsync-bench harness.
//
// Every object lives in memory the Rust side mapped MAP_SHARED before forking; `init`
// constructs it in place (placement new), the other functions operate on it from any
// process. Two back ends are built side by side: the POSIX one (what
// interprocess_mutex / interprocess_semaphore use on Linux: a process-shared
// pthread_mutex_t / sem_t) and the spin one (ipcdetail::spin_mutex / spin_semaphore,
// what BOOST_INTERPROCESS_FORCE_GENERIC_EMULATION selects: atomics plus a yielding
// spin-wait, no kernel wait). interprocess_sharable_mutex is Boost's reader-writer
// lock (a mutex and two conditions of the POSIX back end).
//
// An exception escaping into Rust would be undefined behaviour, so every entry point is
// noexcept: a Boost error terminates the process, which the harness reports as a failed
// child.
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/interprocess_semaphore.hpp>
#include <boost/interprocess/sync/interprocess_sharable_mutex.hpp>
#include <boost/interprocess/sync/spin/mutex.hpp>
#include <boost/interprocess/sync/spin/semaphore.hpp>
#include <boost/version.hpp>
#include <cstddef>
#include <new>

namespace bi = boost::interprocess;
using spin_mutex = bi::ipcdetail::spin_mutex;
using spin_semaphore = bi::ipcdetail::spin_semaphore;

#define SHB_OBJECT(NAME, TYPE)                                                  \
    extern "C" std::size_t shb_##NAME##_size(void) noexcept { return sizeof(TYPE); } \
    extern "C" std::size_t shb_##NAME##_align(void) noexcept { return alignof(TYPE); }

#define SHB_MUTEX(NAME, TYPE)                                                   \
    SHB_OBJECT(NAME, TYPE)                                                      \
    extern "C" void shb_##NAME##_init(void *p) noexcept { new (p) TYPE(); }     \
    extern "C" void shb_##NAME##_lock(void *p) noexcept { static_cast<TYPE *>(p)->lock(); } \
    extern "C" void shb_##NAME##_unlock(void *p) noexcept { static_cast<TYPE *>(p)->unlock(); }

#define SHB_SEMAPHORE(NAME, TYPE)                                               \
    SHB_OBJECT(NAME, TYPE)                                                      \
    extern "C" void shb_##NAME##_init(void *p, unsigned initial) noexcept { new (p) TYPE(initial); } \
    extern "C" void shb_##NAME##_post(void *p) noexcept { static_cast<TYPE *>(p)->post(); } \
    extern "C" void shb_##NAME##_wait(void *p) noexcept { static_cast<TYPE *>(p)->wait(); }

SHB_MUTEX(mutex, bi::interprocess_mutex)
SHB_MUTEX(spin_mutex, spin_mutex)
SHB_SEMAPHORE(sem, bi::interprocess_semaphore)
SHB_SEMAPHORE(spin_sem, spin_semaphore)
SHB_MUTEX(sharable, bi::interprocess_sharable_mutex)

extern "C" void shb_sharable_lock_sharable(void *p) noexcept {
    static_cast<bi::interprocess_sharable_mutex *>(p)->lock_sharable();
}
extern "C" void shb_sharable_unlock_sharable(void *p) noexcept {
    static_cast<bi::interprocess_sharable_mutex *>(p)->unlock_sharable();
}

// BOOST_VERSION, e.g. 107400 for 1.74.0.
extern "C" unsigned shb_boost_version(void) noexcept { return BOOST_VERSION; }
