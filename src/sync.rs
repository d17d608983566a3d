//! The sync shim: every lock and atomic the allocator uses comes from here, so that the
//! crate compiled with `--cfg loom` swaps them all for loom's model-checked versions in one
//! place.
//!
//! Owns: [`Mutex`], a small futex lock that never allocates, never panics and can be taken and
//! released around `fork()` without a guard; the atomic types; and [`const_fn!`], which makes a
//! constructor `const` in normal builds (so the global heap is a plain `static`) and non-const
//! under loom (whose atomics cannot be built in const context).
//!
//! Invariants: a [`Mutex`] is not re-entrant. The allocator's lock order is
//! `registry -> mcentral[shard][class] -> mheap[shard] -> huge` (fork takes them all in that
//! order, shards and classes ascending; no other path holds two locks of one kind at once);
//! no code path takes a lock that
//! comes earlier in that order while holding a later one, and no lock is held while calling
//! into code that may allocate through the global allocator.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};

pub(crate) use core::sync::atomic::Ordering;
#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8};
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
// Only the collector's stop-the-world handshake (`gc::stw::handshake`) uses these.
#[cfg(all(not(loom), feature = "gc"))]
pub(crate) use core::sync::atomic::{AtomicI32, AtomicUsize};

/// Declares a constructor that is `const fn` in normal builds and a plain `fn` under loom.
macro_rules! const_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty $body:block) => {
        #[cfg(not(loom))]
        $(#[$m])* $vis const fn $name($($arg: $ty),*) -> $ret $body
        #[cfg(loom)]
        $(#[$m])* $vis fn $name($($arg: $ty),*) -> $ret $body
    };
}
pub(crate) use const_fn;

/// Declares a process-wide static: a plain `static` in normal builds; under loom a lazily built
/// value that loom makes afresh for each execution of a model (its `lazy_static`), so every
/// execution starts from empty globals and their atomics are loom's. Code uses it the same way
/// in both builds (method calls and indexing go through `Deref` under loom).
macro_rules! global {
    ($(#[$m:meta])* $vis:vis static $name:ident: $ty:ty = $init:expr;) => {
        #[cfg(not(loom))]
        $(#[$m])* $vis static $name: $ty = $init;

        #[cfg(loom)]
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        $vis struct $name {
            _private: (),
        }
        #[cfg(loom)]
        $(#[$m])* $vis static $name: $name = $name { _private: () };
        #[cfg(loom)]
        impl core::ops::Deref for $name {
            type Target = $ty;
            fn deref(&self) -> &$ty {
                fn init() -> $ty {
                    $init
                }
                static LAZY: loom::lazy_static::Lazy<$ty> = loom::lazy_static::Lazy {
                    init,
                    _p: core::marker::PhantomData,
                };
                LAZY.get()
            }
        }
    };
}
pub(crate) use global;

/// `[e; n]` for a non-`Copy` element: a const-block repeat in normal builds, `from_fn` under
/// loom (whose constructors are not `const`).
#[cfg(not(loom))]
macro_rules! array {
    ($e:expr; $n:expr) => {
        [const { $e }; $n]
    };
}
#[cfg(loom)]
macro_rules! array {
    ($e:expr; $n:expr) => {
        core::array::from_fn(|_| $e)
    };
}
pub(crate) use array;

const UNLOCKED: u32 = 0;
const LOCKED: u32 = 1;
const CONTENDED: u32 = 2;

/// A mutual-exclusion lock around `T` (a futex word on Linux; a spinning loom model under loom).
pub struct Mutex<T> {
    state: AtomicU32,
    data: Cell<T>,
}

// Under loom the data lives in loom's UnsafeCell, so an access without the lock is reported as
// a data race by the model checker.
#[cfg(not(loom))]
type Cell<T> = UnsafeCell<T>;
#[cfg(loom)]
type Cell<T> = loom::cell::UnsafeCell<T>;

// SAFETY: the lock serialises every access to `data`, so sharing the Mutex between threads is
// sound whenever `T` may be sent between them.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the Mutex moves the `T` it owns.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    #[cfg(not(loom))]
    pub const fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            data: UnsafeCell::new(value),
        }
    }
    #[cfg(loom)]
    pub fn new(value: T) -> Self {
        Mutex {
            state: AtomicU32::new(UNLOCKED),
            data: loom::cell::UnsafeCell::new(value),
        }
    }

    /// Takes the lock, returning a guard that releases it when dropped.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        self.raw_lock();
        MutexGuard {
            lock: self,
            #[cfg(loom)]
            access: self.data.get_mut(),
        }
    }

    /// Takes the lock without a guard; pair with [`Mutex::raw_unlock`]. Used around `fork()`.
    #[inline]
    pub fn raw_lock(&self) {
        if self
            .state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    /// Releases a lock taken with [`Mutex::raw_lock`].
    ///
    /// # Safety
    /// The caller holds the lock (through `raw_lock`) and no guard refers to it.
    #[inline]
    pub unsafe fn raw_unlock(&self) {
        if self.state.swap(UNLOCKED, Ordering::Release) == CONTENDED {
            futex_wake(&self.state);
        }
    }

    /// Takes the lock if it is free, without waiting.
    #[cfg(all(feature = "gc", not(loom)))]
    #[inline]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        self.state
            .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            // `then`, not `then_some`: a guard built on failure would unlock on its drop.
            .then(|| MutexGuard { lock: self })
    }

    /// Whether a thread sleeps waiting for the lock (read racily: a hint for a holder that
    /// takes it back and forth, such as the collector's sweep).
    #[cfg(feature = "gc")]
    pub fn has_sleepers(&self) -> bool {
        self.state.load(Ordering::Relaxed) == CONTENDED
    }

    /// Whether some thread holds the lock (read racily: a hint).
    #[cfg(feature = "gc")]
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) != UNLOCKED
    }

    /// Resets the lock to unlocked in a `fork()` child, where the thread that held it is gone.
    ///
    /// # Safety
    /// Only in the child after `fork()`, with this thread the only one running.
    pub unsafe fn force_unlock(&self) {
        self.state.store(UNLOCKED, Ordering::Release);
    }

    #[cold]
    fn lock_contended(&self) {
        // Spin briefly: critical sections here are short.
        let mut spins = 0;
        while spins < 100 {
            if self.state.load(Ordering::Relaxed) == UNLOCKED
                && self
                    .state
                    .compare_exchange(UNLOCKED, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
            spin_hint();
            spins += 1;
        }
        // Then sleep on the futex, marking the lock contended so the owner wakes us.
        while self.state.swap(CONTENDED, Ordering::Acquire) != UNLOCKED {
            futex_wait(&self.state, CONTENDED);
        }
    }
}

