//! Theme 8: std collections churn on top of GoMalloc as the global allocator,
//! with every element's contents derived from its key/version so corruption is
//! detected, and a shadow model to catch lost or phantom entries.

#[global_allocator]
static GLOBAL: gomalloc::GoMalloc = gomalloc::GoMalloc;

mod common;
use common::*;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap, VecDeque};

fn elem(n: u64, version: u64, i: usize) -> u64 {
    mix(n ^ (version << 32) ^ ((i as u64) << 48) ^ i as u64)
}

fn make_vec(n: u64, version: u64, len: usize) -> Vec<u64> {
    (0..len).map(|i| elem(n, version, i)).collect()
}

fn check_vec(ctx: &str, n: u64, version: u64, v: &[u64], len: usize) {
    assert_eq!(v.len(), len, "{ctx}: key {n}: length {} != {len}", v.len());
    for (i, &x) in v.iter().enumerate() {
        assert_eq!(
            x,
            elem(n, version, i),
            "{ctx}: key {n} version {version}: element {i} corrupted"
        );
    }
}

fn make_string(n: u64, version: u64, len: usize) -> String {
    (0..len)
        .map(|i| char::from(b'!' + (elem(n, version, i) % 90) as u8))
        .collect()
}

fn hashmap_churn(seed: u64, ops: usize) -> HashMap<String, Vec<u64>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut map: HashMap<String, Vec<u64>> = HashMap::new();
    // model: key number -> (version, len)
    let mut model: BTreeMap<u64, (u64, usize)> = BTreeMap::new();
    let keyspace = 20_000u64;
    for op in 0..ops {
        let n = rng.gen_range(0..keyspace);
        let key = format!("k{n:08}-{}", "x".repeat((n % 13) as usize));
        let ctx = format!("seed {seed} op {op}");
        match rng.gen_range(0..100) {
            0..=44 => {
                let version = rng.gen::<u32>() as u64;
                let len = if rng.gen_ratio(1, 100) {
                    rng.gen_range(1000..20_000)
                } else {
                    rng.gen_range(0..64)
                };
                let v = make_vec(n, version, len);
                let old = map.insert(key, v);
                match (old, model.insert(n, (version, len))) {
                    (Some(ov), Some((over, olen))) => check_vec(&ctx, n, over, &ov, olen),
                    (None, None) => {}
                    (a, b) => panic!(
                        "{ctx}: map and model disagree on key {n}: {:?} vs {b:?}",
                        a.map(|v| v.len())
                    ),
                }
            }
            45..=69 => {
                let old = map.remove(&key);
                match (old, model.remove(&n)) {
                    (Some(ov), Some((over, olen))) => check_vec(&ctx, n, over, &ov, olen),
                    (None, None) => {}
                    (a, b) => panic!(
                        "{ctx}: remove disagrees on key {n}: {:?} vs {b:?}",
                        a.map(|v| v.len())
                    ),
                }
            }
            70..=89 => {
                // grow (realloc) an existing vector
                if let Some(v) = map.get_mut(&key) {
                    let (version, len) = model[&n];
                    check_vec(&ctx, n, version, v, len);
                    let extra = rng.gen_range(1..200);
                    for i in len..len + extra {
                        v.push(elem(n, version, i));
                    }
                    model.insert(n, (version, len + extra));
                }
            }
            90..=96 => {
                // shrink (realloc down)
                if let Some(v) = map.get_mut(&key) {
                    let (version, len) = model[&n];
                    let nl = len / 2;
                    v.truncate(nl);
                    v.shrink_to_fit();
                    check_vec(&ctx, n, version, v, nl);
                    model.insert(n, (version, nl));
                }
            }
            _ => {
                // point lookup
                if let Some((version, len)) = model.get(&n).copied() {
                    let v = map
                        .get(&key)
                        .unwrap_or_else(|| panic!("{ctx}: key {key} missing"));
                    check_vec(&ctx, n, version, v, len);
                } else {
                    assert!(!map.contains_key(&key), "{ctx}: phantom key {key}");
                }
            }
        }
        if op % 25_000 == 24_999 {
            // full verification pass
            {
                let ctx = format!("seed {seed} op {op} (full pass)");
                assert_eq!(
                    map.len(),
                    model.len(),
                    "{ctx}: map has {} entries, model {}",
                    map.len(),
                    model.len()
                );
                for (&n, &(version, len)) in &model {
                    let key = format!("k{n:08}-{}", "x".repeat((n % 13) as usize));
                    let v = map
                        .get(&key)
                        .unwrap_or_else(|| panic!("{ctx}: key {key} missing"));
                    check_vec(&ctx, n, version, v, len);
                }
            }
        }
        if op % 50_000 == 49_999 {
            map.shrink_to_fit();
        }
    }
    for (k, v) in &map {
        let n: u64 = k[1..9].parse().unwrap();
        let (version, len) = model[&n];
        check_vec("final", n, version, v, len);
    }
    map
}

