/**
 * Worker thread of the kernel pool: instantiates the kernels module on the shared memory, then loops
 * waiting on the control buffer's generation word and runs its slot's job when there is one.
 * Started by pool.ts with workerData { module, memory, control, index, spin }.
 */
import { parentPort, workerData } from "node:worker_threads";
import { CONTROL, type GemmJob, type KernelExports, runJob, SLOT, slotWord } from "./protocol.js";
import { requireWebAssembly, type WasmMemory, type WasmModule } from "./webassembly.js";

interface WorkerInit {
  module: WasmModule;
  memory: WasmMemory;
  control: SharedArrayBuffer;
  index: number;
  spin: number;
}

const init = workerData as WorkerInit;
const words = new Int32Array(init.control);
const uwords = new Uint32Array(init.control);
const floats = new Float32Array(init.control);
const instance = new (requireWebAssembly().Instance)(init.module, { env: { memory: init.memory } });
const kernels = instance.exports as unknown as KernelExports;
const at = (field: number): number => slotWord(init.index, field);

/** Reads this worker's job out of its slot. */
function readJob(): GemmJob {
  return {
    kind: words[at(SLOT.KIND)],
    transA: words[at(SLOT.TRANS_A)] !== 0,
    transB: words[at(SLOT.TRANS_B)] !== 0,
    M: words[at(SLOT.M)],
    N: words[at(SLOT.N)],
    K: words[at(SLOT.K)],
    alpha: floats[at(SLOT.ALPHA)],
    a: uwords[at(SLOT.A)],
    lda: words[at(SLOT.LDA)],
    b: uwords[at(SLOT.B)],
    ldb: words[at(SLOT.LDB)],
    beta: floats[at(SLOT.BETA)],
    c: uwords[at(SLOT.C)],
    ldc: words[at(SLOT.LDC)],
    work: uwords[at(SLOT.WORK)],
  };
}

// Read the generation before announcing readiness: a job issued after READY is then always noticed.
let seen = Atomics.load(words, CONTROL.GEN);
Atomics.store(words, at(SLOT.READY), 1);
Atomics.notify(words, at(SLOT.READY));

for (;;) {
  // Spin briefly first: back-to-back sgemm calls arrive faster than a futex wake-up.
  let generation = Atomics.load(words, CONTROL.GEN);
  for (let i = 0; generation === seen && i < init.spin; i++) generation = Atomics.load(words, CONTROL.GEN);
  while (generation === seen) {
    Atomics.wait(words, CONTROL.GEN, seen);
    generation = Atomics.load(words, CONTROL.GEN);
  }
  seen = generation;
  if (Atomics.load(words, CONTROL.STOP) !== 0) break;
  if (Atomics.load(words, at(SLOT.GEN)) !== generation) continue;
  try {
    runJob(kernels, readJob());
  } catch (error) {
    Atomics.store(words, at(SLOT.FAILED), 1);
    parentPort?.postMessage({ failed: error instanceof Error ? error.message : String(error) });
  }
  Atomics.add(words, CONTROL.DONE, 1);
  Atomics.notify(words, CONTROL.DONE);
}
