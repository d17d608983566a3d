//! Statistics: Go's `runtime.MemStats`, for gomalloc's heap.
//!
//! Owns: the merge that builds a [`MemStats`]. Object counts (small per class, large and huge
//! together as class 0) and large-object bytes live in each thread's cache (`mcache`: one
//! relaxed load and store per operation, no read-modify-write) and in the retired totals of
//! exited threads; `read` adds them up under the registry lock. The heap's
//! counters are read in one snapshot under the heap lock, so `heap_inuse + heap_idle ==
//! heap_sys` holds exactly; counts taken while other threads allocate are each a moment's
//! value, as Go's are between stop-the-worlds.

use crate::size_class::{self, NUM_CLASSES};
use crate::{active_heaps, huge, mcache};
use core::fmt;
use core::sync::atomic::Ordering;

/// Allocations and frees of one size class (Go's `MemStats.BySize` entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BySize {
    /// Object size of the class.
    pub size: u32,
    pub mallocs: u64,
    pub frees: u64,
}

/// Go's `runtime.MemStats`, the fields that apply to gomalloc (bytes unless a count).
#[derive(Clone, Copy, Debug)]
pub struct MemStats {
    /// Bytes of allocated heap objects (same as `heap_alloc`).
    pub alloc: u64,
    /// Cumulative bytes allocated (never decreases).
    pub total_alloc: u64,
    /// Bytes obtained from the OS: heap, span descriptors and other metadata.
    pub sys: u64,
    /// Cumulative count of objects allocated.
    pub mallocs: u64,
    /// Cumulative count of objects freed.
    pub frees: u64,
    /// Bytes of allocated heap objects (rounded up to their size class / pages).
    pub heap_alloc: u64,
    /// Bytes of heap memory obtained from the OS (in use, idle, and released).
    pub heap_sys: u64,
    /// Bytes in idle spans (free pages), released or not.
    pub heap_idle: u64,
    /// Bytes in in-use spans (including free slots of small-object spans) and huge blocks.
    pub heap_inuse: u64,
    /// Bytes of idle pages returned to the OS.
    pub heap_released: u64,
    /// Live objects (`mallocs - frees`).
    pub heap_objects: u64,
    /// Bytes of span descriptors in use / obtained from the OS.
    pub mspan_inuse: u64,
    pub mspan_sys: u64,
    /// Bytes of thread-cache nodes in use / obtained from the OS.
    pub mcache_inuse: u64,
    pub mcache_sys: u64,
    /// Other metadata: page-map arena tables and the huge-block table.
    pub other_sys: u64,
    /// Per size class; index is the class, index 0 unused (large objects).
    pub by_size: [BySize; NUM_CLASSES],
    /// The collector (feature `gc`; all 0 without it): completed cycles, those started by
    /// `gc::collect()`, total and last 256 stop-the-world pauses (`pause_ns[(num_gc + 255) %
    /// 256]` is the latest), the GC heap size that starts the next cycle, when the last cycle
    /// ended (Unix ns) and the share of CPU time spent collecting (Go's fields of the same
    /// names). The GC heap's objects are not in the counts above (`alloc`, `mallocs`, ...,
    /// `by_size`), which are the allocator's; its spans are in `heap_inuse` and `heap_sys`.
    pub num_gc: u64,
    pub num_forced_gc: u64,
    pub pause_total_ns: u64,
    pub pause_ns: [u64; 256],
    pub next_gc: u64,
    pub last_gc: u64,
    pub gc_cpu_fraction: f64,
}

/// Bytes gomalloc holds from the OS and has not released (Go's "total memory" for the memory
/// limit: `sys - heap_released`), read without the per-thread counters.
#[cfg(feature = "gc")]
pub fn footprint() -> u64 {
    let heap = active_heaps()
        .iter()
        .map(|h| h.stats())
        .fold(crate::mheap::HeapStats::default(), |a, b| a + b);
    let (_, mcache_sys) = mcache::node_stats();
    let sys = heap.sys as u64
        + huge::MAPPED.load(Ordering::Relaxed)
        + heap.span_sys as u64
        + mcache_sys as u64
        + heap.meta_sys as u64
        + huge::TABLE_SYS.load(Ordering::Relaxed);
    sys.saturating_sub(heap.released as u64)
}

