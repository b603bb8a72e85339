//! The fallback of the incoming `traceparent` read: the request's parsed `http.Header`
//! (`map[string][]string`), walked by the server span's entry probe when the raw header block
//! is no longer whole in the connection's read buffer (`header_block`, [`crate::header_block`]:
//! the header arrived in several reads, so `bufio` slid the lines already parsed away).
//!
//! Why a walk and not a lookup: Go seeds each map's hash per process (`hmap.hash0`, `Map.seed`)
//! with AES-based hashing the kernel cannot compute, so the walk looks at every slot, comparing
//! the canonical key (`Traceparent`; net/textproto canonicalises every incoming header name).
//! Request header maps are small (a group of 8 slots up to 8 headers), and the walk is bounded
//! ([`MAX_CONTAINERS`] buckets or groups); a larger map is counted as unreadable, never guessed.
//!
//! Two layouts, both `map[string][]string`:
//! - **Go 1.24+ ("Swiss tables", `internal/runtime/maps.Map`)**: `dirLen == 0` means `dirPtr` is
//!   one group; else `dirPtr` is `[dirLen]*table` (neighbouring entries may share a table), each
//!   table has `groups.data` and `groups.lengthMask + 1` groups. A group is 8 control bytes, then
//!   8 slots of `{key string; elem []string}` (40 bytes): [`SWISS_GROUP`]. A slot is full when
//!   its control byte has the high bit clear.
//! - **Go up to 1.23 (`runtime.hmap`)**: `2^B` buckets, plus `oldbuckets` while the map grows
//!   (`2^(B-1)`, or `2^B` for a same-size growth); a bucket is 8 `tophash` bytes, 8 keys, 8
//!   elems and an overflow pointer ([`HMAP_BUCKET`]). A slot is full when its tophash is at
//!   least 5 (`minTopHash`); evacuated slots of old buckets are below that, so walking both
//!   arrays sees every entry once.
//!
//! The struct field offsets (`hmap.B`, `Map.dirPtr`, `table.groups`, ...) come from DWARF or the
//! layout table; the bucket and group shapes follow from the key and element types (the
//! compiler's rule, checked against DWARF's `noalg.map.group[string][]string` in the tests of
//! the sidecar). The walk is pure over a [`Memory`], so the kernel runs one
//! [`MapWalk::step`] per `bpf_loop` iteration and the host tests run it on fake maps. Each
//! container is copied in one read (a user read costs far more than its bytes), so a slot
//! costs a read only when its key has the length of a key the walk looks for, and then only
//! when the key is outside the 256 bytes around the last key read (keys of one request are
//! allocated one after the other).

/// Which map layout the binary has ([`MapLayout::kind`]).
pub const MAP_NONE: u32 = 0;
pub const MAP_HMAP: u32 = 1;
pub const MAP_SWISS: u32 = 2;

/// Swiss-table group of `map[string][]string`: control word, then 8 slots of 40 bytes.
pub const SWISS_GROUP: u64 = 8 + 8 * SWISS_SLOT;
pub const SWISS_SLOT: u64 = 16 + 24;
/// hmap bucket of `map[string][]string`: tophash[8], keys[8], elems[8], overflow.
pub const HMAP_BUCKET: u64 = HMAP_OVERFLOW + 8;
const HMAP_KEYS: u64 = 8;
const HMAP_ELEMS: u64 = HMAP_KEYS + 8 * 16;
const HMAP_OVERFLOW: u64 = HMAP_ELEMS + 8 * 24;
const MIN_TOP_HASH: u8 = 5;
/// `hmap.flags` bit of a same-size growth.
const SAME_SIZE_GROW: u8 = 8;

/// Buckets or groups a walk may visit; a map that needs more is reported as too large.
pub const MAX_CONTAINERS: u64 = 64;
/// Directory entries a Swiss map may have for the walk.
const MAX_DIR: u64 = 16;
/// Steps of `bpf_loop` the kernel gives a walk: one per container, plus one per directory
/// entry and one per array switch.
pub const MAX_WALK_STEPS: u32 = (MAX_CONTAINERS + MAX_DIR + 4) as u32;

