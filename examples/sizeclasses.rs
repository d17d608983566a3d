//! Prints gomalloc's size-class table in the style of the comment atop Go's sizeclasses.go:
//! `cargo run --example sizeclasses`.

use gomalloc::size_class::{class_pages, class_size, NUM_CLASSES, PAGE_SIZE};

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

fn main() {
    println!("// class  bytes/obj  bytes/span  objects  tail waste  max waste");
    let mut prev = 0;
    for c in 1..NUM_CLASSES {
        let size = class_size(c);
        let span = class_pages(c) * PAGE_SIZE;
        let objects = span / size;
        let tail = span - objects * size;
        // Worst case: every object holds a request one byte over the previous class.
        let max_waste = ((size - prev - 1) * objects + tail) as f64 / span as f64 * 100.0;
        println!("// {c:5} {size:10} {span:11} {objects:8} {tail:11} {max_waste:9.2}%");
        prev = size;
    }
    println!(
        "// {} classes (plus class 0 for large objects)",
        NUM_CLASSES - 1
    );
}
