/* Batch-innermost ("lanes") layout conversions used by generated networks at their
 * edges: x [nb][size] <-> xl [size][R], R a multiple of the generated code's vector (8 or 16) >= nb, lanes b >= nb zero.
 *
 * cg_to_lanes / cg_from_lanes transpose 16 x 16 tiles in AVX-512 registers when built
 * for AVX-512, 8 x 8 tiles in AVX registers when built for AVX (R is then a multiple of
 * 8, the generated code's vector), else scalar 8 x 8 tiles; the _ref versions are the
 * definitions, kept for tests. Single-threaded: libcnngen is built without OpenMP (see
 * the Makefile). */
#include "cnngen.h"

#include <string.h>

#if defined(__AVX512F__) || defined(__AVX__)
#include <immintrin.h>
#endif

/* CG_LANES_TILE16 (tests/kernels: the "tile16" variant): scalar tiles of 16, as wide as
 * AVX-512's, so that the lanes past the last whole tile are tested on any machine */
#if defined(__AVX__) && !defined(__AVX512F__) && !defined(CG_LANES_TILE16)
#define CG_AVX_TILES 1 /* 8 x 8 tiles in AVX registers */
#endif
#if defined(__AVX512F__) || defined(CG_LANES_TILE16)
enum { TW = 16 }; /* tile width: floats of one register */
#else
enum { TW = 8 };
#endif

void cg_to_lanes_ref(const float *x, float *xl, int nb, size_t size, int R)
{
    for (size_t i = 0; i < size; i++)
        for (int b = 0; b < R; b++)
            xl[i * (size_t)R + (size_t)b] = b < nb ? x[(size_t)b * size + i] : 0.0f;
}

void cg_from_lanes_ref(const float *xl, float *x, int nb, size_t size, int R)
{
    for (int b = 0; b < nb; b++)
        for (size_t i = 0; i < size; i++)
            x[(size_t)b * size + i] = xl[i * (size_t)R + (size_t)b];
}

#if defined(__AVX512F__)
/* r[a][c] -> r[c][a] for a 16 x 16 tile held in 16 registers: pairs of rows interleaved
 * (ps, then pd), then 128-bit lanes exchanged twice. */
static inline void tr16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int q = 0; q < 4; q++) {
        t[q] = _mm512_shuffle_f32x4(r[q], r[q + 4], 0x88);
        t[q + 4] = _mm512_shuffle_f32x4(r[q], r[q + 4], 0xdd);
        t[q + 8] = _mm512_shuffle_f32x4(r[q + 8], r[q + 12], 0x88);
        t[q + 12] = _mm512_shuffle_f32x4(r[q + 8], r[q + 12], 0xdd);
    }
    for (int q = 0; q < 4; q++) {
        r[q] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0x88);
        r[q + 8] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0xdd);
        r[q + 4] = _mm512_shuffle_f32x4(t[q + 4], t[q + 12], 0x88);
        r[q + 12] = _mm512_shuffle_f32x4(t[q + 4], t[q + 12], 0xdd);
    }
}
#endif

#if defined(CG_AVX_TILES)
/* r[a][c] -> r[c][a] for an 8 x 8 tile in 8 registers */
static inline void tr8(__m256 r[8])
{
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}
#endif

