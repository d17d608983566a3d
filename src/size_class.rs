//! Size classes: which object size serves a request, and how many pages a span of that class
//! takes. The table is generated at compile time by `generate`, a port of Go's
//! `mksizeclasses.go`, and is Go's table: 67 classes, 8 B to 32 KiB. Every class is a multiple
//! of 8, and every class from 16 B up but 24 is a multiple of 16: a request aligned to 16 (and
//! C's `malloc` of more than 8 bytes, for `max_align_t`) that would get 24 gets 32
//! (`class_for_layout`), so a 17-24 byte Rust object aligned to 8 takes 24 bytes, not 32.
//!
//! How the table is built (as in Go):
//! 1. Walk sizes in steps of the current alignment (8, then 16 from 32 B; 1/8 of the size from 128 B up;
//!    256 from 2 KiB up), so the rounding waste inside an object stays near 12.5%.
//! 2. For each size pick the smallest span (in 8 KiB pages) whose tail waste, the bytes left
//!    over after the last whole object, is at most 1/8 of the span.
//! 3. If the previous class uses the same span size and fits as many objects, merge the two.
//! 4. Finally grow each class to the largest size that still fits the same number of objects
//!    (rounded down to a multiple of 128, which keeps the lookup tables exact).
//!
//! Lookup is O(1) by two byte tables, as Go's `size_to_class8` / `size_to_class128`: one indexed
//! by `(size + 7) / 8` up to 1 KiB, one by `(size - 1024 + 127) / 128` up to 32 KiB.
//! Class 0 is a dummy meaning "not small" (large and huge requests).
//!
//! `cargo run --example sizeclasses` prints the table with its waste columns, like the comment
//! at the top of Go's `sizeclasses.go`; the tests below re-derive every invariant.

/// gomalloc's page: the unit of spans and of the page heap (not the OS page).
pub const PAGE_SHIFT: usize = 13;
/// 8 KiB.
pub const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Largest request served from a size class; anything bigger is a large object.
pub const MAX_SMALL_SIZE: usize = 32768;
const SMALL_SIZE_DIV: usize = 8;
const SMALL_SIZE_MAX: usize = 1024;
const LARGE_SIZE_DIV: usize = 128;

const MAX_CLASSES: usize = 128;

struct Table {
    size: [u32; MAX_CLASSES],
    pages: [u8; MAX_CLASSES],
    n: usize,
}

/// Go's `makeClasses`, in const context.
const fn generate() -> Table {
    let mut t = Table {
        size: [0; MAX_CLASSES],
        pages: [0; MAX_CLASSES],
        n: 1,
    };
    let mut align = 8;
    let mut size = align;
    while size <= MAX_SMALL_SIZE {
        if size.is_power_of_two() {
            if size >= 2048 {
                align = 256;
            } else if size >= 128 {
                align = size / 8;
            } else if size >= 32 {
                align = 16;
            }
        }
        let mut allocsize = PAGE_SIZE;
        while allocsize % size > allocsize / 8 {
            allocsize += PAGE_SIZE;
        }
        let npages = allocsize / PAGE_SIZE;
        let last = t.n - 1;
        if t.n > 1
            && npages == t.pages[last] as usize
            && allocsize / size == allocsize / (t.size[last] as usize)
        {
            t.size[last] = size as u32;
        } else {
            t.size[t.n] = size as u32;
            t.pages[t.n] = npages as u8;
            t.n += 1;
        }
        size += align;
    }
    let mut i = 1;
    while i < t.n {
        let psize = t.pages[i] as usize * PAGE_SIZE;
        let new_size = (psize / (psize / t.size[i] as usize)) & !(LARGE_SIZE_DIV - 1);
        if new_size > t.size[i] as usize {
            t.size[i] = new_size as u32;
        }
        i += 1;
    }
    t
}

const TABLE: Table = generate();

/// Number of size classes, counting the dummy class 0.
pub const NUM_CLASSES: usize = TABLE.n;

/// Object size of each class (index 0 is 0).
pub static CLASS_SIZE: [u32; NUM_CLASSES] = {
    let mut a = [0u32; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        a[i] = TABLE.size[i];
        i += 1;
    }
    a
};

