-- conv2d, "wino4" form of the batch-innermost layout: Winograd's F(4x4, 3x3) (Lavin
-- and Gray, 2015) for the forward and dx of 3x3, stride-1 layers (dW stays F(2x2, 3x3),
-- conv_wino.lua: it is the gradient of the convolution whatever computes the forward).
-- Each 4x4 block of outputs comes from a 6x6 block of inputs with 36 multiply-adds
-- per channel pair instead of 144 (F(2x2, 3x3): 64 for the same outputs):
--
--   Y = A^T [ (G g G^T) (.) (B^T d B) ] A
--
-- Toom-Cook with the points 0, +-3/2, +-2/3 and infinity (B^T's rows the coefficients of
-- prod over the other finite points of (x - p), G's rows (1, p, p^2) over prod (p - q),
-- A^T's rows the powers of the points), not the usual 0, +-1, +-2 (Lavin's B^T rows
-- 4 0 -5 0 1 0, ...): Barabasz et al. (2020) showed the points decide the float error;
-- these halve it (random 6x6 tiles in float32: mean error 2.4e-6 against 4.8e-6; on
-- ResNet-20's gradients against a float64 PyTorch, 1.9x F(2x2)'s error, not 3.9x) at
-- the same number of operations (symmetric points: the same zeros):
--
--   B^T = | 1    0    -97/36  0      1  0 |   G = | 1        0       0     |
--         | 0   -2/3  -4/9    3/2    1  0 |       | 8/65     12/65   18/65 |
--         | 0    2/3  -4/9   -3/2    1  0 |       | 8/65    -12/65   18/65 |
--         | 0   -3/2  -9/4    2/3    1  0 |       | -81/130 -27/65  -18/65 |
--         | 0    3/2  -9/4   -2/3    1  0 |       | -81/130  27/65  -18/65 |
--         | 0    1     0     -97/36  0  1 |       | 0        0       1     |
--
--   A^T = | 1  1     1      1     1     0 |
--         | 0  3/2  -3/2    2/3  -2/3   0 |
--         | 0  9/4   9/4    4/9   4/9   0 |
--         | 0  27/8 -27/8   8/27 -8/27  1 |
--
-- The transforms cost more per output than F(2x2)'s (constants other than +-1), the
-- products ~44 % less; the code is laid out as conv_wino.lua's: tiles in classes along
-- each axis (which of the 6 input rows are padding, how many of the 4 outputs are
-- stored), one loop nest per class, no test in the code.
local M = {}
local wino = require("layers.conv_wino")

local BT = {{1, 0, -97 / 36, 0, 1, 0}, {0, -2 / 3, -4 / 9, 3 / 2, 1, 0}, {0, 2 / 3, -4 / 9, -3 / 2, 1, 0},
  {0, -3 / 2, -9 / 4, 2 / 3, 1, 0}, {0, 3 / 2, -9 / 4, -2 / 3, 1, 0}, {0, 1, 0, -97 / 36, 0, 1}}
local G = {{1, 0, 0}, {8 / 65, 12 / 65, 18 / 65}, {8 / 65, -12 / 65, 18 / 65},
  {-81 / 130, -27 / 65, -18 / 65}, {-81 / 130, 27 / 65, -18 / 65}, {0, 0, 1}}