const TRACEPARENT_KEY: &[u8; 11] = b"Traceparent";
const USER_AGENT_KEY: &[u8; 10] = b"User-Agent";

/// Field offsets of the two map layouts (user space fills them from DWARF or the layout table).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapLayout {
    /// [`MAP_NONE`], [`MAP_HMAP`] or [`MAP_SWISS`].
    pub kind: u32,
    /// `net/http.Request.Header`.
    pub request_header: u32,
    /// `runtime.hmap`: `flags`, `B`, `buckets`, `oldbuckets`.
    pub hmap_flags: u32,
    pub hmap_b: u32,
    pub hmap_buckets: u32,
    pub hmap_oldbuckets: u32,
    /// `internal/runtime/maps.Map`: `dirPtr`, `dirLen`.
    pub map_dir_ptr: u32,
    pub map_dir_len: u32,
    /// `internal/runtime/maps.table.groups` plus `groupsReference.data` / `.lengthMask`.
    pub table_groups_data: u32,
    pub table_groups_mask: u32,
}

/// Reads the target's memory (the kernel: `bpf_probe_read_user`; tests: a fake heap).
pub trait Memory {
    /// Fills `out` from `addr`; false when unreadable.
    fn read(&mut self, addr: u64, out: &mut [u8]) -> bool;

    #[inline(always)]
    fn word(&mut self, addr: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
    }

    /// The two words at `addr`, in one read.
    #[inline(always)]
    fn pair(&mut self, addr: u64) -> Option<(u64, u64)> {
        let mut w = [0u64; 2];
        // SAFETY: the 16 bytes of `w`, which any byte values make valid words.
        let bytes = unsafe { core::slice::from_raw_parts_mut(w.as_mut_ptr() as *mut u8, 16) };
        self.read(addr, bytes).then(|| (u64::from_le(w[0]), u64::from_le(w[1])))
    }
}

/// How a walk ended.
#[repr(u64)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkEnd {
    Walking = 0,
    /// Every slot was seen, or both keys were found.
    Complete = 1,
    /// More buckets or groups than [`MAX_CONTAINERS`], or a directory over 16 entries.
    TooLarge = 2,
    /// A read failed (the map changed under the walk, or a wrong layout).
    Unreadable = 3,
}

/// State of one walk (kept in the kernel's per-CPU scratch memory between steps).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MapWalk {
    pub kind: u64,
    /// The bucket or group to visit next (0: take the next one from the array).
    pub cur: u64,
    /// Current array (hmap buckets, Swiss groups of a table) and where the walk is in it.
    pub array: u64,
    pub index: u64,
    pub count: u64,
    /// hmap: the old buckets (walked after the new ones) and their number. Swiss: the directory.
    pub next_array: u64,
    pub next_count: u64,
    pub dir_index: u64,
    pub prev_table: u64,
    pub visited: u64,
    /// `cur`'s control (Swiss) or tophash (hmap) bytes.
    pub ctrl: u64,
    /// Address of the `[]string` element of the last `Traceparent` / `User-Agent` key seen (0: none).
    pub traceparent_elem: u64,
    pub user_agent_elem: u64,
    /// A [`WalkEnd`].
    pub end: u64,
    /// The current bucket or group, copied in one read when the walk enters it: its slots'
    /// keys are then looked at without a read each (only a key of the length of `Traceparent`
    /// or `User-Agent` has its bytes read).
    pub group: Container,
    /// The key window: `keys` holds `[keys_base, keys_base + KEY_WINDOW)` when `keys_ok` is 1.
    pub keys_base: u64,
    pub keys_ok: u64,
    pub keys: KeyWindow,
}

/// A copied bucket or group, 8-byte aligned so that its words are read with one load each.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct Container(pub [u8; CONTAINER_BYTES]);

/// Bytes of the key window ([`MapWalk::keys`]): aligned to its size, so it never crosses a
/// page and is readable whenever a key in it is.
pub const KEY_WINDOW: usize = 256;

/// The aligned target memory around the last key read (and 16 bytes of room after it).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug)]
pub struct KeyWindow(pub [u8; KEY_WINDOW + 16]);

