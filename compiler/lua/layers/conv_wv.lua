-- conv1d/conv2d, "wv" form: the NCHW layout kept as it is, SIMD vectors of 16 along
-- the width of a row. For stride 1, groups 1 and rows of at least 16 (images of the
-- sizes VGG and the single-layer benchmarks use, at batches too small for the
-- batch-innermost form). Nothing is transposed: inputs (forward, dW) and dy (dx) are
-- copied once into zero-padded planes so every tap of every vector reads memory, and a
-- row that is not a multiple of 16 ends with a partial vector: forward and dx store
-- only its lanes inside the row (VSTORE_N); dW instead overlaps it with the vector
-- before and masks the lanes counted twice.
--
--   forward  tile = TC output channels x TX vectors of one output row; per input
--            channel and tap: TX vector loads and TC weight broadcasts feed TC*TX FMAs
--   dW       tile = TCW output channels x the taps of RY kernel rows of one input
--            channel, over U output rows at a time (an input row that serves several
--            (output row, kernel row) pairs is loaded once); summed over the batch,
--            reduced across lanes once at the end
--   dx       the forward's tile on the padded dy with the kernel flipped: TCI input
--            channels x TX vectors of one input row
local util = require("util")
local fuse = require("fuse")
local M = {}

local V = 16       -- floats per vector: each entry point sets it from the layer (L.vec)
local MAX_TX = 4   -- vectors per row tile
local MAX_KW = 24  -- widest kernel row the dx tile unrolls

local function ceil16(n) return (n + V - 1) // V * V end

