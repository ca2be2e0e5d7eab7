// Compiles the AssemblyScript kernels (assembly/kernels.ts) to build/kernels.wasm with the package's own
// assemblyscript devDependency: SIMD + threads, -O3, stub runtime, memory imported as shared so the main
// thread and every worker run on the same bytes. Exits non-zero, loudly, on any compiler error.
import { mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const entry = join(root, "assembly", "kernels.ts");
const outFile = join(root, "build", "kernels.wasm");
const textFile = join(root, "build", "kernels.wat");
// 65536 pages = 4 GiB, the wasm32 limit; the host may create a smaller memory (an import only needs
// a maximum no larger than this).
const MAX_PAGES = 65536;

let asc;
try {
  ({ default: asc } = await import("assemblyscript/asc"));
} catch (error) {
  console.error(`build-wasm: cannot load the AssemblyScript compiler (npm ci installs it): ${error.message}`);
  process.exit(1);
}

mkdirSync(dirname(outFile), { recursive: true });
const args = [
  entry,
  "--outFile",
  outFile,
  "--textFile",
  textFile,
  "-O3",
  "--noAssert",
  "--runtime",
  "stub",
  "--enable",
  "simd",
  "--enable",
  "threads",
  "--importMemory",
  "--sharedMemory",
  "--initialMemory",
  "1",
  "--maximumMemory",
  String(MAX_PAGES),
  "--noExportMemory",
];
const { error, stderr } = await asc.main(args, {});
if (error) {
  console.error(stderr.toString());
  console.error(`build-wasm: compiling ${entry} failed: ${error.message}`);
  process.exit(1);
}

// The host instantiates this module once per thread on one memory; an active data segment would be
// rewritten by every instantiation, so the module must not have one.
const bytes = readFileSync(outFile);
if (sectionIds(bytes).includes(11)) {
  console.error("build-wasm: kernels.wasm has a data section; kernels must not use static data");
  process.exit(1);
}
const module = new WebAssembly.Module(bytes);
const exported = WebAssembly.Module.exports(module).map((e) => e.name);
for (const name of ["sgemmPacked", "sgemmSmall", "packedWorkspaceFloats"]) {
  if (!exported.includes(name)) {
    console.error(`build-wasm: kernels.wasm lacks the export ${name}`);
    process.exit(1);
  }
}
console.log(`build-wasm: wrote ${outFile} (${bytes.length} bytes)`);

/** Section ids of a wasm binary, in order. */
function sectionIds(buf) {
  const ids = [];
  let pos = 8;
  while (pos < buf.length) {
    const id = buf[pos++];
    let size = 0;
    let shift = 0;
    for (;;) {
      const byte = buf[pos++];
      size |= (byte & 0x7f) << shift;
      shift += 7;
      if ((byte & 0x80) === 0) break;
    }
    ids.push(id);
    pos += size;
  }
  return ids;
}
