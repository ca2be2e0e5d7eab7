// WebAssembly SIMD kernels for the engine, compiled by scripts/build-wasm.mjs into build/kernels.wasm.
//
// The module imports one shared memory; the host (src/engine/kernels/wasm.ts) owns every byte of it,
// passes raw byte addresses, and gives each thread its own packing workspace. Nothing here allocates,
// and there are no data segments, so every worker can instantiate the module on the same memory
// without re-initialising anything.
//
// sgemm follows the usual cache-blocked layout: a KC x NC panel of op(B) is packed into NR-wide strips
// (so the micro-kernel streams it contiguously from L1/L2), an MC x KC block of op(A) into MR-tall
// strips with every value pre-broadcast to a vector, and a 5 x 8 register tile accumulates one MR x NR
// block of C over KC steps. V8 keeps the 10 accumulators, 2 B vectors and one A vector in xmm registers
// without spills; 6 x 8 spills, and the loop is bound by instruction issue as much as by the FP pipes,
// so plain loads with folded offsets (pre-broadcast A) beat load-splats. Every element of C is the same
// sequence of fp32 operations whatever tile, edge or thread computes it, so threaded results are
// bit-identical to one thread.

const MR: i32 = 5;
const NR: i32 = 8;
const KC: i32 = 256;
const MC: i32 = 120;
const NC: i32 = 2048;

/** Floats of workspace one thread needs for sgemmPacked (packed A block, packed B panel, edge tile). */
export function packedWorkspaceFloats(): i32 {
  return MC * KC * 4 + KC * NC + MR * NR;
}

/** Rows of C per register tile; the host splits rows between threads in multiples of it. */
export function tileRows(): i32 {
  return MR;
}

/** Columns of C per register tile; the host splits columns between threads in multiples of it. */
export function tileCols(): i32 {
  return NR;
}

// ---------------------------------------------------------------------------------------------------
// Packing. A(i, k) lives at a + 4 * (i * rsA + k * csA): (rsA, csA) = (lda, 1) plain, (1, lda) transposed.