/// Span size of each class in 8 KiB pages (index 0 is 0).
pub static CLASS_PAGES: [u8; NUM_CLASSES] = {
    let mut a = [0u8; NUM_CLASSES];
    let mut i = 0;
    while i < NUM_CLASSES {
        a[i] = TABLE.pages[i];
        i += 1;
    }
    a
};

const fn class_for_size_linear(size: usize) -> u8 {
    let mut c = 1;
    while c < TABLE.n {
        if TABLE.size[c] as usize >= size {
            return c as u8;
        }
        c += 1;
    }
    0
}

static SIZE_TO_CLASS8: [u8; SMALL_SIZE_MAX / SMALL_SIZE_DIV + 1] = {
    let mut a = [0u8; SMALL_SIZE_MAX / SMALL_SIZE_DIV + 1];
    let mut i = 0;
    while i < a.len() {
        a[i] = class_for_size_linear(i * SMALL_SIZE_DIV);
        i += 1;
    }
    a
};

static SIZE_TO_CLASS128: [u8; (MAX_SMALL_SIZE - SMALL_SIZE_MAX) / LARGE_SIZE_DIV + 1] = {
    let mut a = [0u8; (MAX_SMALL_SIZE - SMALL_SIZE_MAX) / LARGE_SIZE_DIV + 1];
    let mut i = 0;
    while i < a.len() {
        a[i] = class_for_size_linear(SMALL_SIZE_MAX + i * LARGE_SIZE_DIV);
        i += 1;
    }
    a
};

/// `SIZE_TO_CLASS8` for C's `malloc` (`c_class`): sizes 17-24 take 32, not 24.
static SIZE_TO_CLASS8_C: [u8; SMALL_SIZE_MAX / SMALL_SIZE_DIV + 1] = {
    let mut a = [0u8; SMALL_SIZE_MAX / SMALL_SIZE_DIV + 1];
    let mut i = 0;
    while i < a.len() {
        let mut c = class_for_size_linear(i * SMALL_SIZE_DIV) as usize;
        if TABLE.size[c] % 16 != 0 && TABLE.size[c] > 16 {
            c += 1;
        }
        a[i] = c as u8;
        i += 1;
    }
    a
};

/// The class of C's `malloc(size)` (`1 <= size`), or 0 if it is not small: Go's class, but 32
/// for 17-24 bytes, so that every block of more than 8 bytes is 16-aligned (glibc's
/// `MALLOC_ALIGNMENT`). One table load, as `size_to_class`.
#[inline(always)]
pub fn c_class(size: usize) -> usize {
    if size <= SMALL_SIZE_MAX {
        SIZE_TO_CLASS8_C[size.div_ceil(SMALL_SIZE_DIV)] as usize
    } else {
        size_to_class(size)
    }
}

/// Objects moved between a thread cache and its central list at once: about 64 KiB worth,
/// between 2 and 64 objects (tcmalloc's `num_objects_to_move`).
pub static CLASS_BATCH: [u32; NUM_CLASSES] = {
    let mut a = [0u32; NUM_CLASSES];
    let mut i = 1;
    while i < NUM_CLASSES {
        let n = 64 * 1024 / TABLE.size[i] as usize;
        a[i] = if n < 2 {
            2
        } else if n > 64 {
            64
        } else {
            n as u32
        };
        i += 1;
    }
    a
};

/// The class serving `size` bytes (`1 <= size <= MAX_SMALL_SIZE`), or 0 above that.
#[inline(always)]
pub fn size_to_class(size: usize) -> usize {
    if size <= SMALL_SIZE_MAX {
        SIZE_TO_CLASS8[size.div_ceil(SMALL_SIZE_DIV)] as usize
    } else if size <= MAX_SMALL_SIZE {
        SIZE_TO_CLASS128[(size - SMALL_SIZE_MAX).div_ceil(LARGE_SIZE_DIV)] as usize
    } else {
        0
    }
}

