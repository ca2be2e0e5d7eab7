/**
 * The optimiser side of training: AdamW with decoupled weight decay, the cosine learning-rate schedule
 * with linear warmup, and global-norm gradient clipping. Defaults follow the SSO reference (a
 * Hugging Face Trainer run): betas (0.9, 0.95), eps 1e-8, weight decay 0.1, warmup ratio 0.1, and the
 * update matches torch.optim.AdamW, so a run here and a run there take the same steps.
 */
import type { ElementwiseKernels, Kernels } from "./kernels/types.js";
import { numel, type ParamSpec } from "./params.js";

/** AdamW hyperparameters. */
export interface AdamWOptions {
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** 1 where weight decay applies, 0 where it does not, one byte per parameter (default: decay all). */
  decayMask?: Uint8Array;
  /**
   * The kernels that hold the parameters and gradients: where they have element-wise loops, the moments
   * move into their memory at the first step and each step runs there, shared out over their threads
   * (same bytes as the TypeScript loop). Parameters and gradients passed to step() must then come from
   * their alloc().
   */
  kernels?: Kernels;
}

/** Everything needed to continue AdamW exactly where it stopped. */
export interface AdamWState {
  /** Number of updates taken so far (bias correction uses step + 1 for the next one). */
  step: number;
  /** First-moment estimate (torch's exp_avg). */
  m: Float32Array;
  /** Second-moment estimate (torch's exp_avg_sq). */
  v: Float32Array;
}

/**
 * The decay mask the HF Trainer uses: weight decay on matrices (linear weights, embeddings, the score
 * head), none on 1-D tensors (RMSNorm weights; biases, had we any). Laid out in the order of `specs`,
 * which is the order of the engine's flat parameter buffer.
 */
export function decayMaskFromSpecs(specs: readonly ParamSpec[]): Uint8Array {
  let total = 0;
  for (const s of specs) total += numel(s.shape);
  const mask = new Uint8Array(total);
  let offset = 0;
  for (const s of specs) {
    const n = numel(s.shape);
    if (s.shape.length >= 2) mask.fill(1, offset, offset + n);
    offset += n;
  }
  return mask;
}

/** AdamW over one flat fp32 parameter buffer (torch.optim.AdamW semantics, decoupled weight decay). */
export class AdamW {
  readonly size: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  private decayMask: Uint8Array | null;
  private m: Float32Array;
  private v: Float32Array;
  /** Kernels whose memory the moments move into at the first step (see AdamWOptions.kernels). */
  private kernels: Kernels | undefined;
  /** The kernels' compiled loop once the moments live in their memory. */
  private fast: ElementwiseKernels | undefined;
  private t = 0;

  /** Creates the optimiser for `size` parameters with zeroed moments. */
  constructor(size: number, options: AdamWOptions = {}) {
    this.size = size;
    this.beta1 = options.beta1 ?? 0.9;
    this.beta2 = options.beta2 ?? 0.95;
    this.eps = options.eps ?? 1e-8;
    this.weightDecay = options.weightDecay ?? 0.1;
    if (!(this.beta1 >= 0 && this.beta1 < 1))
      throw new RangeError(`AdamW: beta1 must be in [0, 1), got ${this.beta1}`);
    if (!(this.beta2 >= 0 && this.beta2 < 1))
      throw new RangeError(`AdamW: beta2 must be in [0, 1), got ${this.beta2}`);
    if (!(this.eps > 0)) throw new RangeError(`AdamW: eps must be positive, got ${this.eps}`);
    if (!(this.weightDecay >= 0))
      throw new RangeError(`AdamW: weightDecay must be >= 0, got ${this.weightDecay}`);
    if (options.decayMask && options.decayMask.length !== size)
      throw new RangeError(`AdamW: decayMask has ${options.decayMask.length} entries for ${size} parameters`);
    this.decayMask = options.decayMask ?? null;
    this.kernels = options.kernels?.elementwise === undefined ? undefined : options.kernels;
    this.m = new Float32Array(size);
    this.v = new Float32Array(size);
  }

  /** Number of updates taken so far. */
  get stepCount(): number {
    return this.t;
  }