#[test]
fn hashmap_string_vec_u64_churn() {
    let seed = seed("hashmap_string_vec_u64_churn");
    let map = hashmap_churn(seed, if RELEASE { 300_000 } else { 30_000 });
    drop(map);
}

#[test]
fn btreemap_string_churn() {
    let seed = seed("btreemap_string_churn");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut map: BTreeMap<u64, String> = BTreeMap::new();
    let mut versions: HashMap<u64, (u64, usize)> = HashMap::new();
    let ops = if RELEASE { 300_000 } else { 30_000 };
    for op in 0..ops {
        let n = rng.gen_range(0..50_000u64);
        match rng.gen_range(0..10) {
            0..=4 => {
                let version = rng.gen::<u16>() as u64;
                let len = rng.gen_range(0..100);
                map.insert(n, make_string(n, version, len));
                versions.insert(n, (version, len));
            }
            5..=7 => {
                let a = map.remove(&n);
                let b = versions.remove(&n);
                assert_eq!(
                    a.is_some(),
                    b.is_some(),
                    "seed {seed} op {op}: remove({n}) disagrees"
                );
                if let (Some(s), Some((ver, len))) = (a, b) {
                    assert_eq!(
                        s,
                        make_string(n, ver, len),
                        "seed {seed} op {op}: value of {n} corrupted"
                    );
                }
            }
            8 => {
                // range scan must be sorted and values intact
                let mut last = None;
                for (&k, s) in map.range(n..).take(50) {
                    assert!(last.is_none_or(|l| l < k), "seed {seed}: range not sorted");
                    last = Some(k);
                    let (ver, len) = versions[&k];
                    assert_eq!(
                        *s,
                        make_string(k, ver, len),
                        "seed {seed} op {op}: value of {k} corrupted"
                    );
                }
            }
            _ => {
                if let Some(s) = map.get_mut(&n) {
                    let (ver, len) = versions[&n];
                    assert_eq!(*s, make_string(n, ver, len));
                    // append and re-derive
                    let nl = len + rng.gen_range(1..500);
                    *s = make_string(n, ver, nl);
                    versions.insert(n, (ver, nl));
                }
            }
        }
    }
    assert_eq!(map.len(), versions.len());
    for (&k, s) in &map {
        let (ver, len) = versions[&k];
        assert_eq!(
            *s,
            make_string(k, ver, len),
            "seed {seed}: final value of {k} corrupted"
        );
    }
}

#[test]
fn vec_string_vecdeque_growth() {
    let seed = seed("vec_string_vecdeque_growth");
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..5 {
        // Vec growing through every size up to many MiB (small -> large -> huge).
        let n = if RELEASE { 3_000_000 } else { 300_000 };
        let mut v: Vec<u32> = Vec::new();
        for i in 0..n {
            v.push(i ^ round);
        }
        assert!(
            v.iter().enumerate().all(|(i, &x)| x == i as u32 ^ round),
            "round {round}: Vec<u32> corrupted"
        );
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).map(|i| i ^ round).collect::<Vec<_>>());

        // String built by many small appends.
        let mut s = String::new();
        for i in 0..200_000u32 {
            s.push_str(&i.to_string());
            s.push(',');
        }
        for (i, part) in s.split(',').filter(|p| !p.is_empty()).enumerate() {
            assert_eq!(
                part.parse::<usize>().unwrap(),
                i,
                "round {round}: String corrupted"
            );
        }

        // VecDeque used as a queue of boxed byte slices of varying size.
        let mut q: VecDeque<Box<[u8]>> = VecDeque::new();
        let mut head = 0u64;
        let mut tail = 0u64;
        for _ in 0..100_000 {
            if rng.gen_bool(0.55) {
                let len = if rng.gen_ratio(1, 200) {
                    rng.gen_range(4096..100_000)
                } else {
                    rng.gen_range(0..300)
                };
                let b: Box<[u8]> = (0..len).map(|i| (tail as usize * 31 + i) as u8).collect();
                q.push_back(b);
                tail += 1;
            } else if let Some(b) = q.pop_front() {
                assert!(
                    b.iter()
                        .enumerate()
                        .all(|(i, &x)| x == (head as usize * 31 + i) as u8),
                    "seed {seed} round {round}: VecDeque element {head} corrupted"
                );
                head += 1;
            }
        }
        assert_eq!(q.len() as u64, tail - head);
    }
}

#[derive(Debug)]
struct Node {
    key: u64,
    payload: Vec<u64>,
    left: Option<Box<Node>>,
    right: Option<Box<Node>>,
}

