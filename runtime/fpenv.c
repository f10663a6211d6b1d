/* cnngen runtime: the floating-point environment of a trainer -- flush-to-zero and
 * denormals-are-zero.
 *
 * Why: subnormal floats (|x| < 2^-126 ~ 1.18e-38) are handled by a microcode assist on x86
 * (~100x slower an operation on Intel). Training makes them: momentum buffers whose
 * gradients have become zero decay geometrically (v = mu*v) through the subnormal range,
 * and with single-sample SGD the update then dominates the step (LeNet-5 batch 1 on an
 * Intel machine: 72% of the step in cg_sgd_update, 4,700 img/s; with FTZ|DAZ 15,200).
 * FTZ writes 0 for a subnormal result, DAZ reads a subnormal operand as 0: values below
 * 1.18e-38 become 0, which no float32 result of a training step can see.
 *
 * MXCSR is per thread. Threads created afterwards inherit it (Linux copies the creating
 * thread's floating-point state), so the trainer sets it before its first OpenMP parallel
 * region, where libgomp starts its workers. */
#include "cnngen.h"

#if defined(__x86_64__) || (defined(__i386__) && defined(__SSE2__))
#include <xmmintrin.h>
#define CG_MXCSR_FTZ 0x8000u /* bit 15: flush subnormal results to zero */
#define CG_MXCSR_DAZ 0x0040u /* bit 6: treat subnormal operands as zero */

int cg_flush_subnormals(int flush)
{
    unsigned csr = _mm_getcsr();
    csr = flush ? csr | CG_MXCSR_FTZ | CG_MXCSR_DAZ : csr & ~(CG_MXCSR_FTZ | CG_MXCSR_DAZ);
    _mm_setcsr(csr);
    return 1;
}
#else
int cg_flush_subnormals(int flush)
{
    (void)flush;
    return 0;
}
#endif