impl KeyWindow {
    /// The little-endian word at any `i` up to `KEY_WINDOW` (two aligned loads).
    #[inline(always)]
    fn word(&self, i: usize) -> u64 {
        let a = i & (KEY_WINDOW - 8);
        let shift = 8 * (i & 7);
        let lo = aligned(&self.0[a..a + 8]);
        if shift == 0 {
            return lo;
        }
        (lo >> shift) | (aligned(&self.0[a + 8..a + 16]) << (64 - shift))
    }
}

/// A key read alone.
#[repr(C, align(8))]
struct KeyBuf([u8; 16]);

/// The little-endian word in `bytes` (8 of them, 8-byte aligned).
#[inline(always)]
fn aligned(bytes: &[u8]) -> u64 {
    // SAFETY: the callers pass 8 bytes at an 8-aligned offset of an 8-aligned array.
    u64::from_le(unsafe { (bytes.as_ptr() as *const u64).read() })
}

/// A key's two words as [`MapWalk::key_words`] gives them.
const fn key_words<const L: usize>(k: &[u8; L]) -> (u64, u64) {
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    let mut i = 0;
    while i < L {
        if i < 8 {
            lo[i] = k[i];
        } else {
            hi[i - 8] = k[i];
        }
        i += 1;
    }
    (u64::from_le_bytes(lo), u64::from_le_bytes(hi))
}

/// Bytes of the largest container, an hmap bucket (a Swiss group is 8 bytes smaller).
pub const CONTAINER_BYTES: usize = HMAP_BUCKET as usize;

impl Default for MapWalk {
    fn default() -> Self {
        MapWalk {
            kind: 0,
            cur: 0,
            array: 0,
            index: 0,
            count: 0,
            next_array: 0,
            next_count: 0,
            dir_index: 0,
            prev_table: 0,
            visited: 0,
            ctrl: 0,
            traceparent_elem: 0,
            user_agent_elem: 0,
            end: 0,
            group: Container([0; CONTAINER_BYTES]),
            keys_base: 1,
            keys_ok: 0,
            keys: KeyWindow([0; KEY_WINDOW + 16]),
        }
    }
}

/// The little-endian word at `c[i..i + 8]`, `i` a multiple of 8 (the container's words).
#[inline(always)]
fn word_at(c: &Container, i: usize) -> u64 {
    let i = if i > CONTAINER_BYTES - 8 { CONTAINER_BYTES - 8 } else { i & !7 };
    let bytes = &c.0[i..i + 8];
    // SAFETY: in bounds (the slice above) and 8-byte aligned (`Container`'s alignment, `i`).
    u64::from_le(unsafe { (bytes.as_ptr() as *const u64).read() })
}

impl MapWalk {
    /// A walk over the map whose header (`*hmap` / `*maps.Map`) is at `map`.
    pub fn start<M: Memory>(l: &MapLayout, map: u64, mem: &mut M) -> MapWalk {
        let mut w = MapWalk::default();
        w.begin(l, map, mem);
        w
    }

