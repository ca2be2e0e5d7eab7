// Compiles the AssemblyScript kernels in assembly/ to build/*.wasm (filled in by the kernels work).
console.log("build-wasm: no kernels yet");