/// The class serving a request of `size` bytes aligned to `align`, or 0 if it is not small.
///
/// Objects sit at multiples of the class size from a page-aligned span start, so a class
/// whose size is a multiple of the alignment aligns its objects. Alignments up to 8 are free
/// (every class is a multiple of 8). Alignment 16 costs one more load: every class but 24 is a
/// multiple of 16 from 16 B up, and a request that would get 24 gets 32. Larger ones up to the
/// page take the first class whose size is a multiple of the alignment.
#[inline(always)]
pub fn class_for_layout(size: usize, align: usize) -> usize {
    // A request smaller than its alignment takes a class at least as big as the alignment.
    if align <= 8 {
        size_to_class(if size < align { align } else { size })
    } else if align == 16 {
        let c = size_to_class(if size < 16 { 16 } else { size });
        // Class 0 (not small) has size 0, a multiple of 16: it stays 0.
        c + usize::from(CLASS_SIZE[c] % 16 != 0)
    } else {
        class_for_large_align(size, align)
    }
}

#[cold]
fn class_for_large_align(size: usize, align: usize) -> usize {
    if align > PAGE_SIZE {
        return 0;
    }
    let mut c = size_to_class(if size < align { align } else { size });
    if c == 0 {
        return 0;
    }
    while c < NUM_CLASSES {
        if CLASS_SIZE[c] as usize % align == 0 {
            return c;
        }
        c += 1;
    }
    0
}

/// Object size of class `c`.
#[inline(always)]
pub fn class_size(c: usize) -> usize {
    CLASS_SIZE[c] as usize
}

/// Span size of class `c`, in 8 KiB pages.
#[inline]
pub fn class_pages(c: usize) -> usize {
    CLASS_PAGES[c] as usize
}