local AT = {{1, 1, 1, 1, 1, 0}, {0, 3 / 2, -3 / 2, 2 / 3, -2 / 3, 0}, {0, 9 / 4, 9 / 4, 4 / 9, 4 / 9, 0},
  {0, 27 / 8, -27 / 8, 8 / 27, -8 / 27, 1}}

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
  wino.weight_transform(C, a, 6, function(ty, st)
    -- t = G g (6x3), then u = t G^T (6x6), stored at U[6i + j][ci][co] (G has no zero
    -- row: no sum is empty)
    for i = 1, 6 do
      local t = {}
      for j = 0, 2 do
        t[#t + 1] = string.format("t%d%d = %s", i - 1, j, lin(G[i], {"g" .. j, "g" .. (3 + j), "g" .. (6 + j)}, "0.0f"))
      end
      C:line("const %s %s;", ty, table.concat(t, ", "))
    end
    for i = 0, 5 do
      local u = {}
      for j = 1, 6 do
        u[#u + 1] = st((i * 6 + j - 1) * nci * nco, lin(G[j], {"t" .. i .. "0", "t" .. i .. "1", "t" .. i .. "2"}, "0.0f"))
      end
      C:line(table.concat(u, " "))
    end
  end, L.parallel, V)
  wino.tiles(C, L, a, NV, 4, M.tile_body, R, V)
end

-- One tile (ty, tx) of row class rc and column class cc
function M.tile_body(C, a, R, V, rc, cc)
  local geo, TB = a.geo, a.tile.TB
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
  C:open("for (int b = 0; b < %d; b++) {", TB)
  -- the columns of m the stored output columns read
  local need = {}
  for j = 1, cc.n do for k = 1, 6 do if AT[j][k] ~= 0 then need[k] = true end end end
  for i = 0, rc.n - 1 do
    local r = {}
    for k = 0, 5 do
      if need[k + 1] then
        local m = {}
        for q = 0, 5 do m[q + 1] = wino.mb_at(a, q * 6 + k, "co", "b") end
        r[#r + 1] = string.format("r%d%d = %s", i, k, lin(AT[i + 1], m, "vsplat(0.0f)"))
      end
    end
    C:line("const cg_v %s;", table.concat(r, ", "))
  end
  C:line("const size_t o = ((size_t)(co * %d + 4 * ty) * %d + 4 * tx) * %d + (v0 + b) * %d;", Oh, Ow, R, V)
  if a.bias then C:line("const cg_v bv = vsplat(%s);", a.bias("co")) end
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
end

---------------------------------------------------------------------------
-- dW with F(4x4, 3x3) (the "wino4" dW form): as conv_wino.lua's F(2x2) dW,
--
--   dg = G^T [ sum over tiles and samples of Z (.) V ] G,  Z = A dY A^T,  V = B^T d B
--
-- on 36 positions: 36 multiply-adds per channel pair and 4x4 outputs where F(2x2)
-- takes 64, for transforms of 6x6 blocks with the constants above. The transform rows
-- split in sections of RS rows (two sections of 3: one per core), each summing its rows
-- of M[36][co][ci] with no reduction between threads; the products are conv_wino.lua's.
---------------------------------------------------------------------------

-- the tile: conv_wino.lua's dw_tile for 4x4 outputs
function M.dw_tile(L, T, kb, gemm) return wino.dw_tile(L, T, kb, 4, gemm) end

-- the rows r of a 6- (or 4-) row input any of the section's transform rows reads:
-- used[r] when some row i of rows has c(i, r) ~= 0
local function used_rows(rows, nr, c)
  local u = {}
  for _, i in ipairs(rows) do
    for r = 0, nr - 1 do if c(i, r) ~= 0 then u[r] = true end end
  end
  return u
end

-- A tile's rows of a separable transform, out_i = c(i) (in c(.)^T), for the section's
-- rows i: per column j present (cols[j + 1]), the loads of the rows rs (load(r, j)) and
-- the column sums t_i_j = c(i) . in[.][j]; then row i's 6 outputs, store(i, jj, c(jj) . t_i)
local function transform_rows(C, t, rows, rs, cols, c, load, store)
  local have = {}
  for j = 0, 5 do
    if cols[j + 1] and #rs > 0 then
      local names, ld = {}, {}
      for _, r in ipairs(rs) do
        names[r + 1] = "d" .. r
        ld[#ld + 1] = string.format("d%d = %s", r, load(r, j))
      end
      local sv = {}
      for _, i in ipairs(rows) do sv[#sv + 1] = string.format("%s%d%d = %s", t, i, j, lin(c(i), names, "vsplat(0.0f)")) end
      C:open("cg_v %s; {", (table.concat(sv, ", "):gsub(" = [^,]*", "")))
      C:line("const cg_v %s;", table.concat(ld, ", "))
      for _, e in ipairs(sv) do C:line("%s;", e) end
      C:close("}")
      have[j + 1] = true
    end
  end
  for _, i in ipairs(rows) do
    local names = {}
    for j = 0, 5 do names[j + 1] = have[j + 1] and string.format("%s%d%d", t, i, j) or nil end
    local st = {}
    for jj = 0, 5 do st[#st + 1] = store(i, jj, lin(c(jj), names, "vsplat(0.0f)")) end
    for k = 1, 6, 2 do C:line("%s %s", st[k], st[k + 1]) end
  end
end

function M.emit_dw(C, L, R, V, a)
  local geo, tile = M.fwd_geom(L), L.sched.dw.tile
  local TCO, TCI, TB, RS, VA = tile.TCO, tile.TCI, tile.TB, tile.RS, tile.VA
  local NV = R // V
  local nci, nco = L.cin, L.cout
  local Ih, Iw = geo.I[1], geo.I[2]
  local Oh, Ow = geo.O[1], geo.O[2]
  local Tx = geo.T[2]
  local K = Tx * TB
  local PC = nco * nci
  local rcs = wino.classes(geo.T[1], Ih, geo.lo[1], Oh, 4)
  local ccs = wino.classes(Tx, Iw, geo.lo[2], Ow, 4)
  local mt = VA and "cg_v" or "float"
  -- B^T's and A's entries: V's row i reads input row r with bt(i, r), Z's row i reads
  -- dY's row r with ar(i, r) (A = (A^T)^T, 6x4)
  local bt = function(i, r) return BT[i + 1][r + 1] end
  local ar = function(i, r) return AT[r + 1][i + 1] end
  C:line("%s *restrict Mw = (%s *)T; /* [36][%d][%d]: sum over tiles and samples of Z (.) V%s */", mt, mt, nco, nci,
    VA and ", per lane" or "")
  if L.parallel then C:line("CG_PARALLEL_SECTIONS") end
  C:open("{")
  for sec = 0, 6 // RS - 1 do
    local r0 = sec * RS
    local rows = {}
    for i = r0, r0 + RS - 1 do rows[#rows + 1] = i end
    local ux, uy = used_rows(rows, 6, bt), used_rows(rows, 4, ar)
    if L.parallel then C:line("CG_SECTION") end
    C:open("{ /* transform rows %d..%d: M[%d..%d] */", r0, r0 + RS - 1, 6 * r0, 6 * (r0 + RS) - 1)
    C:line("%s *restrict Mi = Mw + %d;", mt, 6 * r0 * PC)
    C:line("for (int k = 0; k < %d; k++) Mi[k] = %s;", 6 * RS * PC, VA and "vsplat(0.0f)" or "0.0f")
    C:line("cg_v xt[%d]; /* [%d][%d][%d tiles x %d]: rows %d..%d of B^T d B */", 6 * RS * nci * K, 6 * RS, nci, Tx, TB, r0, r0 + RS - 1)
    C:line("cg_v dt[%d]; /* [%d][%d][%d tiles x %d]: rows %d..%d of A dY A^T */", 6 * RS * nco * K, 6 * RS, nco, Tx, TB, r0, r0 + RS - 1)
    for _, rc in ipairs(rcs) do
      -- the input rows this class and section load; dY's rows (the first rc.n)
      local xr, yr = {}, {}
      for r = 0, 5 do if ux[r] and rc.v[r + 1] then xr[#xr + 1] = r end end
      for r = 0, rc.n - 1 do if uy[r] then yr[#yr + 1] = r end end
      local any_x, any_y = false, #yr > 0
      for _, cc in ipairs(ccs) do
        for j = 0, 5 do any_x = any_x or (cc.v[j + 1] and #xr > 0) end
      end
      C:open("for (int ty = %d; ty < %d; ty++) { /* input rows %s */", rc.lo, rc.hi + 1, wino.describe(rc))
      C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
      -- V's rows: s = B^T d on each column, then s B; a channel at a time along the row
      C:open("for (int ci = 0; ci < %d; ci++) {", nci)
      if any_x then C:line("const float *restrict xc = x + (size_t)ci * %d + v0 * %d;", Ih * Iw * R, V) end
      for _, cc in ipairs(ccs) do
        local loads = #xr > 0
        C:open("for (int tx = %d; tx < %d; tx++) { /* input columns %s */", cc.lo, cc.hi + 1, wino.describe(cc))
        C:open("for (int bb = 0; bb < %d; bb++) {", TB)
        if loads then
          local anyc = false
          for j = 0, 5 do anyc = anyc or cc.v[j + 1] end
          if anyc then
            C:line("const long xo = ((long)(4 * ty - %d) * %d + 4 * tx - %d) * %d + bb * %d;", geo.lo[1], Iw, geo.lo[2], R, V)
          end
        end
        transform_rows(C, "s", rows, loads and xr or {}, cc.v, function(i) return BT[i + 1] end,
          function(r, j) return string.format("VLOAD(xc + (xo + %d))", (r * Iw + j) * R) end,
          function(i, jj, e) return string.format("xt[((%d * %d + ci) * %d + tx) * %d + bb] = %s;", 6 * (i - r0) + jj, nci, Tx, TB, e) end)
        C:close()
        C:close()
      end
      C:close()
      -- Z's rows: z = A dY on each of the stored columns, then z A^T
      C:open("for (int co = 0; co < %d; co++) {", nco)
      if any_y then C:line("const float *restrict yc = dy + (size_t)co * %d + v0 * %d;", Oh * Ow * R, V) end
      for _, cc in ipairs(ccs) do
        C:open("for (int tx = %d; tx < %d; tx++) { /* input columns %s */", cc.lo, cc.hi + 1, wino.describe(cc))
        C:open("for (int bb = 0; bb < %d; bb++) {", TB)
        if any_y then C:line("const size_t yo = ((size_t)(4 * ty) * %d + 4 * tx) * %d + bb * %d;", Ow, R, V) end
        local stored = {}
        for j = 1, cc.n do stored[j] = true end
        transform_rows(C, "z", rows, yr, stored, function(i) return {ar(i, 0), ar(i, 1), ar(i, 2), ar(i, 3)} end,
          function(r, j) return string.format("VLOAD(yc + (yo + %d))", (r * Ow + j) * R) end,
          function(i, jj, e) return string.format("dt[((%d * %d + co) * %d + tx) * %d + bb] = %s;", 6 * (i - r0) + jj, nco, Tx, TB, e) end)
        C:close()
        C:close()
      end
      C:close()
      wino.dw_products(C, {np = 6 * RS, nci = nci, nco = nco, TCO = TCO, TCI = TCI, K = K, VA = VA,
        G = tile.G, TCV = tile.TCV, V = V})
      C:close()
      C:close()
    end
    C:close()
  end
  C:close()
  -- dg = G^T M G: t = G^T M (3x6), then t G (3x3); on vectors of V input channels when
  -- M holds floats and the channels come in whole vectors (a pair's 36 scalar loads and
  -- ~150 operations took 0.2 ms of the 64-channel 7x7 layer's 0.8)
  local CV = wino.dw_final_loops(C, L, V, VA)
  local et, zero = CV and "cg_v" or "float", CV and "vsplat(0.0f)" or "0.0f"
  local mv = {}
  for p = 0, 35 do
    mv[#mv + 1] = string.format(CV and "m%d_%d = VLOAD(m + %d)" or VA and "m%d_%d = vsum(m[%d])" or "m%d_%d = m[%d]",
      p // 6, p % 6, p * PC)
  end
  for k = 1, 36, 6 do C:line("const %s %s;", et, table.concat(mv, ", ", k, k + 5)) end
  for r = 0, 2 do
    local t = {}
    for q = 0, 5 do
      local col = {}
      for p = 0, 5 do col[p + 1] = string.format("m%d_%d", p, q) end
      t[#t + 1] = string.format("t%d%d = %s", r, q, lin({G[1][r + 1], G[2][r + 1], G[3][r + 1], G[4][r + 1], G[5][r + 1], G[6][r + 1]}, col, zero))
    end
    C:line("const %s %s;", et, table.concat(t, ", "))
  end
  if CV then
    C:line("cg_v g[9]; /* the taps of %d input channels */", V)
  else
    C:line("float *restrict gwc = %s + co * %d + ci * 9;", a.gw, nci * 9)
  end
  for r = 0, 2 do
    local g = {}
    for c = 0, 2 do
      local row = {}
      for q = 0, 5 do row[q + 1] = string.format("t%d%d", r, q) end
      g[#g + 1] = string.format(CV and "g[%d] = %s;" or "gwc[%d] += %s;", 3 * r + c,
        lin({G[1][c + 1], G[2][c + 1], G[3][c + 1], G[4][c + 1], G[5][c + 1], G[6][c + 1]}, row, zero))
    end
    C:line(table.concat(g, " "))
  end
  if CV then
    C:line("float *restrict gwc = %s + co * %d + cv * %d;", a.gw, nci * 9, V * 9)
    C:line("for (int c = 0; c < %d; c++) for (int k = 0; k < 9; k++) gwc[c * 9 + k] += g[k][c];", V)
  end
  C:close()
  C:close()
end

return M
