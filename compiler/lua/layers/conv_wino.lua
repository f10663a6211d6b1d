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
-- registers, each transformed weight broadcast feeding TB multiply-adds.
--
-- dx of such a layer is the same computation on dy: a stride-1 correlation of dy with
-- the kernel flipped and its channels swapped, padded by 2 - pad. So one emitter
-- serves both passes; dW stays in the direct lanes form.
--
-- The input (x or dy) is read where it is: the tiles fall in classes along each axis by
-- which of their 4 input rows (columns) lie in the padding, and each class has its own
-- transform code with those loads replaced by zeros (a test per tile, none per load).
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

-- the geometry of one pass: input I (h, w) padded by lo, output O, T tiles of 2x2
local function pass_geom(I, lo, O)
  local T = {(O[1] + 1) // 2, (O[2] + 1) // 2}
  return {I = I, lo = lo, O = O, T = T}
end

function M.fwd_geom(L)
  local g = L.geom
  return pass_geom({g.h.I, g.w.I}, {g.h.lo, g.w.lo}, {g.h.O, g.w.O})
end

function M.dx_geom(L)
  local g = L.geom
  return pass_geom({g.h.O, g.w.O}, {2 - g.h.lo, 2 - g.w.lo}, {g.h.I, g.w.I})
end

-- scratch floats: the transformed weights U of either pass
function M.scratch(L) return 16 * L.cin * L.cout end

-- The tile: two lane vectors (a cache line of each transformed input) x TC output
-- channels, 2/3 of the target's accumulator budget (8 of AVX2's 12, 16 of AVX-512's
-- 24): the rest hold the loaded vectors and a broadcast weight.
function M.tile(L, T, nco)
  local ld = require("util").largest_divisor
  local TB = ld(L.lanes_R // L.vec, 2)
  return {TC = ld(nco, math.max(1, T.acc * 2 // 3 // TB)), TB = TB}
end

-- Tiles along one axis in classes: runs of consecutive tiles whose 4 inputs are inside
-- or outside the input alike, {lo, hi, valid[1..4]} (tile t reads 2t - pad .. 2t - pad + 3).
local function classes(T, I, pad)
  local out = {}
  for t = 0, T - 1 do
    local v = {}
    for i = 0, 3 do local r = 2 * t - pad + i; v[i + 1] = r >= 0 and r < I end
    local last = out[#out]
    if last and last.v[1] == v[1] and last.v[2] == v[2] and last.v[3] == v[3] and last.v[4] == v[4] then
      last.hi = t
    else
      out[#out + 1] = {lo = t, hi = t, v = v}
    end
  end
  return out
end

-- One branch per class of the loop variable var (the tests are per tile, the loads
-- inside each branch unconditional); body(valid) emits the branch.
local function dispatch(C, var, cls, body)
  if #cls == 1 then return body(cls[1].v) end
  for k, c in ipairs(cls) do
    if k == 1 then C:open("if (%s <= %d) {", var, c.hi)
    elseif k < #cls then C:close(string.format("} else if (%s <= %d) {", var, c.hi)); C.ind = C.ind + 1
    else C:close("} else {"); C.ind = C.ind + 1 end
    body(c.v)
  end
  C:close()
end

function M.emit(C, L, R, V, a)
  local geo, TC, TB = a.geo, a.tile.TC, a.tile.TB
  local NV = R // V
  local nci, nco = a.nci, a.nco
  local Ih, Iw = geo.I[1], geo.I[2]
  local Oh, Ow = geo.O[1], geo.O[2]
  C:line("float *restrict U = S; /* [16][%d][%d]: G g G^T per channel pair */", nci, nco)
  C:open("for (int co = 0; co < %d; co++) {", nco)
  C:open("for (int ci = 0; ci < %d; ci++) {", nci)
  local gs = {}
  for k = 0, 8 do gs[#gs + 1] = string.format("g%d = %s", k, a.wt("co", "ci", k)) end
  C:line("const float %s;", table.concat(gs, ", "))
  -- t = G g (4x3), then u = t G^T (4x4), stored at U[4i + j][ci][co]
  for j = 0, 2 do
    C:line("const float t0%d = g%d, t1%d = 0.5f * (g%d + g%d + g%d), t2%d = 0.5f * (g%d - g%d + g%d), t3%d = g%d;",
      j, j, j, j, 3 + j, 6 + j, j, j, 3 + j, 6 + j, j, 6 + j)
  end
  local u = {}
  for i = 0, 3 do
    local e = {string.format("t%d0", i), string.format("0.5f * (t%d0 + t%d1 + t%d2)", i, i, i),
      string.format("0.5f * (t%d0 - t%d1 + t%d2)", i, i, i), string.format("t%d2", i)}
    for j = 0, 3 do u[#u + 1] = string.format("u[%d] = %s;", (i * 4 + j) * nci * nco, e[j + 1]) end
  end
  C:line("float *restrict u = U + ci * %d + co;", nco)
  for i = 1, #u, 4 do C:line(table.concat(u, " ", i, i + 3)) end
  C:close()
  C:close()
  if L.parallel then C:line("CG_PARALLEL_FOR2") end
  C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
  C:open("for (int ty = 0; ty < %d; ty++) {", geo.T[1])
  C:line("cg_v vb[%d]; /* [16][%d][TB]: B^T d B of each input channel */", 16 * nci * TB, nci)
  C:line("cg_v mb[%d]; /* [16][TC][TB]: the products summed over the input channels */", 16 * TC * TB)
  C:open("for (int tx = 0; tx < %d; tx++) {", geo.T[2])
  -- input transform: the 4x4 block of tile (ty, tx) starts at input (2ty - lo, 2tx - lo);
  -- rows and columns outside the input are zeros, known per class of tiles
  local rc, cc = classes(geo.T[1], geo.I[1], geo.lo[1]), classes(geo.T[2], geo.I[2], geo.lo[2])
  C:line("const long xo = ((long)(2 * ty - %d) * %d + 2 * tx - %d) * %d + v0 * %d; /* the block's first input, maybe outside */",
    geo.lo[1], Iw, geo.lo[2], R, V)
  dispatch(C, "ty", rc, function(rv)
    dispatch(C, "tx", cc, function(cv)
      C:open("for (int ci = 0; ci < %d; ci++) {", nci)
      C:line("const float *restrict xc = %s + (size_t)ci * %d;", a.src, Ih * Iw * R)
      for bb = 0, TB - 1 do
        C:open("{")
        local ld, zero = {}, {}
        for i = 0, 3 do
          for j = 0, 3 do
            if rv[i + 1] and cv[j + 1] then
              ld[#ld + 1] = string.format("d%d%d = VLOAD(xc + (xo + %d))", i, j, (i * Iw + j) * R + bb * V)
            else
              zero[#zero + 1] = string.format("d%d%d = vsplat(0.0f)", i, j)
            end
          end
        end
        if #ld > 0 then C:line("const cg_v %s;", table.concat(ld, ", ")) end
        if #zero > 0 then C:line("const cg_v %s; /* outside the input */", table.concat(zero, ", ")) end
        -- s = B^T d (rows), then v = s B (columns)
        for j = 0, 3 do
          C:line("const cg_v s0%d = d0%d - d2%d, s1%d = d1%d + d2%d, s2%d = d2%d - d1%d, s3%d = d1%d - d3%d;",
            j, j, j, j, j, j, j, j, j, j, j, j)
        end
        for i = 0, 3 do
          local at = function(j) return string.format("vb[(%d * %d + ci) * %d + %d]", i * 4 + j, nci, TB, bb) end
          C:line("%s = s%d0 - s%d2; %s = s%d1 + s%d2; %s = s%d2 - s%d1; %s = s%d1 - s%d3;",
            at(0), i, i, at(1), i, i, at(2), i, i, at(3), i, i)
        end
        C:close()
      end
      C:close()
    end)
  end)
  -- products: per block of TC output channels and position, a TC x TB register tile
  C:open("for (int cb = 0; cb < %d; cb++) {", nco // TC)
  for p = 0, 15 do
    C:open("{")
    for t = 0, TC - 1 do
      local z = {}
      for b = 0, TB - 1 do z[#z + 1] = string.format("a%d_%d = vsplat(0.0f)", t, b) end
      C:line("cg_v %s;", table.concat(z, ", "))
    end
    C:open("for (int ci = 0; ci < %d; ci++) {", nci)
    C:line("const float *restrict u = U + (size_t)(%d + ci) * %d + cb * %d;", p * nci, nco, TC)
    local ld = {}
    for b = 0, TB - 1 do ld[#ld + 1] = string.format("e%d = vb[(%d + ci) * %d + %d]", b, p * nci, TB, b) end
    C:line("const cg_v %s;", table.concat(ld, ", "))
    for t = 0, TC - 1 do
      local f = {}
      for b = 0, TB - 1 do f[#f + 1] = string.format("a%d_%d += u[%d] * e%d;", t, b, t, b) end
      C:line(table.concat(f, " "))
    end
    C:close()
    for t = 0, TC - 1 do
      local s = {}
      for b = 0, TB - 1 do s[#s + 1] = string.format("mb[%d] = a%d_%d;", (p * TC + t) * TB + b, t, b) end
      C:line(table.concat(s, " "))
    end
    C:close()
  end
  -- output transform: Y = A^T m A, 2x2 outputs (the last row or column of an odd
  -- extent falls outside and is not stored)
  local oddh, oddw = Oh % 2 == 1, Ow % 2 == 1
  C:open("for (int t = 0; t < %d; t++) {", TC)
  C:open("for (int b = 0; b < %d; b++) {", TB)
  local m = function(i, j) return string.format("mb[(%d * %d + t) * %d + b]", i * 4 + j, TC, TB) end
  for j = 0, 3 do
    C:line("const cg_v r0%d = %s + %s + %s, r1%d = %s - %s - %s;", j, m(0, j), m(1, j), m(2, j), j, m(1, j), m(2, j), m(3, j))
  end
  C:line("cg_v y00 = r00 + r01 + r02, y01 = r01 - r02 - r03, y10 = r10 + r11 + r12, y11 = r11 - r12 - r13;")
  if a.bias then
    C:line("{ const cg_v bv = vsplat(%s); y00 += bv; y01 += bv; y10 += bv; y11 += bv; }", a.bias(string.format("cb * %d + t", TC)))
  end
  C:line("const size_t o = ((size_t)((cb * %d + t) * %d + 2 * ty) * %d + 2 * tx) * %d + (v0 + b) * %d;", TC, Oh, Ow, R, V)
  local function st(i, j)
    local s = a.store(string.format("o + %d", (i * Ow + j) * R), string.format("y%d%d", i, j))
    local cond = {}
    if i == 1 and oddh then cond[#cond + 1] = string.format("2 * ty + 1 < %d", Oh) end
    if j == 1 and oddw then cond[#cond + 1] = string.format("2 * tx + 1 < %d", Ow) end
    if #cond > 0 then s = string.format("if (%s) %s", table.concat(cond, " && "), s) end
    C:line(s)
  end
  st(0, 0); st(0, 1); st(1, 0); st(1, 1)
  C:close()
  C:close()
  C:close()
  C:close()
  C:close()
  C:close()
end

return M