/// A lock seen without its data: what `fork()` handling needs to hold every lock across the
/// fork and release it on both sides.
pub trait RawLock {
    /// Takes the lock without a guard.
    fn raw_lock(&self);
    /// Releases a lock taken with `raw_lock`.
    ///
    /// # Safety
    /// This thread holds the lock through `raw_lock`.
    unsafe fn raw_unlock(&self);
    /// Marks the lock free whoever held it.
    ///
    /// # Safety
    /// Only in a `fork()` child, single-threaded.
    unsafe fn force_unlock(&self);
}

impl<T> RawLock for Mutex<T> {
    fn raw_lock(&self) {
        Mutex::raw_lock(self)
    }
    unsafe fn raw_unlock(&self) {
        // SAFETY: forwarded precondition.
        unsafe { Mutex::raw_unlock(self) }
    }
    unsafe fn force_unlock(&self) {
        // SAFETY: forwarded precondition.
        unsafe { Mutex::force_unlock(self) }
    }
}

/// Releases the [`Mutex`] when dropped.
pub struct MutexGuard<'a, T> {
    lock: &'a Mutex<T>,
    /// Loom's record of this exclusive access, live as long as the guard.
    #[cfg(loom)]
    access: loom::cell::MutPtr<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: the guard exists only while the lock is held, so no other reference to the
        // data is live.
        #[cfg(not(loom))]
        unsafe {
            &*self.lock.data.get()
        }
        // SAFETY: as above; loom checks the claim.
        #[cfg(loom)]
        unsafe {
            &*self.access.deref()
        }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; `&mut self` makes this the only reference through the guard.
        #[cfg(not(loom))]
        unsafe {
            &mut *self.lock.data.get()
        }
        // SAFETY: as above; loom checks the claim.
        #[cfg(loom)]
        unsafe {
            self.access.deref()
        }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: the guard was created by `lock`, which holds the lock.
        unsafe { self.lock.raw_unlock() }
    }
}