-- stride 1, no groups, pads within the kernel's reach: what the padded-copy forms
-- (this one and conv.lua's channel vectors) need
function M.tileable(L)
  local g = L.geom
  if L.batch_lanes or L.groups ~= 1 then return false end
  for _, a in ipairs({g.h, g.w}) do
    if a.S ~= 1 or a.lo > a.D * (a.K - 1) or a.hi > a.D * (a.K - 1) then return false end
  end
  return true
end

-- dx alone in this form: any row width (a row narrower than 16 is one partial vector)
function M.dx_ok(L) return M.tileable(L) and L.geom.w.K <= MAX_KW end

-- all three passes: rows of 16 or more in and out (dW overlaps a row's last vector)
function M.ok(L)
  V = L.vec
  return M.dx_ok(L) and L.geom.w.O >= V and L.geom.w.I >= V
end

-- Tiles (schedule.lua): counted in accumulators of 16 floats, at most T.acc.
function M.fwd_tile(L, T)
  V = L.vec
  local TX = math.min((L.geom.w.O + V - 1) // V, MAX_TX)
  return {TX = TX, TC = math.max(1, math.min(L.cout, T.acc // TX))}
end

function M.dx_tile(L, T)
  V = L.vec
  local TX = math.min((L.geom.w.I + V - 1) // V, MAX_TX)
  return {TX = TX, TC = math.max(1, math.min(L.cin, T.acc // TX))}
end

function M.dw_tile(L, T)
  local g = L.geom
  local KH, KW = g.h.K, g.w.K
  local RY = util.largest_divisor(KH, math.max(1, T.acc // KW))
  local NT = RY * KW
  local TCW = util.largest_divisor(L.cout, math.max(1, T.acc // NT))
  -- output rows at a time: an input row serving several (output row, kernel row) pairs
  -- is loaded once; bounded by the registers the accumulators leave
  local U = math.max(1, math.min(4, g.h.O, (T.acc + 4 - TCW * NT - 1) // TCW))
  return {RY = RY, TCW = TCW, U = U}
end

-- floats of the padded dy (with its slack)
function M.dyp_size(L)
  V = L.vec
  local g = L.geom
  return ceil16(L.batch * L.cout * (g.h.I + g.h.D * (g.h.K - 1)) * (g.w.I + g.w.D * (g.w.K - 1)) + V)
end

function M.scratch(L)
  V = L.vec
  local g = L.geom
  local r = {
    Hp = g.h.I + g.h.lo + g.h.hi, Wp = g.w.I + g.w.lo + g.w.hi,             -- padded input
    Qh = g.h.D * (g.h.K - 1) - g.h.lo, Qw = g.w.D * (g.w.K - 1) - g.w.lo,   -- dy's offset in its pad
    Hq = g.h.I + g.h.D * (g.h.K - 1), Wq = g.w.I + g.w.D * (g.w.K - 1),     -- padded dy
  }
  -- each region ends with a vector of slack: a row's partial last vector may read
  -- 15 floats past the last padded plane
  -- S (kept from the forward to the backward): kept floats; T (a pass's own, the
  -- network's temporary region shared by the layers): total floats
  r.XP = 0                                                    -- S: every sample's padded input (kept for dW)
  r.kept = ceil16(L.batch * L.cin * r.Hp * r.Wp + V)
  r.DYP = 0                                                   -- T: every sample's padded dy
  r.total = r.DYP + M.dyp_size(L)
  local dw = L.sched and L.sched.dw.form == "wv" and L.sched.dw.tile
  if dw and M.dw_band(L, dw) then
    r.GACC = r.total                                          -- T: dW's accumulators between bands
    r.total = r.GACC + (L.cout // dw.TCW) * L.cin * (g.h.K // dw.RY) * dw.TCW * dw.RY * g.w.K * V
  end
  return r
end

-- dW in bands of output rows (every tile over one band of one sample, then the next
-- band) when a sample's dy is larger than a core's L2 (256 KB of it): the band's dy
-- rows then stay in cache while the tiles of every input channel read them, instead of
-- each tile streaming all of dy from memory. Only when the tiles' accumulators kept
-- between bands are small (256 KB at most). nil: one pass over everything per tile.
function M.dw_band(L, tile)
  local g = L.geom
  if L.cout * g.h.O * g.w.O <= 65536 then return nil end
  local nacc = (L.cout // tile.TCW) * L.cin * (g.h.K // tile.RY) * tile.TCW * tile.RY * g.w.K * V
  if nacc > 65536 then return nil end
  local rows = math.max(1, 65536 // (L.cout * g.w.O))
  local band = math.max(tile.U, rows // tile.U * tile.U)
  if band >= g.h.O then return nil end
  return band
end

-- start of each vector along a row of W floats; the last one may be partial: its
-- lanes past the row read the padding (or the next row) and are not stored
local function xpos(W)
  local t = {}
  for j = 0, (W + V - 1) // V - 1 do t[#t + 1] = j * V end
  return t
end

-- Row tiles of tx vectors: a loop over the groups of whole, non-overlapping vectors,
-- then one group with the rest. body(x0, pos) with pos the vector offsets from x0.
local function row_groups(C, W, TX, body)
  local p = xpos(W)
  local nreg = (W // V) // TX
  if nreg > 0 then
    local pos = {}
    for t = 0, TX - 1 do pos[#pos + 1] = t * V end
    if nreg == 1 then
      C:open("{")
      C:line("const int x0 = 0;")
    else
      C:open("for (int x0 = 0; x0 < %d; x0 += %d) {", nreg * TX * V, TX * V)
    end
    body("x0", pos)
    C:close()
  end
  if #p > nreg * TX then
    local base = p[nreg * TX + 1]
    local pos = {}
    for j = nreg * TX + 1, #p do pos[#pos + 1] = p[j] - base end
    pos.last = W - p[#p] -- lanes of the last vector inside the row
    C:open("{")
    C:line("const int x0 = %d;", base)
    body("x0", pos)
    C:close()
  end
end

-- Channel tiles of T: a loop over the whole tiles, then the remainder.
local function chan_tiles(C, var, n, T, body)
  local full = n - n % T
  if full > 0 then
    if full == T then
      C:open("{")
      C:line("const int %s = 0;", var)
    else
      C:open("for (int %s = 0; %s < %d; %s += %d) {", var, var, full, var, T)
    end
    body(T)
    C:close()
  end
  if n % T > 0 then
    C:open("{")
    C:line("const int %s = %d;", var, full)
    body(n % T)
    C:close()
  end
end

-- Copy nb*C planes of H x W from src into zero-padded planes of Hp x Wp at (top, left).
local function pad_planes(C, L, dst, src, nplanes, H, W, Hp, Wp, top, left)
  local right, bottom = Wp - left - W, Hp - top - H
  util.par(C, L)
  C:open("for (int pl = 0; pl < nb * %d; pl++) {", nplanes)
  C:line("const float *restrict s = %s + (size_t)pl * %d;", src, H * W)
  C:line("float *restrict d = %s + (size_t)pl * %d;", dst, Hp * Wp)
  if top > 0 then C:line("memset(d, 0, sizeof(float) * %d);", top * Wp) end
  C:open("for (int i = 0; i < %d; i++) {", H)
  C:line("float *restrict r = d + (i + %d) * %d;", top, Wp)
  if left > 0 then C:line("memset(r, 0, sizeof(float) * %d);", left) end
  C:line("memcpy(r + %d, s + i * %d, sizeof(float) * %d);", left, W, W)
  if right > 0 then C:line("memset(r + %d, 0, sizeof(float) * %d);", left + W, right) end
  C:close()
  if bottom > 0 then C:line("memset(d + %d, 0, sizeof(float) * %d);", (top + H) * Wp, bottom * Wp) end
  C:close()
  C:line("memset(%s + (size_t)nb * %d, 0, sizeof(float) * %d); /* slack read by partial vectors */", dst, nplanes * Hp * Wp, V)
end

-- The register tile shared by forward and dx: tc channels x #pos vectors, a runtime
-- loop over the reduced channel (red < nred), the kernel window unrolled.
--   src(k): C expression of the row pointer offset (constant) of tap k's vector 0
--   wgt(c, k): C expression of the broadcast weight
--   act: the forward's stores (an activation fused into them, fuse.lua)
local function row_tile(C, L, tc, pos, init, red, nred, prolog, src, wgt, store, act)
  local g = L.geom
  for c = 0, tc - 1 do
    local a = {}
    for t = 1, #pos do a[#a + 1] = string.format("a%d_%d = %s", c, t - 1, init(c)) end
    C:line("cg_v %s;", table.concat(a, ", "))
  end
  C:open("for (int %s = 0; %s < %d; %s++) {", red, red, nred, red)
  prolog()
  for ky = 0, g.h.K - 1 do
    for kx = 0, g.w.K - 1 do
      local k = ky * g.w.K + kx
      C:open("{")
      local ld, keep = {}, {}
      for t = 1, #pos do
        ld[#ld + 1] = string.format("v%d = VLOAD(%s)", t - 1, src(ky, kx, pos[t]))
        keep[#keep + 1] = string.format("VKEEP(v%d);", t - 1)
      end
      C:line("cg_v %s; %s", table.concat(ld, ", "), table.concat(keep, " "))
      for c = 0, tc - 1 do
        local f = {}
        for t = 1, #pos do f[#f + 1] = string.format("a%d_%d += %s * v%d;", c, t - 1, wgt(c, k), t - 1) end
        C:line(table.concat(f, " "))
      end
      C:close()
    end
  end
  C:close()
  for c = 0, tc - 1 do
    local s = {}
    for t = 1, #pos do
      local a = string.format("a%d_%d", c, t - 1)
      if act then a = fuse.v(L, a) end
      if t == #pos and pos.last and pos.last < V then
        s[#s + 1] = string.format("VSTORE_N(%s, %s, %d);", store(c, pos[t]), a, pos.last)
      else
        s[#s + 1] = string.format("VSTORE(%s, %s);", store(c, pos[t]), a)
      end
    end
    C:line(table.concat(s, " "))
  end
end

-- float *xp: every sample's input as zero-padded planes in the scratch, kept for dW
-- (the forward's first step; conv_cvw.lua's forward with this form's dW too)
function M.keep_input(L, C)
  V = L.vec
  local g, sc = L.geom, M.scratch(L)
  C:line("float *restrict xp = S + %d;", sc.XP)
  C:line("/* inputs -> zero-padded planes %dx%d (kept for dW) */", sc.Hp, sc.Wp)
  pad_planes(C, L, "xp", "x", L.cin, g.h.I, g.w.I, sc.Hp, sc.Wp, g.h.lo, g.w.lo)
end

function M.forward(L, C)
  V = L.vec
  local g, sc = L.geom, M.scratch(L)
  local Cin, Cout, OH, OW, KK = L.cin, L.cout, g.h.O, g.w.O, g.h.K * g.w.K
  local TX, TC = L.sched.fwd.tile.TX, L.sched.fwd.tile.TC
  C:line("const float *restrict w = %s;", L.t.weight)
  if L.opt.bias then C:line("const float *restrict b = %s;", L.t.bias) end
  M.keep_input(L, C)
  C:line("/* tiles of %d output channels x %d vectors of an output row */", TC, TX)
  util.par(C, L)
  C:open("for (int r = 0; r < nb * %d; r++) {", OH)
  C:line("const int n = r / %d, oy = r %% %d;", OH, OH)
  C:line("const float *restrict xr0 = xp + ((size_t)n * %d + oy) * %d;", Cin * sc.Hp, sc.Wp)
  C:line("float *restrict yr = y + ((size_t)n * %d + oy) * %d;", Cout * OH, OW)
  chan_tiles(C, "co0", Cout, TC, function(tc)
    row_groups(C, OW, TX, function(x0, pos)
      row_tile(C, L, tc, pos,
        function(c) return L.opt.bias and string.format("vsplat(b[co0 + %d])", c) or "vsplat(0.0f)" end,
        "ci", Cin,
        function()
          C:line("const float *restrict xr = xr0 + (size_t)ci * %d + %s;", sc.Hp * sc.Wp, x0)
          C:line("const float *restrict wr = w + (size_t)co0 * %d + ci * %d;", Cin * KK, KK)
        end,
        function(ky, kx, p) return string.format("xr + %d", ky * g.h.D * sc.Wp + kx * g.w.D + p) end,
        function(c, k) return string.format("wr[%d]", c * Cin * KK + k) end,
        function(c, p) return string.format("yr + (size_t)(co0 + %d) * %d + %s + %d", c, OH * OW, x0, p) end, true)
    end)
  end)
  C:close()
  return {"P", "S", "x", "y", "nb"}
end

-- dW (and the bias) from the padded inputs saved by the forward.
function M.backward(L, C)
  V = L.vec
  local g, sc = L.geom, M.scratch(L)
  local Cin, Cout, OH, OW = L.cin, L.cout, g.h.O, g.w.O
  local KH, KW, KK, OHW = g.h.K, g.w.K, g.h.K * g.w.K, g.h.O * g.w.O
  local RY, TCW, U = L.sched.dw.tile.RY, L.sched.dw.tile.TCW, L.sched.dw.tile.U
  local NT = RY * KW
  local NKC = KH // RY
  local ntiles = (Cout // TCW) * Cin * NKC
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  C:line("const float *restrict xp = S + %d;", sc.XP)
  if L.opt.bias then
    C:line("float *restrict gb = %s;", L.t_grad.bias)
    util.par(C, L)
    C:open("for (int co = 0; co < %d; co++) {", Cout)
    C:line("cg_v s = vsplat(0.0f);")
    if OHW % V > 0 then C:line("float t = 0.0f;") end
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("const float *restrict d = dy + ((size_t)n * %d + co) * %d;", Cout, OHW)
    C:line("for (int i = 0; i < %d; i += %d) s += VLOAD(d + i);", OHW - OHW % V, V)
    if OHW % V > 0 then C:line("for (int i = %d; i < %d; i++) t += d[i];", OHW - OHW % V, OHW) end
    C:close()
    C:line("gb[co] += vsum(s)%s;", OHW % V > 0 and " + t" or "")
    C:close()
  end
  C:line("/* tiles of %d output channels x %d taps (%d kernel row%s) of one input channel */",
    TCW, NT, RY, RY > 1 and "s" or "")
  local rem = OW % V
  if rem > 0 then
    local m = {}
    for l = 0, V - 1 do m[#m + 1] = l < V - rem and "0" or "-1" end
    C:line("/* lanes of the last, overlapping vector of a row already counted by the one before */")
    C:line("const cg_vi mk = {%s};", table.concat(m, ", "))
  end
  local BAND = M.dw_band(L, L.sched.dw.tile)
  local NA = TCW * NT -- accumulators of a tile
  if BAND then
    C:line("float *restrict gacc = T + %d; /* the tiles' accumulators between bands */", sc.GACC)
    C:line("memset(gacc, 0, sizeof(float) * %d);", ntiles * NA * V)
    C:line("/* bands of %d output rows: every tile reads the band's dy while it is in cache */", BAND)
    C:open("for (int n = 0; n < nb; n++) {")
    C:open("for (int b0 = 0; b0 < %d; b0 += %d) {", OH, BAND)
  end
  util.par(C, L)
  C:open("for (int t = 0; t < %d; t++) {", ntiles)
  if NKC > 1 then
    C:line("const int co0 = t / %d * %d, ci = t / %d %% %d, kc = t %% %d;", Cin * NKC, TCW, NKC, Cin, NKC)
  else
    C:line("const int co0 = t / %d * %d, ci = t %% %d;", Cin, TCW, Cin)
  end
  for c = 0, TCW - 1 do
    local a = {}
    for j = 0, NT - 1 do
      a[#a + 1] = string.format("a%d_%d = %s", c, j,
        BAND and string.format("VLOAD(gacc + (size_t)t * %d + %d)", NA * V, (c * NT + j) * V) or "vsplat(0.0f)")
    end
    C:line("cg_v %s;", table.concat(a, ", "))
  end
  if not BAND then C:open("for (int n = 0; n < nb; n++) {") end
  -- U output rows at a time: x rows shared by several (row, kernel row) pairs load once
  local function rows(U, oy)
    C:line("const float *restrict dr = dy + ((size_t)n * %d + co0) * %d + %s * %d;", Cout, OHW, oy, OW)
    C:line("const float *restrict xr = xp + ((size_t)n * %d + ci) * %d + (%s%s) * %d;", Cin, sc.Hp * sc.Wp, oy,
      NKC > 1 and string.format(" + kc * %d", RY * g.h.D) or "", sc.Wp)
    local xrows, users = {}, {} -- x row offset -> {(u, ry)}
    for u = 0, U - 1 do
      for ry = 0, RY - 1 do
        local r = u + ry * g.h.D
        if not users[r] then users[r] = {}; xrows[#xrows + 1] = r end
        table.insert(users[r], {u, ry})
      end
    end
    table.sort(xrows)
    local function body(x, masked)
      for u = 0, U - 1 do
        local dl = {}
        for c = 0, TCW - 1 do
          local ld = string.format("VLOAD(dr + %d + %s)", u * OW + c * OHW, x)
          dl[#dl + 1] = string.format("d%d_%d = %s", u, c, masked and ("VSEL(mk, " .. ld .. ", vsplat(0.0f))") or ld)
        end
        C:line("const cg_v %s;", table.concat(dl, ", "))
      end
      for _, r in ipairs(xrows) do
        for kx = 0, KW - 1 do
          C:open("{")
          local f = {string.format("cg_v v = VLOAD(xr + %d + %s); VKEEP(v);", r * sc.Wp + kx * g.w.D, x)}
          for _, ur in ipairs(users[r]) do
            local j = ur[2] * KW + kx
            for c = 0, TCW - 1 do f[#f + 1] = string.format("a%d_%d += d%d_%d * v;", c, j, ur[1], c) end
          end
          C:line(table.concat(f, " "))
          C:close()
        end
      end
    end
    if OW >= V then
      C:open("for (int x = 0; x < %d; x += %d) {", OW - rem, V)
      body("x", false)
      C:close()
    end
    if rem > 0 then
      C:open("{")
      body(tostring(OW - V), true)
      C:close()
    end
  end
  if BAND then
    -- BAND is a multiple of U: only the last band has a tail of OH %% U rows
    C:open("for (int oy = b0; oy < %d && oy < b0 + %d; oy += %d) {", OH - OH % U, BAND, U)
    rows(U, "oy")
    C:close()
    if OH % U > 0 then
      C:open("if (b0 + %d >= %d) {", BAND, OH)
      rows(OH % U, tostring(OH - OH % U))
      C:close()
    end
    for c = 0, TCW - 1 do
      local st = {}
      for j = 0, NT - 1 do st[#st + 1] = string.format("VSTORE(gacc + (size_t)t * %d + %d, a%d_%d);", NA * V, (c * NT + j) * V, c, j) end
      C:line(table.concat(st, " "))
    end
    C:close()
    C:close()
    C:close()
    util.par(C, L)
    C:open("for (int t = 0; t < %d; t++) {", ntiles)
    if NKC > 1 then
      C:line("const int co0 = t / %d * %d, ci = t / %d %% %d, kc = t %% %d;", Cin * NKC, TCW, NKC, Cin, NKC)
    else
      C:line("const int co0 = t / %d * %d, ci = t %% %d;", Cin, TCW, Cin)
    end
    for c = 0, TCW - 1 do
      local a = {}
      for j = 0, NT - 1 do a[#a + 1] = string.format("a%d_%d = VLOAD(gacc + (size_t)t * %d + %d)", c, j, NA * V, (c * NT + j) * V) end
      C:line("const cg_v %s;", table.concat(a, ", "))
    end
  else
    if OH >= U then
      C:open("for (int oy = 0; oy < %d; oy += %d) {", OH - OH % U, U)
      rows(U, "oy")
      C:close()
    end
    if OH % U > 0 then
      C:open("{")
      rows(OH % U, tostring(OH - OH % U))
      C:close()
    end
    C:close()
  end
  for c = 0, TCW - 1 do
    for j = 0, NT - 1 do
      local ry, kx = j // KW, j % KW
      C:line("gw[(size_t)(co0 + %d) * %d + ci * %d + %s%d] += vsum(a%d_%d);", c, Cin * KK, KK,
        NKC > 1 and string.format("kc * %d + ", RY * KW) or "", ry * KW + kx, c, j)
    end
  end
  C:close()
  return BAND and {"G", "S", "T", "dy", "nb"} or {"G", "S", "dy", "nb"}
end

-- dx: every sample's dy copied into zero-padded planes, then the forward's tile with
-- the kernel flipped and the channels' roles swapped.
-- dyp: offset of the padded dy in the layer's temporary region T (default: its start)
function M.backward_dx(L, C, dyp)
  V = L.vec
  local g, sc = L.geom, M.scratch(L)
  dyp = dyp or sc.DYP
  local Cin, Cout, IH, IW, KK = L.cin, L.cout, g.h.I, g.w.I, g.h.K * g.w.K
  local TX, TC = L.sched.dx.tile.TX, L.sched.dx.tile.TC
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict dyp = T + %d;", dyp)
  -- rows of every output channel side by side ([n][Hq][Cout][Wq]): the tile's loop over
  -- the output channels then walks KH contiguous runs of memory, not KH rows in each of
  -- Cout planes (a page and a prefetch stream each)
  local H, W, RS = g.h.O, g.w.O, Cout * sc.Wq
  local right = sc.Wq - sc.Qw - W
  C:line("/* dy -> zero-padded rows [n][%d][%d][%d] */", sc.Hq, Cout, sc.Wq)
  util.par(C, L)
  C:open("for (int pl = 0; pl < nb * %d; pl++) {", Cout)
  C:line("const int n = pl / %d, c = pl %% %d;", Cout, Cout)
  C:line("const float *restrict s = dy + (size_t)pl * %d;", H * W)
  C:line("float *restrict d = dyp + (size_t)n * %d + c * %d;", sc.Hq * RS, sc.Wq)
  C:open("for (int i = 0; i < %d; i++) {", sc.Hq)
  C:line("float *restrict r = d + (size_t)i * %d;", RS)
  C:open("if (i < %d || i >= %d) {", sc.Qh, sc.Qh + H)
  C:line("memset(r, 0, sizeof(float) * %d);", sc.Wq)
  C:close()
  C:open("else {")
  if sc.Qw > 0 then C:line("memset(r, 0, sizeof(float) * %d);", sc.Qw) end
  C:line("memcpy(r + %d, s + (i - %d) * %d, sizeof(float) * %d);", sc.Qw, sc.Qh, W, W)
  if right > 0 then C:line("memset(r + %d, 0, sizeof(float) * %d);", sc.Qw + W, right) end
  C:close()
  C:close()
  C:close()
  C:line("memset(dyp + (size_t)nb * %d, 0, sizeof(float) * %d); /* slack read by partial vectors */", Cout * sc.Hq * sc.Wq, V)
  C:line("/* tiles of %d input channels x %d vectors of an input row */", TC, TX)
  util.par(C, L)
  C:open("for (int r = 0; r < nb * %d; r++) {", IH)
  C:line("const int n = r / %d, iy = r %% %d;", IH, IH)
  C:line("const float *restrict dr0 = dyp + ((size_t)n * %d + iy) * %d;", sc.Hq, RS)
  C:line("float *restrict xr = dx + ((size_t)n * %d + iy) * %d;", Cin * IH, IW)
  chan_tiles(C, "ci0", Cin, TC, function(tc)
    row_groups(C, IW, TX, function(x0, pos)
      row_tile(C, L, tc, pos, function() return "vsplat(0.0f)" end, "co", Cout,
        function()
          C:line("const float *restrict dr = dr0 + co * %d + %s;", sc.Wq, x0)
          -- the rows of output channel co + 2: a new run of memory every channel
          local span = g.w.D * (g.w.K - 1) + pos[#pos] + V
          local pf = {}
          for ky = 0, g.h.K - 1 do
            for o = 0, span - 1, 16 do
              pf[#pf + 1] = string.format("__builtin_prefetch(dr + %d);", 2 * sc.Wq + ky * g.h.D * RS + o)
            end
          end
          C:line(table.concat(pf, " "))
          C:line("const float *restrict wr = w + (size_t)co * %d + ci0 * %d;", Cin * KK, KK)
        end,
        -- input iy reads output oy = iy + lo - ky*D, kept at row oy + Qh = iy + D*(K-1-ky)
        function(ky, kx, p)
          return string.format("dr + %d", g.h.D * (g.h.K - 1 - ky) * RS + g.w.D * (g.w.K - 1 - kx) + p)
        end,
        function(c, k) return string.format("wr[%d]", c * KK + k) end,
        function(c, p) return string.format("xr + (size_t)(ci0 + %d) * %d + %s + %d", c, IH * IW, x0, p) end)
    end)
  end)
  C:close()
  return {"P", "T", "dy", "dx", "nb"}
end

return M