function transpose4(r0: v128, r1: v128, r2: v128, r3: v128, dst: usize, stride: usize): void {
  const t0 = f32x4.shuffle(r0, r1, 0, 4, 1, 5);
  const t1 = f32x4.shuffle(r0, r1, 2, 6, 3, 7);
  const t2 = f32x4.shuffle(r2, r3, 0, 4, 1, 5);
  const t3 = f32x4.shuffle(r2, r3, 2, 6, 3, 7);
  v128.store(dst, f32x4.shuffle(t0, t2, 0, 1, 4, 5));
  v128.store(dst + stride, f32x4.shuffle(t0, t2, 2, 3, 6, 7));
  v128.store(dst + 2 * stride, f32x4.shuffle(t1, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * stride, f32x4.shuffle(t1, t3, 2, 3, 6, 7));
}

/**
 * Packs rows [i0, i0+mc) x cols [k0, k0+kc) of op(A) into MR-tall strips, k-major, zero-padded, each
 * value already broadcast to a full vector (16 bytes): the micro-kernel then reads it with a plain
 * load whose offset V8 folds into the address, instead of a load-splat that costs an extra lea.
 */
function packA(transA: bool, a: usize, lda: i32, i0: i32, k0: i32, mc: i32, kc: i32, dst: usize): void {
  const ld = <usize>lda << 2;
  const stepI: usize = transA ? 4 : ld;
  const stepK: usize = transA ? ld : 4;
  for (let i = 0; i < mc; i += MR) {
    const rows = min(MR, mc - i);
    let d = dst + (<usize>(i * kc) << 4);
    let src = a + <usize>(i0 + i) * stepI + <usize>k0 * stepK;
    if (rows == MR) {
      for (let k = 0; k < kc; k++) {
        v128.store(d, v128.load32_splat(src));
        v128.store(d, v128.load32_splat(src + stepI), 16);
        v128.store(d, v128.load32_splat(src + 2 * stepI), 32);
        v128.store(d, v128.load32_splat(src + 3 * stepI), 48);
        v128.store(d, v128.load32_splat(src + 4 * stepI), 64);
        d += 80;
        src += stepK;
      }
    } else {
      for (let k = 0; k < kc; k++) {
        for (let r = 0; r < MR; r++) {
          v128.store(d, r < rows ? v128.load32_splat(src + <usize>r * stepI) : f32x4.splat(0));
          d += 16;
        }
        src += stepK;
      }
    }
  }
}

/** Packs rows [k0, k0+kc) x cols [j0, j0+nc) of op(B) into NR-wide strips, k-major, zero-padded. */
function packB(transB: bool, b: usize, ldb: i32, k0: i32, j0: i32, kc: i32, nc: i32, dst: usize): void {
  const ld = <usize>ldb << 2;
  for (let j = 0; j < nc; j += NR) {
    const cols = min(NR, nc - j);
    const strip = dst + (<usize>(j * kc) << 2);
    if (cols == NR && !transB) {
      let src = b + <usize>k0 * ld + (<usize>(j0 + j) << 2);
      for (let k = 0; k < kc; k++) {
        const d = strip + (<usize>k << 5);
        v128.store(d, v128.load(src));
        v128.store(d, v128.load(src, 16), 16);
        src += ld;
      }
    } else if (cols == NR) {
      // B is stored [N, K]: transpose 4 x 4 blocks so each k row of the strip is contiguous.
      const src = b + <usize>(j0 + j) * ld + (<usize>k0 << 2);
      let k = 0;
      for (; k + 4 <= kc; k += 4) {
        const s = src + (<usize>k << 2);
        const d = strip + (<usize>k << 5);
        transpose4(v128.load(s), v128.load(s + ld), v128.load(s + 2 * ld), v128.load(s + 3 * ld), d, 32);
        const s4 = s + 4 * ld;
        transpose4(
          v128.load(s4),
          v128.load(s4 + ld),
          v128.load(s4 + 2 * ld),
          v128.load(s4 + 3 * ld),
          d + 16,
          32,
        );
      }
      for (; k < kc; k++) {
        for (let c = 0; c < NR; c++) {
          store<f32>(strip + (<usize>(k * NR + c) << 2), load<f32>(src + <usize>c * ld + (<usize>k << 2)));
        }
      }
    } else {
      for (let k = 0; k < kc; k++) {
        for (let c = 0; c < NR; c++) {
          let v: f32 = 0;
          if (c < cols) {
            const jj = <usize>(j0 + j + c);
            const kk = <usize>(k0 + k);
            v = transB ? load<f32>(b + jj * ld + (kk << 2)) : load<f32>(b + kk * ld + (jj << 2));
          }
          store<f32>(strip + (<usize>(k * NR + c) << 2), v);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Micro-kernel: C[0:mr, 0:nr] = alpha * (Apanel * Bpanel) + beta * C (beta == 0: C is never read).

function update(acc: v128, c: usize, alpha: v128, beta: v128, overwrite: bool): void {
  if (overwrite) v128.store(c, f32x4.mul(alpha, acc));
  else v128.store(c, f32x4.add(f32x4.mul(alpha, acc), f32x4.mul(beta, v128.load(c))));
}

function micro5x8(
  kc: i32,
  pa: usize,
  pb: usize,
  c: usize,
  ldcBytes: usize,
  alpha: f32,
  beta: f32,
  mr: i32,
  nr: i32,
  tile: usize,
): void {
  let c00 = f32x4.splat(0);
  let c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0);
  let c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0);
  let c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0);
  let c31 = f32x4.splat(0);
  let c40 = f32x4.splat(0);
  let c41 = f32x4.splat(0);
  const end = pb + (<usize>kc << 5);
  while (pb < end) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let a = v128.load(pa);
    c00 = f32x4.add(c00, f32x4.mul(a, b0));
    c01 = f32x4.add(c01, f32x4.mul(a, b1));
    a = v128.load(pa, 16);
    c10 = f32x4.add(c10, f32x4.mul(a, b0));
    c11 = f32x4.add(c11, f32x4.mul(a, b1));
    a = v128.load(pa, 32);
    c20 = f32x4.add(c20, f32x4.mul(a, b0));
    c21 = f32x4.add(c21, f32x4.mul(a, b1));
    a = v128.load(pa, 48);
    c30 = f32x4.add(c30, f32x4.mul(a, b0));
    c31 = f32x4.add(c31, f32x4.mul(a, b1));
    a = v128.load(pa, 64);
    c40 = f32x4.add(c40, f32x4.mul(a, b0));
    c41 = f32x4.add(c41, f32x4.mul(a, b1));
    pa += 80;
    pb += 32;
  }
  const va = f32x4.splat(alpha);
  const vb = f32x4.splat(beta);
  const overwrite = beta == 0;
  if (mr == MR && nr == NR) {
    update(c00, c, va, vb, overwrite);
    update(c01, c + 16, va, vb, overwrite);
    c += ldcBytes;
    update(c10, c, va, vb, overwrite);
    update(c11, c + 16, va, vb, overwrite);
    c += ldcBytes;
    update(c20, c, va, vb, overwrite);
    update(c21, c + 16, va, vb, overwrite);
    c += ldcBytes;
    update(c30, c, va, vb, overwrite);
    update(c31, c + 16, va, vb, overwrite);
    c += ldcBytes;
    update(c40, c, va, vb, overwrite);
    update(c41, c + 16, va, vb, overwrite);
    return;
  }
  // Edge tile: park the sums, then update only the elements that exist, with the same fp32 ops.
  v128.store(tile, c00, 0);
  v128.store(tile, c01, 16);
  v128.store(tile, c10, 32);
  v128.store(tile, c11, 48);
  v128.store(tile, c20, 64);
  v128.store(tile, c21, 80);
  v128.store(tile, c30, 96);
  v128.store(tile, c31, 112);
  v128.store(tile, c40, 128);
  v128.store(tile, c41, 144);
  for (let r = 0; r < mr; r++) {
    const row = c + <usize>r * ldcBytes;
    for (let j = 0; j < nr; j++) {
      const s = load<f32>(tile + (<usize>(r * NR + j) << 2));
      const p = row + (<usize>j << 2);
      if (overwrite) store<f32>(p, alpha * s);
      else store<f32>(p, alpha * s + beta * load<f32>(p));
    }
  }
}

/** C = beta * C for K == 0, where there is nothing to multiply (beta == 0 clears NaN too). */
function scaleC(M: i32, N: i32, beta: f32, c: usize, ldc: i32): void {
  for (let i = 0; i < M; i++) {
    const row = c + (<usize>(i * ldc) << 2);
    for (let j = 0; j < N; j++) {
      const p = row + (<usize>j << 2);
      store<f32>(p, beta == 0 ? 0 : beta * load<f32>(p));
    }
  }
}

/**
 * C = alpha * op(A) op(B) + beta * C, blocked and packed; good for every shape, best when M is not tiny.
 * Addresses are byte offsets into the shared memory, leading dimensions are in floats, and work must
 * hold packedWorkspaceFloats() floats private to the calling thread.
 */
export function sgemmPacked(
  transA: bool,
  transB: bool,
  M: i32,
  N: i32,
  K: i32,
  alpha: f32,
  a: usize,
  lda: i32,
  b: usize,
  ldb: i32,
  beta: f32,
  c: usize,
  ldc: i32,
  work: usize,
): void {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scaleC(M, N, beta, c, ldc);
    return;
  }
  const packedA = work;
  const packedB = packedA + (<usize>(MC * KC) << 4);
  const tile = packedB + (<usize>(KC * NC) << 2);
  const ldcBytes = <usize>ldc << 2;
  for (let jc = 0; jc < N; jc += NC) {
    const nc = min(NC, N - jc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = min(KC, K - pc);
      // Later K blocks accumulate onto what the first one wrote.
      const betaBlock: f32 = pc == 0 ? beta : 1;
      packB(transB, b, ldb, pc, jc, kc, nc, packedB);
      for (let ic = 0; ic < M; ic += MC) {
        const mc = min(MC, M - ic);
        packA(transA, a, lda, ic, pc, mc, kc, packedA);
        for (let jr = 0; jr < nc; jr += NR) {
          const nr = min(NR, nc - jr);
          const pb = packedB + (<usize>(jr * kc) << 2);
          const cCol = c + (<usize>(jc + jr) << 2);
          for (let ir = 0; ir < mc; ir += MR) {
            const mr = min(MR, mc - ir);
            micro5x8(
              kc,
              packedA + (<usize>(ir * kc) << 4),
              pb,
              cCol + <usize>(ic + ir) * ldcBytes,
              ldcBytes,
              alpha,
              betaBlock,
              mr,
              nr,
              tile,
            );
          }
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Skinny M (decode steps, a few sequences): packing B would cost as much as the product, so these
// stream B in place. A is read in place too (strided when transposed, which is cheap for so few rows).

function hsum(v: v128): f32 {
  return (
    f32x4.extract_lane(v, 0) +
    f32x4.extract_lane(v, 1) +
    (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3))
  );
}

function finish(p: usize, s: f32, alpha: f32, beta: f32): void {
  if (beta == 0) store<f32>(p, alpha * s);
  else store<f32>(p, alpha * s + beta * load<f32>(p));
}

/** One element of A B^T for a row of A and a row of B, both contiguous over K. */
function dot1(a: usize, b: usize, K: i32): f32 {
  let acc = f32x4.splat(0);
  let k = 0;
  for (; k + 4 <= K; k += 4) {
    const o = <usize>k << 2;
    acc = f32x4.add(acc, f32x4.mul(v128.load(a + o), v128.load(b + o)));
  }
  let s = hsum(acc);
  for (; k < K; k++) s += load<f32>(a + (<usize>k << 2)) * load<f32>(b + (<usize>k << 2));
  return s;
}

/** One row of A against 8 rows of B: 8 independent dot products, so the adds do not wait on each other. */
function ntRow1x8(a0: usize, b0: usize, lb: usize, K: i32, c0: usize, alpha: f32, beta: f32): void {
  let s0 = f32x4.splat(0);
  let s1 = f32x4.splat(0);
  let s2 = f32x4.splat(0);
  let s3 = f32x4.splat(0);
  let s4 = f32x4.splat(0);
  let s5 = f32x4.splat(0);
  let s6 = f32x4.splat(0);
  let s7 = f32x4.splat(0);
  let k = 0;
  for (; k + 4 <= K; k += 4) {
    const o = <usize>k << 2;
    const x = v128.load(a0 + o);
    let p = b0 + o;
    s0 = f32x4.add(s0, f32x4.mul(x, v128.load(p)));
    p += lb;
    s1 = f32x4.add(s1, f32x4.mul(x, v128.load(p)));
    p += lb;
    s2 = f32x4.add(s2, f32x4.mul(x, v128.load(p)));
    p += lb;
    s3 = f32x4.add(s3, f32x4.mul(x, v128.load(p)));
    p += lb;
    s4 = f32x4.add(s4, f32x4.mul(x, v128.load(p)));
    p += lb;
    s5 = f32x4.add(s5, f32x4.mul(x, v128.load(p)));
    p += lb;
    s6 = f32x4.add(s6, f32x4.mul(x, v128.load(p)));
    p += lb;
    s7 = f32x4.add(s7, f32x4.mul(x, v128.load(p)));
  }
  let t0 = hsum(s0);
  let t1 = hsum(s1);
  let t2 = hsum(s2);
  let t3 = hsum(s3);
  let t4 = hsum(s4);
  let t5 = hsum(s5);
  let t6 = hsum(s6);
  let t7 = hsum(s7);
  for (; k < K; k++) {
    const o = <usize>k << 2;
    const x = load<f32>(a0 + o);
    let p = b0 + o;
    t0 += x * load<f32>(p);
    p += lb;
    t1 += x * load<f32>(p);
    p += lb;
    t2 += x * load<f32>(p);
    p += lb;
    t3 += x * load<f32>(p);
    p += lb;
    t4 += x * load<f32>(p);
    p += lb;
    t5 += x * load<f32>(p);
    p += lb;
    t6 += x * load<f32>(p);
    p += lb;
    t7 += x * load<f32>(p);
  }
  finish(c0 + 0, t0, alpha, beta);
  finish(c0 + 4, t1, alpha, beta);
  finish(c0 + 8, t2, alpha, beta);
  finish(c0 + 12, t3, alpha, beta);
  finish(c0 + 16, t4, alpha, beta);
  finish(c0 + 20, t5, alpha, beta);
  finish(c0 + 24, t6, alpha, beta);
  finish(c0 + 28, t7, alpha, beta);
}

/** C = alpha A B^T + beta C for A [M, K] row-major (not transposed) and B [N, K]; any M, best M <= 8. */
function smallNT(
  M: i32,
  N: i32,
  K: i32,
  alpha: f32,
  a: usize,
  lda: i32,
  b: usize,
  ldb: i32,
  beta: f32,
  c: usize,
  ldc: i32,
): void {
  const la = <usize>lda << 2;
  const lb = <usize>ldb << 2;
  const lc = <usize>ldc << 2;
  const pairs = M & ~1;
  let j = 0;
  // j outer: the 4 rows of B stay in L1 while every pair of rows of A passes over them.
  for (; j + 4 <= N; j += 4) {
    const b0 = b + <usize>j * lb;
    const b1 = b0 + lb;
    const b2 = b1 + lb;
    const b3 = b2 + lb;
    for (let i = 0; i < pairs; i += 2) {
      const a0 = a + <usize>i * la;
      const a1 = a0 + la;
      let s00 = f32x4.splat(0);
      let s01 = f32x4.splat(0);
      let s02 = f32x4.splat(0);
      let s03 = f32x4.splat(0);
      let s10 = f32x4.splat(0);
      let s11 = f32x4.splat(0);
      let s12 = f32x4.splat(0);
      let s13 = f32x4.splat(0);
      let k = 0;
      for (; k + 4 <= K; k += 4) {
        const o = <usize>k << 2;
        const x0 = v128.load(a0 + o);
        const x1 = v128.load(a1 + o);
        const y0 = v128.load(b0 + o);
        const y1 = v128.load(b1 + o);
        const y2 = v128.load(b2 + o);
        const y3 = v128.load(b3 + o);
        s00 = f32x4.add(s00, f32x4.mul(x0, y0));
        s01 = f32x4.add(s01, f32x4.mul(x0, y1));
        s02 = f32x4.add(s02, f32x4.mul(x0, y2));
        s03 = f32x4.add(s03, f32x4.mul(x0, y3));
        s10 = f32x4.add(s10, f32x4.mul(x1, y0));
        s11 = f32x4.add(s11, f32x4.mul(x1, y1));
        s12 = f32x4.add(s12, f32x4.mul(x1, y2));
        s13 = f32x4.add(s13, f32x4.mul(x1, y3));
      }
      let t00 = hsum(s00);
      let t01 = hsum(s01);
      let t02 = hsum(s02);
      let t03 = hsum(s03);
      let t10 = hsum(s10);
      let t11 = hsum(s11);
      let t12 = hsum(s12);
      let t13 = hsum(s13);
      for (; k < K; k++) {
        const o = <usize>k << 2;
        const x0 = load<f32>(a0 + o);
        const x1 = load<f32>(a1 + o);
        const y0 = load<f32>(b0 + o);
        const y1 = load<f32>(b1 + o);
        const y2 = load<f32>(b2 + o);
        const y3 = load<f32>(b3 + o);
        t00 += x0 * y0;
        t01 += x0 * y1;
        t02 += x0 * y2;
        t03 += x0 * y3;
        t10 += x1 * y0;
        t11 += x1 * y1;
        t12 += x1 * y2;
        t13 += x1 * y3;
      }
      const c0 = c + <usize>i * lc + (<usize>j << 2);
      const c1 = c0 + lc;
      finish(c0, t00, alpha, beta);
      finish(c0 + 4, t01, alpha, beta);
      finish(c0 + 8, t02, alpha, beta);
      finish(c0 + 12, t03, alpha, beta);
      finish(c1, t10, alpha, beta);
      finish(c1 + 4, t11, alpha, beta);
      finish(c1 + 8, t12, alpha, beta);
      finish(c1 + 12, t13, alpha, beta);
    }
  }
  for (; j < N; j++) {
    const b0 = b + <usize>j * lb;
    for (let i = 0; i < pairs; i++) {
      finish(c + <usize>i * lc + (<usize>j << 2), dot1(a + <usize>i * la, b0, K), alpha, beta);
    }
  }
  if (pairs < M) {
    // The odd last row (all of a decode step with one sequence): 8 columns at a time.
    const a0 = a + <usize>pairs * la;
    const c0 = c + <usize>pairs * lc;
    let jj = 0;
    for (; jj + 8 <= N; jj += 8) ntRow1x8(a0, b + <usize>jj * lb, lb, K, c0 + (<usize>jj << 2), alpha, beta);
    for (; jj < N; jj++) finish(c0 + (<usize>jj << 2), dot1(a0, b + <usize>jj * lb, K), alpha, beta);
  }
}

/** Up to 4 rows (rows >= 1) of op(A) B, 8 columns; rows past `rows` re-read row 0 and are not stored. */
function nn4x8(
  rows: i32,
  K: i32,
  a: usize,
  stepI: usize,
  stepK: usize,
  b: usize,
  lb: usize,
  c: usize,
  lc: usize,
  alpha: f32,
  beta: f32,
): void {
  const o1: usize = rows > 1 ? stepI : 0;
  const o2: usize = rows > 2 ? 2 * stepI : 0;
  const o3: usize = rows > 3 ? 3 * stepI : 0;
  let c00 = f32x4.splat(0);
  let c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0);
  let c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0);
  let c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0);
  let c31 = f32x4.splat(0);
  let pa = a;
  let pb = b;
  for (let k = 0; k < K; k++) {
    const b0 = v128.load(pb);
    const b1 = v128.load(pb, 16);
    let x = v128.load32_splat(pa);
    c00 = f32x4.add(c00, f32x4.mul(x, b0));
    c01 = f32x4.add(c01, f32x4.mul(x, b1));
    x = v128.load32_splat(pa + o1);
    c10 = f32x4.add(c10, f32x4.mul(x, b0));
    c11 = f32x4.add(c11, f32x4.mul(x, b1));
    x = v128.load32_splat(pa + o2);
    c20 = f32x4.add(c20, f32x4.mul(x, b0));
    c21 = f32x4.add(c21, f32x4.mul(x, b1));
    x = v128.load32_splat(pa + o3);
    c30 = f32x4.add(c30, f32x4.mul(x, b0));
    c31 = f32x4.add(c31, f32x4.mul(x, b1));
    pa += stepK;
    pb += lb;
  }
  const va = f32x4.splat(alpha);
  const vb = f32x4.splat(beta);
  const overwrite = beta == 0;
  update(c00, c, va, vb, overwrite);
  update(c01, c + 16, va, vb, overwrite);
  if (rows > 1) {
    update(c10, c + lc, va, vb, overwrite);
    update(c11, c + lc + 16, va, vb, overwrite);
  }
  if (rows > 2) {
    update(c20, c + 2 * lc, va, vb, overwrite);
    update(c21, c + 2 * lc + 16, va, vb, overwrite);
  }
  if (rows > 3) {
    update(c30, c + 3 * lc, va, vb, overwrite);
    update(c31, c + 3 * lc + 16, va, vb, overwrite);
  }
}

/** Two rows of op(A) B, 16 columns: 8 accumulators, B loaded once for both rows. */
function nn2x16(
  K: i32,
  a: usize,
  stepI: usize,
  stepK: usize,
  b: usize,
  lb: usize,
  c: usize,
  lc: usize,
  alpha: f32,
  beta: f32,
): void {
  let c00 = f32x4.splat(0);
  let c01 = f32x4.splat(0);
  let c02 = f32x4.splat(0);
  let c03 = f32x4.splat(0);
  let c10 = f32x4.splat(0);
  let c11 = f32x4.splat(0);
  let c12 = f32x4.splat(0);
  let c13 = f32x4.splat(0);
  let pa = a;
  let pb = b;
  for (let k = 0; k < K; k++) {
    const b0 = v128.load(pb, 0);
    const b1 = v128.load(pb, 16);
    const b2 = v128.load(pb, 32);
    const b3 = v128.load(pb, 48);
    const x0 = v128.load32_splat(pa);
    c00 = f32x4.add(c00, f32x4.mul(x0, b0));
    c01 = f32x4.add(c01, f32x4.mul(x0, b1));
    c02 = f32x4.add(c02, f32x4.mul(x0, b2));
    c03 = f32x4.add(c03, f32x4.mul(x0, b3));
    const x1 = v128.load32_splat(pa + stepI);
    c10 = f32x4.add(c10, f32x4.mul(x1, b0));
    c11 = f32x4.add(c11, f32x4.mul(x1, b1));
    c12 = f32x4.add(c12, f32x4.mul(x1, b2));
    c13 = f32x4.add(c13, f32x4.mul(x1, b3));
    pa += stepK;
    pb += lb;
  }
  const va = f32x4.splat(alpha);
  const vb = f32x4.splat(beta);
  const overwrite = beta == 0;
  update(c00, c, va, vb, overwrite);
  update(c01, c + 16, va, vb, overwrite);
  update(c02, c + 32, va, vb, overwrite);
  update(c03, c + 48, va, vb, overwrite);
  update(c10, c + lc, va, vb, overwrite);
  update(c11, c + lc + 16, va, vb, overwrite);
  update(c12, c + lc + 32, va, vb, overwrite);
  update(c13, c + lc + 48, va, vb, overwrite);
}

/** One row of op(A) B, 32 columns: 8 independent accumulators for a single row (decode). */
function nn1x32(
  K: i32,
  a: usize,
  stepI: usize,
  stepK: usize,
  b: usize,
  lb: usize,
  c: usize,
  lc: usize,
  alpha: f32,
  beta: f32,
): void {
  let c00 = f32x4.splat(0);
  let c01 = f32x4.splat(0);
  let c02 = f32x4.splat(0);
  let c03 = f32x4.splat(0);
  let c04 = f32x4.splat(0);
  let c05 = f32x4.splat(0);
  let c06 = f32x4.splat(0);
  let c07 = f32x4.splat(0);
  let pa = a;
  let pb = b;
  for (let k = 0; k < K; k++) {
    const b0 = v128.load(pb, 0);
    const b1 = v128.load(pb, 16);
    const b2 = v128.load(pb, 32);
    const b3 = v128.load(pb, 48);
    const b4 = v128.load(pb, 64);
    const b5 = v128.load(pb, 80);
    const b6 = v128.load(pb, 96);
    const b7 = v128.load(pb, 112);
    const x0 = v128.load32_splat(pa);
    c00 = f32x4.add(c00, f32x4.mul(x0, b0));
    c01 = f32x4.add(c01, f32x4.mul(x0, b1));
    c02 = f32x4.add(c02, f32x4.mul(x0, b2));
    c03 = f32x4.add(c03, f32x4.mul(x0, b3));
    c04 = f32x4.add(c04, f32x4.mul(x0, b4));
    c05 = f32x4.add(c05, f32x4.mul(x0, b5));
    c06 = f32x4.add(c06, f32x4.mul(x0, b6));
    c07 = f32x4.add(c07, f32x4.mul(x0, b7));
    pa += stepK;
    pb += lb;
  }
  const va = f32x4.splat(alpha);
  const vb = f32x4.splat(beta);
  const overwrite = beta == 0;
  update(c00, c, va, vb, overwrite);
  update(c01, c + 16, va, vb, overwrite);
  update(c02, c + 32, va, vb, overwrite);
  update(c03, c + 48, va, vb, overwrite);
  update(c04, c + 64, va, vb, overwrite);
  update(c05, c + 80, va, vb, overwrite);
  update(c06, c + 96, va, vb, overwrite);
  update(c07, c + 112, va, vb, overwrite);
}

/** C = alpha op(A) B + beta C for B [K, N] row-major, streaming B in place; best for few rows. */
function smallNN(
  transA: bool,
  M: i32,
  N: i32,
  K: i32,
  alpha: f32,
  a: usize,
  lda: i32,
  b: usize,
  ldb: i32,
  beta: f32,
  c: usize,
  ldc: i32,
): void {
  const la = <usize>lda << 2;
  const lb = <usize>ldb << 2;
  const lc = <usize>ldc << 2;
  // Address step of op(A)(i, k) along i and along k.
  const stepI: usize = transA ? 4 : la;
  const stepK: usize = transA ? la : 4;
  for (let i = 0; i < M; ) {
    const rows = min(4, M - i);
    const ai = a + <usize>i * stepI;
    const ci = c + <usize>i * lc;
    let j = 0;
    // Wider tiles for one or two rows keep 8 accumulators busy instead of computing unused rows.
    if (rows == 1) {
      for (; j + 32 <= N; j += 32) nn1x32(K, ai, stepI, stepK, b + (<usize>j << 2), lb, ci + (<usize>j << 2), lc, alpha, beta);
    } else if (rows == 2) {
      for (; j + 16 <= N; j += 16) nn2x16(K, ai, stepI, stepK, b + (<usize>j << 2), lb, ci + (<usize>j << 2), lc, alpha, beta);
    }
    for (; j + 8 <= N; j += 8) {
      nn4x8(rows, K, ai, stepI, stepK, b + (<usize>j << 2), lb, ci + (<usize>j << 2), lc, alpha, beta);
    }
    // Leftover columns: scalar, with the same fp32 operation order as a vector lane.
    for (; j < N; j++) {
      for (let r = 0; r < rows; r++) {
        let s: f32 = 0;
        let pa = ai + <usize>r * stepI;
        let pb = b + (<usize>j << 2);
        for (let k = 0; k < K; k++) {
          s += load<f32>(pa) * load<f32>(pb);
          pa += stepK;
          pb += lb;
        }
        finish(ci + <usize>r * lc + (<usize>j << 2), s, alpha, beta);
      }
    }
    i += rows;
  }
}

/**
 * C = alpha * op(A) op(B) + beta * C without packing, for few rows of C (decode). Not for transA
 * together with transB (the host routes that to sgemmPacked). Same addressing as sgemmPacked.
 */
export function sgemmSmall(
  transA: bool,
  transB: bool,
  M: i32,
  N: i32,
  K: i32,
  alpha: f32,
  a: usize,
  lda: i32,
  b: usize,
  ldb: i32,
  beta: f32,
  c: usize,
  ldc: i32,
): void {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scaleC(M, N, beta, c, ldc);
    return;
  }
  if (transB) {
    if (transA) unreachable();
    smallNT(M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  } else {
    smallNN(transA, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  }
}

// ---------------------------------------------------------------------------------------------------
// Batches: many independent products (attention heads) in one host call, so the thread pool can share
// them out. The host writes a table of BATCH_ITEM_BYTES records: kind (1 = unpacked path), M, N, K,
// a, lda, b, ldb, c, ldc as 32-bit words.

const BATCH_ITEM_BYTES: usize = 40;

/** Bytes of one batch table record. */
export function batchItemBytes(): i32 {
  return <i32>BATCH_ITEM_BYTES;
}

/** Runs record `index` of a batch table with the shared transposes and scalars. */
export function sgemmBatchItem(
  table: usize,
  index: i32,
  transA: bool,
  transB: bool,
  alpha: f32,
  beta: f32,
  work: usize,
): void {
  const p = table + <usize>index * BATCH_ITEM_BYTES;
  const M = load<i32>(p, 4);
  const N = load<i32>(p, 8);
  const K = load<i32>(p, 12);
  const a = load<u32>(p, 16);
  const lda = load<i32>(p, 20);
  const b = load<u32>(p, 24);
  const ldb = load<i32>(p, 28);
  const c = load<u32>(p, 32);
  const ldc = load<i32>(p, 36);
  if (load<i32>(p) == 1) sgemmSmall(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc);
  else sgemmPacked(transA, transB, M, N, K, alpha, a, lda, b, ldb, beta, c, ldc, work);
}

// ---------------------------------------------------------------------------------------------------
// SwiGLU: h = silu(gate) * up with gate | up side by side in each row of gu [N, 2I]. Four lanes at a
// time; a row's tail goes through the same vector code on one lane, so every element is the same fp32
// sequence wherever it sits (forward and recompute agree bit for bit).

/**
 * exp(x) in fp32 lanes: 2^k e^r, |r| <= ln2/2, degree-6 Taylor (relative error ~2e-7); NaN stays NaN,
 * x above ~88.03 gives +Infinity (k = 128 makes the scale's exponent all ones), x below -87.3 about 1e-38.
 */
function expLanes(x: v128): v128 {
  const clamped = f32x4.max(f32x4.min(x, f32x4.splat(89.0)), f32x4.splat(-87.3));
  const k = f32x4.nearest(f32x4.mul(clamped, f32x4.splat(1.44269504)));
  let r = f32x4.sub(clamped, f32x4.mul(k, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(k, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.0 / 720.0);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 120.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 24.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0 / 6.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(0.5));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.0));
  const scale = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(k), i32x4.splat(127)), 23);
  return f32x4.mul(p, scale);
}

