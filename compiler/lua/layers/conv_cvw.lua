-- conv2d, "cvw" form: Winograd F(2x2, 3x3) on the channels-last copies of conv.lua's
-- channel-vector form ("cv"), for the batches too small for the batch-innermost layout
-- (a 3x3 conv 64 -> 64 on 56x56 at batch 8, VGG-16 at 224 at batch 2). Stride 1,
-- dilation 1, no groups. "cv+wino+dw" is the heuristic's schedule from 64 channels in and
-- out (conv.lua's candidates); "cv+wino" and "wv+wino" are the tuner's.
--
-- Per sample, the padded input xp [Hp][Wp][Cin] (conv.lua's cv_scratch: kept for the cv
-- form's dW) is cut into 4x4 patches that overlap by 2, one for every 2x2 outputs:
--   V = B^T d B     each patch and input channel: 16 values, adds only
--   M = V . U       for each of the 16 points a GEMM over the input channels, a tile
--                   of TT patches x TV vectors of output channels in registers
--   Y = A^T M A     2x2 outputs of each patch, bias and the fused activation
-- U = G g G^T of every channel pair is made once a call (16 x Cin x CP floats). 16
-- multiply-adds per channel pair and 4 outputs instead of 36. A block of TT patches has
-- its V and M on the stack; with many channels (VGG-16's 256-512) they would not fit,
-- and U (up to 16 MB) would be streamed once per TT patches: there the blocked product
-- transforms rows of patches into shared buffers, then runs one GEMM per point and
-- panel of output channels over all of them (product_blocked). dx is the same product on
-- the zero-padded dy [Hq][Wq][Cout] with the kernel flipped and its channels swapped.
-- dW is another form's, which reads the input the forward keeps in its layout:
--   cv  (schedule "cv+wino")  every sample's channels-last copy (conv.lua's cv_scratch)
--   wv  (schedule "wv+wino")  every sample's padded planes (conv_wv.lua); the forward
--                             then turns one sample at a time into channels-last
--   cvw (schedule "cv+wino+dw") Winograd's from the cv form's copies (backward_dw below)
--
-- A last patch row or column that has only one output (an odd output size) reads only
-- three rows or columns: its fourth is outside the copy and is taken as zero, which
-- only the output dropped would have used (generation time: no tests in the loops).
local util = require("util")
local fuse = require("fuse")
local wv = require("layers.conv_wv")
local M = {}

local STACK_BYTES = 96 * 1024 -- a patch block's V and M buffers live on the thread's stack

function M.ok(L)
  local g = L.geom
  if not (g.h and g.w) or L.batch_lanes or L.groups ~= 1 then return false end
  for _, a in ipairs({g.h, g.w}) do
    if a.K ~= 3 or a.S ~= 1 or a.D ~= 1 or a.lo > 2 or a.hi > 2 or a.O < 2 then return false end
  end
  return true
end

local function ceilv(L, n) return (n + L.vec - 1) // L.vec * L.vec end

-- patches per block x output-channel vectors per register tile; nil when a block's
-- buffers do not fit STACK_BYTES. Cr: channels summed over, Co: channels produced.
function M.tile(L, T, Cr, Co)
  local NV = ceilv(L, Co) // L.vec
  local TV = util.largest_divisor(NV, math.max(1, T.acc // 4))
  local TT = math.max(1, T.acc // TV)
  -- a block of TT patches whose buffers would not fit the stack: the blocked product
  if 16 * TT * (Cr + ceilv(L, Co)) * 4 > STACK_BYTES then return {TT = TT, TV = TV, blocked = true} end
  return {TT = TT, TV = TV}
end

-- dW's register tile: TI input channels x TV vectors of output channels
function M.dw_tile(L, T)
  local TV = util.largest_divisor(ceilv(L, L.cout) // L.vec, math.max(1, T.acc // 4))
  return {TI = math.max(1, T.acc // TV), TV = TV}
end

-- The blocked product's rows of patches a block: every point's slice of the block's
-- transformed inputs and products, PB x (Cr + Op) floats, within SLICE_FLOATS (L2)
local SLICE_FLOATS = 65536
-- dW's blocks: dU (16 x Cin x CP floats) is read and written once a block, so its blocks
-- are larger (each point's slices in L3)
-- (512 -> 512 at 28x28, batch 2, 2 Zen 3 cores, bench/ab.py: 1.075x the step with
-- 262144 floats rather than 65536; 1048576 no different)
local DW_SLICE = 262144
function M.blocking(Oh, Ow, Cr, Op, slice)
  local NPW, PR = (Ow + 1) // 2, (Oh + 1) // 2
  local R = math.max(1, math.min(PR, (slice or SLICE_FLOATS) // (NPW * (Cr + Op))))
  -- a point's slices VPS, MPS floats apart: a cache line more than the slices, so that
  -- the 16 points' streams of the transforms do not fall into one cache set
  return {NPW = NPW, R = R, PB = R * NPW, VPS = R * NPW * Cr + 16, MPS = R * NPW * Op + 16}
end

-- dW's rows of Vb and Zb (one patch's channels): walked across the patches, a cache
-- line longer when a multiple of 64 floats (rows 2 KB apart fall into two of L1's sets)
local function dw_row(n) return n % 64 == 0 and n + 16 or n end
function M.dw_blocking(Oh, Ow, Cin, CP)
  local bk = M.blocking(Oh, Ow, Cin, CP, DW_SLICE)
  bk.VRS, bk.ZRS = dw_row(Cin), dw_row(CP)
  bk.VPS, bk.MPS = bk.PB * bk.VRS + 16, bk.PB * bk.ZRS + 16
  return bk
end

-- the blocked product's U: a point's panels R x Op floats and a cache line apart
function M.u_stride(R, Op) return R * Op + 16 end

-- Scratch layout (floats) after the dW form's: cv's channels-last copies (XP, all
-- samples) or wv's padded planes, then this form's regions (XC: one sample's
-- channels-last copy when the kept input is wv's). A forward alone (L.fwd_only: the
-- inference export) keeps nothing for a backward: one sample's channels-last copy in S,
-- the forward's regions in T.
function M.layout(L, cv_scratch)
  local g = L.geom
  local keep = (L.fwd_only or L.sched.dw.form == "cvw") and "cv" or L.sched.dw.form
  local CP, CIP = ceilv(L, L.cout), ceilv(L, L.cin)
  local r = {CP = CP, CIP = CIP, keep = keep,
    Hp = g.h.I + g.h.lo + g.h.hi, Wp = g.w.I + g.w.lo + g.w.hi,
    Qh = 2 - g.h.lo, Qw = 2 - g.w.lo, Hq = g.h.I + 2, Wq = g.w.I + 2}
  local at
  local function take(name, n) r[name] = at; at = at + ceilv(L, n) end
  -- XP in S (kept floats), the rest in T (total floats)
  if L.fwd_only or L.sched.dw.form == "cvw" then
    -- the cv form's regions this form uses, without its dW's (dy of every sample, the
    -- weights turned): every sample's channels-last copy, then one sample's buffers
    at = 0
    take("XP", (L.fwd_only and 1 or L.batch) * r.Hp * r.Wp * L.cin)
    r.kept, at = at, 0
  elseif keep == "cv" then
    local sc = cv_scratch(L)
    r.XP, r.YH, r.BP, r.DYP, r.DXH, r.kept, at = sc.XP, sc.YH, sc.BP, sc.DYP, sc.DXH, sc.kept, sc.total
  else
    local sw = wv.scratch(L)
    r.XP, r.kept, at = sw.XP, sw.kept, sw.total
    take("XC", r.Hp * r.Wp * L.cin)
  end
  if not r.YH then
    take("YH", g.h.O * g.w.O * CP)
    take("BP", CP)
    if not L.fwd_only then
      take("DYP", r.Hq * r.Wq * L.cout)
      take("DXH", g.h.I * g.w.I * CIP)
    end
  end
  take("U", 16 * M.u_stride(1, L.fwd_only and L.cin * CP or math.max(L.cin * CP, L.cout * CIP)))
  -- the blocked product's transformed inputs and products (fwd, dx)
  local vb, mb = 0, 0
  local function blocked(tile, Oh, Ow, Cr, Op, slice)
    if not (tile and tile.blocked) then return end
    local bk = M.blocking(Oh, Ow, Cr, Op, slice)
    vb, mb = math.max(vb, 16 * bk.VPS), math.max(mb, 16 * bk.MPS)
  end
  blocked(L.sched.fwd.tile, g.h.O, g.w.O, L.cin, CP)
  if not L.fwd_only and L.sched.dx and L.sched.dx.form == "cvw" then blocked(L.sched.dx.tile, g.h.I, g.w.I, L.cout, CIP) end
  if not L.fwd_only and L.sched.dw.form == "cvw" then
    local bk = M.dw_blocking(g.h.O, g.w.O, L.cin, CP)
    vb, mb = math.max(vb, 16 * bk.VPS), math.max(mb, 16 * bk.MPS)
  end
  if vb > 0 then take("VB", vb); take("MB", mb) end
  r.total = at
  return r
end

-- The panels of W of O channels, each a loop over mid = {var, count} around a loop over
-- its channels `ch`; body() emits the innermost body (j: the panel). Only the last panel
-- can be partial (W divides O rounded up to vectors): its bounds are generation-time
-- constants too. par: the whole panels on all threads.
local function panel_loops(C, O, W, par, mid, ch, body)
  local NF, rest = O // W, O % W
  local function one(n)
    C:open("for (int %s = 0; %s < %d; %s++) {", mid[1], mid[1], mid[2], mid[1])
    C:open("for (int %s = j * %d; %s < j * %d + %d; %s++) {", ch, W, ch, W, n, ch)
    body()
    C:close()
    C:close()
  end
  if NF > 0 then
    if par and NF > 1 then C:line("CG_PARALLEL_FOR") end
    C:open("for (int j = 0; j < %d; j++) {", NF)
    one(W)
    C:close()
  end
  if rest > 0 then
    C:open("{")
    C:line("const int j = %d;", NF)
    one(rest)
    C:close()
  end
end

-- U[p][r][o] = (G g G^T)[p] of the 3x3 kernel wexpr(r, o, k), o padded to Op (zeros)
local function weights(C, U, R, O, Op, wexpr, W, par, o_outer)
  if Op > O then C:line("for (int i = 0; i < %d; i++) %s[i] = 0.0f;", 16 * R * Op, U) end
  local function body()
    local g = {}
    for k = 0, 8 do g[#g + 1] = string.format("g%d = %s", k, wexpr("r", "o", k)) end
    C:line("const float %s;", table.concat(g, ", "))
    -- t = G g (4x3): rows g0, (g0+g1+g2)/2, (g0-g1+g2)/2, g2 of the kernel's rows
    for c = 0, 2 do
      C:line("const float t0%d = g%d, t1%d = 0.5f * (g%d + g%d + g%d), t2%d = 0.5f * (g%d - g%d + g%d), t3%d = g%d;",
        c, c, c, c, 3 + c, 6 + c, c, c, 3 + c, 6 + c, c, 6 + c)
    end
    for a = 0, 3 do
      local u = {
        string.format("t%d0", a),
        string.format("0.5f * (t%d0 + t%d1 + t%d2)", a, a, a),
        string.format("0.5f * (t%d0 - t%d1 + t%d2)", a, a, a),
        string.format("t%d2", a)}
      local st = {}
      for b = 0, 3 do
        if W then -- panels [16][Op / W][R][W]
          st[#st + 1] = string.format("%s[%d + ((size_t)j * %d + r) * %d + o - j * %d] = %s;", U,
            (a * 4 + b) * M.u_stride(R, Op), R, W, W, u[b + 1])
        else
          st[#st + 1] = string.format("%s[(%d * %d + r) * %d + o] = %s;", U, a * 4 + b, R, Op, u[b + 1])
        end
      end
      C:line(table.concat(st, " "))
    end
  end
  -- the panels: panel, r, o within it, so that each point's W stores are one line;
  -- else the loop over the kernel's slower index outermost: each channel pair's 9 taps
  -- are contiguous in w, consecutive pairs too (the other order strides by 9 x channels)
  if W then return panel_loops(C, O, W, par, {"r", R}, "o", body) end
  local outer, inner = {"r", R}, {"o", O}
  if o_outer then outer, inner = inner, outer end
  if par and outer[2] >= 16 then C:line("CG_PARALLEL_FOR") end
  C:open("for (int %s = 0; %s < %d; %s++) {", outer[1], outer[1], outer[2], outer[1])
  C:open("for (int %s = 0; %s < %d; %s++) {", inner[1], inner[1], inner[2], inner[1])
  body()
  C:close()
  C:close()
end

-- Input transform of patch t (a C expression: a constant, or the loop's `t`) of the
-- block, vectorized over the channels (contiguous in the copy and in Vb); rows, cols:
-- 3 where the patch's fourth row or column is outside the copy (taken as zero).
local function in_transform(C, L, a, tyexpr, x0expr, t, rows, cols, q)
  C:line("const float *restrict d = %s + ((size_t)(2 * (%s)) * %d + 2 * (%s + %s)) * %d;", a.src, tyexpr, a.Ws, x0expr, t, a.Cs)
  C:line("float *restrict vt = Vb + (%s) * %d;", q or t, a.VRS or a.Cr)
  -- whole vectors of channels as cg_v (gcc does not vectorize the loop when Vb is not a
  -- local array: it cannot tell that d and vt do not overlap), the rest one at a time
  local CV = a.Cr - a.Cr % L.vec
  local function body(ty, zero, ld, st)
    local l = {}
    for i = 0, 3 do
      for j = 0, 3 do
        l[#l + 1] = string.format("d%d%d = %s", i, j,
          (i < rows and j < cols) and ld(string.format("d + %d + c", (i * a.Ws + j) * a.Cs)) or zero)
      end
    end
    C:line("const %s %s;", ty, table.concat(l, ", "))
    -- B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3; then the same on the columns
    for j = 0, 3 do
      C:line("const %s e0%d = d0%d - d2%d, e1%d = d1%d + d2%d, e2%d = d2%d - d1%d, e3%d = d1%d - d3%d;",
        ty, j, j, j, j, j, j, j, j, j, j, j, j)
    end
    for i = 0, 3 do
      local o = {}
      local v = {
        string.format("e%d0 - e%d2", i, i), string.format("e%d1 + e%d2", i, i),
        string.format("e%d2 - e%d1", i, i), string.format("e%d1 - e%d3", i, i)}
      for j = 0, 3 do o[#o + 1] = st(string.format("vt + %d + c", (i * 4 + j) * a.VPS), v[j + 1]) end
      C:line(table.concat(o, " "))
    end
  end
  if CV > 0 then
    C:open("for (int c = 0; c < %d; c += %d) {", CV, L.vec)
    body("cg_v", "vsplat(0.0f)", function(p) return string.format("VLOAD(%s)", p) end,
      function(p, v) return string.format("VSTORE(%s, %s);", p, v) end)
    C:close()
  end
  if CV < a.Cr then
    C:open("for (int c = %d; c < %d; c++) {", CV, a.Cr)
    body("float", "0.0f", function(p) return string.format("*(%s)", p) end,
      function(p, v) return string.format("*(%s) = %s;", p, v) end)
    C:close()
  end
end

-- Output transform of patch t: A^T M A (rows m0 + m1 + m2 and m1 - m2 - m3), bias and
-- the store; orows, ocols: the outputs kept (1 on an odd edge), only what they read
-- is loaded and computed.
local function out_transform(C, L, a, tyexpr, x0expr, t, orows, ocols, q)
  local V, Op = L.vec, a.Op
  C:open("for (int v = 0; v < %d; v++) {", Op // V)
  local scols = ocols == 2 and {0, 1, 2, 3} or {0, 1, 2}
  local need = {}
  for i = 0, orows - 1 do
    for _, b in ipairs(scols) do
      for _, r in ipairs(i == 0 and {0, 1, 2} or {1, 2, 3}) do need[r * 4 + b] = true end
    end
  end
  C:line("const float *restrict mt = Mb + (%s) * %d + v * %d;", q or t, Op, V)
  local ml = {}
  for p = 0, 15 do
    if need[p] then ml[#ml + 1] = string.format("m%d = VLOAD(mt + %d)", p, p * a.MPS) end
  end
  C:line("const cg_v %s;", table.concat(ml, ", "))
  for _, b in ipairs(scols) do
    local sv = {string.format("s0%d = m%d + m%d + m%d", b, b, 4 + b, 8 + b)}
    if orows == 2 then sv[2] = string.format("s1%d = m%d - m%d - m%d", b, 4 + b, 8 + b, 12 + b) end
    C:line("const cg_v %s;", table.concat(sv, ", "))
  end
  for i = 0, orows - 1 do
    local ys = {string.format("s%d0 + s%d1 + s%d2", i, i, i), string.format("s%d1 - s%d2 - s%d3", i, i, i)}
    for j = 0, ocols - 1 do
      local val = a.bias and string.format("%s + VLOAD(%s + v * %d)", ys[j + 1], a.bias, V) or ys[j + 1]
      C:line("const cg_v o%d%d = %s;", i, j, val)
      C:line("VSTORE(%s + ((size_t)(2 * (%s) + %d) * %d + 2 * (%s + %s) + %d) * %d + v * %d, %s);", a.out, tyexpr, i, a.Ow,
        x0expr, t, j, Op, V, a.store(string.format("o%d%d", i, j)))
    end
  end
  C:close()
end

-- One block of patches: tile row tyexpr, patches x0expr .. + nt - 1 of it. last_row:
-- the row has one output row (its patches' 4th input row absent); odd_last: the block's
-- last patch has one output column. a: the product's shapes and buffers.
local function block(C, L, a, tyexpr, x0expr, nt, last_row, odd_last)
  local V, TT, TV = L.vec, a.TT, a.TV
  local Cr, Op = a.Cr, a.Op
  local nf = odd_last and nt - 1 or nt -- patches of two output columns
  C:open("{")
  C:line("float Vb[%d], Mb[%d]; /* [16][%d patches][channels] */", 16 * TT * Cr, 16 * TT * Op, TT)
  if nf > 0 then
    C:open("for (int t = 0; t < %d; t++) {", nf)
    in_transform(C, L, a, tyexpr, x0expr, "t", last_row and 3 or 4, 4)
    C:close()
  end
  if odd_last then
    C:open("{")
    in_transform(C, L, a, tyexpr, x0expr, tostring(nt - 1), last_row and 3 or 4, 3)
    C:close()
  end
  -- the 16 products: patches x output-channel vectors in registers, over the channels
  C:open("for (int p = 0; p < 16; p++) {")
  C:line("const float *restrict up = %s + (size_t)p * %d, *restrict vp = Vb + p * %d;", a.U, Cr * Op, TT * Cr)
  C:line("float *restrict mp = Mb + p * %d;", TT * Op)
  C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", Op // V, TV)
  for t = 0, nt - 1 do
    local z = {}
    for v = 0, TV - 1 do z[#z + 1] = string.format("a%d_%d = vsplat(0.0f)", t, v) end
    C:line("cg_v %s;", table.concat(z, ", "))
  end
  C:open("for (int c = 0; c < %d; c++) {", Cr)
  local wl = {}
  for v = 0, TV - 1 do wl[#wl + 1] = string.format("w%d = VLOAD(up + c * %d + (v0 + %d) * %d)", v, Op, v, V) end
  C:line("const cg_v %s;", table.concat(wl, ", "))
  for t = 0, nt - 1 do
    local f = {}
    for v = 0, TV - 1 do f[#f + 1] = string.format("a%d_%d += vp[%d + c] * w%d;", t, v, t * Cr, v) end
    C:line(table.concat(f, " "))
  end
  C:close()
  for t = 0, nt - 1 do
    local st = {}
    for v = 0, TV - 1 do st[#st + 1] = string.format("VSTORE(mp + %d + (v0 + %d) * %d, a%d_%d);", t * Op, v, V, t, v) end
    C:line(table.concat(st, " "))
  end
  C:close()
  C:close()
  if nf > 0 then
    C:open("for (int t = 0; t < %d; t++) {", nf)
    out_transform(C, L, a, tyexpr, x0expr, "t", last_row and 1 or 2, 2)
    C:close()
  end
  if odd_last then
    C:open("{")
    out_transform(C, L, a, tyexpr, x0expr, tostring(nt - 1), last_row and 1 or 2, 1)
    C:close()
  end
  C:close()
end

-- Every patch of one sample: src [Oh+2][Ws][Cs] (Ws >= Ow + 2) -> out [Oh][Ow][Op].
-- a: {src, Ws, Cs, Cr (channels summed), U, Op, out, Oh, Ow, bias, store, TT, TV}
local function product(C, L, a)
  a.VPS, a.MPS = a.TT * a.Cr, a.TT * a.Op
  local FH, FW = a.Oh // 2, a.Ow // 2
  local oddh, oddw = a.Oh % 2 == 1, a.Ow % 2 == 1
  local nfull, rest = FW // a.TT, FW % a.TT
  local function row(ty, last_row)
    if nfull > 0 then
      C:open("for (int x0 = 0; x0 < %d; x0 += %d) {", nfull * a.TT, a.TT)
      block(C, L, a, ty, "x0", a.TT, last_row, false)
      C:close()
    end
    local nt = rest + (oddw and 1 or 0)
    if nt > 0 then block(C, L, a, ty, tostring(nfull * a.TT), nt, last_row, oddw) end
  end
  if FH > 0 then
    util.par(C, L)
    C:open("for (int ty = 0; ty < %d; ty++) {", FH)
    row("ty", false)
    C:close()
  end
  if oddh then row(tostring(FH), true) end
end

-- A tile of nt patches (q0 .. q0 + nt - 1 of the block) x TV vectors of output channels
-- in registers, summed over the Cr channels: up is the point's panel of U, vp its inputs
local function gemm_tile(C, L, a, q0, nt)
  local V, TV, W = L.vec, a.TV, a.TV * L.vec
  C:open("{")
  for t = 0, nt - 1 do
    local z = {}
    for v = 0, TV - 1 do z[#z + 1] = string.format("a%d_%d = vsplat(0.0f)", t, v) end
    C:line("cg_v %s;", table.concat(z, ", "))
  end
  C:open("for (int c = 0; c < %d; c++) {", a.Cr)
  local wl = {}
  for v = 0, TV - 1 do wl[#wl + 1] = string.format("w%d = VLOAD(up + c * %d + %d)", v, W, v * V) end
  C:line("const cg_v %s;", table.concat(wl, ", "))
  for t = 0, nt - 1 do
    local f = {}
    for v = 0, TV - 1 do f[#f + 1] = string.format("a%d_%d += vp[(%s + %d) * %d + c] * w%d;", t, v, q0, t, a.Cr, v) end
    C:line(table.concat(f, " "))
  end
  C:close()
  for t = 0, nt - 1 do
    local st = {}
    for v = 0, TV - 1 do st[#st + 1] = string.format("VSTORE(mp + (%s + %d) * %d + %d, a%d_%d);", q0, t, a.Op, v * V, t, v) end
    C:line(table.concat(st, " "))
  end
  C:close()
end

-- The product for many channels: blocks of R rows of patches, each in three passes on
-- all threads: the inputs transformed into Vb [16][PB][Cr]; for every point and panel
-- of W output channels a GEMM over the block's patches into Mb [16][PB][Op] (U is
-- read once a block, its panels [16][Op / W][Cr][W] contiguous); the outputs.
-- One pass over the rows of patches ty0 .. ty0 + nr - 1 of a block (the last of one
-- output row when last_odd) on all threads, patches of Oh x Ow outputs, NPW a row;
-- each(ty, t, q, last_row, odd_col) emits patch t of row ty, the block's q-th
local function patch_rows(C, L, Ow, NPW, ty0, nr, last_odd, each)
  local FW, oddw = Ow // 2, Ow % 2 == 1
  local nfull = last_odd and nr - 1 or nr
  local function row(ty, r, last_row)
    if FW > 0 then
      C:open("for (int tx = 0; tx < %d; tx++) {", FW)
      each(ty, "tx", string.format("%s * %d + tx", r, NPW), last_row, false)
      C:close()
    end
    if oddw then
      C:open("{")
      each(ty, tostring(FW), string.format("%s * %d + %d", r, NPW, FW), last_row, true)
      C:close()
    end
  end
  if nfull > 0 then
    if nfull > 1 then util.par(C, L) end
    C:open("for (int r = 0; r < %d; r++) {", nfull)
    row(string.format("%s + r", ty0), "r", false)
    C:close()
  end
  if last_odd then
    C:open("{")
    row(string.format("%s + %d", ty0, nr - 1), tostring(nr - 1), true)
    C:close()
  end
end

-- The blocks of bk.R rows of patches of Oh outputs: blk(ty0, nr, last_odd) emits one
local function blocks(C, Oh, bk, blk)
  local FH, oddh = Oh // 2, Oh % 2 == 1
  local PR, R = FH + (oddh and 1 or 0), bk.R
  local nbf = FH // R
  if nbf > 0 then
    C:open("for (int b = 0; b < %d; b++) {", nbf)
    blk(string.format("b * %d", R), R, false)
    C:close()
  end
  local rem = PR - nbf * R
  if rem > 0 then
    C:open("{")
    blk(tostring(nbf * R), rem, oddh)
    C:close()
  end
end

local function product_blocked(C, L, a)
  local bk = M.blocking(a.Oh, a.Ow, a.Cr, a.Op)
  local NPW = bk.NPW
  local W = a.TV * L.vec
  local NJ = a.Op // W
  a.VPS, a.MPS = bk.VPS, bk.MPS
  C:line("/* blocked product: %d rows of %d patches a block */", bk.R, NPW)
  C:line("float *restrict Vb = T + %d, *restrict Mb = T + %d;", a.VB, a.MB)
  blocks(C, a.Oh, bk, function(ty0, nr, last_odd)
    patch_rows(C, L, a.Ow, NPW, ty0, nr, last_odd, function(ty, t, q, last_row, odd_col)
      in_transform(C, L, a, ty, "0", t, last_row and 3 or 4, odd_col and 3 or 4, q)
    end)
    local np = nr * NPW
    if L.parallel then C:line("CG_PARALLEL_FOR2") end
    C:line("for (int p = 0; p < 16; p++)")
    C:open("for (int j = 0; j < %d; j++) {", NJ)
    C:line("const float *restrict up = %s + (size_t)p * %d + j * %d, *restrict vp = Vb + (size_t)p * %d;", a.U,
      M.u_stride(a.Cr, a.Op), a.Cr * W, a.VPS)
    C:line("float *restrict mp = Mb + (size_t)p * %d + j * %d;", a.MPS, W)
    local nt, rest = np // a.TT, np % a.TT
    if nt > 0 then
      C:open("for (int q0 = 0; q0 < %d; q0 += %d) {", nt * a.TT, a.TT)
      gemm_tile(C, L, a, "q0", a.TT)
      C:close()
    end
    if rest > 0 then gemm_tile(C, L, a, tostring(nt * a.TT), rest) end
    C:close()
    patch_rows(C, L, a.Ow, NPW, ty0, nr, last_odd, function(ty, t, q, last_row, odd_col)
      out_transform(C, L, a, ty, "0", t, last_row and 1 or 2, odd_col and 1 or 2, q)
    end)
  end)
end

-- Sample n's input, zero-padded and channels-last, into `name` (float *, declared here)
-- at S + at, kept for dW (conv.lua's cv forward too): xn, the sample's input, is
-- declared here also.
function M.pad_input_cl(C, L, d, name, at, Hp, Wp)
  local g = L.geom
  C:line("const float *restrict xn = x + (size_t)n * %d;", d.IN)
  if L.fwd_only then
    -- a forward alone: one sample's copy, remade for each
    C:line("float *restrict %s = S + %d;", name, at)
  else
    C:line("float *restrict %s = S + %d + (size_t)n * %d;", name, at, Hp * Wp * L.cin)
  end
  C:line("memset(%s, 0, sizeof(float) * %d);", name, Hp * Wp * L.cin)
  C:line("for (int ci = 0; ci < %d; ci++)", L.cin)
  C:line("    for (int iy = 0; iy < %d; iy++)", g.h.I)
  C:line("        for (int ix = 0; ix < %d; ix++) %s[((iy + %d) * %d + ix + %d) * %d + ci] = xn[ci * %d + iy * %d + ix];",
    g.w.I, name, g.h.lo, Wp, g.w.lo, L.cin, d.IHW, g.w.I)
end

-- Channels-last [hw][stride] -> the sample's planes dst [nch][hw] (the last step of the
-- forward and dx here and in conv.lua's cv form)
function M.store_planes(C, dst, src, c, nch, hw, stride)
  C:line("for (int %s = 0; %s < %d; %s++)", c, c, nch, c)
  C:line("    for (int i = 0; i < %d; i++) %s[%s * %d + i] = %s[i * %d + %s];", hw, dst, c, hw, src, stride, c)
end

-- Sample n's dy (dn, declared here with dxn, its dx), zero-padded and channels-last,
-- into dyp [Hq][Wq][Cout]: output (oy, ox) at (oy + Qh, ox + Qw), as the gather of dx
-- reads it (conv.lua's cv dx too)
function M.pad_dy_cl(C, L, d, sc)
  local g = L.geom
  C:line("const float *restrict dn = dy + (size_t)n * %d;", d.OUT)
  C:line("float *restrict dxn = dx + (size_t)n * %d;", d.IN)
  C:line("memset(dyp, 0, sizeof(float) * %d);", sc.Hq * sc.Wq * L.cout)
  C:line("for (int co = 0; co < %d; co++)", L.cout)
  C:line("    for (int oy = 0; oy < %d; oy++)", g.h.O)
  C:line("        for (int ox = 0; ox < %d; ox++) dyp[((oy + %d) * %d + ox + %d) * %d + co] = dn[co * %d + oy * %d + ox];",
    g.w.O, sc.Qh, sc.Wq, sc.Qw, L.cout, d.OHW, g.w.O)
end

-- forward: the input kept for dW, channels-last, then the product into yh
function M.forward(L, C, cv_scratch, d)
  local g = L.geom
  local Cin, Cout = L.cin, L.cout
  local sc = M.layout(L, cv_scratch)
  local CP = sc.CP
  local t = L.sched.fwd.tile
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict yh = T + %d, *restrict bp = T + %d, *restrict U = T + %d;", sc.YH, sc.BP, sc.U)
  C:line("/* U[16][ci][co] = G w G^T of each channel pair, co padded to %d */", CP)
  weights(C, "U", Cin, Cout, CP, function(r, o, k) return string.format("w[(%s * %d + %s) * 9 + %d]", o, Cin, r, k) end,
    t.blocked and t.TV * L.vec, L.parallel, true)
  C:line("for (int co = 0; co < %d; co++) bp[co] = %s;", CP,
    L.opt.bias and string.format("co < %d ? (%s)[co] : 0.0f", Cout, L.t.bias) or "0.0f")
  if sc.keep ~= "cv" then wv.keep_input(L, C) end
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("float *restrict yn = y + (size_t)n * %d;", d.OUT)
  if sc.keep == "cv" then
    M.pad_input_cl(C, L, d, "xc", sc.XP, sc.Hp, sc.Wp)
  else
    C:line("/* the sample's padded planes, channels-last */")
    C:line("float *restrict xc = T + %d;", sc.XC)
    C:line("const float *restrict xpn = xp + (size_t)n * %d;", Cin * sc.Hp * sc.Wp)
    -- in blocks of 16 positions: a cache line of each plane read, 16 rows of xc written
    local HW = sc.Hp * sc.Wp
    util.par(C, L)
    C:open("for (int i0 = 0; i0 < %d; i0 += 16) {", HW - HW % 16)
    C:line("for (int ci = 0; ci < %d; ci++)", Cin)
    C:line("    for (int i = i0; i < i0 + 16; i++) xc[i * %d + ci] = xpn[ci * %d + i];", Cin, HW)
    C:close()
    if HW % 16 > 0 then
      C:line("for (int ci = 0; ci < %d; ci++)", Cin)
      C:line("    for (int i = %d; i < %d; i++) xc[i * %d + ci] = xpn[ci * %d + i];", HW - HW % 16, HW, Cin, HW)
    end
  end
  local prod = t.blocked and product_blocked or product
  prod(C, L, {src = "xc", Ws = sc.Wp, Cs = Cin, Cr = Cin, U = "U", Op = CP,
    out = "yh", Oh = g.h.O, Ow = g.w.O, bias = "bp", store = function(v) return fuse.v(L, v) end, TT = t.TT, TV = t.TV,
    VB = sc.VB, MB = sc.MB})
  M.store_planes(C, "yn", "yh", "co", Cout, d.OHW, CP)
  C:close()
  return {"P", "S", "T", "x", "y", "nb"}
end

-- gb += the sum of dy over the samples and positions of each output channel (the cv
-- form's dW too)
function M.bias_grad(C, L, d)
  if not L.opt.bias then return end
  C:open("for (int co = 0; co < %d; co++) {", L.cout)
  C:line("float s = 0.0f;")
  C:line("for (int n = 0; n < nb; n++)")
  C:line("    for (int i = 0; i < %d; i++) s += dy[(size_t)n * %d + co * %d + i];", d.OHW, d.OUT, d.OHW)
  C:line("gb[co] += s;")
  C:close()
end

-- dW in Winograd's form ("cv+wino+dw"): with Z = A dy A^T of each patch's 2x2 outputs
-- (4x4 a channel), dU[p][ci][co] = sum over the patches of every sample of V[p][ci] Z[p][co]
-- (16 GEMMs over the patches, dU in panels as U), then dW = G^T dU G. The input is the
-- cv form's kept channels-last copy of every sample; dy goes channels-last one sample at a
-- time into the forward's output buffer. Odd edges: the missing outputs' dy is zero,
-- which is all the input row or column absent from V would have met.

-- Z = A y A^T of patch t's outputs (orows x ocols of them, the rest zero), vectors of
-- channels of dyc [Oh][Ow][CP] -> Zb; A^T's rows (1 1 1 0) and (0 1 -1 -1)
local function dy_transform(C, L, a, tyexpr, t, orows, ocols, q)
  local V = L.vec
  C:line("const float *restrict yt = dyc + ((size_t)(2 * (%s)) * %d + 2 * (%s)) * %d;", tyexpr, a.Ow, t, a.CP)
  C:line("float *restrict zt = Zb + (%s) * %d;", q, a.ZRS)
  C:open("for (int c = 0; c < %d; c += %d) {", a.CP, V)
  local l = {}
  for i = 0, 1 do
    for j = 0, 1 do
      l[#l + 1] = string.format("y%d%d = %s", i, j,
        (i < orows and j < ocols) and string.format("VLOAD(yt + %d + c)", (i * a.Ow + j) * a.CP) or "vsplat(0.0f)")
    end
  end
  C:line("const cg_v %s;", table.concat(l, ", "))
  -- rows: h0 = y0, h1 = y0 + y1, h2 = y0 - y1, h3 = -y1; then the same on the columns
  for j = 0, 1 do
    C:line("const cg_v h0%d = y0%d, h1%d = y0%d + y1%d, h2%d = y0%d - y1%d, h3%d = -y1%d;", j, j, j, j, j, j, j, j, j, j)
  end
  for i = 0, 3 do
    local z = {string.format("h%d0", i), string.format("h%d0 + h%d1", i, i), string.format("h%d0 - h%d1", i, i),
      string.format("-h%d1", i)}
    local o = {}
    for j = 0, 3 do o[#o + 1] = string.format("VSTORE(zt + %d + c, %s);", (i * 4 + j) * a.ZPS, z[j + 1]) end
    C:line(table.concat(o, " "))
  end
  C:close()
end

-- dU's tile: input channels ci0 .. + ni - 1 x TV vectors of the panel's output channels,
-- summed over the block's np patches onto what dU holds
local function dw_tile(C, L, a, ci0, ni, np)
  local V, TV = L.vec, a.TV
  C:open("{")
  for i = 0, ni - 1 do
    local z = {}
    for v = 0, TV - 1 do z[#z + 1] = string.format("a%d_%d = VLOAD(dup + (%s + %d) * %d + %d)", i, v, ci0, i, a.W, v * V) end
    C:line("cg_v %s;", table.concat(z, ", "))
  end
  C:open("for (int q = 0; q < %d; q++) {", np)
  local zl = {}
  for v = 0, TV - 1 do zl[#zl + 1] = string.format("z%d = VLOAD(zp + q * %d + %d)", v, a.ZRS, v * V) end
  C:line("const cg_v %s;", table.concat(zl, ", "))
  C:line("const float *restrict vq = vp + q * %d + %s;", a.VRS, ci0)
  for i = 0, ni - 1 do
    local f = {}
    for v = 0, TV - 1 do f[#f + 1] = string.format("a%d_%d += vq[%d] * z%d;", i, v, i, v) end
    C:line(table.concat(f, " "))
  end
  C:close()
  for i = 0, ni - 1 do
    local st = {}
    for v = 0, TV - 1 do st[#st + 1] = string.format("VSTORE(dup + (%s + %d) * %d + %d, a%d_%d);", ci0, i, a.W, v * V, i, v) end
    C:line(table.concat(st, " "))
  end
  C:close()
end

function M.backward_dw(L, C, cv_scratch, d)
  local g = L.geom
  local Cin, Cout = L.cin, L.cout
  local sc = M.layout(L, cv_scratch)
  local CP, V = sc.CP, L.vec
  local t = L.sched.dw.tile
  local W = t.TV * V
  local NJ = CP // W
  local US = M.u_stride(Cin, CP)
  local Oh, Ow = g.h.O, g.w.O
  local bk = M.dw_blocking(Oh, Ow, Cin, CP)
  local a = {src = "xc", Ws = sc.Wp, Cs = Cin, Cr = Cin, CP = CP, Ow = Ow, VPS = bk.VPS, ZPS = bk.MPS,
    VRS = bk.VRS, ZRS = bk.ZRS, TV = t.TV, W = W}
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  C:line("/* blocked dW: %d rows of %d patches a block */", bk.R, bk.NPW)
  C:line("float *restrict dU = T + %d, *restrict dyc = T + %d, *restrict Vb = T + %d, *restrict Zb = T + %d;", sc.U, sc.YH,
    sc.VB, sc.MB)
  C:line("memset(dU, 0, sizeof(float) * %d);", 16 * US)
  M.bias_grad(C, L, d)
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("const float *restrict dn = dy + (size_t)n * %d;", d.OUT)
  C:line("const float *restrict xc = S + %d + (size_t)n * %d;", sc.XP, sc.Hp * sc.Wp * Cin)
  C:line("/* the sample's dy channels-last, padded channels zero */")
  util.par(C, L)
  C:open("for (int i = 0; i < %d; i++) {", d.OHW)
  C:line("for (int co = 0; co < %d; co++) dyc[i * %d + co] = dn[co * %d + i];", Cout, CP, d.OHW)
  if CP > Cout then C:line("for (int co = %d; co < %d; co++) dyc[i * %d + co] = 0.0f;", Cout, CP, CP) end
  C:close()
  blocks(C, Oh, bk, function(ty0, nr, last_odd)
    patch_rows(C, L, Ow, bk.NPW, ty0, nr, last_odd, function(ty, tt, q, last_row, odd_col)
      in_transform(C, L, a, ty, "0", tt, last_row and 3 or 4, odd_col and 3 or 4, q)
      dy_transform(C, L, a, ty, tt, last_row and 1 or 2, odd_col and 1 or 2, q)
    end)
    local np = nr * bk.NPW
    if L.parallel then C:line("CG_PARALLEL_FOR2") end
    C:line("for (int p = 0; p < 16; p++)")
    C:open("for (int j = 0; j < %d; j++) {", NJ)
    C:line("float *restrict dup = dU + (size_t)p * %d + j * %d;", US, Cin * W)
    C:line("const float *restrict vp = Vb + (size_t)p * %d, *restrict zp = Zb + (size_t)p * %d + j * %d;", bk.VPS,
      bk.MPS, W)
    local nt, rest = Cin // t.TI, Cin % t.TI
    if nt > 0 then
      C:open("for (int ci0 = 0; ci0 < %d; ci0 += %d) {", nt * t.TI, t.TI)
      dw_tile(C, L, a, "ci0", t.TI, np)
      C:close()
    end
    if rest > 0 then dw_tile(C, L, a, tostring(nt * t.TI), rest, np) end
    C:close()
  end)
  C:close()
  C:line("/* dW = G^T dU G of each channel pair */")
  -- a panel's W output channels innermost: each point's W values of a pair are one line
  panel_loops(C, Cout, W, L.parallel, {"ci", Cin}, "co", function()
    C:line("const float *restrict u = dU + (size_t)(j * %d + ci) * %d + co - j * %d;", Cin, W, W)
    local x = {}
    for p = 0, 15 do x[#x + 1] = string.format("x%d = u[%d]", p, p * US) end
    C:line("const float %s;", table.concat(x, ", "))
    -- t = G^T X (3x4): rows X0 + (X1 + X2)/2, (X1 - X2)/2, (X1 + X2)/2 + X3 over the columns j
    for j = 0, 3 do
      C:line("const float t0%d = x%d + 0.5f * (x%d + x%d), t1%d = 0.5f * (x%d - x%d), t2%d = 0.5f * (x%d + x%d) + x%d;",
        j, j, 4 + j, 8 + j, j, 4 + j, 8 + j, j, 4 + j, 8 + j, 12 + j)
    end
    C:line("float *restrict gk = gw + ((size_t)co * %d + ci) * 9;", Cin)
    for r = 0, 2 do
      C:line("gk[%d] += t%d0 + 0.5f * (t%d1 + t%d2); gk[%d] += 0.5f * (t%d1 - t%d2); gk[%d] += 0.5f * (t%d1 + t%d2) + t%d3;",
        r * 3, r, r, r, r * 3 + 1, r, r, r * 3 + 2, r, r, r)
    end
  end)
  return {"G", "S", "T", "dy", "nb"}
end

-- dx: dy zero-padded as the cv form's gather pads it, the flipped kernel's product
function M.backward_dx(L, C, cv_scratch, d)
  local g = L.geom
  local Cin, Cout = L.cin, L.cout
  local sc = M.layout(L, cv_scratch)
  local CIP = sc.CIP
  local t = L.sched.dx.tile
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict dyp = T + %d, *restrict dxh = T + %d, *restrict U = T + %d;", sc.DYP, sc.DXH, sc.U)
  C:line("/* U[16][co][ci] = G w' G^T, w' the kernel turned by 180 degrees, ci padded to %d */", CIP)
  weights(C, "U", Cout, Cin, CIP, function(r, o, k) return string.format("w[(%s * %d + %s) * 9 + %d]", r, Cin, o, 8 - k) end,
    t.blocked and t.TV * L.vec, L.parallel)
  C:open("for (int n = 0; n < nb; n++) {")
  M.pad_dy_cl(C, L, d, sc)
  local prod = t.blocked and product_blocked or product
  prod(C, L, {src = "dyp", Ws = sc.Wq, Cs = Cout, Cr = Cout, U = "U", Op = CIP,
    out = "dxh", Oh = g.h.I, Ow = g.w.I, store = function(v) return v end, TT = t.TT, TV = t.TV, VB = sc.VB, MB = sc.MB})
  M.store_planes(C, "dxn", "dxh", "ci", Cin, d.IHW, CIP)
  C:close()
  return {"P", "T", "dy", "dx", "nb"}
end

return M