    /// [`MapWalk::start`] in place: the kernel's walk lives in map memory, and a copy of it on
    /// the BPF stack would not fit beside `gotel_entry`'s frame.
    #[inline(always)]
    pub fn begin<M: Memory>(&mut self, l: &MapLayout, map: u64, mem: &mut M) {
        self.kind = l.kind as u64;
        self.cur = 0;
        self.array = 0;
        self.index = 0;
        self.count = 0;
        self.next_array = 0;
        self.next_count = 0;
        self.dir_index = 0;
        self.prev_table = 0;
        self.visited = 0;
        self.ctrl = 0;
        self.traceparent_elem = 0;
        self.user_agent_elem = 0;
        self.end = WalkEnd::Walking as u64;
        // Never an aligned address: the first key reads its window.
        self.keys_base = 1;
        if map == 0 {
            self.end = WalkEnd::Complete as u64;
            return;
        }
        match l.kind {
            MAP_HMAP => {
                let mut fields = [0u8; 2];
                let (Some(buckets), Some(old), true) = (
                    mem.word(map + l.hmap_buckets as u64),
                    mem.word(map + l.hmap_oldbuckets as u64),
                    mem.read(map + l.hmap_flags as u64, &mut fields[..1])
                        && mem.read(map + l.hmap_b as u64, &mut fields[1..]),
                ) else {
                    self.end = WalkEnd::Unreadable as u64;
                    return;
                };
                let b = fields[1] as u64 & 63;
                if b > 6 {
                    self.end = WalkEnd::TooLarge as u64;
                    return;
                }
                self.array = buckets;
                self.count = if buckets == 0 { 0 } else { 1 << b };
                self.next_array = old;
                self.next_count = if old == 0 {
                    0
                } else if fields[0] & SAME_SIZE_GROW != 0 || b == 0 {
                    1 << b
                } else {
                    1 << (b - 1)
                };
            }
            MAP_SWISS => {
                // Neighbours in every release so far: one read.
                let words = if l.map_dir_len == l.map_dir_ptr + 8 {
                    mem.pair(map + l.map_dir_ptr as u64).map(|(d, n)| (Some(d), Some(n)))
                } else {
                    None
                };
                let (dir, len) = match words {
                    Some(w) => w,
                    None => (mem.word(map + l.map_dir_ptr as u64), mem.word(map + l.map_dir_len as u64)),
                };
                let (Some(dir), Some(len)) = (dir, len) else {
                    self.end = WalkEnd::Unreadable as u64;
                    return;
                };
                if len == 0 {
                    // A small map: one group, or none yet.
                    self.array = dir;
                    self.count = if dir == 0 { 0 } else { 1 };
                } else if len > MAX_DIR {
                    self.end = WalkEnd::TooLarge as u64;
                } else {
                    self.next_array = dir;
                    self.next_count = len;
                }
            }
            _ => self.end = WalkEnd::Unreadable as u64,
        }
    }

    pub fn done(&self) -> bool {
        self.end != WalkEnd::Walking as u64
    }

    /// Takes the next bucket or group and looks at its eight slots, or moves to the next array;
    /// false when the walk is over: every slot was seen, or both keys were found (a key is in
    /// a map once), or a limit or a failed read ended it. The slots are written out, not a
    /// loop: Linux 6.1's verifier refuses a loop whose head follows a helper call (back-edge).
    #[inline(always)]
    pub fn step<M: Memory>(&mut self, l: &MapLayout, mem: &mut M) -> bool {
        if self.done() {
            return false;
        }
        let hmap = self.kind == MAP_HMAP as u64;
        if self.cur == 0 {
            if self.index >= self.count {
                self.next_source(l, mem);
                return !self.done();
            }
            let size = if hmap { HMAP_BUCKET } else { SWISS_GROUP };
            self.cur = self.array.wrapping_add(self.index.wrapping_mul(size));
            self.index += 1;
        }
        let group = self.cur;
        if self.visited >= MAX_CONTAINERS {
            self.end = WalkEnd::TooLarge as u64;
            return false;
        }
        self.visited += 1;
        let size = if hmap { HMAP_BUCKET } else { SWISS_GROUP } as usize;
        if !mem.read(group, &mut self.group.0[..size]) {
            self.end = WalkEnd::Unreadable as u64;
            return false;
        }
        self.ctrl = word_at(&self.group, 0);
        self.look(0, group, hmap, mem);
        self.look(1, group, hmap, mem);
        self.look(2, group, hmap, mem);
        self.look(3, group, hmap, mem);
        self.look(4, group, hmap, mem);
        self.look(5, group, hmap, mem);
        self.look(6, group, hmap, mem);
        self.look(7, group, hmap, mem);
        if self.traceparent_elem != 0 && self.user_agent_elem != 0 {
            self.end = WalkEnd::Complete as u64;
            return false;
        }
        self.cur = if hmap { word_at(&self.group, HMAP_OVERFLOW as usize) } else { 0 };
        true
    }