/** h [N, I] = silu(gate) * up, sig [N, I] = sigmoid(gate), gu [N, 2I]; byte addresses. */
export function swigluForward(h: usize, sig: usize, gu: usize, N: i32, I: i32): void {
  const one = f32x4.splat(1.0);
  for (let n = 0; n < N; n++) {
    const g0 = gu + <usize>n * 8 * <usize>I;
    const u0 = g0 + 4 * <usize>I;
    const h0 = h + <usize>n * 4 * <usize>I;
    const s0 = sig + <usize>n * 4 * <usize>I;
    let i = 0;
    for (; i + 4 <= I; i += 4) {
      const o = <usize>i * 4;
      const g = v128.load(g0 + o);
      const s = f32x4.div(one, f32x4.add(one, expLanes(f32x4.neg(g))));
      v128.store(s0 + o, s);
      v128.store(h0 + o, f32x4.mul(f32x4.mul(g, s), v128.load(u0 + o)));
    }
    for (; i < I; i++) {
      const o = <usize>i * 4;
      const g = f32x4.splat(load<f32>(g0 + o));
      const s = f32x4.div(one, f32x4.add(one, expLanes(f32x4.neg(g))));
      store<f32>(s0 + o, f32x4.extract_lane(s, 0));
      store<f32>(h0 + o, f32x4.extract_lane(f32x4.mul(f32x4.mul(g, s), f32x4.splat(load<f32>(u0 + o))), 0));
    }
  }
}

