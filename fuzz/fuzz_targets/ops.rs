//! Fuzz target `ops`: the input bytes are a program of allocator operations run on
//! `gomalloc::GoMalloc` (through `GlobalAlloc`), checked against a shadow model.
//!
//! Ops (first byte of each, modulo 8): alloc, alloc_zeroed, dealloc, realloc, free on a helper
//! thread, alloc on the helper thread (the block then lives here), a short-lived thread that
//! allocates a few blocks and exits (its cache is flushed; the blocks outlive it), and
//! flush_thread_cache / release_memory. Sizes run from 1 B over every size class and the
//! small/large boundary to 4 MiB, and past `HUGE_THRESHOLD`; alignments from 1 to 4096, 64 KiB
//! and 2 MiB.
//!
//! The model is a Vec of live (address, layout, fill byte). After every op: each pointer
//! returned is non-null and aligned, `usable_size >= size`, `alloc_zeroed` memory reads zero,
//! realloc keeps the prefix, contents are checked before every free and realloc, and no two
//! live blocks overlap (sorted by address, each range ends before the next begins). Every
//! input frees all it allocated, so runs do not accumulate memory.
//!
//! The fuzzer's own memory (libFuzzer, the model, channels) stays on the system allocator:
//! gomalloc's state then changes only through the ops under test, and a gomalloc bug cannot
//! corrupt the oracle that is checking it.

#![no_main]

use gomalloc::{GoMalloc, HUGE_THRESHOLD};
use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Mutex, OnceLock};

const MAX_LIVE: usize = 256;
const MAX_LIVE_BYTES: usize = 160 << 20;
/// Blocks up to this size are filled and checked byte for byte; larger ones on sampled ranges.
const DENSE: usize = 64 << 10;
const SAMPLE: usize = 4096;

#[derive(Clone, Copy, Debug)]
struct Blk {
    addr: usize,
    layout: Layout,
    fill: u8,
}

/// Calls `f(start, end)` on each range of a block of `len` bytes that carries its fill byte.
fn ranges(len: usize, mut f: impl FnMut(usize, usize)) {
    if len <= DENSE {
        f(0, len);
        return;
    }
    f(0, SAMPLE);
    let mut p = SAMPLE;
    while p + 64 <= len - SAMPLE {
        f(p, p + 64);
        p += SAMPLE * 4;
    }
    f(len - SAMPLE, len);
}

fn fill(b: &Blk) {
    ranges(b.layout.size(), |s, e| {
        // SAFETY: [s, e) lies inside the live block of `b.layout.size()` bytes at `b.addr`.
        unsafe { std::ptr::write_bytes((b.addr + s) as *mut u8, b.fill, e - s) }
    });
}

/// Checks the fill byte on the filled ranges of the first `upto` bytes.
fn check(b: &Blk, at: usize, upto: usize, what: &str) {
    ranges(b.layout.size(), |s, e| {
        let e = e.min(upto);
        if s >= e {
            return;
        }
        // SAFETY: [s, e) lies inside the live block at `at` (at least `upto` bytes).
        let got = unsafe { std::slice::from_raw_parts((at + s) as *const u8, e - s) };
        if let Some(i) = got.iter().position(|&x| x != b.fill) {
            panic!(
                "{what}: block {at:#x} ({:?}) byte {} is {:#04x}, expected {:#04x}",
                b.layout,
                s + i,
                got[i],
                b.fill
            );
        }
    });
}

fn check_zero(p: *mut u8, size: usize) {
    ranges(size, |s, e| {
        // SAFETY: [s, e) lies inside the new block of `size` bytes.
        let got = unsafe { std::slice::from_raw_parts(p.add(s), e - s) };
        if let Some(i) = got.iter().position(|&x| x != 0) {
            panic!(
                "alloc_zeroed({size}) = {p:p}: byte {} is {:#04x}",
                s + i,
                got[i]
            );
        }
    });
}

