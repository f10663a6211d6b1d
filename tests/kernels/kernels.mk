# The runtime's SIMD kernels built once per instruction-set variant (as libcnngen is:
# without OpenMP) and checked against their scalar references (tests/kernels/check_kernels.c).
# native: this machine's widest (AVX-512 where it has it; on an AVX2-only CPU it is the
# avx2 build again); tile16: see below
KVARIANTS     := native avx2 scalar tile16
KFLAGS_native := -march=native
KFLAGS_avx2   := -march=native -mno-avx512f
KFLAGS_scalar := -march=native -mno-avx512f -mno-avx2 -mno-fma
# the lanes conversions with AVX-512's tile width (16) in scalar code: R = 8, 24 leave
# lanes past the last whole tile, as code generated for AVX2 gives an AVX-512 runtime
KFLAGS_tile16 := -march=native -mno-avx512f -DCG_LANES_TILE16
KSRC          := tests/kernels/check_kernels.c runtime/sgd.c runtime/util.c runtime/loss.c runtime/lanes.c

$(B)/kernels/check_%: $(KSRC) runtime/*.h
	@mkdir -p $(B)/kernels
	$(CC) -std=c11 -D_POSIX_C_SOURCE=200809L $(WARN) -Werror -O2 $(KFLAGS_$*) -DVARIANT='"$*"' \
	  -Iruntime $(KSRC) $(CHECK_LIBS) -o $@

.PHONY: check-kernels
check-kernels: $(KVARIANTS:%=$(B)/kernels/check_%)
	@for v in $(KVARIANTS); do \
	  $(B)/kernels/check_$$v > $(B)/kernels/$$v.log 2>&1 || { cat $(B)/kernels/$$v.log; exit 1; }; \
	  echo "check-kernels: $$v: $$(tail -n 1 $(B)/kernels/$$v.log)"; done
