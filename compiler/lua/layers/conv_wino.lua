-- conv2d, "wino" form of the batch-innermost layout: Winograd's minimal filtering
-- F(2x2, 3x3) (Lavin and Gray, 2015) for 3x3 kernels, stride 1, dilation 1, groups 1.
-- Each 2x2 block of outputs is computed from a 4x4 block of inputs with 16
-- multiply-adds per (input, output channel) pair instead of 36:
--
--   Y = A^T [ (G g G^T) (.) (B^T d B) ] A     (. the elementwise product)
--
--   B^T = | 1  0 -1  0 |   G = | 1    0    0   |   A^T = | 1  1  1  0 |
--         | 0  1  1  0 |       | 1/2  1/2  1/2 |         | 0  1 -1 -1 |
--         | 0 -1  1  0 |       | 1/2 -1/2  1/2 |
--         | 0  1  0 -1 |       | 0    0    1   |
--
-- With the batch innermost every transform is a handful of vector adds on whole lane
-- vectors, and the products are, per position of the 4x4 block, a small GEMM over the
-- input channels: a tile of TC output channels x TB lane vectors accumulates in
-- registers, each transformed weight broadcast feeding TB multiply-adds, the TB
-- transformed inputs loaded once (VKEEP: gcc would fold them into every FMA).
--
-- dx of such a layer is the same computation on dy: a stride-1 correlation of dy with
-- the kernel flipped and its channels swapped, padded by 2 - pad. So one emitter
-- serves both passes; dW has its own (emit_dw, below).
--
-- The input (x or dy) is read where it is: the tiles fall in classes along each axis by
-- which of their 4 input rows (columns) lie in the padding, and each class has its own
-- transform code with those loads replaced by zeros (no test in the code).
-- The transformed weights U are recomputed each call ([16][channels in][channels out],
-- 16 x the weights, the layer's scratch).
local M = {}

-- 3x3, stride 1, dilation 1, pads 0..2 on every side (dx pads by 2 - pad)
function M.ok(L)
  local g = L.geom
  if L.kind ~= "conv2d" or L.groups ~= 1 or not L.lanes_layout then return false end
  for _, a in ipairs({g.h, g.w}) do
    if a.K ~= 3 or a.S ~= 1 or a.D ~= 1 or a.lo < 0 or a.lo > 2 or a.hi < 0 or a.hi > 2 then return false end
  end
  return true
end

-- the geometry of one pass: input I (h, w) padded by lo, output O, T tiles of m x m
-- (m = 2 here, 4 in conv_wino4.lua)
local function pass_geom(I, lo, O, m)
  m = m or 2
  local T = {(O[1] + m - 1) // m, (O[2] + m - 1) // m}
  return {I = I, lo = lo, O = O, T = T}
end

function M.fwd_geom(L, m)
  local g = L.geom
  return pass_geom({g.h.I, g.w.I}, {g.h.lo, g.w.lo}, {g.h.O, g.w.O}, m)
end

function M.dx_geom(L, m)
  local g = L.geom
  return pass_geom({g.h.O, g.w.O}, {2 - g.h.lo, 2 - g.w.lo}, {g.h.I, g.w.I}, m)
end

-- scratch floats: the transformed weights U of either pass
function M.scratch(L) return 16 * L.cin * L.cout end

-- TB lane vectors a tile: 2 (a cache line of each transformed input) when a tile's
-- transformed inputs and products, np x (cin + cout) x TB vectors, fit L1 (48 KiB on
-- the Xeon and Zen 5 of this pool), else 1. ResNet-20 b64's 16-channel F(4x4) layer
-- (147 KiB at TB = 2, 73 at 1), 2-core Zen 5, the call alone: forward 0.38 against
-- 0.72 ms, dx 0.46 against 0.87; its 32-channel F(2x2) layer: 5 and 11 % faster. The
-- other TB is a candidate of its own ("+tb1"/"+tb2") for the tuner.
M.TILE_L1 = 48 * 1024
function M.tb(L, np)
  local ld = require("util").largest_divisor
  local fits = np * (L.cin + L.cout) * 2 * L.vec * 4 <= M.TILE_L1
  return ld(L.lanes_R // L.vec, fits and 2 or 1)
end

-- The tile: TB lane vectors (tb, or M.tb's) x TC output channels. With 2 lane vectors,
-- 2/3 of the accumulator budget (8 of AVX2's 12, 16 of AVX-512's 24) in a divisor of
-- the channels: the rest hold the loaded vectors and a broadcast weight. With 1, a
-- broadcast weight and the loaded vector beside the accumulators, so the whole budget
-- (12 of AVX2's 16 registers, 24 of AVX-512's 32) in the fewest blocks, as even as
-- they go (M.products): 64 channels on AVX2 in blocks of 11 and 10 where the largest
-- divisor within the budget gave 8. ResNet-20 b64, 2-core Zen 3 (its 32- and
-- 64-channel layers take TB = 1), the whole step against blocks of 8 (bench/ab.py,
-- heuristic schedules): 1.022 (1.010-1.039), 1.025 (1.015-1.038); padding the channels
-- to 6 blocks of 11 (one body of code) instead: 0.988 (0.979-1.005) against the two
-- block sizes. The largest block is TC. divisor: the divisor rule for one lane vector
-- too (the "+tcd" candidates: the even blocks' code is twice the size, over the budget
-- for AVX-512's 64 channels).
function M.tile(L, T, nco, tb, divisor)
  local ld = require("util").largest_divisor
  local TB = ld(L.lanes_R // L.vec, tb or M.tb(L, 16))
  if TB == 1 and not divisor then
    local nb = (nco + T.acc - 1) // T.acc
    return {TC = (nco + nb - 1) // nb, TB = 1}
  end
  return {TC = ld(nco, math.max(1, T.acc * 2 // 3 // TB)), TB = TB}
end

-- The heuristic's first choice: channels enough on both sides to amortize the
-- transforms, outputs of 7x7 or more (7x7 computes 8x8 and still wins: ResNet-20's
-- 64-channel layers, 10 % a step alone, 2-core Zen 3), and a tile's transformed inputs
-- and products (16 x channels x TB lane vectors each, on the stack) within 256 KB:
-- VGG-16-CIFAR's 512-channel 4x4 layers (512 KB) ran 3x slower in wino than direct
-- (measured when the products swept the inputs once per block of output channels).
function M.preferred(L)
  local g = L.geom
  -- (measured with tiles of 2 lane vectors: the bound stays theirs)
  local TB = require("util").largest_divisor(L.lanes_R // L.vec, 2)
  local vb = 16 * math.max(L.cin, L.cout) * TB * L.vec * 4
  return M.ok(L) and L.cin >= 8 and L.cout >= 8 and g.h.O >= 7 and g.w.O >= 7 and vb <= 256 * 1024
end

-- Tiles of m outputs (m + 2 inputs) along one axis in classes: runs of consecutive
-- tiles whose inputs lie inside or outside the input alike and which store as many
-- outputs (an extent that m does not divide: its last tile stores fewer),
-- {lo, hi, v = valid[1..m + 2], n = outputs stored, two = n == 2}; tile t reads inputs
-- m t - pad .. m t - pad + m + 1 and writes outputs m t .. m t + m - 1.
function M.classes(T, I, pad, O, m)
  m = m or 2
  local out = {}
  for t = 0, T - 1 do
    local v = {}
    for i = 0, m + 1 do local r = m * t - pad + i; v[i + 1] = r >= 0 and r < I end
    local n = math.min(m, O - m * t)
    local last, same = out[#out], out[#out] and out[#out].n == n
    for i = 1, m + 2 do same = same and last.v[i] == v[i] end
    if same then
      last.hi = t
    else
      out[#out + 1] = {lo = t, hi = t, v = v, n = n, two = n == 2}
    end
  end
  return out
end
local classes = M.classes

-- The weight transform's frame, for n x n transformed tiles (n = m + 2): U = T, a loop
-- over the channel pairs loading the 3x3 taps g0..g8; body(ty, st) emits G g G^T into
-- u: its temporaries of type ty, st(off, e) the statement storing e at u + off.
-- Threaded over the output channels (par): run by one thread, the other core waited
-- through it: ResNet-20 b64's 64-channel F(4x4) layer alone, 2-core Zen 3, forward
-- 1.75 -> 1.49 ms, dx 1.51 -> 1.31 ms a call; the network 1.032x (bench/ab.py).
-- V output channels a lane vector when V divides them: U's n x n rows of a pair
-- lie nci x nco floats apart, a multiple of 4 KiB at 64 channels, so a pair's scalar
-- stores all fell in one L1 set (the transform took a quarter of that layer's forward
-- and dx); a vector of them stores whole runs of each row.
function M.weight_transform(C, a, n, body, par, V)
  C:line("float *restrict U = T; /* [%d][%d][%d]: G g G^T per channel pair */", n * n, a.nci, a.nco)
  if par then C:line("CG_PARALLEL_FOR") end
  local vec = V and V > 1 and a.nco % V == 0
  C:open("for (int co = 0; co < %d; %s) {", a.nco, vec and ("co += " .. V) or "co++")
  C:open("for (int ci = 0; ci < %d; ci++) {", a.nci)
  if vec then
    for k = 0, 8 do
      local e = {}
      for l = 0, V - 1 do e[#e + 1] = a.wt(string.format("(co + %d)", l), "ci", k) end
      C:line("const cg_v g%d = {%s};", k, table.concat(e, ", "))
    end
  else
    local gs = {}
    for k = 0, 8 do gs[#gs + 1] = string.format("g%d = %s", k, a.wt("co", "ci", k)) end
    C:line("const float %s;", table.concat(gs, ", "))
  end
  C:line("float *restrict u = U + ci * %d + co;", a.nco)
  body(vec and "cg_v" or "float", function(off, e)
    return string.format(vec and "VSTORE(u + %d, %s);" or "u[%d] = %s;", off, e)
  end)
  C:close()
  C:close()
end

-- Emit one pass. a = {
--   src, nci, dst, nco: input planes [nci][I][R], output planes [nco][O][R]
--   geo:   pass_geom
--   wt(co, ci, k): the C expression of the kernel tap k (0..8, row-major) of
--          output channel co, input channel ci of this pass
--   store(off, v): the C statement storing vector variable v at dst + off
--   bias(co): the C expression of output channel co's bias, or nil
--   tile:  {TC, TB}
-- }
-- One loop nest per class of tile rows, and in it one tx loop per class of tile
-- columns: which loads are zeros and which outputs are stored is known at generation
-- time, and the code has no test.
function M.emit(C, L, R, V, a)
  local NV = R // V
  local nci, nco = a.nci, a.nco
  M.weight_transform(C, a, 4, function(ty, st)
    -- t = G g (4x3), then u = t G^T (4x4), stored at U[4i + j][ci][co]
    for j = 0, 2 do
      C:line("const %s t0%d = g%d, t1%d = 0.5f * (g%d + g%d + g%d), t2%d = 0.5f * (g%d - g%d + g%d), t3%d = g%d;",
        ty, j, j, j, j, 3 + j, 6 + j, j, j, 3 + j, 6 + j, j, 6 + j)
    end
    local u = {}
    for i = 0, 3 do
      local e = {string.format("t%d0", i), string.format("0.5f * (t%d0 + t%d1 + t%d2)", i, i, i),
        string.format("0.5f * (t%d0 - t%d1 + t%d2)", i, i, i), string.format("t%d2", i)}
      for j = 0, 3 do u[#u + 1] = st((i * 4 + j) * nci * nco, e[j + 1]) end
    end
    for i = 1, #u, 4 do C:line(table.concat(u, " ", i, i + 3)) end
  end, L.parallel, V)
  M.tiles(C, L, a, NV, 2, M.tile_body, R, V)
end

-- The tile loops of a pass with m x m output tiles: one loop nest over lane blocks and
-- tile rows per class of tile rows, one tx loop per class of tile columns, body(C, a, R,
-- V, rc, cc) for a tile (conv_wino4.lua's too). Threaded, the nests share one parallel
-- region (CG_PARALLEL) and each hands out its iterations without a barrier at its end
-- (CG_FOR2_NOWAIT): a thread done with its share of one class of rows starts on the
-- next (ResNet-20's boundary classes are nests of 4 to 8 iterations, each had its own
-- fork and barrier), and every class is still resolved at generation time.
function M.tiles(C, L, a, NV, m, body, R, V)
  local geo, TB, np = a.geo, a.tile.TB, (m + 2) * (m + 2)
  local rcs = classes(geo.T[1], geo.I[1], geo.lo[1], geo.O[1], m)
  local ccs = classes(geo.T[2], geo.I[2], geo.lo[2], geo.O[2], m)
  if L.parallel then
    C:line("CG_PARALLEL")
    C:open("{")
  end
  for _, rc in ipairs(rcs) do
    C:line("/* tile rows %d..%d: input rows %s */", rc.lo, rc.hi, M.describe(rc))
    if L.parallel then C:line("CG_FOR2_NOWAIT") end
    C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
    C:open("for (int ty = %d; ty < %d; ty++) {", rc.lo, rc.hi + 1)
    C:line("cg_v vb[%d]; /* [%d][%d][TB]: B^T d B of each input channel */", np * a.nci * TB, np, a.nci)
    C:line("cg_v mb[%d]; /* [%d][%d][TB]: the products summed over the input channels */", np * a.nco * TB, np, a.nco)
    for _, cc in ipairs(ccs) do
      C:open("for (int tx = %d; tx < %d; tx++) { /* input columns %s */", cc.lo, cc.hi + 1, M.describe(cc))
      body(C, a, R, V, rc, cc)
      C:close()
    end
    C:close()
    C:close()
  end
  if L.parallel then C:close() end
end

-- "all inside", or which of the block's input rows (columns) are zeros, and how many
-- outputs a tile stores when not all
function M.describe(c)
  local z = {}
  for i = 1, #c.v do if not c.v[i] then z[#z + 1] = tostring(i - 1) end end
  local s = #z == 0 and "all inside" or ("zeros at " .. table.concat(z, ", "))
  if c.n < #c.v - 2 then s = s .. (c.n == 1 and ", one output" or string.format(", %d outputs", c.n)) end
  return s
end

-- The products of a tile: per position p (of np) and block of TC output channels, a
-- TC x TB register tile summed over the input channels into mb[p][nco][TB]. Positions
-- outermost: a position's transformed inputs (nci x TB vectors) and weights (nci x nco)
-- stay in L1 across the channel blocks, where blocks outermost swept all of vb and U
-- (past L1 from 16 channels) once per block: +6-7 % a 3x3 layer's training step at 16,
-- 32 and 64 channels (ResNet-20 b64, one thread, 2-core Zen 3). Returns inside a loop
-- over the output channels co for the output transform, which the caller closes
-- (conv_wino4.lua's too).
function M.mb_at(a, q, co, b)
  return string.format("mb[(%s * %d + %s) * %d + %s]", q, a.nco, co, a.tile.TB, b)
end

-- The products of the np positions: for each, the output channels in the fewest blocks
-- of at most TC, as even as they go (64 channels, TC 11: 4 blocks of 11 and 2 of 10),
-- each a register tile of its channels x TB lane vectors summed over the input
-- channels. Every block's size is known here: no test in the code.
function M.products(C, a, np)
  local TC, TB = a.tile.TC, a.tile.TB
  local nci, nco = a.nci, a.nco
  local util = require("util")
  -- a block of n channels from co0 (an affine expression of the loop variable cb)
  local function block(n, co0)
    for t = 0, n - 1 do
      local z = {}
      for b = 0, TB - 1 do z[#z + 1] = string.format("a%d_%d = vsplat(0.0f)", t, b) end
      C:line("cg_v %s;", table.concat(z, ", "))
    end
    C:open("for (int ci = 0; ci < %d; ci++) {", nci)
    C:line("const float *restrict u = U + (size_t)(p * %d + ci) * %d + %s;", nci, nco, tostring(co0))
    local le, keep = {}, {}
    for b = 0, TB - 1 do
      le[#le + 1] = string.format("e%d = vb[(p * %d + ci) * %d + %d]", b, nci, TB, b)
      keep[#keep + 1] = string.format("VKEEP(e%d);", b)
    end
    C:line("cg_v %s; %s", table.concat(le, ", "), table.concat(keep, " "))
    for t = 0, n - 1 do
      local f = {}
      for b = 0, TB - 1 do f[#f + 1] = string.format("a%d_%d += u[%d] * e%d;", t, b, t, b) end
      C:line(table.concat(f, " "))
    end
    C:close()
    for t = 0, n - 1 do
      local st = {}
      for b = 0, TB - 1 do st[#st + 1] = string.format("%s = a%d_%d;", M.mb_at(a, "p", tostring(co0:add(t)), b), t, b) end
      C:line(table.concat(st, " "))
    end
  end
  local nb = (nco + TC - 1) // TC
  local q, r = nco // nb, nco % nb
  C:open("for (int p = 0; p < %d; p++) {", np)
  -- r blocks of q + 1 channels, then nb - r of q (util.loop: a run of one block is
  -- written with its channels constant, in braces of its own)
  for _, run in ipairs({{r, q + 1, 0}, {nb - r, q, r * (q + 1)}}) do
    local n, size, at = run[1], run[2], run[3]
    util.loop(C, "cb", 0, n - 1, false, function(cb)
      local co0 = util.aff(at):term(cb, size)
      if co0:is_const() then C:open("{ /* output channels %d..%d */", co0.c, co0.c + size - 1) end
      block(size, co0)
      if co0:is_const() then C:close() end
    end)
  end
  C:close()
  C:open("for (int co = 0; co < %d; co++) {", nco)
end

-- Prefetch into L2 the input columns that the next tile along the row reads and this
-- one does not (m of them, each row the class has inside the input), for the input
-- channel ci. The tiles read their blocks a channel at a time, a stream of cache lines
-- per (row, channel): 64 at 16 channels, more than the hardware prefetchers follow.
-- A position is prefetched only when it lies in ci's plane for every tile of the classes
-- (a column past a row's end is the next row's first, in the plane). ResNet-20 b64 on
-- 2-core Zen 3, the step (bench/ab.py): 1.003-1.014 (written by hand: 1.023-1.026;
-- into L1 1.012, one column 1.014).
local function prefetch_next(C, a, R, V, rc, cc, m)
  local geo = a.geo
  local Ih, Iw = geo.I[1], geo.I[2]
  local pf = {}
  for i = 0, m + 1 do
    for j = m + 2, 2 * m + 1 do
      local last = (m * rc.hi - geo.lo[1] + i) * Iw + m * cc.hi - geo.lo[2] + j
      if rc.v[i + 1] and last < Ih * Iw then
        for l = 0, math.max(1, a.tile.TB * V // 16) - 1 do
          pf[#pf + 1] = string.format("__builtin_prefetch(xq + (xo + %d), 0, 2);", (i * Iw + j) * R + l * 16)
        end
      end
    end
  end
  if #pf == 0 then return end
  C:line("const float *restrict xq = %s + (size_t)ci * %d; /* the next tile's new columns */", a.src, Ih * Iw * R)
  for k = 1, #pf, 4 do C:line(table.concat(pf, " ", k, math.min(#pf, k + 3))) end
end

-- One tile (ty, tx) of row class rc and column class cc: input transform, the 16
-- products, output transform.
function M.tile_body(C, a, R, V, rc, cc)
  local geo, TB = a.geo, a.tile.TB
  local nci, nco = a.nci, a.nco
  local Ih, Iw = geo.I[1], geo.I[2]
  local Oh, Ow = geo.O[1], geo.O[2]
  -- input transform: the 4x4 block of tile (ty, tx) starts at input (2ty - lo, 2tx - lo)
  C:line("const long xo = ((long)(2 * ty - %d) * %d + 2 * tx - %d) * %d + v0 * %d; /* the block's first input, maybe outside */",
    geo.lo[1], Iw, geo.lo[2], R, V)
  C:open("for (int ci = 0; ci < %d; ci++) {", nci)
  prefetch_next(C, a, R, V, rc, cc, 2)
  C:open("for (int bb = 0; bb < %d; bb++) {", TB)
  C:line("const float *restrict xc = %s + (size_t)ci * %d + bb * %d;", a.src, Ih * Iw * R, V)
  local ld, zero = {}, {}
  for i = 0, 3 do
    for j = 0, 3 do
      if rc.v[i + 1] and cc.v[j + 1] then
        ld[#ld + 1] = string.format("d%d%d = VLOAD(xc + (xo + %d))", i, j, (i * Iw + j) * R)
      else
        zero[#zero + 1] = string.format("d%d%d = vsplat(0.0f)", i, j)
      end
    end
  end
  for k = 1, #ld, 4 do C:line("const cg_v %s;", table.concat(ld, ", ", k, math.min(#ld, k + 3))) end
  if #zero > 0 then C:line("const cg_v %s; /* outside the input */", table.concat(zero, ", ")) end
  -- s = B^T d (rows), then v = s B (columns)
  for j = 0, 3 do
    C:line("const cg_v s0%d = d0%d - d2%d, s1%d = d1%d + d2%d, s2%d = d2%d - d1%d, s3%d = d1%d - d3%d;",
      j, j, j, j, j, j, j, j, j, j, j, j)
  end
  for i = 0, 3 do
    local at = function(j) return string.format("vb[(%d * %d + ci) * %d + bb]", i * 4 + j, nci, TB) end
    C:line("%s = s%d0 - s%d2; %s = s%d1 + s%d2; %s = s%d2 - s%d1; %s = s%d1 - s%d3;",
      at(0), i, i, at(1), i, i, at(2), i, i, at(3), i, i)
  end
  C:close()
  C:close()
  M.products(C, a, 16)
  -- output transform: Y = A^T m A, 2x2 outputs (one row or column of them in the
  -- class of an odd extent's last tile)
  C:open("for (int b = 0; b < %d; b++) {", TB)
  local m = function(i, j) return M.mb_at(a, i * 4 + j, "co", "b") end
  -- r = A^T m: row 1 only when the class stores a second output row, column 3 (read by
  -- the second output column alone) only when it stores a second column
  for j = 0, cc.two and 3 or 2 do
    if rc.two then
      C:line("const cg_v r0%d = %s + %s + %s, r1%d = %s - %s - %s;", j, m(0, j), m(1, j), m(2, j), j, m(1, j), m(2, j), m(3, j))
    else
      C:line("const cg_v r0%d = %s + %s + %s;", j, m(0, j), m(1, j), m(2, j))
    end
  end
  local ys = {}
  for i = 0, 1 do
    for j = 0, 1 do
      if (i == 0 or rc.two) and (j == 0 or cc.two) then ys[#ys + 1] = {i, j} end
    end
  end
  local def, add = {}, {}
  for _, y in ipairs(ys) do
    local i, j = y[1], y[2]
    def[#def + 1] = j == 0 and string.format("y%d%d = r%d0 + r%d1 + r%d2", i, j, i, i, i)
      or string.format("y%d%d = r%d1 - r%d2 - r%d3", i, j, i, i, i)
    add[#add + 1] = string.format("y%d%d += bv;", i, j)
  end
  C:line("cg_v %s;", table.concat(def, ", "))
  if a.bias then
    C:line("{ const cg_v bv = vsplat(%s); %s }", a.bias("co"), table.concat(add, " "))
  end
  C:line("const size_t o = ((size_t)(co * %d + 2 * ty) * %d + 2 * tx) * %d + (v0 + b) * %d;", Oh, Ow, R, V)
  for _, y in ipairs(ys) do
    local i, j = y[1], y[2]
    C:line(a.store(string.format("o + %d", (i * Ow + j) * R), string.format("y%d%d", i, j)))
  end
  C:close()
  C:close()
end

---------------------------------------------------------------------------
-- dW. The forward of one tile is Y = A^T [U (.) V] A with U = G g G^T, so the
-- gradient of its kernel is
--
--   dg = G^T [ Z (.) V ] G,   Z = A dY A^T,   V = B^T d B (the forward's)
--
-- summed over the tiles and the batch; G^T . G is linear, so the sums run on the
-- 16 positions first, M[p][co][ci] = sum Z[p][co] V[p][ci] (16 multiply-adds per
-- channel pair and 2x2 outputs instead of 36), and dg = G^T M G once a call.
-- The rows i of the transform are independent (M's rows 4i .. 4i + 3 need B^T's row
-- i of d and A's row i of dY): a parallel section per RS rows, no reduction between
-- threads. A section transforms a tile row at a time (all its tiles, TB lane vectors)
-- into stack buffers, a channel at a time along the row (the tile-major order kept 64
-- streams of cache lines in flight, too many for the prefetchers: 1.6x slower on the
-- Xeon), then for each position a register tile of TCO x TCI channel pairs sums the
-- products over tiles and lanes, reduced across lanes into M.
-- A's last row is (0, -1): its sign is taken out of Z and put back in G^T M G.
---------------------------------------------------------------------------

-- The dW tile: TCO x TCI channel pairs (accumulators, TCO + TCI loads for them), TB
-- lane vectors a chunk so the two buffers take up to 192 KB; nil if even one lane
-- vector takes more than 256 KB.
-- kb: the transformed rows' budget, KiB (default 192: the best of 70/192/300 on Zen 3's
-- 512 KiB L2; lanes+wino+dwl offers 1024 for the tuner, for cores of larger L2)
-- m: outputs a tile along each axis, 2 (F(2x2, 3x3), default) or 4 (conv_wino4.lua's)
-- gemm: the products as a GEMM over vectors of input channels (dw_gemm below): M in
-- floats, tiles of TCO output channels x TCV vectors of input channels; nil unless the
-- input channels come in whole vectors
function M.dw_tile(L, T, kb, m, gemm)
  m = m or 2
  if gemm and L.cin % L.vec ~= 0 then return nil end
  local n, g = m + 2, L.geom
  local Tx = (g.w.O + m - 1) // m
  local NV = L.lanes_R // L.vec
  -- RS rows of the transform a section: half of them, two sections (each thread reads
  -- the input once on two cores: 15 % faster than 4 sections of one row on the Xeon,
  -- ResNet-20's 16-channel dW) when a lane vector's rows fit 256 KB and the section's
  -- part of M fits 128 KB, else one (n sections, as many for each of two cores).
  -- A chunk's sums are added to the section's M once a chunk: the sweeps of M cost
  -- (n / RS sections) x (chunks: tile rows x NV / TB) x (M's section, ~RS): the same
  -- for every RS at a given TB, but from L3 once a section outgrows L2, and RS = 1
  -- halves the rows a chunk holds, which lets TB double within the budget.
  -- ResNet-20 b64 on 2-core Zen 3 (a call alone, 7 rounds alternating, 3 runs):
  -- 64 channels (M 1 MiB a section at RS = 2, TB = 1) 2.17-2.58 -> 1.83-1.96 ms at
  -- RS = 1, TB = 2; 32 channels (256 KiB) 1.91 -> 1.57 ms; 16 channels (64 KiB) kept.
  local bytes = function(tb, rs) return n * rs * (L.cin + L.cout) * Tx * tb * L.vec * 4 end
  local VA = not gemm and M.dw_va(L, n * n) or nil
  local mbytes = function(rs) return n * rs * L.cin * L.cout * (VA and L.vec or 1) * 4 end
  local RS
  for _, rs in ipairs({n // 2, 1}) do
    if not RS and bytes(1, rs) <= 256 * 1024 and (rs == 1 or mbytes(rs) <= 128 * 1024) then RS = rs end
  end
  if not RS then return nil end
  local TB = 1
  for tb = NV, 1, -1 do
    if NV % tb == 0 and bytes(tb, RS) <= (kb or 192) * 1024 then TB = tb; break end
  end
  if gemm then
    local gt = M.dw_gemm_tile(L, T)
    return {G = 1, TCO = gt.TCO, TCV = gt.TCV, TB = TB, RS = RS}
  end
  local best = M.dw_pairs(L, T)
  return {TCO = best.TCO, TCI = best.TCI, TB = TB, VA = VA, RS = RS}
end

-- the GEMM form's register tile: TCO output channels x TCV vectors of input channels,
-- the most accumulators the target has, then the fewest loads (TCV vectors and TCO
-- broadcasts a product step)
function M.dw_gemm_tile(L, T)
  local ld = require("util").largest_divisor
  local nv = L.cin // L.vec
  local best = {TCO = 1, TCV = 1}
  for tcv = 1, math.min(nv, T.acc) do
    if nv % tcv == 0 then
      local tco = ld(L.cout, T.acc // tcv)
      local a, b = tco * tcv, best.TCO * best.TCV
      if a > b or (a == b and tco + tcv < best.TCO + best.TCV) then best = {TCO = tco, TCV = tcv} end
    end
  end
  return best
end

-- the dW products' register tile: TCO x TCI channel pairs, the most accumulators the
-- target has, then the fewest loads for them
function M.dw_pairs(L, T)
  local ld = require("util").largest_divisor
  local best = {TCO = 1, TCI = 1}
  for tco = 1, math.min(L.cout, T.acc) do
    if L.cout % tco == 0 then
      local tci = ld(L.cin, T.acc // tco)
      if tco * tci > best.TCO * best.TCI or (tco * tci == best.TCO * best.TCI and tco + tci < best.TCO + best.TCI) then
        best = {TCO = tco, TCI = tci}
      end
    end
  end
  return best
end

-- VA: the chunks' sums kept as lane vectors (a vector add each) and reduced across
-- lanes once a call, when they fit 4 MB of scratch (np positions); else reduced at every
-- chunk (vsum: ~10 operations an accumulator, as many as the chunk's multiply-adds for
-- 64-channel 7x7 layers)
function M.dw_va(L, np)
  return np * L.cin * L.cout * L.vec * 4 <= 4 * 1024 * 1024 and 1 or nil
end

-- scratch floats of a Winograd dW: M[np][co][ci] (16 positions for "wino", 36 for
-- "wino4"), floats or lane vectors (VA)
function M.dw_scratch(L)
  local dw = L.sched.dw
  local np = ({wino = 16, wino4 = 36})[dw.form]
  if not np then return 0 end
  return np * L.cin * L.cout * (dw.tile.VA and L.vec or 1)
end

-- B^T's row i: (row a, row b, sign) with s = d[a] + sign * d[b]
local BT = {{0, 2, -1}, {1, 2, 1}, {2, 1, -1}, {1, 3, -1}}
-- A's row i (sign of row 3 taken out): the dY rows it adds, {row, sign}
local AR = {{{0, 1}}, {{0, 1}, {1, 1}}, {{0, 1}, {1, -1}}, {{1, 1}}}

-- the C expression of a combination of named vectors ("0" if none present)
local function combo(terms)
  local s = ""
  for _, t in ipairs(terms) do
    local v, sg = t[1], t[2]
    if v then
      if s == "" then s = sg < 0 and ("-" .. v) or v else s = s .. (sg < 0 and " - " or " + ") .. v end
    end
  end
  return s == "" and "vsplat(0.0f)" or s
end

-- The dW's products of a chunk: for each of its np transform positions j, TCO x TCI
-- channel pairs summed over the chunk's K tiles and lanes (xt[j][nci][K], dt[j][nco][K])
-- in registers, then added to Mi[j][nco][nci] (lane vectors when VA, else lane sums).
-- c = {np, nci, nco, TCO, TCI, K, VA}; conv_wino4.lua's dW too.
-- The products as a GEMM over vectors of input channels (the tile's G form): per
-- position j, the chunk's xt[j][nci][K] (vectors of lanes) transposed V x V at a time
-- (vtr) to xT[K x V][nci], then TCO x TCV accumulators (TCO output channels, TCV
-- vectors of input channels) sum over the chunk's tiles and lanes kk, dY's side
-- broadcast from dt[j][co] (a float of its lane vectors), and are added to
-- Mi[j][nco][nci] in floats. The lane-vector form ends every channel pair's chunk with
-- one lane reduction (vsum) or a lane vector of M read and written: as many operations
-- as its multiply-adds when a chunk holds few tiles (ResNet-20's 64-channel 7x7 layers:
-- F(4x4) has 2 tiles a row).
-- c = {np, nci, nco, TCO, TCV, K, V}
local function dw_gemm(C, c)
  local np, nci, nco, TCO, TCV, K, V = c.np, c.nci, c.nco, c.TCO, c.TCV, c.K, c.V
  local KK, PC = K * V, nci * nco
  C:line("float xT[%d]; /* [%d tiles x lanes][%d]: a position's xt, channels innermost */", KK * nci, KK, nci)
  C:open("for (int j = 0; j < %d; j++) {", np)
  C:open("for (int cb = 0; cb < %d; cb++) {", nci // V)
  C:line("for (int k = 0; k < %d; k++) vtr(xT + k * %d + cb * %d, %d, xt + (size_t)(j * %d + cb * %d) * %d + k, %d);",
    K, V * nci, V, nci, nci, V, K, K)
  C:close()
  C:line("const float *restrict df = (const float *)(dt + (size_t)j * %d); /* [%d][%d tiles x lanes] */", nco * K, nco, KK)
  C:open("for (int cob = 0; cob < %d; cob++) {", nco // TCO)
  C:open("for (int cvb = 0; cvb < %d; cvb++) {", nci // (V * TCV))
  for t = 0, TCO - 1 do
    local z = {}
    for u = 0, TCV - 1 do z[#z + 1] = string.format("a%d_%d = vsplat(0.0f)", t, u) end
    C:line("cg_v %s;", table.concat(z, ", "))
  end
  C:line("const float *restrict dp = df + (size_t)cob * %d;", TCO * KK)
  C:line("const float *restrict xp = xT + cvb * %d;", TCV * V)
  C:open("for (int kk = 0; kk < %d; kk++) {", KK)
  local lf, kf = {}, {}
  for u = 0, TCV - 1 do
    lf[#lf + 1] = string.format("f%d = VLOAD(xp + kk * %d + %d)", u, nci, u * V)
    kf[#kf + 1] = string.format("VKEEP(f%d);", u)
  end
  C:line("cg_v %s; %s", table.concat(lf, ", "), table.concat(kf, " "))
  for t = 0, TCO - 1 do
    local e = {string.format("{ const cg_v e = vsplat(dp[%d + kk]);", t * KK)}
    for u = 0, TCV - 1 do e[#e + 1] = string.format("a%d_%d += e * f%d;", t, u, u) end
    e[#e + 1] = "}"
    C:line(table.concat(e, " "))
  end
  C:close()
  C:line("float *restrict mp = Mi + (size_t)j * %d + (cob * %d) * %d + cvb * %d;", PC, TCO, nci, TCV * V)
  for t = 0, TCO - 1 do
    local s = {}
    for u = 0, TCV - 1 do
      local o = t * nci + u * V
      s[#s + 1] = string.format("VSTORE(mp + %d, VLOAD(mp + %d) + a%d_%d);", o, o, t, u)
    end
    C:line(table.concat(s, " "))
  end
  C:close()
  C:close()
  C:close()
end

-- c = {np, nci, nco, TCO, TCI, K, VA}, or the G form's (dw_gemm's) when c.G
function M.dw_products(C, c)
  if c.G then return dw_gemm(C, c) end
  local np, nci, nco, TCO, TCI, K, VA = c.np, c.nci, c.nco, c.TCO, c.TCI, c.K, c.VA
  local mt, PC = VA and "cg_v" or "float", nci * nco
  C:open("for (int j = 0; j < %d; j++) {", np)
  C:open("for (int cob = 0; cob < %d; cob++) {", nco // TCO)
  C:open("for (int cib = 0; cib < %d; cib++) {", nci // TCI)
  for t = 0, TCO - 1 do
    local z = {}
    for u = 0, TCI - 1 do z[#z + 1] = string.format("a%d_%d = vsplat(0.0f)", t, u) end
    C:line("cg_v %s;", table.concat(z, ", "))
  end
  C:line("const cg_v *restrict dp = dt + (size_t)(j * %d + cob * %d) * %d;", nco, TCO, K)
  C:line("const cg_v *restrict xp = xt + (size_t)(j * %d + cib * %d) * %d;", nci, TCI, K)
  C:open("for (int k = 0; k < %d; k++) {", K)
  -- the TCO vectors of dY's side kept in registers too (VKEEP): else gcc folds their
  -- loads into every FMA, TCO x TCI + TCI loads for TCO x TCI FMAs (Zen 5, ResNet-20's
  -- 16-channel dW, 10 alternating rounds: 0.84x the time on 1 thread, 0.89x on 2)
  local le, ke = {}, {}
  for t = 0, TCO - 1 do
    le[#le + 1] = string.format("e%d = dp[%d + k]", t, t * K)
    ke[#ke + 1] = string.format("VKEEP(e%d);", t)
  end
  C:line("cg_v %s; %s", table.concat(le, ", "), table.concat(ke, " "))
  for u = 0, TCI - 1 do
    local f = {string.format("{ cg_v f = xp[%d + k]; VKEEP(f);", u * K)}
    for t = 0, TCO - 1 do f[#f + 1] = string.format("a%d_%d += e%d * f;", t, u, t) end
    f[#f + 1] = "}"
    C:line(table.concat(f, " "))
  end
  C:close()
  C:line("%s *restrict mp = Mi + (size_t)j * %d + (cob * %d) * %d + cib * %d;", mt, PC, TCO, nci, TCI)
  for t = 0, TCO - 1 do
    local s = {}
    for u = 0, TCI - 1 do
      s[#s + 1] = string.format(VA and "mp[%d] += a%d_%d;" or "mp[%d] += vsum(a%d_%d);", t * nci + u, t, u)
    end
    C:line(table.concat(s, " "))
  end
  C:close()
  C:close()
  C:close()
end

-- The loops of dW's last step, dg = G^T M G, and m, the pair's (or the vector's) M:
-- on vectors of V input channels when M holds floats (not VA) and the channels come in
-- whole vectors (returns true), else a channel pair at a time. The caller closes both.
function M.dw_final_loops(C, L, V, VA)
  local nci, nco = L.cin, L.cout
  local CV = not VA and nci % V == 0
  if L.parallel then C:line("CG_PARALLEL_FOR") end
  C:open("for (int co = 0; co < %d; co++) {", nco)
  if CV then
    C:open("for (int cv = 0; cv < %d; cv++) {", nci // V)
    C:line("const float *restrict m = Mw + co * %d + cv * %d;", nci, V)
  else
    C:open("for (int ci = 0; ci < %d; ci++) {", nci)
    C:line("const %s *restrict m = Mw + co * %d + ci;", VA and "cg_v" or "float", nci)
  end
  return CV
end

function M.emit_dw(C, L, R, V, a)
  local geo, tile = M.fwd_geom(L), L.sched.dw.tile
  local TCO, TCI, TB = tile.TCO, tile.TCI, tile.TB
  local NV = R // V
  local nci, nco = L.cin, L.cout
  local Ih, Iw = geo.I[1], geo.I[2]
  local Oh, Ow = geo.O[1], geo.O[2]
  local Tx = geo.T[2]
  local K = Tx * TB
  local PC = nco * nci
  local rcs = classes(geo.T[1], Ih, geo.lo[1], Oh)
  local ccs = classes(Tx, Iw, geo.lo[2], Ow)
  local VA = tile.VA
  local mt = VA and "cg_v" or "float"
  if VA then
    C:line("cg_v *restrict Mw = (cg_v *)T; /* [16][%d][%d]: sum over tiles and samples of Z (.) V, per lane */", nco, nci)
  else
    C:line("float *restrict Mw = T; /* [16][%d][%d]: sum over tiles and samples of Z (.) V */", nco, nci)
  end
  if L.parallel then C:line("CG_PARALLEL_SECTIONS") end
  C:open("{")
  local RS = tile.RS or 1
  for sec = 0, 4 // RS - 1 do
    local r0 = sec * RS
    if L.parallel then C:line("CG_SECTION") end
    C:open("{ /* transform rows %d..%d: M[%d..%d] */", r0, r0 + RS - 1, 4 * r0, 4 * (r0 + RS) - 1)
    C:line("%s *restrict Mi = Mw + %d;", mt, 4 * r0 * PC)
    C:line("for (int k = 0; k < %d; k++) Mi[k] = %s;", 4 * RS * PC, VA and "vsplat(0.0f)" or "0.0f")
    C:line("cg_v xt[%d]; /* [%d][%d][%d tiles x %d]: rows %d..%d of B^T d B */", 4 * RS * nci * K, 4 * RS, nci, Tx, TB, r0, r0 + RS - 1)
    C:line("cg_v dt[%d]; /* [%d][%d][%d tiles x %d]: rows %d..%d of A dY A^T */", 4 * RS * nco * K, 4 * RS, nco, Tx, TB, r0, r0 + RS - 1)
    for _, rc in ipairs(rcs) do
      C:open("for (int ty = %d; ty < %d; ty++) { /* input rows %s */", rc.lo, rc.hi + 1, M.describe(rc))
      C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
      -- which loads a class of tile columns makes (none: the buffers get zeros)
      local function loads(cc)
        local any_x, any_y = false, false
        for i = r0, r0 + RS - 1 do
          local bt = BT[i + 1]
          any_y = any_y or i ~= 3 or rc.two
          for j = 0, 3 do any_x = any_x or (cc.v[j + 1] and (rc.v[bt[1] + 1] or rc.v[bt[2] + 1])) end
        end
        return any_x, any_y
      end
      -- V's rows: s = d[a] + sign d[b] along the 4 columns, then s B; a channel at a
      -- time along the tile row (a few streams of whole cache lines, which the
      -- prefetchers follow; the tile-major order ran 16 channels x 4 rows of streams)
      C:open("for (int ci = 0; ci < %d; ci++) {", nci)
      C:open("for (int bb = 0; bb < %d; bb++) {", TB)
      -- (the row pointers only where some class of tile columns loads: else unused)
      local row_x, row_y = false, false
      for _, cc in ipairs(ccs) do
        local lx, ly = loads(cc)
        row_x, row_y = row_x or lx, row_y or ly
      end
      if row_x then C:line("const float *restrict xc = x + (size_t)ci * %d + bb * %d + v0 * %d;", Ih * Iw * R, V, V) end
      for _, cc in ipairs(ccs) do
        local any_x = loads(cc)
        C:open("for (int tx = %d; tx < %d; tx++) { /* input columns %s */", cc.lo, cc.hi + 1, M.describe(cc))
        if any_x then
          C:line("const long xo = ((long)(2 * ty - %d) * %d + 2 * tx - %d) * %d;", geo.lo[1], Iw, geo.lo[2], R)
        end
        for i = r0, r0 + RS - 1 do
          local bt, q = BT[i + 1], i - r0
          local sv = {}
          for j = 0, 3 do
            local terms = {}
            for k, r in ipairs({bt[1], bt[2]}) do
              local v = nil
              if rc.v[r + 1] and cc.v[j + 1] then v = string.format("VLOAD(xc + (xo + %d))", (r * Iw + j) * R) end
              terms[#terms + 1] = {v, k == 1 and 1 or bt[3]}
            end
            sv[#sv + 1] = string.format("s%d%d = %s", q, j, combo(terms))
          end
          C:line("const cg_v %s;", table.concat(sv, ", "))
          local at = function(j) return string.format("xt[((%d * %d + ci) * %d + tx) * %d + bb]", 4 * q + j, nci, Tx, TB) end
          C:line("%s = s%d0 - s%d2; %s = s%d1 + s%d2;", at(0), q, q, at(1), q, q)
          C:line("%s = s%d2 - s%d1; %s = s%d1 - s%d3;", at(2), q, q, at(3), q, q)
        end
        C:close()
      end
      C:close()
      C:close()
      -- Z's rows: z = A's row i of dY's 2 rows along the 2 columns, then z A^T
      C:open("for (int co = 0; co < %d; co++) {", nco)
      C:open("for (int bb = 0; bb < %d; bb++) {", TB)
      if row_y then C:line("const float *restrict yc = dy + (size_t)co * %d + bb * %d + v0 * %d;", Oh * Ow * R, V, V) end
      for _, cc in ipairs(ccs) do
        local _, any_y = loads(cc)
        C:open("for (int tx = %d; tx < %d; tx++) { /* input columns %s */", cc.lo, cc.hi + 1, M.describe(cc))
        if any_y then C:line("const size_t yo = ((size_t)(2 * ty) * %d + 2 * tx) * %d;", Ow, R) end
        for i = r0, r0 + RS - 1 do
          local q = i - r0
          local zv = {}
          for j = 0, 1 do
            local terms = {}
            for _, t in ipairs(AR[i + 1]) do
              local r = t[1]
              local ok = (r == 0 or rc.two) and (j == 0 or cc.two)
              terms[#terms + 1] = {ok and string.format("VLOAD(yc + (yo + %d))", (r * Ow + j) * R) or nil, t[2]}
            end
            zv[#zv + 1] = string.format("z%d%d = %s", q, j, combo(terms))
          end
          C:line("const cg_v %s;", table.concat(zv, ", "))
          local dtat = function(j) return string.format("dt[((%d * %d + co) * %d + tx) * %d + bb]", 4 * q + j, nco, Tx, TB) end
          C:line("%s = z%d0; %s = z%d0 + z%d1; %s = z%d0 - z%d1; %s = z%d1;", dtat(0), q, dtat(1), q, q, dtat(2), q, q, dtat(3), q)
        end
        C:close()
      end
      C:close()
      C:close()
      -- the products: per position, TCO x TCI channel pairs over the chunk's tiles and lanes
      M.dw_products(C, {np = 4 * RS, nci = nci, nco = nco, TCO = TCO, TCI = TCI, K = K, VA = VA,
        G = tile.G, TCV = tile.TCV, V = V})
      C:close()
      C:close()
    end
    C:close()
  end
  C:close()
  -- dg = G^T M G, with the sign of A's last row on M's row 3 and column 3; on vectors of
  -- V input channels when M holds floats and the channels come in whole vectors
  local CV = M.dw_final_loops(C, L, V, VA)
  local et = CV and "cg_v" or "float"
  local mv = {}
  for p = 0, 15 do
    local sg = ((p // 4 == 3) ~= (p % 4 == 3)) and "-" or ""
    mv[#mv + 1] = string.format(CV and "m%d%d = %sVLOAD(m + %d)" or VA and "m%d%d = %svsum(m[%d])" or "m%d%d = %sm[%d]",
      p // 4, p % 4, sg, p * PC)
  end
  for k = 1, 16, 4 do C:line("const %s %s;", et, table.concat(mv, ", ", k, k + 3)) end
  for b = 0, 3 do
    C:line("const %s r0%d = m0%d + 0.5f * (m1%d + m2%d), r1%d = 0.5f * (m1%d - m2%d), r2%d = 0.5f * (m1%d + m2%d) + m3%d;",
      et, b, b, b, b, b, b, b, b, b, b, b)
  end
  if CV then
    C:line("cg_v g[9]; /* the taps of %d input channels */", V)
  else
    C:line("float *restrict gwc = %s + co * %d + ci * 9;", a.gw, nci * 9)
  end
  local o = CV and "g[%d] = " or "gwc[%d] += "
  for k = 0, 2 do
    C:line(o .. "r%d0 + 0.5f * (r%d1 + r%d2); " .. o .. "0.5f * (r%d1 - r%d2); " .. o .. "0.5f * (r%d1 + r%d2) + r%d3;",
      3 * k, k, k, k, 3 * k + 1, k, k, 3 * k + 2, k, k, k)
  end
  if CV then
    C:line("float *restrict gwc = %s + co * %d + cv * %d;", a.gw, nci * 9, V * 9)
    C:line("for (int c = 0; c < %d; c++) for (int k = 0; k < 9; k++) gwc[c * 9 + k] += g[k][c];", V)
  end
  C:close()
  C:close()
end

return M