fn check_returned(p: *mut u8, layout: Layout, what: &str) {
    assert!(!p.is_null(), "{what}({layout:?}) returned null");
    assert_eq!(
        p as usize % layout.align(),
        0,
        "{what}({layout:?}) = {p:p}: misaligned"
    );
    // SAFETY: `p` is a live block of gomalloc's.
    let us = unsafe { gomalloc::usable_size(p) };
    assert!(
        us >= layout.size(),
        "{what}({layout:?}) = {p:p}: usable_size {us}"
    );
}

fn alloc(layout: Layout, zeroed: bool, fill_byte: u8) -> Blk {
    // SAFETY: `layout` has a non-zero size.
    let p = unsafe {
        if zeroed {
            GoMalloc.alloc_zeroed(layout)
        } else {
            GoMalloc.alloc(layout)
        }
    };
    check_returned(p, layout, if zeroed { "alloc_zeroed" } else { "alloc" });
    if zeroed {
        check_zero(p, layout.size());
    }
    let b = Blk {
        addr: p as usize,
        layout,
        fill: fill_byte,
    };
    fill(&b);
    b
}

fn free(b: Blk, what: &str) {
    check(&b, b.addr, b.layout.size(), what);
    // SAFETY: `b` is live, came from GoMalloc with `b.layout`, and the model drops it now.
    unsafe { GoMalloc.dealloc(b.addr as *mut u8, b.layout) }
}

/// Requests to the helper thread and its answers.
enum Req {
    Free(Blk),
    Alloc(Layout, bool, u8),
}

struct Helper {
    tx: Sender<Req>,
    rx: Receiver<Blk>,
}

fn helper() -> &'static Mutex<Helper> {
    static H: OnceLock<Mutex<Helper>> = OnceLock::new();
    H.get_or_init(|| {
        let (tx, req_rx) = channel::<Req>();
        let (resp_tx, rx) = channel::<Blk>();
        std::thread::spawn(move || {
            for r in req_rx {
                let out = match r {
                    Req::Free(b) => {
                        free(b, "remote free");
                        b
                    }
                    Req::Alloc(l, z, f) => alloc(l, z, f),
                };
                resp_tx.send(out).unwrap();
            }
        });
        Mutex::new(Helper { tx, rx })
    })
}

fn remote(r: Req) -> Blk {
    let h = helper().lock().unwrap_or_else(|e| e.into_inner());
    h.tx.send(r).unwrap();
    h.rx.recv().unwrap()
}

/// Reads input bytes; zeros once exhausted.
struct Input<'a>(&'a [u8]);
impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> usize {
        self.u8() as usize | (self.u8() as usize) << 8
    }
    fn u24(&mut self) -> usize {
        self.u16() | (self.u8() as usize) << 16
    }

    fn size(&mut self) -> usize {
        let sel = self.u8();
        let s = match sel % 16 {
            0..=6 => self.u8() as usize,
            7..=10 => self.u16(),
            11 | 12 => self.u24() % (4 << 20),
            13 => {
                // a size-class or page boundary, +-2
                let k = self.u8() as usize;
                let base = if k & 1 == 0 {
                    gomalloc::size_class::class_size(
                        1 + (k >> 1) % (gomalloc::size_class::NUM_CLASSES - 1),
                    )
                } else {
                    ((k >> 1) % 130 + 1) * gomalloc::size_class::PAGE_SIZE
                };
                (base + (sel as usize >> 4) % 5).saturating_sub(2)
            }
            14 => gomalloc::size_class::MAX_SMALL_SIZE - 8 + self.u8() as usize % 16,
            _ => HUGE_THRESHOLD - (64 << 10) + self.u16() * 256,
        };
        s.max(1)
    }

    fn align(&mut self) -> usize {
        let a = self.u8();
        match a % 32 {
            s @ 0..=12 => 1 << s,
            13 => 64 << 10,
            14 => 2 << 20,
            _ => 1 << (a % 5), // mostly small
        }
    }

    fn layout(&mut self) -> Layout {
        let size = self.size();
        let align = self.align();
        Layout::from_size_align(size, align).unwrap()
    }
}

