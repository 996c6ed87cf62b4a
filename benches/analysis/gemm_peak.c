/* How close the convolutions' gather GEMM comes to the CPU's float32 FMA peak.
 *
 *   gcc -O3 -march=native -fopenmp -Isrc benches/analysis/gemm_peak.c -o /tmp/gemm_peak && /tmp/gemm_peak
 *
 * Prints the peak of one core and of all cores (12 independent FMA chains per core, nothing
 * but FMAs), then GFLOP/s of dn_gather_sgemm on one core at DeepConvNet's conv2 and conv6
 * shapes (one image: forward, and the weight gradient), with 2 * M * N * steps flops.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "deepnet_gather_gemm.h"

/* The kernels' vector width (DN_VBYTES: 64 bytes on an AVX-512 build): a CPU with two
 * 512-bit FMA units (Intel Xeon) has twice the peak of 256-bit FMAs, one that splits 512-bit
 * FMAs in two (Zen 4) the same. */
typedef float vec __attribute__((vector_size(DN_VBYTES)));
enum { LANES = DN_VBYTES / sizeof(float) };

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* GFLOP/s of one thread running only FMAs into 12 accumulators. */
static double fma_peak(long iterations)
{
    vec acc[12], a, b = {1e-9f};
    for (int k = 0; k < LANES; k++)
        a[k] = 1;
    for (int j = 0; j < 12; j++)
        acc[j] = (vec){0};
    double start = now();
    for (long i = 0; i < iterations; i++) {
        for (int j = 0; j < 12; j++)
            acc[j] += a * b;
        __asm__("" : "+v"(a), "+v"(b));   /* keep the loop from being folded away */
    }
    double seconds = now() - start;
    float sink = 0;
    for (int j = 0; j < 12; j++)
        sink += acc[j][0];
    if (sink < 0)
        printf("%g\n", sink);
    return iterations * 12.0 * 2 * LANES / seconds / 1e9;
}

/* One image of a 3x3, pad-1 convolution, C channels of H x H to FN filters. */
static void gather_case(const char *name, int C, int H, int FN, int reps)
{
    int Hp = H + 2, K = C * 9, P = H * H;
    float *image = calloc((size_t)C * Hp * Hp, sizeof(float));
    float *weights_t = malloc(sizeof(float) * K * FN), *out = malloc(sizeof(float) * P * FN);
    float *grad_t = malloc(sizeof(float) * P * FN), *dW_t = calloc((size_t)K * FN, sizeof(float));
    int *steps = malloc(sizeof(int) * K), *pixels = malloc(sizeof(int) * P);
    for (int i = 0; i < C * Hp * Hp; i++) image[i] = (float)(i % 7);
    for (int i = 0; i < K * FN; i++) weights_t[i] = (float)(i % 5);
    for (int i = 0; i < P * FN; i++) grad_t[i] = (float)(i % 3);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                steps[(c * 3 + i) * 3 + j] = (c * Hp + i) * Hp + j;
    for (int y = 0; y < H; y++)
        for (int x = 0; x < H; x++)
            pixels[y * H + x] = y * Hp + x;
    double flops = 2.0 * P * FN * K * reps, start = now();
    for (int r = 0; r < reps; r++)
        dn_gather_sgemm(P, FN, K, image, pixels, steps, weights_t, FN, out, FN, 0);
    double forward = flops / (now() - start) / 1e9;
    start = now();
    for (int r = 0; r < reps; r++)
        dn_gather_sgemm(K, FN, P, image, steps, pixels, grad_t, FN, dW_t, FN, 1);
    double weight_gradient = flops / (now() - start) / 1e9;
    printf("%s (%d->%d channels, %dx%d): forward %.1f GFLOP/s, weight gradient %.1f GFLOP/s\n",
           name, C, FN, H, H, forward, weight_gradient);
    free(image); free(weights_t); free(out); free(grad_t); free(dW_t); free(steps); free(pixels);
}

int main(void)
{
    long iterations = 200000000;
    printf("FMA peak, 1 core: %.1f GFLOP/s\n", fma_peak(iterations));
    double total = 0;
#pragma omp parallel reduction(+ : total)
    total += fma_peak(iterations);
    printf("FMA peak, %d cores together: %.1f GFLOP/s\n", omp_get_max_threads(), total);
    gather_case("conv2", 16, 28, 16, 20000);
    gather_case("conv6", 64, 8, 64, 20000);
    return 0;
}
