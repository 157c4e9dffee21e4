//! bf16 matrix products on Intel AMX (Advanced Matrix Extensions): the scoring
//! pass of exact search, which ranks candidates in bf16 and re-scores the few
//! that can reach the top `k` in f32 (`eval::search`). One `TDPBF16PS`
//! multiplies a 16 x 32 bf16 tile by a 32 x 16 one into 16 x 16 f32 sums: 8,192
//! multiply-adds, sixteen times what one AVX-512 f32 FMA does per cycle.
//!
//! Rust has no stable AMX intrinsics, so the five instructions used here
//! (`ldtilecfg`, `tilezero`, `tileloadd`, `tdpbf16ps`, `tilestored`,
//! `tilerelease`) are inline assembly. Linux hands out the tile registers only
//! to a process that asks (`arch_prctl(ARCH_REQ_XCOMP_PERM)`); [`available`]
//! asks once and says whether the CPU and the kernel allow it.

use half::bf16;
use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows of a tile, and columns (f32 sums) of an accumulator tile.
const TILE: usize = 16;
/// bf16 values in one tile row (64 bytes): the depth of one tile product.
const DEPTH: usize = 32;
/// Queries and gallery items are handled two tiles at a time.
pub const STEP: usize = 2 * TILE;

/// bf16's unit roundoff (8 significant bits, round to nearest even).
pub const BF16_UNIT: f64 = 1.0 / 256.0;

/// Whether this CPU has AMX-BF16 and the kernel granted this process the tile
/// registers. Asked once per process.
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    // CPUID leaf 7: EDX bit 22 is AMX-BF16, bit 24 AMX-TILE.
    let leaf = core::arch::x86_64::__cpuid_count(7, 0);
    if leaf.edx & (1 << 22) == 0 || leaf.edx & (1 << 24) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain system call with two integer arguments.
    let granted = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    granted == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

/// Row vectors (queries) in bf16, in the layout tile loads read fastest: blocks
/// of [`TILE`] rows; in a block, chunk `c` (values `32c..32c + 32` of the 16
/// rows) is one contiguous 1 KiB tile. Rows are padded with zeros to a multiple
/// of [`DEPTH`] values, and zero rows pad to a multiple of [`STEP`].
pub struct Bf16Rows {
    data: Vec<bf16>,
    pub rows: usize,
    depth: usize,
}

impl Bf16Rows {
    pub fn new(data: &[f32], rows: usize, dim: usize) -> Self {
        let depth = round_up(dim.max(1), DEPTH);
        let mut out = vec![bf16::ZERO; round_up(rows, STEP) * depth];
        out.par_chunks_mut(TILE * depth)
            .enumerate()
            .for_each(|(b, block)| {
                for r in 0..TILE {
                    let row = b * TILE + r;
                    if row >= rows {
                        break;
                    }
                    for (v, &x) in data[row * dim..(row + 1) * dim].iter().enumerate() {
                        block[(v / DEPTH) * TILE * DEPTH + r * DEPTH + v % DEPTH] =
                            bf16::from_f32(x);
                    }
                }
            });
        Bf16Rows {
            data: out,
            rows,
            depth,
        }
    }
}

/// Column vectors (gallery items) in bf16, in the pair-interleaved layout tile
/// products read: blocks of [`TILE`] items; in a block, row `p` holds values
/// `2p` and `2p + 1` of each of the 16 items (64 bytes). Zero items pad the last
/// block up to a multiple of [`STEP`].
pub struct PackedColumns {
    data: Vec<bf16>,
    pub items: usize,
    depth: usize,
}

impl PackedColumns {
    pub fn new(data: &[f32], items: usize, dim: usize) -> Self {
        let depth = round_up(dim.max(1), DEPTH);
        let padded = round_up(items, STEP);
        let mut out = vec![bf16::ZERO; padded * depth];
        out.par_chunks_mut(TILE * depth)
            .enumerate()
            .for_each(|(b, block)| {
                for i in 0..TILE {
                    let item = b * TILE + i;
                    if item >= items {
                        break;
                    }
                    for (v, &x) in data[item * dim..(item + 1) * dim].iter().enumerate() {
                        block[(v / 2) * 2 * TILE + 2 * i + v % 2] = bf16::from_f32(x);
                    }
                }
            });
        PackedColumns {
            data: out,
            items,
            depth,
        }
    }
}

/// The tile configuration: palette 1, eight tiles of 16 rows x 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    bytes_per_row: [u16; 16],
    rows: [u8; 16],
}