fn check_disjoint(live: &[Blk]) {
    let mut v: Vec<(usize, usize)> = live
        .iter()
        .map(|b| (b.addr, b.addr + b.layout.size()))
        .collect();
    v.sort_unstable();
    for w in v.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "live blocks overlap: [{:#x}, {:#x}) and [{:#x}, {:#x})",
            w[0].0,
            w[0].1,
            w[1].0,
            w[1].1
        );
    }
}

fn run(data: &[u8]) {
    let mut inp = Input(data);
    let mut live: Vec<Blk> = Vec::new();
    let mut bytes = 0usize;
    while !inp.0.is_empty() {
        let op = inp.u8();
        match op % 8 {
            0 | 1 => {
                let l = inp.layout();
                let f = inp.u8();
                if live.len() < MAX_LIVE && bytes + l.size() <= MAX_LIVE_BYTES {
                    live.push(alloc(l, op % 8 == 1, f));
                    bytes += l.size();
                }
            }
            2 if !live.is_empty() => {
                let b = live.swap_remove(inp.u8() as usize % live.len());
                bytes -= b.layout.size();
                free(b, "dealloc");
            }
            3 if !live.is_empty() => {
                let i = inp.u8() as usize % live.len();
                let new_size = inp.size();
                let b = live[i];
                if bytes - b.layout.size() + new_size > MAX_LIVE_BYTES {
                    continue;
                }
                check(&b, b.addr, b.layout.size(), "before realloc");
                // SAFETY: `b` is live with `b.layout`; `new_size` > 0 and small.
                let p = unsafe { GoMalloc.realloc(b.addr as *mut u8, b.layout, new_size) };
                let nl = Layout::from_size_align(new_size, b.layout.align()).unwrap();
                check_returned(p, nl, "realloc");
                check(
                    &b,
                    p as usize,
                    b.layout.size().min(new_size),
                    "after realloc",
                );
                let nb = Blk {
                    addr: p as usize,
                    layout: nl,
                    fill: inp.u8(),
                };
                fill(&nb);
                bytes = bytes - b.layout.size() + new_size;
                live[i] = nb;
            }
            4 if !live.is_empty() => {
                let b = live.swap_remove(inp.u8() as usize % live.len());
                bytes -= b.layout.size();
                remote(Req::Free(b));
            }
            5 => {
                let l = inp.layout();
                let z = inp.u8();
                if live.len() < MAX_LIVE && bytes + l.size() <= MAX_LIVE_BYTES {
                    live.push(remote(Req::Alloc(l, z & 1 == 1, z)));
                    bytes += l.size();
                }
            }
            6 => {
                // A thread that allocates a few blocks (and frees some it had) and exits.
                let n = inp.u8() as usize % 6 + 1;
                let mut ls = Vec::new();
                for _ in 0..n {
                    let l = inp.layout();
                    if live.len() + ls.len() < MAX_LIVE && bytes + l.size() <= MAX_LIVE_BYTES {
                        bytes += l.size();
                        ls.push((l, inp.u8()));
                    }
                }
                let give = if live.is_empty() {
                    None
                } else {
                    Some(live.swap_remove(inp.u8() as usize % live.len()))
                };
                if let Some(g) = give {
                    bytes -= g.layout.size();
                }
                let got = std::thread::spawn(move || {
                    if let Some(g) = give {
                        free(g, "free on an exiting thread");
                    }
                    ls.into_iter()
                        .map(|(l, f)| alloc(l, f & 1 == 1, f))
                        .collect::<Vec<_>>()
                })
                .join()
                .expect("thread failed");
                live.extend(got);
            }
            7 => {
                if inp.u8() & 1 == 0 {
                    gomalloc::flush_thread_cache();
                } else {
                    gomalloc::release_memory();
                }
            }
            _ => {}
        }
        check_disjoint(&live);
    }
    for b in live {
        free(b, "final free");
    }
}

fuzz_target!(|data: &[u8]| run(data));
