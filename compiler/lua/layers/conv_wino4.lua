-- conv2d, "wino4" form of the batch-innermost layout: Winograd's F(4x4, 3x3) (Lavin
-- and Gray, 2015) for the forward and dx of 3x3, stride-1 layers (dW stays F(2x2, 3x3),
-- conv_wino.lua: it is the gradient of the convolution whatever computes the forward).
-- Each 4x4 block of outputs comes from a 6x6 block of inputs with 36 multiply-adds
-- per channel pair instead of 144 (F(2x2, 3x3): 64 for the same outputs):
--
--   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
--
--   B^T = | 4  0 -5  0  1  0 |   G = |  1/4     0     0  |   A^T = | 1  1  1  1  1  0 |
--         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6  |         | 0  1 -1  2 -2  0 |
--         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6  |         | 0  1  1  4  4  0 |
--         | 0 -2 -1  2  1  0 |       |  1/24  1/12  1/6  |         | 0  1 -1  8 -8  1 |
--         | 0  2 -1 -2  1  0 |       |  1/24 -1/12  1/6  |
--         | 0  4  0 -5  0  1 |       |  0     0     1    |
--
-- The transforms cost more per output than F(2x2)'s (constants other than +-1), the
-- products ~44 % less; the code is laid out as conv_wino.lua's: tiles in classes along
-- each axis (which of the 6 input rows are padding, how many of the 4 outputs are
-- stored), one loop nest per class, no test in the code.
local M = {}
local wino = require("layers.conv_wino")

local BT = {{4, 0, -5, 0, 1, 0}, {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
  {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}}
local G = {{1 / 4, 0, 0}, {-1 / 6, -1 / 6, -1 / 6}, {-1 / 6, 1 / 6, -1 / 6},
  {1 / 24, 1 / 12, 1 / 6}, {1 / 24, -1 / 12, 1 / 6}, {0, 0, 1}}
local AT = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}}

-- the C expression of sum c[k] * x[k] over the k with c[k] ~= 0 and x[k] given
-- (x[k] nil: a zero); "zero" when no term is left
local function lin(c, x, zero)
  local s = ""
  for k = 1, #c do
    local ck, xk = c[k], x[k]
    if ck ~= 0 and xk then
      local a, neg = math.abs(ck), ck < 0
      local t = a == 1 and xk or string.format("%s * %s", a == math.floor(a) and string.format("%d.0f", a) or string.format("%.9gf", a), xk)
      if s == "" then s = neg and ("-" .. t) or t else s = s .. (neg and " - " or " + ") .. t end
    end
  end
  return s == "" and zero or s
end

function M.scratch(L) return 36 * L.cin * L.cout end

-- the geometry of a pass, tiles of 4x4
function M.fwd_geom(L) return wino.fwd_geom(L, 4) end
function M.dx_geom(L) return wino.dx_geom(L, 4) end

