//! Fake Go maps laid out as the runtime lays them out, walked as the kernel walks them.
extern crate std;
use super::*;
use std::{collections::BTreeMap, string::String, vec, vec::Vec};

/// A fake address space: allocations at increasing addresses, reads inside one of them only.
#[derive(Default)]
struct Heap {
    blocks: BTreeMap<u64, Vec<u8>>,
    next: u64,
    /// Reads may span allocations (zeros between them), as in a real heap's pages.
    flat: bool,
    reads: usize,
}

impl Heap {
    fn alloc(&mut self, len: u64) -> u64 {
        if self.next == 0 {
            self.next = 0x1000;
        }
        let at = self.next;
        self.blocks.insert(at, vec![0; len as usize]);
        self.next += (len + 15) & !15;
        self.next += 16;
        at
    }
    fn put(&mut self, addr: u64, bytes: &[u8]) {
        let (&base, block) = self.blocks.range_mut(..=addr).next_back().unwrap();
        let o = (addr - base) as usize;
        block[o..o + bytes.len()].copy_from_slice(bytes);
    }
    fn put_word(&mut self, addr: u64, w: u64) {
        self.put(addr, &w.to_le_bytes());
    }
    fn string(&mut self, s: &str) -> (u64, u64) {
        let p = self.alloc(s.len() as u64);
        self.put(p, s.as_bytes());
        (p, s.len() as u64)
    }
    /// Writes a `string` header for `key` at `at` and a `[]string` of `values` at `at + 16`.
    fn entry(&mut self, at: u64, key: &str, values: &[&str]) {
        let (kp, kl) = self.string(key);
        self.put_word(at, kp);
        self.put_word(at + 8, kl);
        let arr = self.alloc(16 * values.len() as u64);
        for (i, v) in values.iter().enumerate() {
            let (vp, vl) = self.string(v);
            self.put_word(arr + 16 * i as u64, vp);
            self.put_word(arr + 16 * i as u64 + 8, vl);
        }
        self.put_word(at + 16, arr);
        self.put_word(at + 24, values.len() as u64);
        self.put_word(at + 32, values.len() as u64);
    }
    fn value(&mut self, elem: u64) -> String {
        let (p, l) = MapWalk::last_value(elem, self).unwrap();
        let mut b = vec![0; l as usize];
        assert!(self.read(p, &mut b));
        String::from_utf8(b).unwrap()
    }
}

impl Memory for Heap {
    fn read(&mut self, addr: u64, out: &mut [u8]) -> bool {
        self.reads += 1;
        if self.flat {
            if addr < 0x1000 || addr + out.len() as u64 > self.next {
                return false;
            }
            for (i, b) in out.iter_mut().enumerate() {
                let a = addr + i as u64;
                *b = match self.blocks.range(..=a).next_back() {
                    Some((&base, block)) if a - base < block.len() as u64 => block[(a - base) as usize],
                    _ => 0,
                };
            }
            return true;
        }
        let Some((&base, block)) = self.blocks.range(..=addr).next_back() else { return false };
        let o = (addr - base) as usize;
        if o + out.len() > block.len() {
            return false;
        }
        out.copy_from_slice(&block[o..o + out.len()]);
        true
    }
}

const SWISS: MapLayout = MapLayout {
    kind: MAP_SWISS,
    request_header: 0,
    hmap_flags: 0,
    hmap_b: 0,
    hmap_buckets: 0,
    hmap_oldbuckets: 0,
    map_dir_ptr: 16,
    map_dir_len: 24,
    table_groups_data: 16,
    table_groups_mask: 24,
};

const HMAP: MapLayout = MapLayout {
    kind: MAP_HMAP,
    hmap_flags: 8,
    hmap_b: 9,
    hmap_buckets: 16,
    hmap_oldbuckets: 24,
    map_dir_ptr: 0,
    map_dir_len: 0,
    table_groups_data: 0,
    table_groups_mask: 0,
    request_header: 0,
};

/// Runs a walk to its end as the kernel does (bounded steps).
fn walk(l: &MapLayout, map: u64, heap: &mut Heap) -> MapWalk {
    let mut w = MapWalk::start(l, map, heap);
    for _ in 0..MAX_WALK_STEPS {
        if !w.step(l, heap) {
            break;
        }
    }
    w
}

/// A Swiss group with `entries` in the given slots (others empty, 0x80).
fn swiss_group(heap: &mut Heap, at: u64, entries: &[(usize, &str, &[&str])]) {
    let mut ctrl = [0x80u8; 8];
    for &(slot, key, values) in entries {
        ctrl[slot] = 0x11 + slot as u8;
        heap.entry(at + 8 + SWISS_SLOT * slot as u64, key, values);
    }
    heap.put(at, &ctrl);
}