/* one tile: columns i0..i0+TW-1 of samples b0..b0+TW-1 */
static inline void to_tile(const float *x, float *xl, int nb, size_t size, int R, size_t i0, int b0)
{
#if defined(__AVX512F__)
    __m512 r[16];
    for (int bb = 0; bb < 16; bb++)
        r[bb] = b0 + bb < nb ? _mm512_loadu_ps(x + (size_t)(b0 + bb) * size + i0) : _mm512_setzero_ps();
    tr16(r);
    for (int ii = 0; ii < 16; ii++)
        _mm512_storeu_ps(xl + (i0 + (size_t)ii) * (size_t)R + (size_t)b0, r[ii]);
#elif defined(CG_AVX_TILES)
    __m256 r[8];
    for (int bb = 0; bb < 8; bb++)
        r[bb] = b0 + bb < nb ? _mm256_loadu_ps(x + (size_t)(b0 + bb) * size + i0) : _mm256_setzero_ps();
    tr8(r);
    for (int ii = 0; ii < 8; ii++)
        _mm256_storeu_ps(xl + (i0 + (size_t)ii) * (size_t)R + (size_t)b0, r[ii]);
#else
    for (size_t ii = 0; ii < TW; ii++)
        for (int bb = 0; bb < TW; bb++)
            xl[(i0 + ii) * (size_t)R + (size_t)(b0 + bb)] = b0 + bb < nb ? x[(size_t)(b0 + bb) * size + i0 + ii] : 0.0f;
#endif
}

static inline void from_tile(const float *xl, float *x, int nb, size_t size, int R, size_t i0, int b0)
{
#if defined(__AVX512F__)
    __m512 r[16];
    for (int ii = 0; ii < 16; ii++)
        r[ii] = _mm512_loadu_ps(xl + (i0 + (size_t)ii) * (size_t)R + (size_t)b0);
    tr16(r);
    for (int bb = 0; bb < 16 && b0 + bb < nb; bb++)
        _mm512_storeu_ps(x + (size_t)(b0 + bb) * size + i0, r[bb]);
#elif defined(CG_AVX_TILES)
    __m256 r[8];
    for (int ii = 0; ii < 8; ii++)
        r[ii] = _mm256_loadu_ps(xl + (i0 + (size_t)ii) * (size_t)R + (size_t)b0);
    tr8(r);
    for (int bb = 0; bb < 8 && b0 + bb < nb; bb++)
        _mm256_storeu_ps(x + (size_t)(b0 + bb) * size + i0, r[bb]);
#else
    for (int bb = 0; bb < TW && b0 + bb < nb; bb++)
        for (size_t ii = 0; ii < TW; ii++)
            x[(size_t)(b0 + bb) * size + i0 + ii] = xl[(i0 + ii) * (size_t)R + (size_t)(b0 + bb)];
#endif
}

/* R need not be a multiple of TW: code generated for AVX2 (vectors of 8) may run with
 * a runtime built for AVX-512 (tiles of 16), so lanes from RT = R - R % TW on are
 * converted one by one */
void cg_to_lanes(const float *x, float *xl, int nb, size_t size, int R)
{
    size_t nt = size / TW, full = nt * TW;
    const int RT = R - R % TW;
    for (size_t t = 0; t < nt; t++) {
        for (int b0 = 0; b0 < RT; b0 += TW)
            to_tile(x, xl, nb, size, R, t * TW, b0);
        for (size_t i = t * TW; i < t * TW + TW; i++)
            for (int b = RT; b < R; b++)
                xl[i * (size_t)R + (size_t)b] = b < nb ? x[(size_t)b * size + i] : 0.0f;
    }
    for (size_t i = full; i < size; i++)
        for (int b = 0; b < R; b++)
            xl[i * (size_t)R + (size_t)b] = b < nb ? x[(size_t)b * size + i] : 0.0f;
}

void cg_from_lanes(const float *xl, float *x, int nb, size_t size, int R)
{
    size_t nt = size / TW, full = nt * TW;
    const int RT = R - R % TW;
    for (size_t t = 0; t < nt; t++) {
        for (int b0 = 0; b0 < nb && b0 < RT; b0 += TW)
            from_tile(xl, x, nb, size, R, t * TW, b0);
        for (int b = RT; b < nb; b++)
            for (size_t i = t * TW; i < t * TW + TW; i++)
                x[(size_t)b * size + i] = xl[i * (size_t)R + (size_t)b];
    }
    for (int b = 0; b < nb; b++)
        for (size_t i = full; i < size; i++)
            x[(size_t)b * size + i] = xl[i * (size_t)R + (size_t)b];
}