/// One turn of a spin-wait (under loom: a yield, so the model lets the other thread run).
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin_hint() {
    core::hint::spin_loop();
}
#[cfg(loom)]
pub(crate) fn spin_hint() {
    loom::thread::yield_now();
}

/// Sleeps while `*word == expected` (may return spuriously; callers loop).
#[cfg(all(not(loom), not(miri)))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    futex_wait_timeout(word, expected, core::ptr::null());
}

/// As [`futex_wait`], giving up after `ns` nanoseconds (the helper threads' timed sleeps).
#[cfg(all(not(loom), not(miri)))]
pub(crate) fn futex_wait_for(word: &AtomicU32, expected: u32, ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as _,
    };
    futex_wait_timeout(word, expected, &ts);
}

/// FUTEX_WAIT on `word` with a relative timeout, or none if `timeout` is null.
#[cfg(all(not(loom), not(miri)))]
fn futex_wait_timeout(word: &AtomicU32, expected: u32, timeout: *const libc::timespec) {
    // SAFETY: FUTEX_WAIT reads the u32 at `word`, which is valid for the call, and the
    // timeout if not null (the callers' own timespec, live for the call); a spurious,
    // interrupted or timed-out return is fine because the callers loop.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            timeout,
        );
    }
}

/// Wakes one thread sleeping in [`futex_wait`] on `word`.
#[cfg(all(not(loom), not(miri)))]
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
    }
}

/// Wakes every thread sleeping in [`futex_wait`] on `word` (the collector's resume).
#[cfg(all(not(loom), not(miri), feature = "gc"))]
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        );
    }
}

/// Under Miri a futex is a spin (Miri runs one schedule; it only needs to make progress).
#[cfg(all(miri, not(loom)))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    while word.load(Ordering::Relaxed) == expected {
        spin_hint();
    }
}

#[cfg(all(miri, not(loom)))]
pub(crate) fn futex_wake(_word: &AtomicU32) {}

#[cfg(all(miri, not(loom), feature = "gc"))]
pub(crate) fn futex_wake_all(_word: &AtomicU32) {}

// Under loom a futex is what the kernel makes it: the check of the word and the sleep are
// atomic with respect to a wake (one loom lock and condition variable for every word; wakes
// are broadcasts, which futex callers tolerate as spurious returns). A sleeping thread is
// blocked, not spinning, so loom explores no endless schedules of several waiters taking
// turns, and reports a lost wake-up as a deadlock.
#[cfg(loom)]
loom::lazy_static! {
    static ref FUTEX: (loom::sync::Mutex<()>, loom::sync::Condvar) =
        (loom::sync::Mutex::new(()), loom::sync::Condvar::new());
}

#[cfg(loom)]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    let guard = FUTEX.0.lock().unwrap();
    if word.load(Ordering::Relaxed) == expected {
        drop(FUTEX.1.wait(guard).unwrap());
    }
}

#[cfg(loom)]
pub(crate) fn futex_wake(_word: &AtomicU32) {
    let _guard = FUTEX.0.lock().unwrap();
    FUTEX.1.notify_all();
}

#[cfg(loom)]
pub(crate) fn futex_wake_all(word: &AtomicU32) {
    futex_wake(word);
}