/// Objects in one span of class `c`.
#[inline]
pub fn class_objects(c: usize) -> usize {
    class_pages(c) * PAGE_SIZE / class_size(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exhaustive loops below hold no unsafe code, so under Miri (thousands of times
    /// slower) they take every `STEP`-th size plus both sides of every class boundary.
    const STEP: usize = if cfg!(miri) { 61 } else { 1 };

    /// Sizes 1..=MAX_SMALL_SIZE + 1 (every `STEP`-th one, and each class's size and size + 1).
    fn sizes() -> impl Iterator<Item = usize> {
        (1..=MAX_SMALL_SIZE)
            .step_by(STEP)
            .chain((1..NUM_CLASSES).flat_map(|c| [class_size(c), class_size(c) + 1]))
    }

    #[test]
    fn about_68_classes_up_to_32k() {
        assert!(
            (60..=70).contains(&NUM_CLASSES),
            "NUM_CLASSES = {NUM_CLASSES}"
        );
        assert_eq!(class_size(1), 8);
        assert_eq!(class_size(NUM_CLASSES - 1), MAX_SMALL_SIZE);
    }

    #[test]
    fn sizes_monotonic_and_aligned() {
        for c in 2..NUM_CLASSES {
            assert!(class_size(c) > class_size(c - 1), "class {c} not larger");
            let align = if class_size(c) == 24 { 8 } else { 16 };
            assert_eq!(
                class_size(c) % align,
                0,
                "class {c} size {} not {align}-aligned",
                class_size(c)
            );
        }
    }

    /// Go's `class_to_size` and `class_to_allocnpages` (runtime/sizeclasses.go, Go 1.19 to
    /// 1.22), class 0 left out.
    #[test]
    fn table_is_gos() {
        #[rustfmt::skip]
        const GO: [(u32, u8); 67] = [
            (8, 1), (16, 1), (24, 1), (32, 1), (48, 1), (64, 1), (80, 1), (96, 1), (112, 1),
            (128, 1), (144, 1), (160, 1), (176, 1), (192, 1), (208, 1), (224, 1), (240, 1),
            (256, 1), (288, 1), (320, 1), (352, 1), (384, 1), (416, 1), (448, 1), (480, 1),
            (512, 1), (576, 1), (640, 1), (704, 1), (768, 1), (896, 1), (1024, 1), (1152, 1),
            (1280, 1), (1408, 2), (1536, 1), (1792, 2), (2048, 1), (2304, 2), (2688, 1),
            (3072, 3), (3200, 2), (3456, 3), (4096, 1), (4864, 3), (5376, 2), (6144, 3),
            (6528, 4), (6784, 5), (6912, 6), (8192, 1), (9472, 7), (9728, 6), (10240, 5),
            (10880, 4), (12288, 3), (13568, 5), (14336, 7), (16384, 2), (18432, 9), (19072, 7),
            (20480, 5), (21760, 8), (24576, 3), (27264, 10), (28672, 7), (32768, 4),
        ];
        assert_eq!(NUM_CLASSES, GO.len() + 1);
        for (i, &(size, pages)) in GO.iter().enumerate() {
            assert_eq!(
                (CLASS_SIZE[i + 1], CLASS_PAGES[i + 1]),
                (size, pages),
                "class {}",
                i + 1
            );
        }
    }

    #[test]
    fn alignment_16_skips_24() {
        for size in 17..=32 {
            assert_eq!(class_size(class_for_layout(size, 16)), 32, "size {size}");
            let c = class_for_layout(size, 8);
            assert_eq!(
                class_size(c),
                if size <= 24 { 24 } else { 32 },
                "size {size}"
            );
        }
        assert_eq!(class_size(class_for_layout(1, 16)), 16);
        assert_eq!(class_for_layout(MAX_SMALL_SIZE + 1, 16), 0);
    }

    #[test]
    fn c_class_is_16_aligned_from_9_bytes() {
        for size in sizes() {
            let c = c_class(size);
            let align = if size > 8 { 16 } else { 8 };
            assert_eq!(c, class_for_layout(size, align), "size {size}");
        }
        assert_eq!(class_size(c_class(24)), 32);
        assert_eq!(class_size(c_class(8)), 8);
    }

    #[test]
    fn tail_waste_at_most_one_eighth() {
        for c in 1..NUM_CLASSES {
            let span = class_pages(c) * PAGE_SIZE;
            let tail = span % class_size(c);
            assert!(tail * 8 <= span, "class {c}: tail waste {tail} of {span}");
            assert!(class_objects(c) >= 1);
        }
    }

    #[test]
    fn lookup_matches_linear_scan_for_every_size() {
        for size in sizes().filter(|&s| s <= MAX_SMALL_SIZE) {
            let c = size_to_class(size);
            assert!(c > 0 && class_size(c) >= size, "size {size} -> class {c}");
            assert!(
                c == 1 || class_size(c - 1) < size,
                "size {size} -> class {c} not smallest"
            );
        }
        assert_eq!(size_to_class(MAX_SMALL_SIZE + 1), 0);
    }

    #[test]
    fn fifteen_bytes_round_to_sixteen() {
        assert_eq!(class_size(size_to_class(15)), 16);
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        let mut align = 1;
        while align <= PAGE_SIZE {
            for size in (0..=MAX_SMALL_SIZE).step_by(7 * STEP) {
                let c = class_for_layout(size, align);
                if c != 0 {
                    assert!(class_size(c) >= size.max(1));
                    assert_eq!(class_size(c) % align, 0, "size {size} align {align}");
                }
            }
            align *= 2;
        }
        assert_eq!(class_for_layout(8, 8192), size_to_class(8192));
        assert_eq!(class_for_layout(8, 16384), 0);
    }

    #[test]
    fn max_internal_fragmentation_reported() {
        // The worst case per class is a request one byte over the previous class.
        let mut worst: f64 = 0.0;
        for c in 2..NUM_CLASSES {
            let smallest_request = class_size(c - 1) + 1;
            let waste = (class_size(c) - smallest_request) as f64 / class_size(c) as f64;
            worst = worst.max(waste);
            println!(
                "class {c:2} {:6} B: max internal waste {:5.2}%",
                class_size(c),
                waste * 100.0
            );
        }
        println!("worst internal waste {:.2}%", worst * 100.0);
        // Go's table stays under about 12.5% apart from the first few tiny classes.
        assert!(worst < 0.5);
    }

    #[test]
    fn batches_are_bounded() {
        for c in 1..NUM_CLASSES {
            let b = CLASS_BATCH[c] as usize;
            assert!((2..=64).contains(&b));
            assert!(b * class_size(c) <= 64 * 1024 || b == 2);
        }
    }
}