/** h [N, I] = gate * sig * up again from the saved sigmoid (same operations as swigluForward). */
export function swigluRecompute(h: usize, gu: usize, sig: usize, N: i32, I: i32): void {
  for (let n = 0; n < N; n++) {
    const g0 = gu + <usize>n * 8 * <usize>I;
    const u0 = g0 + 4 * <usize>I;
    const h0 = h + <usize>n * 4 * <usize>I;
    const s0 = sig + <usize>n * 4 * <usize>I;
    let i = 0;
    for (; i + 4 <= I; i += 4) {
      const o = <usize>i * 4;
      v128.store(h0 + o, f32x4.mul(f32x4.mul(v128.load(g0 + o), v128.load(s0 + o)), v128.load(u0 + o)));
    }
    for (; i < I; i++) {
      const o = <usize>i * 4;
      store<f32>(h0 + o, load<f32>(g0 + o) * load<f32>(s0 + o) * load<f32>(u0 + o));
    }
  }
}

/** dgu [N, 2I] (overwritten) from dh [N, I]: d gate = dh u s (1 + g (1 - s)), d up = dh g s. */
export function swigluBackward(dgu: usize, dh: usize, gu: usize, sig: usize, N: i32, I: i32): void {
  const one = f32x4.splat(1.0);
  for (let n = 0; n < N; n++) {
    const g0 = gu + <usize>n * 8 * <usize>I;
    const u0 = g0 + 4 * <usize>I;
    const dg0 = dgu + <usize>n * 8 * <usize>I;
    const du0 = dg0 + 4 * <usize>I;
    const h0 = dh + <usize>n * 4 * <usize>I;
    const s0 = sig + <usize>n * 4 * <usize>I;
    let i = 0;
    for (; i + 4 <= I; i += 4) {
      const o = <usize>i * 4;
      const g = v128.load(g0 + o);
      const u = v128.load(u0 + o);
      const s = v128.load(s0 + o);
      const d = v128.load(h0 + o);
      const ds = f32x4.mul(d, s);
      const slope = f32x4.add(one, f32x4.mul(g, f32x4.sub(one, s)));
      v128.store(dg0 + o, f32x4.mul(f32x4.mul(ds, u), slope));
      v128.store(du0 + o, f32x4.mul(ds, g));
    }
    for (; i < I; i++) {
      const o = <usize>i * 4;
      const g = load<f32>(g0 + o);
      const s = load<f32>(s0 + o);
      const ds = load<f32>(h0 + o) * s;
      store<f32>(dg0 + o, ds * load<f32>(u0 + o) * (1 + g * (1 - s)));
      store<f32>(du0 + o, ds * g);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Element-wise jobs: the rest of a training step (attention's softmax, RMSNorm, the loss, AdamW) as
// chunks the thread pool can share. The host writes an argument table of 32-bit words: word 0 the
// operation, words 1-15 its arguments, and per-item records from word 16 on. elementwiseChunk(table, i)
// runs chunk i; chunks never share an output and each is computed the same way whichever thread runs
// it, so results are bit-identical at any thread count. Row operations cut rows into fixed chunks of
// word 1 rows (chosen by the host from the shape alone); block operations run record i.

const OP_SOFTMAX: i32 = 1;
const OP_SOFTMAX_BACKWARD: i32 = 2;
const OP_RMSNORM: i32 = 3;
const OP_RMSNORM_BACKWARD: i32 = 4;
const OP_ADAMW: i32 = 5;
const OP_LOGPROBS: i32 = 6;
const OP_LOGPROBS_BACKWARD: i32 = 7;
const OP_SPLIT_HEADS: i32 = 8;
const OP_MERGE_HEADS: i32 = 9;
const OP_CACHED_ATTENTION: i32 = 10;
const RECORDS: usize = 64;

function word(table: usize, i: i32): i32 {
  return load<i32>(table + (<usize>i << 2));
}

function address(table: usize, i: i32): usize {
  return <usize>load<u32>(table + (<usize>i << 2));
}

function real(table: usize, i: i32): f32 {
  return load<f32>(table + (<usize>i << 2));
}

/** Horizontal sum of four lanes in a fixed order ((0 + 1) + (2 + 3)). */
function laneSum(v: v128): f32 {
  return (f32x4.extract_lane(v, 0) + f32x4.extract_lane(v, 1)) + (f32x4.extract_lane(v, 2) + f32x4.extract_lane(v, 3));
}

/** Largest of four lanes. */
function laneMax(v: v128): f32 {
  return max(max(f32x4.extract_lane(v, 0), f32x4.extract_lane(v, 1)), max(f32x4.extract_lane(v, 2), f32x4.extract_lane(v, 3)));
}

/** x[from, to) of a row -> its softmax in place (max-subtracted); returns nothing, zeroes nothing. */
function softmaxSpan(row: usize, from: i32, to: i32): void {
  let mx = f32x4.splat(-Infinity);
  let j = from;
  for (; j + 4 <= to; j += 4) mx = f32x4.max(mx, v128.load(row + (<usize>j << 2)));
  let m = laneMax(mx);
  for (; j < to; j++) m = max(m, load<f32>(row + (<usize>j << 2)));
  const mv = f32x4.splat(m);
  let sv = f32x4.splat(0);
  j = from;
  for (; j + 4 <= to; j += 4) {
    const o = row + (<usize>j << 2);
    const e = expLanes(f32x4.sub(v128.load(o), mv));
    v128.store(o, e);
    sv = f32x4.add(sv, e);
  }
  let s = laneSum(sv);
  for (; j < to; j++) {
    const o = row + (<usize>j << 2);
    const e = f32x4.extract_lane(expLanes(f32x4.splat(load<f32>(o) - m)), 0);
    store<f32>(o, e);
    s += e;
  }
  const inv = f32x4.splat(1.0 / s);
  j = from;
  for (; j + 4 <= to; j += 4) {
    const o = row + (<usize>j << 2);
    v128.store(o, f32x4.mul(v128.load(o), inv));
  }
  for (; j < to; j++) {
    const o = row + (<usize>j << 2);
    store<f32>(o, load<f32>(o) * (1.0 / s));
  }
}

/** Causal softmax of one [len, len] score block in place (window > 0: only the last `window` keys). */
function softmaxBlock(p: usize, len: i32, window: i32): void {
  for (let i = 0; i < len; i++) {
    const row = p + (<usize>i * <usize>len << 2);
    const from = window > 0 && i >= window ? i - window + 1 : 0;
    softmaxSpan(row, from, i + 1);
    memory.fill(row, 0, <usize>from << 2);
    memory.fill(row + (<usize>(i + 1) << 2), 0, <usize>(len - i - 1) << 2);
  }
}

/** ds = P (dP - rowsum(P dP)) on and below the diagonal of one [len, len] block, 0 above (ds holds dP). */
function softmaxBackwardBlock(ds: usize, p: usize, len: i32): void {
  for (let i = 0; i < len; i++) {
    const off = <usize>i * <usize>len << 2;
    const d0 = ds + off;
    const p0 = p + off;
    const to = i + 1;
    let dv = f32x4.splat(0);
    let j = 0;
    for (; j + 4 <= to; j += 4) {
      const o = <usize>j << 2;
      dv = f32x4.add(dv, f32x4.mul(v128.load(p0 + o), v128.load(d0 + o)));
    }
    let dot = laneSum(dv);
    for (; j < to; j++) dot += load<f32>(p0 + (<usize>j << 2)) * load<f32>(d0 + (<usize>j << 2));
    const dotv = f32x4.splat(dot);
    j = 0;
    for (; j + 4 <= to; j += 4) {
      const o = <usize>j << 2;
      v128.store(d0 + o, f32x4.mul(v128.load(p0 + o), f32x4.sub(v128.load(d0 + o), dotv)));
    }
    for (; j < to; j++) {
      const o = <usize>j << 2;
      store<f32>(d0 + o, load<f32>(p0 + o) * (load<f32>(d0 + o) - dot));
    }
    memory.fill(d0 + (<usize>to << 2), 0, <usize>(len - to) << 2);
  }
}

/** Sum of squares of C floats at x (lanes, then a fixed-order tail). */
function sumSquares(x: usize, C: i32): f32 {
  let acc = f32x4.splat(0);
  let i = 0;
  for (; i + 4 <= C; i += 4) {
    const v = v128.load(x + (<usize>i << 2));
    acc = f32x4.add(acc, f32x4.mul(v, v));
  }
  let s = laneSum(acc);
  for (; i < C; i++) {
    const v = load<f32>(x + (<usize>i << 2));
    s += v * v;
  }
  return s;
}

/** RMSNorm rows [r0, r1): out = x * r * w, rstd = r = 1 / sqrt(mean(x^2) + eps). */
function rmsnormRows(out: usize, rstd: usize, x: usize, w: usize, C: i32, eps: f32, r0: i32, r1: i32): void {
  for (let n = r0; n < r1; n++) {
    const off = <usize>n * <usize>C << 2;
    const xr = x + off;
    const orow = out + off;
    const r = <f32>(1.0 / Math.sqrt(<f64>sumSquares(xr, C) / <f64>C + <f64>eps));
    store<f32>(rstd + (<usize>n << 2), r);
    const rv = f32x4.splat(r);
    let i = 0;
    for (; i + 4 <= C; i += 4) {
      const o = <usize>i << 2;
      v128.store(orow + o, f32x4.mul(f32x4.mul(v128.load(xr + o), rv), v128.load(w + o)));
    }
    for (; i < C; i++) {
      const o = <usize>i << 2;
      store<f32>(orow + o, load<f32>(xr + o) * r * load<f32>(w + o));
    }
  }
}

/**
 * RMSNorm backward rows [r0, r1): dx += r g w - (r^3 sum(g w x) / C) x with g = dout; this chunk's
 * dw contribution sum_n g x r is written (overwritten) to part [C], which the host adds up in order.
 */
function rmsnormBackwardRows(
  dx: usize, part: usize, dout: usize, x: usize, w: usize, rstd: usize, C: i32, r0: i32, r1: i32,
): void {
  memory.fill(part, 0, <usize>C << 2);
  for (let n = r0; n < r1; n++) {
    const off = <usize>n * <usize>C << 2;
    const gr = dout + off;
    const xr = x + off;
    const dxr = dx + off;
    const r = load<f32>(rstd + (<usize>n << 2));
    let acc = f32x4.splat(0);
    let i = 0;
    for (; i + 4 <= C; i += 4) {
      const o = <usize>i << 2;
      acc = f32x4.add(acc, f32x4.mul(f32x4.mul(v128.load(gr + o), v128.load(w + o)), v128.load(xr + o)));
    }
    let dot = laneSum(acc);
    for (; i < C; i++) {
      const o = <usize>i << 2;
      dot += load<f32>(gr + o) * load<f32>(w + o) * load<f32>(xr + o);
    }
    const coef = (r * r * r * dot) / <f32>C;
    const rv = f32x4.splat(r);
    const cv = f32x4.splat(coef);
    i = 0;
    for (; i + 4 <= C; i += 4) {
      const o = <usize>i << 2;
      const g = v128.load(gr + o);
      const xi = v128.load(xr + o);
      const d = f32x4.sub(f32x4.mul(f32x4.mul(rv, g), v128.load(w + o)), f32x4.mul(cv, xi));
      v128.store(dxr + o, f32x4.add(v128.load(dxr + o), d));
      v128.store(part + o, f32x4.add(v128.load(part + o), f32x4.mul(f32x4.mul(g, xi), rv)));
    }
    for (; i < C; i++) {
      const o = <usize>i << 2;
      const g = load<f32>(gr + o);
      const xi = load<f32>(xr + o);
      store<f32>(dxr + o, load<f32>(dxr + o) + (r * g * load<f32>(w + o) - coef * xi));
      store<f32>(part + o, load<f32>(part + o) + g * xi * r);
    }
  }
}

/**
 * AdamW over elements [i0, i1), in float64 exactly as the TypeScript loop of src/engine/optim.ts (so
 * both give the same bytes): p *= decay where masked; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
 * p -= stepSize m / (sqrt(v) / sqrtBc2 + eps). mask: one byte per parameter, or 0 for none.
 */
function adamwRange(
  params: usize,
  grads: usize,
  m: usize,
  v: usize,
  mask: usize,
  stepSize: f64,
  sqrtBc2: f64,
  decay: f64,
  b1: f64,
  b2: f64,
  eps: f64,
  i0: i32,
  i1: i32,
): void {
  // Two lanes of float64 at a time; every lane does the scalar loop's operations in its order (an
  // unmasked lane multiplies by 1, which is exact), so the bytes equal the TypeScript loop's.
  const vb1 = f64x2.splat(b1);
  const vc1 = f64x2.splat(1 - b1);
  const vb2 = f64x2.splat(b2);
  const vc2 = f64x2.splat(1 - b2);
  const vstep = f64x2.splat(stepSize);
  const vbc2 = f64x2.splat(sqrtBc2);
  const veps = f64x2.splat(eps);
  let i = i0;
  for (; i + 2 <= i1; i += 2) {
    const o = <usize>i << 2;
    const g = f64x2.promote_low_f32x4(v128.load64_zero(grads + o));
    let p = f64x2.promote_low_f32x4(v128.load64_zero(params + o));
    const d0 = mask == 0 || load<u8>(mask + <usize>i) != 0 ? decay : 1.0;
    const d1 = mask == 0 || load<u8>(mask + <usize>i + 1) != 0 ? decay : 1.0;
    p = f64x2.mul(p, f64x2.replace_lane(f64x2.splat(d0), 1, d1));
    const mi = f64x2.add(f64x2.mul(vb1, f64x2.promote_low_f32x4(v128.load64_zero(m + o))), f64x2.mul(vc1, g));
    const vi = f64x2.add(
      f64x2.mul(vb2, f64x2.promote_low_f32x4(v128.load64_zero(v + o))),
      f64x2.mul(f64x2.mul(vc2, g), g),
    );
    v128.store64_lane(m + o, f32x4.demote_f64x2_zero(mi), 0);
    v128.store64_lane(v + o, f32x4.demote_f64x2_zero(vi), 0);
    const update = f64x2.div(f64x2.mul(vstep, mi), f64x2.add(f64x2.div(f64x2.sqrt(vi), vbc2), veps));
    v128.store64_lane(params + o, f32x4.demote_f64x2_zero(f64x2.sub(p, update)), 0);
  }
  for (; i < i1; i++) {
    const o = <usize>i << 2;
    const g = <f64>load<f32>(grads + o);
    let p = <f64>load<f32>(params + o);
    if (mask == 0 || load<u8>(mask + <usize>i) != 0) p *= decay;
    const mi = b1 * <f64>load<f32>(m + o) + (1 - b1) * g;
    const vi = b2 * <f64>load<f32>(v + o) + (1 - b2) * g * g;
    store<f32>(m + o, <f32>mi);
    store<f32>(v + o, <f32>vi);
    store<f32>(params + o, <f32>(p - (stepSize * mi) / (Math.sqrt(vi) / sqrtBc2 + eps)));
  }
}

/**
 * Next-token softmax of records [r0, r1) of (row, target): probs[row] = softmax of logits[row] (V wide);
 * out (16 bytes per record) gets the row's max (f32 at +0) and sum exp(logits[row] - max) (f64 at +8).
 */
function softmaxRows(table: usize, logits: usize, probs: usize, out: usize, V: i32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    const rec = table + RECORDS + (<usize>r << 3);
    const row = load<i32>(rec);
    const off = <usize>row * <usize>V << 2;
    const lr = logits + off;
    const pr = probs + off;
    let mx = f32x4.splat(-Infinity);
    let j = 0;
    for (; j + 4 <= V; j += 4) mx = f32x4.max(mx, v128.load(lr + (<usize>j << 2)));
    let m = laneMax(mx);
    for (; j < V; j++) m = max(m, load<f32>(lr + (<usize>j << 2)));
    const mv = f32x4.splat(m);
    let sv = f32x4.splat(0);
    j = 0;
    for (; j + 4 <= V; j += 4) {
      const o = <usize>j << 2;
      const e = expLanes(f32x4.sub(v128.load(lr + o), mv));
      v128.store(pr + o, e);
      sv = f32x4.add(sv, e);
    }
    let s = <f64>laneSum(sv);
    for (; j < V; j++) {
      const o = <usize>j << 2;
      const e = f32x4.extract_lane(expLanes(f32x4.splat(load<f32>(lr + o) - m)), 0);
      store<f32>(pr + o, e);
      s += <f64>e;
    }
    const inv = f32x4.splat(<f32>(1.0 / s));
    j = 0;
    for (; j + 4 <= V; j += 4) {
      const o = <usize>j << 2;
      v128.store(pr + o, f32x4.mul(v128.load(pr + o), inv));
    }
    for (; j < V; j++) {
      const o = <usize>j << 2;
      store<f32>(pr + o, load<f32>(pr + o) * <f32>(1.0 / s));
    }
    // The host finishes logits[row, target] - max - log(sum) (a log here would need data tables).
    store<f32>(out + (<usize>r << 4), m);
    store<f64>(out + (<usize>r << 4), s, 8);
  }
}

/** dlogits[row] = g (onehot(target) - probs[row]) for records [r0, r1) of (row, target, g). */
function logprobBackwardRows(table: usize, dlogits: usize, probs: usize, V: i32, r0: i32, r1: i32): void {
  for (let r = r0; r < r1; r++) {
    const rec = table + RECORDS + <usize>r * 12;
    const row = load<i32>(rec);
    const target = load<i32>(rec, 4);
    const g = load<f32>(rec, 8);
    const off = <usize>row * <usize>V << 2;
    const dr = dlogits + off;
    const pr = probs + off;
    const ng = f32x4.splat(-g);
    let j = 0;
    for (; j + 4 <= V; j += 4) {
      const o = <usize>j << 2;
      v128.store(dr + o, f32x4.mul(ng, v128.load(pr + o)));
    }
    for (; j < V; j++) {
      const o = <usize>j << 2;
      store<f32>(dr + o, -g * load<f32>(pr + o));
    }
    const t = dr + (<usize>target << 2);
    store<f32>(t, load<f32>(t) + g);
  }
}

/**
 * One head vector x at `src` rotated by RoPE into `dst` (may be the same address): on the pairs
 * (i, i + half), out_i = x_i c - x_{i+half} s, out_{i+half} = x_{i+half} c + x_i s with s = sign sin.
 * In float64 and rounded once, exactly as layers.ts ropeRotate, so both give the same bytes.
 */
function ropeVector(dst: usize, src: usize, cos: usize, sin: usize, half: i32, sign: f64): void {
  const sg = f64x2.splat(sign);
  const hb = <usize>half << 2;
  let i = 0;
  for (; i + 2 <= half; i += 2) {
    const o = <usize>i << 2;
    const x1 = f64x2.promote_low_f32x4(v128.load64_zero(src + o));
    const x2 = f64x2.promote_low_f32x4(v128.load64_zero(src + hb + o));
    const c = f64x2.promote_low_f32x4(v128.load64_zero(cos + o));
    const sn = f64x2.mul(sg, f64x2.promote_low_f32x4(v128.load64_zero(sin + o)));
    const a = f32x4.demote_f64x2_zero(f64x2.sub(f64x2.mul(x1, c), f64x2.mul(x2, sn)));
    const b = f32x4.demote_f64x2_zero(f64x2.add(f64x2.mul(x2, c), f64x2.mul(x1, sn)));
    v128.store64_lane(dst + o, a, 0);
    v128.store64_lane(dst + hb + o, b, 0);
  }
  for (; i < half; i++) {
    const o = <usize>i << 2;
    const x1 = <f64>load<f32>(src + o);
    const x2 = <f64>load<f32>(src + hb + o);
    const c = <f64>load<f32>(cos + o);
    const sn = sign * <f64>load<f32>(sin + o);
    store<f32>(dst + o, <f32>(x1 * c - x2 * sn));
    store<f32>(dst + hb + o, <f32>(x2 * c + x1 * sn));
  }
}

/**
 * Rows [r0, r1) of flat [B*T, stride] rows <-> head-major [B, heads, T, D] vectors, head h of row n =
 * b*T + t at column col + h*D. split: flat -> heads; merge: heads -> flat. cos == 0: a plain copy;
 * otherwise each vector is rotated by RoPE at position t (sign 1 forward, -1 the inverse).
 */
function moveHeads(
  split: bool, flat: usize, stride: i32, col: i32, heads: usize, T: i32, H: i32, D: i32,
  cos: usize, sin: usize, sign: f64, r0: i32, r1: i32,
): void {
  const half = D >> 1;
  const bytes = <usize>D << 2;
  for (let n = r0; n < r1; n++) {
    const b = n / T;
    const t = n - b * T;
    const rowOff = flat + ((<usize>n * <usize>stride + <usize>col) << 2);
    const cs = <usize>t * <usize>half << 2;
    for (let h = 0; h < H; h++) {
      const f = rowOff + <usize>h * bytes;
      const v = heads + ((<usize>(b * H + h) * <usize>T + <usize>t) * bytes);
      const dst = split ? v : f;
      const src = split ? f : v;
      if (cos == 0) memory.copy(dst, src, bytes);
      else ropeVector(dst, src, cos + cs, sin + cs, half, sign);
    }
  }
}

/** Four keys' dot products with one query of D floats (D a multiple of 4): four independent chains. */
function dot4Keys(q: usize, k0: usize, rowBytes: usize, D: i32): v128 {
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  for (let c = 0; c < D; c += 4) {
    const o = <usize>c << 2;
    const qv = v128.load(q + o);
    a0 = f32x4.add(a0, f32x4.mul(qv, v128.load(k0 + o)));
    a1 = f32x4.add(a1, f32x4.mul(qv, v128.load(k0 + rowBytes + o)));
    a2 = f32x4.add(a2, f32x4.mul(qv, v128.load(k0 + 2 * rowBytes + o)));
    a3 = f32x4.add(a3, f32x4.mul(qv, v128.load(k0 + 3 * rowBytes + o)));
  }
  return f32x4.replace_lane(
    f32x4.replace_lane(f32x4.replace_lane(f32x4.splat(hsum(a0)), 1, hsum(a1)), 2, hsum(a2)),
    3,
    hsum(a3),
  );
}

/**
 * One decoding row's attention for one kv head against its cached keys and values [len, D] (rows from
 * position 0): each of its rep query heads q [rep, D] gets scores scale * q k_j for the visible keys
 * j in [from, len) in s [rep, len], their softmax, and out [rep, D] = sum_j p_j v_j. A row and head's
 * result depends only on its own q, keys and values, never on which other rows share the call.
 */
function cachedAttentionItem(
  q: usize,
  out: usize,
  keys: usize,
  values: usize,
  s: usize,
  from: i32,
  len: i32,
  rep: i32,
  D: i32,
  scale: f32,
): void {
  const rowBytes = <usize>D << 2;
  const sv = f32x4.splat(scale);
  for (let r = 0; r < rep; r++) {
    const qr = q + <usize>r * rowBytes;
    const sr = s + (<usize>r * <usize>len << 2);
    let j = from;
    if ((D & 3) == 0) {
      for (; j + 4 <= len; j += 4)
        v128.store(sr + (<usize>j << 2), f32x4.mul(dot4Keys(qr, keys + <usize>j * rowBytes, rowBytes, D), sv));
    }
    for (; j < len; j++) store<f32>(sr + (<usize>j << 2), dot1(qr, keys + <usize>j * rowBytes, D) * scale);
    softmaxSpan(sr, from, len);
    // out = sum_j p_j v_j, 32 output floats at a time in eight accumulators over every visible value
    // row (two cache lines of each row per pass), then 4-float groups and a scalar tail
    const o = out + <usize>r * rowBytes;
    let c = 0;
    for (; c + 32 <= D; c += 32) {
      let a0 = f32x4.splat(0);
      let a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0);
      let a3 = f32x4.splat(0);
      let a4 = f32x4.splat(0);
      let a5 = f32x4.splat(0);
      let a6 = f32x4.splat(0);
      let a7 = f32x4.splat(0);
      let v = values + <usize>from * rowBytes + (<usize>c << 2);
      for (let t = from; t < len; t++, v += rowBytes) {
        const p = v128.load32_splat(sr + (<usize>t << 2));
        a0 = f32x4.add(a0, f32x4.mul(p, v128.load(v)));
        a1 = f32x4.add(a1, f32x4.mul(p, v128.load(v, 16)));
        a2 = f32x4.add(a2, f32x4.mul(p, v128.load(v, 32)));
        a3 = f32x4.add(a3, f32x4.mul(p, v128.load(v, 48)));
        a4 = f32x4.add(a4, f32x4.mul(p, v128.load(v, 64)));
        a5 = f32x4.add(a5, f32x4.mul(p, v128.load(v, 80)));
        a6 = f32x4.add(a6, f32x4.mul(p, v128.load(v, 96)));
        a7 = f32x4.add(a7, f32x4.mul(p, v128.load(v, 112)));
      }
      const oc = o + (<usize>c << 2);
      v128.store(oc, a0);
      v128.store(oc, a1, 16);
      v128.store(oc, a2, 32);
      v128.store(oc, a3, 48);
      v128.store(oc, a4, 64);
      v128.store(oc, a5, 80);
      v128.store(oc, a6, 96);
      v128.store(oc, a7, 112);
    }
    for (; c + 4 <= D; c += 4) {
      let a = f32x4.splat(0);
      for (let t = from; t < len; t++)
        a = f32x4.add(a, f32x4.mul(v128.load32_splat(sr + (<usize>t << 2)), v128.load(values + <usize>t * rowBytes + (<usize>c << 2))));
      v128.store(o + (<usize>c << 2), a);
    }
    for (; c < D; c++) {
      let a: f32 = 0;
      for (let t = from; t < len; t++) a += load<f32>(sr + (<usize>t << 2)) * load<f32>(values + <usize>t * rowBytes + (<usize>c << 2));
      store<f32>(o + (<usize>c << 2), a);
    }
  }
}

/** Runs chunk `index` of the element-wise job described by the argument table at `table`. */
export function elementwiseChunk(table: usize, index: i32): void {
  const op = word(table, 0);
  if (op == OP_SOFTMAX) {
    const rec = table + RECORDS + (<usize>index << 3);
    softmaxBlock(<usize>load<u32>(rec), load<i32>(rec, 4), word(table, 3));
    return;
  }
  if (op == OP_SOFTMAX_BACKWARD) {
    const rec = table + RECORDS + <usize>index * 12;
    softmaxBackwardBlock(<usize>load<u32>(rec), <usize>load<u32>(rec, 4), load<i32>(rec, 8));
    return;
  }
  if (op == OP_CACHED_ATTENTION) {
    const rec = table + RECORDS + <usize>index * 28;
    cachedAttentionItem(
      <usize>load<u32>(rec), <usize>load<u32>(rec, 4), <usize>load<u32>(rec, 8), <usize>load<u32>(rec, 12),
      <usize>load<u32>(rec, 16), load<i32>(rec, 20), load<i32>(rec, 24), word(table, 3), word(table, 4), real(table, 5),
    );
    return;
  }
  const per = word(table, 1);
  const r0 = index * per;
  const r1 = min(word(table, 2), r0 + per);
  if (op == OP_RMSNORM) {
    rmsnormRows(address(table, 3), address(table, 4), address(table, 5), address(table, 6), word(table, 7), real(table, 8), r0, r1);
  } else if (op == OP_RMSNORM_BACKWARD) {
    const C = word(table, 9);
    const part = address(table, 4) + (<usize>index * <usize>C << 2);
    rmsnormBackwardRows(address(table, 3), part, address(table, 5), address(table, 6), address(table, 7), address(table, 8), C, r0, r1);
  } else if (op == OP_ADAMW) {
    const f = table + RECORDS;
    adamwRange(
      address(table, 3), address(table, 4), address(table, 5), address(table, 6), address(table, 7),
      load<f64>(f), load<f64>(f, 8), load<f64>(f, 16), load<f64>(f, 24), load<f64>(f, 32), load<f64>(f, 40),
      r0, r1,
    );
  } else if (op == OP_LOGPROBS) {
    softmaxRows(table, address(table, 3), address(table, 4), address(table, 5), word(table, 6), r0, r1);
  } else if (op == OP_SPLIT_HEADS || op == OP_MERGE_HEADS) {
    moveHeads(
      op == OP_SPLIT_HEADS, address(table, 3), word(table, 4), word(table, 5), address(table, 6),
      word(table, 7), word(table, 8), word(table, 9), address(table, 10), address(table, 11),
      <f64>real(table, 12), r0, r1,
    );
  } else if (op == OP_LOGPROBS_BACKWARD) {
    logprobBackwardRows(table, address(table, 3), address(table, 4), word(table, 6), r0, r1);
  } else {
    unreachable();
  }
}
