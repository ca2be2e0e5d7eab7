/* The same BLAS called from C, to measure what calling it through FFI from Node costs (bench/blas-vs-c.ts).
 * Usage: sgemm-c LIBRARY THREADS N [N ...]: prints "N GFLOP/s" per size, best of repeats of C = A B^T. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
typedef void (*sgemm_t)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }
int main(int argc, char **argv) {
  if (argc < 4) { fprintf(stderr, "usage: %s LIBRARY THREADS N [N ...]\n", argv[0]); return 2; }
  void *lib = dlopen(argv[1], RTLD_NOW);
  sgemm_t sgemm = lib ? (sgemm_t)dlsym(lib, "cblas_sgemm") : NULL;
  if (!sgemm) { fprintf(stderr, "%s: %s\n", argv[1], dlerror()); return 1; }
  void (*set_threads)(int) = (void (*)(int))dlsym(lib, "openblas_set_num_threads");
  if (!set_threads) set_threads = (void (*)(int))dlsym(lib, "MKL_Set_Num_Threads");
  void (*set_blis)(long) = (void (*)(long))dlsym(lib, "bli_thread_set_num_threads");
  if (set_threads) set_threads(atoi(argv[2]));
  if (set_blis) set_blis(atol(argv[2]));
  for (int a = 3; a < argc; a++) {
    int n = atoi(argv[a]);
    float *A = malloc(sizeof(float) * n * n), *B = malloc(sizeof(float) * n * n), *C = malloc(sizeof(float) * n * n);
    for (int i = 0; i < n * n; i++) { A[i] = (float)(i % 13) / 13 - 0.5f; B[i] = (float)(i % 7) / 7 - 0.5f; }
    double best = 1e30, flops = 2.0 * n * n * n;
    for (int r = 0, calls = 0; r < 5; r++, calls = 0) {
      double t0 = now(), t;
      do { sgemm(101, 111, 112, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n); calls++; } while ((t = now() - t0) < 0.15);
      if (t / calls < best) best = t / calls;
    }
    printf("%d %.1f\n", n, flops / best / 1e9);
    free(A); free(B); free(C);
  }
  return 0;
}