  /**
   * One update of `params` in place from `grads` at learning rate `lr`:
   * p *= 1 - lr*wd (where decayed); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
   * p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps).
   */
  step(params: Float32Array, grads: Float32Array, lr: number): void {
    if (params.length !== this.size || grads.length !== this.size)
      throw new RangeError(
        `AdamW.step: expected ${this.size} params and grads, got ${params.length} and ${grads.length}`,
      );
    // The first step moves the moments into kernel memory: by then the model's gradients and
    // activations hold their share of it, so the moments never crowd them out (the WASM heap stops at
    // 4 GiB); where they do not fit, the TypeScript loop below keeps them on the JS heap.
    if (this.kernels !== undefined) this.moveMoments(this.kernels);
    this.t += 1;
    const b1 = this.beta1;
    const b2 = this.beta2;
    const stepSize = lr / (1 - b1 ** this.t);
    const sqrtBc2 = Math.sqrt(1 - b2 ** this.t);
    const decay = 1 - lr * this.weightDecay;
    const eps = this.eps;
    const m = this.m;
    const v = this.v;
    const mask = this.decayMask;
    if (this.fast !== undefined) {
      this.fast.adamw(params, grads, m, v, mask, { stepSize, sqrtBc2, decay, beta1: b1, beta2: b2, eps });
      return;
    }
    for (let i = 0; i < this.size; i++) {
      const g = grads[i];
      let p = params[i];
      if (mask === null || mask[i] !== 0) p *= decay;
      const mi = b1 * m[i] + (1 - b1) * g;
      const vi = b2 * v[i] + (1 - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      params[i] = p - (stepSize * mi) / (Math.sqrt(vi) / sqrtBc2 + eps);
    }
  }

  private moveMoments(kernels: Kernels): void {
    this.kernels = undefined;
    const moments = kernelMoments(kernels, this.size, this.decayMask);
    if (moments === undefined) return;
    moments.m.set(this.m);
    moments.v.set(this.v);
    this.m = moments.m;
    this.v = moments.v;
    this.decayMask = moments.mask;
    this.fast = kernels.elementwise;
  }

  /**
   * The state as exportState gives it, but the live moment buffers instead of copies: for writing
   * them out right away (a copy of a 0.5B model's moments is another 3.95 GB); the next step changes them.
   */
  stateView(): AdamWState {
    return { step: this.t, m: this.m, v: this.v };
  }

  /** A copy of the optimiser state, for checkpoints. */
  exportState(): AdamWState {
    return { step: this.t, m: this.m.slice(), v: this.v.slice() };
  }

  /** Restores state saved by exportState (copied, so the caller's arrays stay theirs). */
  importState(state: AdamWState): void {
    if (state.m.length !== this.size || state.v.length !== this.size)
      throw new RangeError(
        `AdamW.importState: state has ${state.m.length}/${state.v.length} moments for ${this.size} parameters`,
      );
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new RangeError(`AdamW.importState: step must be a non-negative integer, got ${state.step}`);
    this.t = state.step;
    this.m.set(state.m);
    this.v.set(state.v);
  }
}

/**
 * Zeroed moments (and a copy of the decay mask) in the kernels' memory, or undefined when that memory
 * cannot hold them (the WASM heap stops at 4 GiB): the optimiser then keeps them on the JS heap.
 */
function kernelMoments(
  kernels: Kernels,
  size: number,
  decayMask: Uint8Array | null,
): { m: Float32Array; v: Float32Array; mask: Uint8Array | null } | undefined {
  const taken: Float32Array[] = [];
  try {
    const m = kernels.alloc(size);
    taken.push(m);
    const v = kernels.alloc(size);
    taken.push(v);
    let mask: Uint8Array | null = null;
    if (decayMask !== null) {
      const bytes = kernels.alloc(Math.ceil(size / 4));
      taken.push(bytes);
      mask = new Uint8Array(bytes.buffer, bytes.byteOffset, size);
      mask.set(decayMask);
    }
    return { m, v, mask };
  } catch (error) {
    if (!(error instanceof RangeError)) throw error;
    for (const view of taken) kernels.release(view);
    return undefined;
  }
}

/** Options of the cosine schedule. */
export interface CosineLrOptions {
  peakLr: number;
  /** Fraction of totalSteps spent warming up linearly from 0 (default 0.1, as in the SSO reference). */
  warmupRatio?: number;
  /** The floor the cosine decays to, as a fraction of peakLr (default 0). */
  minLrRatio?: number;
}

/**
 * Learning rate for the update with 0-based index `step` out of `totalSteps`, as HF's
 * get_cosine_schedule_with_warmup: warmup of ceil(warmupRatio * totalSteps) steps rising linearly from
 * 0 (so update 0 uses lr 0 when there is warmup), then half a cosine down to minLrRatio * peakLr,
 * which it keeps past the end.
 */
export function cosineLr(step: number, totalSteps: number, options: CosineLrOptions): number {
  const { peakLr } = options;
  const warmupRatio = options.warmupRatio ?? 0.1;
  const minLrRatio = options.minLrRatio ?? 0;
  const warmupSteps = Math.ceil(totalSteps * warmupRatio);
  if (step < warmupSteps) return (peakLr * step) / Math.max(1, warmupSteps);
  const progress = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
  const cosine = 0.5 * (1 + Math.cos(Math.PI * progress));
  return peakLr * (minLrRatio + (1 - minLrRatio) * cosine);
}

/**
 * Scales `grads` in place so their global L2 norm is at most maxNorm (torch's clip_grad_norm_, with its
 * 1e-6 guard) and returns the norm before clipping. A non-finite norm leaves the gradients untouched
 * and is returned as is, so the caller can skip the step instead of writing NaNs into the weights.
 */
export function clipGradNorm(grads: Float32Array, maxNorm: number): number {
  let sumSq = 0;
  for (let i = 0; i < grads.length; i++) sumSq += grads[i] * grads[i];
  const norm = Math.sqrt(sumSq);
  if (!Number.isFinite(norm)) return norm;
  const coef = maxNorm / (norm + 1e-6);
  if (coef < 1) for (let i = 0; i < grads.length; i++) grads[i] *= coef;
  return norm;
}