    /// Looks at slot `i` of the container at `group` (copied in `self.group`).
    #[inline(always)]
    fn look<M: Memory>(&mut self, i: u64, group: u64, hmap: bool, mem: &mut M) {
        let c = (self.ctrl >> (8 * i)) as u8;
        let full = if hmap { c >= MIN_TOP_HASH } else { c & 0x80 == 0 };
        if !full {
            return;
        }
        // Offsets of the slot's key and element in the container.
        let (key, elem) = if hmap {
            (HMAP_KEYS + 16 * i, HMAP_ELEMS + 24 * i)
        } else {
            let slot = 8 + SWISS_SLOT * i;
            (slot, slot + 16)
        };
        let (ptr, len) = (word_at(&self.group, key as usize), word_at(&self.group, key as usize + 8));
        if len == TRACEPARENT_KEY.len() as u64 {
            if self.key_words(ptr, true, mem) == Some(key_words(TRACEPARENT_KEY)) {
                self.traceparent_elem = group + elem;
            }
        } else if len == USER_AGENT_KEY.len() as u64
            && self.key_words(ptr, false, mem) == Some(key_words(USER_AGENT_KEY))
        {
            self.user_agent_elem = group + elem;
        }
    }

    /// The key at `ptr` (11 bytes when `long`, else 10) as two words, zero-padded: from the
    /// key window when the key lies in it (net/textproto allocates the keys of one request one
    /// after the other, so a window holds many), else read alone.
    #[inline(always)]
    fn key_words<M: Memory>(&mut self, ptr: u64, long: bool, mem: &mut M) -> Option<(u64, u64)> {
        let at = ptr & !(KEY_WINDOW as u64 - 1);
        if self.keys_base != at {
            self.keys_base = at;
            self.keys_ok = mem.read(at, &mut self.keys.0[..KEY_WINDOW]) as u64;
        }
        let len = if long { 11 } else { 10 };
        let o = (ptr - at) as usize & (KEY_WINDOW - 1);
        let (lo, hi) = if self.keys_ok != 0 && o + len <= KEY_WINDOW {
            (self.keys.word(o), self.keys.word(o + 8))
        } else {
            let mut k = KeyBuf([0; 16]);
            let ok = if long { mem.read(ptr, &mut k.0[..11]) } else { mem.read(ptr, &mut k.0[..10]) };
            if !ok {
                return None;
            }
            (aligned(&k.0[..8]), aligned(&k.0[8..]))
        };
        Some((lo, hi & ((1u64 << (8 * (len - 8))) - 1)))
    }

    /// The current array is done: hmap moves to the old buckets, Swiss to the next table.
    #[inline(always)]
    fn next_source<M: Memory>(&mut self, l: &MapLayout, mem: &mut M) {
        if self.kind == MAP_HMAP as u64 {
            if self.next_count == 0 {
                self.end = WalkEnd::Complete as u64;
                return;
            }
            self.array = self.next_array;
            self.count = self.next_count;
            self.index = 0;
            self.next_count = 0;
            return;
        }
        if self.dir_index >= self.next_count || self.dir_index >= MAX_DIR {
            self.end = WalkEnd::Complete as u64;
            return;
        }
        let at = self.next_array.wrapping_add(8 * self.dir_index);
        self.dir_index += 1;
        let Some(table) = mem.word(at) else {
            self.end = WalkEnd::Unreadable as u64;
            return;
        };
        // Entries of one table are neighbours in the directory.
        if table == self.prev_table {
            return;
        }
        self.prev_table = table;
        let (Some(data), Some(mask)) =
            (mem.word(table + l.table_groups_data as u64), mem.word(table + l.table_groups_mask as u64))
        else {
            self.end = WalkEnd::Unreadable as u64;
            return;
        };
        if mask >= MAX_CONTAINERS {
            self.end = WalkEnd::TooLarge as u64;
            return;
        }
        self.array = data;
        self.count = mask + 1;
        self.index = 0;
    }

    /// The address and length of the last value of the element at `elem` (a `[]string`).
    #[inline(always)]
    pub fn last_value<M: Memory>(elem: u64, mem: &mut M) -> Option<(u64, u64)> {
        let (ptr, len) = mem.pair(elem)?;
        if len == 0 || len > 64 {
            return None;
        }
        mem.pair(ptr.wrapping_add((len - 1) * 16))
    }
}

#[cfg(test)]
mod tests;