const TP: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[test]
fn swiss_small_map_is_one_group() {
    let mut heap = Heap::default();
    let map = heap.alloc(48);
    let group = heap.alloc(SWISS_GROUP);
    swiss_group(&mut heap, group, &[(0, "Host", &["x"]), (3, "User-Agent", &["curl/8"]), (6, "Traceparent", &[TP])]);
    heap.put_word(map + 16, group);
    let mut w = walk(&SWISS, map, &mut heap);
    assert_eq!(w.end, WalkEnd::Complete as u64);
    assert_eq!(heap.value(w.traceparent_elem), TP);
    assert_eq!(heap.value(w.user_agent_elem), "curl/8");
    // A deleted slot (0xfe) is not a key any more.
    heap.put(group + 6, &[0xfe]);
    w = walk(&SWISS, map, &mut heap);
    assert_eq!((w.end, w.traceparent_elem), (WalkEnd::Complete as u64, 0));
}

#[test]
fn swiss_directory_of_tables_each_table_once() {
    let mut heap = Heap::default();
    let map = heap.alloc(48);
    let (t1, t2) = (heap.alloc(32), heap.alloc(32));
    let (g1, g2) = (heap.alloc(2 * SWISS_GROUP), heap.alloc(4 * SWISS_GROUP));
    for g in 0..2 {
        swiss_group(&mut heap, g1 + g * SWISS_GROUP, &[(1, "X-A", &["a"])]);
    }
    for g in 0..4 {
        swiss_group(&mut heap, g2 + g * SWISS_GROUP, &[(2, "X-B", &["b"])]);
    }
    swiss_group(&mut heap, g2 + 3 * SWISS_GROUP, &[(2, "X-B", &["b"]), (7, "Traceparent", &["first", TP])]);
    for (t, g, n) in [(t1, g1, 2), (t2, g2, 4)] {
        heap.put_word(t + 16, g);
        heap.put_word(t + 24, n - 1);
    }
    // Directory of 4 entries: t1 t1 t2 t2 (global depth 2, both tables local depth 1).
    let dir = heap.alloc(32);
    for (i, t) in [t1, t1, t2, t2].into_iter().enumerate() {
        heap.put_word(dir + 8 * i as u64, t);
    }
    heap.put_word(map + 16, dir);
    heap.put_word(map + 24, 4);
    let w = walk(&SWISS, map, &mut heap);
    assert_eq!(w.end, WalkEnd::Complete as u64);
    assert_eq!(w.visited, 6, "each group once");
    assert_eq!(heap.value(w.traceparent_elem), TP, "the last value of the key");
    assert_eq!(w.user_agent_elem, 0);
}

#[test]
fn swiss_limits_are_counted_not_guessed() {
    let mut heap = Heap::default();
    let map = heap.alloc(48);
    let t = heap.alloc(32);
    heap.put_word(t + 16, heap.next);
    heap.put_word(t + 24, MAX_CONTAINERS);
    let dir = heap.alloc(8);
    heap.put_word(dir, t);
    heap.put_word(map + 16, dir);
    heap.put_word(map + 24, 1);
    assert_eq!(walk(&SWISS, map, &mut heap).end, WalkEnd::TooLarge as u64);
    heap.put_word(map + 24, MAX_DIR + 1);
    assert_eq!(walk(&SWISS, map, &mut heap).end, WalkEnd::TooLarge as u64);
    // A group pointer into nothing.
    heap.put_word(map + 16, 0x10);
    heap.put_word(map + 24, 0);
    assert_eq!(walk(&SWISS, map, &mut heap).end, WalkEnd::Unreadable as u64);
    // No map at all (nil Header) and an empty small map: nothing to find.
    assert_eq!(walk(&SWISS, 0, &mut heap).end, WalkEnd::Complete as u64);
    heap.put_word(map + 16, 0);
    assert_eq!(walk(&SWISS, map, &mut heap).end, WalkEnd::Complete as u64);
}

fn hmap_bucket(heap: &mut Heap, at: u64, entries: &[(usize, u8, &str, &[&str])]) {
    let mut top = [0u8; 8];
    for &(slot, tophash, key, values) in entries {
        top[slot] = tophash;
        let (kp, kl) = heap.string(key);
        heap.put_word(at + HMAP_KEYS + 16 * slot as u64, kp);
        heap.put_word(at + HMAP_KEYS + 16 * slot as u64 + 8, kl);
        // The element: a []string header at its own place.
        let tmp = heap.alloc(40);
        heap.entry(tmp, "-", values);
        let mut hdr = [0u8; 24];
        assert!(heap.read(tmp + 16, &mut hdr));
        heap.put(at + HMAP_ELEMS + 24 * slot as u64, &hdr);
    }
    heap.put(at, &top);
}