/// `out = rows[r0..r0 + nr] · columns[c0..c0 + nc]` in f32 from bf16 products:
/// row `r` of the result at `out[r * out_stride..][..nc]`. `r0`, `nr`, `c0` and
/// `nc` are multiples of [`STEP`] inside the padded matrices. Panics if AMX is
/// not [`available`].
#[allow(clippy::too_many_arguments)]
pub fn scores(
    rows: &Bf16Rows,
    r0: usize,
    nr: usize,
    columns: &PackedColumns,
    c0: usize,
    nc: usize,
    out: &mut [f32],
    out_stride: usize,
) {
    assert!(available(), "AMX scoring on a machine without AMX");
    assert_eq!(
        rows.depth, columns.depth,
        "bf16 operands of different depths"
    );
    assert!(
        [r0, nr, c0, nc].iter().all(|x| x.is_multiple_of(STEP)),
        "tile-misaligned scores"
    );
    assert!(
        (r0 + nr) * rows.depth <= rows.data.len(),
        "rows past the padded matrix"
    );
    assert!(
        (c0 + nc) * columns.depth <= columns.data.len(),
        "columns past the padded matrix"
    );
    assert!(nc <= out_stride, "score rows overlap");
    assert!(
        nr == 0 || out.len() >= (nr - 1) * out_stride + nc,
        "score buffer too small"
    );
    if nr == 0 || nc == 0 {
        return;
    }
    let depth = rows.depth;
    // Every tile (queries' and gallery's) is 16 rows of 64 contiguous bytes.
    let tile_stride = 64usize;
    let block_bytes = TILE * depth * 2;
    let out_stride_bytes = out_stride * 4;
    let mut config = TileConfig {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        bytes_per_row: [0; 16],
        rows: [0; 16],
    };
    for t in 0..8 {
        config.bytes_per_row[t] = 64;
        config.rows[t] = TILE as u8;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `available()` checked that the CPU has AMX and the kernel granted
    // the tile state. Every tile load reads 1 KiB (16 rows of 64 bytes, stride
    // 64) that the assertions above keep inside `rows.data` (row blocks of
    // r0..r0 + nr, chunk c) and `columns.data` (item blocks of c0..c0 + nc,
    // pair rows 16c..16c + 16); every store writes 16 rows of 64 bytes, row r
    // at `out[r * out_stride + column..]` with column + 16 <= nc <= out_stride.
    unsafe {
        std::arch::asm!("ldtilecfg [{}]", in(reg) &config, options(nostack, readonly));
        for qr in (0..nr).step_by(STEP) {
            let a0 = rows.data.as_ptr().cast::<u8>().add((r0 + qr) * depth * 2);
            let a1 = a0.add(TILE * depth * 2);
            for gc in (0..nc).step_by(STEP) {
                let block = (c0 + gc) / TILE;
                let b0 = columns.data.as_ptr().cast::<u8>().add(block * block_bytes);
                let b1 = b0.add(block_bytes);
                std::arch::asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for c in 0..depth / DEPTH {
                    std::arch::asm!(
                        "tileloadd tmm4, [{a0} + {rs}*1]",
                        "tileloadd tmm5, [{a1} + {rs}*1]",
                        "tileloadd tmm6, [{b0} + {bs}*1]",
                        "tileloadd tmm7, [{b1} + {bs}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(c * TILE * 64),
                        a1 = in(reg) a1.add(c * TILE * 64),
                        b0 = in(reg) b0.add(c * TILE * 64),
                        b1 = in(reg) b1.add(c * TILE * 64),
                        rs = in(reg) tile_stride,
                        bs = in(reg) tile_stride,
                        options(nostack, readonly)
                    );
                }
                let o = out
                    .as_mut_ptr()
                    .cast::<u8>()
                    .add(qr * out_stride_bytes + gc * 4);
                std::arch::asm!(
                    "tilestored [{o00} + {s}*1], tmm0",
                    "tilestored [{o01} + {s}*1], tmm1",
                    "tilestored [{o10} + {s}*1], tmm2",
                    "tilestored [{o11} + {s}*1], tmm3",
                    o00 = in(reg) o,
                    o01 = in(reg) o.add(TILE * 4),
                    o10 = in(reg) o.add(TILE * out_stride_bytes),
                    o11 = in(reg) o.add(TILE * out_stride_bytes + TILE * 4),
                    s = in(reg) out_stride_bytes,
                    options(nostack)
                );
            }
        }
        std::arch::asm!("tilerelease", options(nostack, nomem));
    }
    // Elsewhere `available()` is false and the assertion above has panicked.
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (tile_stride, block_bytes, out_stride_bytes, config);
}