fn insert(root: &mut Option<Box<Node>>, key: u64) -> bool {
    let mut cur = root;
    while let Some(node) = cur {
        if key == node.key {
            return false;
        }
        cur = if key < node.key {
            &mut node.left
        } else {
            &mut node.right
        };
    }
    *cur = Some(Box::new(Node {
        key,
        payload: (0..(key % 40) as usize)
            .map(|i| mix(key + i as u64))
            .collect(),
        left: None,
        right: None,
    }));
    true
}

fn remove_min(node: &mut Option<Box<Node>>) -> Option<Box<Node>> {
    if node.as_ref()?.left.is_some() {
        remove_min(&mut node.as_mut().unwrap().left)
    } else {
        let mut n = node.take().unwrap();
        *node = n.right.take();
        Some(n)
    }
}

fn remove(root: &mut Option<Box<Node>>, key: u64) -> bool {
    let Some(node) = root else { return false };
    if key < node.key {
        return remove(&mut node.left, key);
    }
    if key > node.key {
        return remove(&mut node.right, key);
    }
    let mut n = root.take().unwrap();
    *root = match (n.left.take(), n.right.take()) {
        (None, r) => r,
        (l, None) => l,
        (l, mut r) => {
            let mut m = remove_min(&mut r).unwrap();
            m.left = l;
            m.right = r;
            Some(m)
        }
    };
    true
}

fn walk(node: &Option<Box<Node>>, out: &mut Vec<u64>) {
    // iterative in-order traversal (no deep recursion)
    let mut stack: Vec<&Node> = Vec::new();
    let mut cur = node.as_deref();
    while cur.is_some() || !stack.is_empty() {
        while let Some(n) = cur {
            stack.push(n);
            cur = n.left.as_deref();
        }
        let n = stack.pop().unwrap();
        assert_eq!(
            n.payload.len(),
            (n.key % 40) as usize,
            "node {} payload length corrupted",
            n.key
        );
        for (i, &x) in n.payload.iter().enumerate() {
            assert_eq!(x, mix(n.key + i as u64), "node {} payload corrupted", n.key);
        }
        out.push(n.key);
        cur = n.right.as_deref();
    }
}

fn drop_tree(root: Option<Box<Node>>) {
    // iterative drop (avoid recursion depth on degenerate trees)
    let mut stack: Vec<Box<Node>> = root.into_iter().collect();
    while let Some(mut n) = stack.pop() {
        stack.extend(n.left.take());
        stack.extend(n.right.take());
    }
}

#[test]
fn box_trees() {
    let seed = seed("box_trees");
    let mut rng = StdRng::seed_from_u64(seed);
    for round in 0..4 {
        let mut root: Option<Box<Node>> = None;
        let mut model = std::collections::BTreeSet::new();
        let ops = if RELEASE { 200_000 } else { 20_000 };
        for _ in 0..ops {
            let k = rng.gen_range(0..100_000u64);
            if rng.gen_bool(0.6) {
                assert_eq!(
                    insert(&mut root, k),
                    model.insert(k),
                    "seed {seed}: insert({k}) disagrees"
                );
            } else {
                assert_eq!(
                    remove(&mut root, k),
                    model.remove(&k),
                    "seed {seed}: remove({k}) disagrees"
                );
            }
        }
        let mut keys = Vec::new();
        walk(&root, &mut keys);
        assert_eq!(
            keys,
            model.iter().copied().collect::<Vec<_>>(),
            "seed {seed} round {round}: tree keys differ"
        );
        drop_tree(root);
    }
}

/// Several threads churn collections concurrently, then hand their maps to
/// other threads, which verify and drop them (cross-thread frees of
/// collection internals).
#[test]
fn threads_churn_and_drop_each_others_collections() {
    let seed = seed("threads_churn_and_drop_each_others_collections");
    let threads = 4;
    let ops = if RELEASE { 100_000 } else { 10_000 };
    let maps: Vec<HashMap<String, Vec<u64>>> = (0..threads)
        .map(|t| std::thread::spawn(move || hashmap_churn(seed ^ mix(t), ops)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap_or_else(|_| panic!("seed {seed}: churn thread panicked"))
        })
        .collect();
    let mut maps = maps;
    maps.shuffle(&mut StdRng::seed_from_u64(seed));
    let handles: Vec<_> = maps
        .into_iter()
        .map(|m| {
            std::thread::spawn(move || {
                let mut total = 0usize;
                for (k, v) in &m {
                    assert!(k.starts_with('k'), "key corrupted: {k:?}");
                    total += v.len();
                }
                let trees: Vec<Box<[u64]>> =
                    m.into_values().map(|v| v.into_boxed_slice()).collect();
                drop(trees);
                total
            })
        })
        .collect();
    for h in handles {
        h.join()
            .unwrap_or_else(|_| panic!("seed {seed}: drop thread panicked"));
    }
}