#[test]
fn hmap_buckets_overflow_and_old_buckets() {
    let mut heap = Heap::default();
    let map = heap.alloc(48);
    // B = 2: 4 buckets; growing from 2 old buckets.
    let buckets = heap.alloc(4 * HMAP_BUCKET);
    let old = heap.alloc(2 * HMAP_BUCKET);
    let overflow = heap.alloc(HMAP_BUCKET);
    hmap_bucket(&mut heap, buckets, &[(0, 9, "Host", &["h"])]);
    hmap_bucket(&mut heap, buckets + 2 * HMAP_BUCKET, &[(4, 200, "X-1", &["1"])]);
    heap.put_word(buckets + 2 * HMAP_BUCKET + HMAP_OVERFLOW, overflow);
    hmap_bucket(&mut heap, overflow, &[(1, 77, "User-Agent", &["go"])]);
    // Old bucket 0 was evacuated (its traceparent cell says evacuatedX = 2): not counted twice.
    hmap_bucket(&mut heap, old, &[(0, 2, "Traceparent", &["stale"])]);
    // Old bucket 1 is not evacuated yet: its entry is only there.
    hmap_bucket(&mut heap, old + HMAP_BUCKET, &[(5, 42, "Traceparent", &[TP])]);
    heap.put(map + 8, &[0, 2]);
    heap.put_word(map + 16, buckets);
    heap.put_word(map + 24, old);
    let w = walk(&HMAP, map, &mut heap);
    assert_eq!(w.end, WalkEnd::Complete as u64);
    assert_eq!(w.visited, 4 + 1 + 2);
    assert_eq!(heap.value(w.traceparent_elem), TP);
    assert_eq!(heap.value(w.user_agent_elem), "go");
    // Empty (0) and emptyRest (1) cells are skipped; B over 6 is refused.
    heap.put(old + HMAP_BUCKET + 5, &[1]);
    assert_eq!(walk(&HMAP, map, &mut heap).traceparent_elem, 0);
    heap.put(map + 9, &[7]);
    assert_eq!(walk(&HMAP, map, &mut heap).end, WalkEnd::TooLarge as u64);
}

#[test]
fn shapes_follow_the_compiler() {
    // DWARF of Go 1.26: noalg.map.group[string][]string is 328 bytes, its slot 40.
    assert_eq!((SWISS_GROUP, SWISS_SLOT), (328, 40));
    // runtime.bmap of map[string][]string: 8 + 8*16 + 8*24 + 8.
    assert_eq!(HMAP_BUCKET, 336);
}

#[test]
fn the_walk_stops_once_both_keys_are_found() {
    let mut heap = Heap::default();
    let map = heap.alloc(48);
    let t = heap.alloc(32);
    let groups = heap.alloc(4 * SWISS_GROUP);
    swiss_group(&mut heap, groups, &[(2, "User-Agent", &["go"]), (5, "X-Extra-01", &["v"])]);
    swiss_group(&mut heap, groups + SWISS_GROUP, &[(0, "Traceparent", &[TP]), (1, "X-Extra-02", &["v"])]);
    swiss_group(&mut heap, groups + 2 * SWISS_GROUP, &[(3, "X-Extra-03", &["v"])]);
    swiss_group(&mut heap, groups + 3 * SWISS_GROUP, &[(4, "X-Extra-04", &["v"])]);
    heap.put_word(t + 16, groups);
    heap.put_word(t + 24, 3);
    let dir = heap.alloc(8);
    heap.put_word(dir, t);
    heap.put_word(map + 16, dir);
    heap.put_word(map + 24, 1);
    let w = walk(&SWISS, map, &mut heap);
    assert_eq!(w.end, WalkEnd::Complete as u64);
    assert_eq!(w.visited, 2, "the groups after both keys are not read");
    assert_eq!((heap.value(w.traceparent_elem).as_str(), heap.value(w.user_agent_elem).as_str()), (TP, "go"));
    // Without a User-Agent, every group is read.
    heap.put(groups + 2, &[0x80]);
    let w = walk(&SWISS, map, &mut heap);
    assert_eq!((w.end, w.visited, w.user_agent_elem), (WalkEnd::Complete as u64, 4, 0));
    assert_eq!(heap.value(w.traceparent_elem), TP);
}

#[test]
fn keys_next_to_each_other_are_read_once_per_window() {
    let mut reads = Vec::new();
    for flat in [false, true] {
        let mut heap = Heap { flat, ..Heap::default() };
        let map = heap.alloc(48);
        let group = heap.alloc(SWISS_GROUP);
        let entries: Vec<(usize, String)> = (0..7).map(|i| (i, std::format!("X-Extra-0{i}"))).collect();
        let mut slots: Vec<(usize, &str, &[&str])> =
            entries.iter().map(|(i, k)| (*i, k.as_str(), &["v"][..])).collect();
        slots.push((7, "User-Agent", &["go"]));
        swiss_group(&mut heap, group, &slots);
        heap.put_word(map + 16, group);
        heap.reads = 0;
        let w = walk(&SWISS, map, &mut heap);
        reads.push(heap.reads);
        assert_eq!((w.end, w.traceparent_elem), (WalkEnd::Complete as u64, 0), "flat {flat}");
        assert_eq!(heap.value(w.user_agent_elem), "go", "flat {flat}");
    }
    // The map header (2 words) and the group, then the eight 10-byte keys: each alone when
    // windows cannot be read (at least one read per key), a window per 256 bytes of heap when
    // they can (the fake heap puts an entry's key, array and value in about 100 bytes, so the
    // eight keys span five windows).
    assert!(reads[0] >= 3 + 8, "{reads:?}");
    assert!(reads[1] <= 3 + 5, "{reads:?}");
}