-- TC output channels x TB lane vectors, up to the target's accumulators (the TB loaded
-- vectors kept in registers, VKEEP, and a broadcast weight take the rest); TB = tb, or
-- as conv_wino.lua's M.tb decides for 36 positions
function M.tile(L, T, nco, tb)
  local ld = require("util").largest_divisor
  local TB = ld(L.lanes_R // L.vec, tb or wino.tb(L, 36))
  return {TC = ld(nco, math.max(1, T.acc // TB)), TB = TB}
end

-- the layers of F(2x2, 3x3)
M.ok = wino.ok

-- Emit one pass; a as conv_wino.emit's
function M.emit(C, L, R, V, a)
  local NV = R // V
  local nci, nco = a.nci, a.nco
  wino.weight_transform(C, a, 6, function()
    -- t = G g (6x3), then u = t G^T (6x6), stored at U[6i + j][ci][co]
    for i = 1, 6 do
      local t = {}
      for j = 0, 2 do
        t[#t + 1] = string.format("t%d%d = %s", i - 1, j, lin(G[i], {"g" .. j, "g" .. (3 + j), "g" .. (6 + j)}, "0.0f"))
      end
      C:line("const float %s;", table.concat(t, ", "))
    end
    C:line("float *restrict u = U + ci * %d + co;", nco)
    for i = 0, 5 do
      local u = {}
      for j = 1, 6 do
        u[#u + 1] = string.format("u[%d] = %s;", (i * 6 + j - 1) * nci * nco,
          lin(G[j], {"t" .. i .. "0", "t" .. i .. "1", "t" .. i .. "2"}, "0.0f"))
      end
      C:line(table.concat(u, " "))
    end
  end)
  wino.tiles(C, L, a, NV, 4, M.tile_body, R, V)
end

-- One tile (ty, tx) of row class rc and column class cc
function M.tile_body(C, a, R, V, rc, cc)
  local geo, TC, TB = a.geo, a.tile.TC, a.tile.TB
  local nci = a.nci
  local Ih, Iw = geo.I[1], geo.I[2]
  local Oh, Ow = geo.O[1], geo.O[2]
  C:line("const long xo = ((long)(4 * ty - %d) * %d + 4 * tx - %d) * %d + v0 * %d; /* the block's first input, maybe outside */",
    geo.lo[1], Iw, geo.lo[2], R, V)
  C:open("for (int ci = 0; ci < %d; ci++) {", nci)
  C:open("for (int bb = 0; bb < %d; bb++) {", TB)
  C:line("const float *restrict xc = %s + (size_t)ci * %d + bb * %d;", a.src, Ih * Iw * R, V)
  -- s = B^T d, column by column (the loads of a column, then its 6 sums)
  for j = 0, 5 do
    if cc.v[j + 1] then
      local d = {}
      for i = 0, 5 do
        d[i + 1] = rc.v[i + 1] and string.format("VLOAD(xc + (xo + %d))", (i * Iw + j) * R) or nil
      end
      local ld, names = {}, {}
      for i = 0, 5 do
        if d[i + 1] then ld[#ld + 1] = string.format("d%d = %s", i, d[i + 1]); names[i + 1] = "d" .. i end
      end
      local s = {}
      for i = 0, 5 do s[#s + 1] = string.format("s%d%d = %s", i, j, lin(BT[i + 1], names, "vsplat(0.0f)")) end
      C:open("cg_v %s; {", (table.concat(s, ", "):gsub(" = [^,]*", "")))
      C:line("const cg_v %s;", table.concat(ld, ", "))
      for _, e in ipairs(s) do C:line("%s;", e) end
      C:close("}")
    end
  end
  -- v = s B, row by row, stored at vb[(6i + j)][ci][bb]
  for i = 0, 5 do
    local names = {}
    for j = 0, 5 do names[j + 1] = cc.v[j + 1] and string.format("s%d%d", i, j) or nil end
    local st = {}
    for j = 0, 5 do
      st[#st + 1] = string.format("vb[(%d * %d + ci) * %d + bb] = %s;", i * 6 + j, nci, TB, lin(BT[j + 1], names, "vsplat(0.0f)"))
    end
    for _, s in ipairs(st) do C:line(s) end
  end
  C:close()
  C:close()
  wino.products(C, a, 36)
  -- output transform: Y = A^T m A on the rows and columns this class stores
  C:open("for (int t = 0; t < %d; t++) {", TC)
  C:open("for (int b = 0; b < %d; b++) {", TB)
  -- the columns of m the stored output columns read
  local need = {}
  for j = 1, cc.n do for k = 1, 6 do if AT[j][k] ~= 0 then need[k] = true end end end
  for i = 0, rc.n - 1 do
    local r = {}
    for k = 0, 5 do
      if need[k + 1] then
        local m = {}
        for q = 0, 5 do m[q + 1] = wino.mb_at(a, q * 6 + k, "t", "b") end
        r[#r + 1] = string.format("r%d%d = %s", i, k, lin(AT[i + 1], m, "vsplat(0.0f)"))
      end
    end
    C:line("const cg_v %s;", table.concat(r, ", "))
  end
  C:line("const size_t o = ((size_t)((cb * %d + t) * %d + 4 * ty) * %d + 4 * tx) * %d + (v0 + b) * %d;", TC, Oh, Ow, R, V)
  if a.bias then C:line("const cg_v bv = vsplat(%s);", a.bias(string.format("cb * %d + t", TC))) end
  for i = 0, rc.n - 1 do
    for j = 0, cc.n - 1 do
      local r = {}
      for k = 0, 5 do r[k + 1] = need[k + 1] and string.format("r%d%d", i, k) or nil end
      local e = lin(AT[j + 1], r, "vsplat(0.0f)")
      if a.bias then e = "bv + " .. e end
      C:line("{ const cg_v yv = %s; %s }", e, a.store(string.format("o + %d", (i * Ow + j) * R), "yv"))
    end
  end
  C:close()
  C:close()
  C:close()
end

return M
