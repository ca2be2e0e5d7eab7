/**
 * Worker thread of the kernel pool: instantiates the kernels module on the shared memory, then sleeps
 * on the control buffer's generation word and, whenever it changes, claims chunks of the open sgemm
 * until none is left (see protocol.ts). Started by pool.ts.
 */
import { parentPort, workerData } from "node:worker_threads";
import { CONTROL, ControlBlock, type KernelExports } from "./protocol.js";
import { requireWebAssembly, type WasmMemory, type WasmModule } from "./webassembly.js";

interface WorkerInit {
  module: WasmModule;
  memory: WasmMemory;
  control: SharedArrayBuffer;
  /** This worker's READY word is CONTROL.READY + index. */
  index: number;
  /** Byte address of this worker's private packing workspace in the shared memory. */
  work: number;
  /** Milliseconds to busy-wait for the next job before sleeping. */
  spinMs: number;
}

const init = workerData as WorkerInit;
const control = new ControlBlock(init.control);
const words = control.words;
const instance = new (requireWebAssembly().Instance)(init.module, { env: { memory: init.memory } });
const kernels = instance.exports as unknown as KernelExports;

// Read the generation before announcing readiness, so a job opened after READY is always noticed.
let seen = Atomics.load(words, CONTROL.GEN);
Atomics.store(words, CONTROL.READY + init.index, 1);
Atomics.notify(words, CONTROL.READY + init.index);

for (;;) {
  // Spin briefly first: back-to-back sgemm calls arrive faster than a futex wake-up (~15 us here).
  let generation = Atomics.load(words, CONTROL.GEN);
  const idleSince = performance.now();
  for (let i = 1; generation === seen; i++) {
    if ((i & 63) === 0 && performance.now() - idleSince > init.spinMs) break;
    generation = Atomics.load(words, CONTROL.GEN);
  }
  while (generation === seen) {
    Atomics.wait(words, CONTROL.GEN, seen);
    generation = Atomics.load(words, CONTROL.GEN);
  }
  seen = generation;
  if (Atomics.load(words, CONTROL.STOP) !== 0) break;
  const failure = control.drain(kernels, init.work, undefined);
  if (failure !== undefined) parentPort?.postMessage({ failed: failure });
}