/// Reads the statistics now (Go's `runtime.ReadMemStats`, without stopping anything).
pub fn read() -> MemStats {
    let mut counts = [[0u64; 2]; NUM_CLASSES];
    let mut large_bytes = [0u64; 2];
    mcache::sum_counters(&mut counts, &mut large_bytes);
    let mut by_size = [BySize::default(); NUM_CLASSES];
    let (mut mallocs, mut frees, mut total_alloc, mut small_live) = (0u64, 0u64, 0u64, 0u64);
    for c in 1..NUM_CLASSES {
        let size = size_class::class_size(c) as u64;
        let [m, f] = counts[c];
        by_size[c] = BySize {
            size: size as u32,
            mallocs: m,
            frees: f,
        };
        mallocs += m;
        frees += f;
        total_alloc += m * size;
        small_live += m.saturating_sub(f) * size;
    }
    let [lm, lf] = counts[0];
    let [la, lfb] = large_bytes;
    let heap = active_heaps()
        .iter()
        .map(|h| h.stats())
        .fold(crate::mheap::HeapStats::default(), |a, b| a + b);
    let huge_mapped = huge::MAPPED.load(Ordering::Relaxed);
    let heap_alloc = small_live + la.saturating_sub(lfb);
    let mallocs = mallocs + lm;
    let frees = frees + lf;
    let heap_sys = heap.sys as u64 + huge_mapped;
    let mspan_sys = heap.span_sys as u64;
    let other_sys = heap.meta_sys as u64 + huge::TABLE_SYS.load(Ordering::Relaxed);
    let (mcache_inuse, mcache_sys) = mcache::node_stats();
    #[allow(unused_mut)]
    let mut m = MemStats {
        alloc: heap_alloc,
        total_alloc: total_alloc + la,
        sys: heap_sys + mspan_sys + mcache_sys as u64 + other_sys,
        mallocs,
        frees,
        heap_alloc,
        heap_sys,
        heap_idle: (heap.sys - heap.inuse) as u64,
        heap_inuse: heap.inuse as u64 + huge_mapped,
        heap_released: heap.released as u64,
        heap_objects: mallocs.saturating_sub(frees),
        mspan_inuse: heap.span_inuse as u64,
        mspan_sys,
        mcache_inuse: mcache_inuse as u64,
        mcache_sys: mcache_sys as u64,
        other_sys,
        by_size,
        num_gc: 0,
        num_forced_gc: 0,
        pause_total_ns: 0,
        pause_ns: [0; 256],
        next_gc: 0,
        last_gc: 0,
        gc_cpu_fraction: 0.0,
    };
    #[cfg(all(feature = "gc", not(loom)))]
    {
        let g = crate::gc::stats();
        m.num_gc = g.num_gc;
        m.num_forced_gc = g.num_forced_gc;
        m.pause_total_ns = g.pause_total_ns;
        m.pause_ns = g.pause_ns;
        m.next_gc = g.next_gc as u64;
        m.last_gc = g.last_gc;
        m.gc_cpu_fraction = g.gc_cpu_fraction;
    }
    m
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

impl fmt::Display for MemStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# gomalloc MemStats")?;
        writeln!(f, "# Alloc = {} ({:.1} MiB)", self.alloc, mib(self.alloc))?;
        writeln!(
            f,
            "# TotalAlloc = {} ({:.1} MiB)",
            self.total_alloc,
            mib(self.total_alloc)
        )?;
        writeln!(f, "# Sys = {} ({:.1} MiB)", self.sys, mib(self.sys))?;
        writeln!(f, "# Mallocs = {}", self.mallocs)?;
        writeln!(f, "# Frees = {}", self.frees)?;
        writeln!(
            f,
            "# HeapAlloc = {} ({:.1} MiB)",
            self.heap_alloc,
            mib(self.heap_alloc)
        )?;
        writeln!(
            f,
            "# HeapSys = {} ({:.1} MiB)",
            self.heap_sys,
            mib(self.heap_sys)
        )?;
        writeln!(
            f,
            "# HeapIdle = {} ({:.1} MiB)",
            self.heap_idle,
            mib(self.heap_idle)
        )?;
        writeln!(
            f,
            "# HeapInuse = {} ({:.1} MiB)",
            self.heap_inuse,
            mib(self.heap_inuse)
        )?;
        writeln!(
            f,
            "# HeapReleased = {} ({:.1} MiB)",
            self.heap_released,
            mib(self.heap_released)
        )?;
        writeln!(f, "# HeapObjects = {}", self.heap_objects)?;
        writeln!(f, "# MSpanInuse = {}", self.mspan_inuse)?;
        writeln!(f, "# MSpanSys = {}", self.mspan_sys)?;
        writeln!(f, "# MCacheInuse = {}", self.mcache_inuse)?;
        writeln!(f, "# MCacheSys = {}", self.mcache_sys)?;
        writeln!(f, "# OtherSys = {}", self.other_sys)?;
        writeln!(f, "# NextGC = {}", self.next_gc)?;
        writeln!(f, "# LastGC = {}", self.last_gc)?;
        writeln!(f, "# PauseTotalNs = {}", self.pause_total_ns)?;
        writeln!(f, "# NumGC = {}", self.num_gc)?;
        writeln!(f, "# NumForcedGC = {}", self.num_forced_gc)?;
        writeln!(f, "# GCCPUFraction = {}", self.gc_cpu_fraction)?;
        write!(f, "# BySize (size: mallocs/frees, classes with traffic) =")?;
        for b in self.by_size.iter().skip(1).filter(|b| b.mallocs > 0) {
            write!(f, " {}: {}/{}", b.size, b.mallocs, b.frees)?;
        }
        writeln!(f)
    }
}
