-- dense: fully connected layer y = W x + b on a flat input.
-- PyTorch: nn.Linear(in, out); weight [out, in], bias [out].
local util = require("util")
local sched = require("schedule")
local fuse = require("fuse")
local M = {kinds = {"dense"}}

-- every forward form stores through fuse.s / fuse.v (fuse.lua)
function M.fuses_act(L) return true end

function M.schema(kind)
  return {
    {key = "out", type = "posint", required = true},
    {key = "bias", type = "bool", default = true},
  }
end

function M.shape(L)
  if #L.in_shape ~= 1 then
    util.fail(L.node, string.format("layer %d (dense): needs a flat input [N], got %s (add a flatten layer before it)",
      L.index, L.shape_str(L.in_shape)))
  end
  L.nin, L.nout = L.in_shape[1], L.opt.out
  L.out_shape = {L.nout}
end

function M.tensors(L)
  local t = {{suffix = "weight", shape = {L.nout, L.nin}, init = "kaiming", fan_in = L.nin}}
  if L.opt.bias then t[2] = {suffix = "bias", shape = {L.nout}, init = "bias", fan_in = L.nin} end
  return t
end

function M.macs(L) return util.mul(L.nin, L.nout) end

local function round_up(n, m) return (n + m - 1) // m * m end

-- gemmT's rows of x transposed: I rounded up to vectors, plus a cache line when a
-- row would be a multiple of 256 bytes (a tile's column of rows would then fall into
-- a few L1 sets)
local function gemmT_stride(I, V)
  local Ip = round_up(I, V)
  return Ip % 64 == 0 and Ip + 16 or Ip
end

local function terms_str(terms, empty)
  if #terms == 0 then return empty end
  local lines = {}
  for i = 1, #terms, 4 do lines[#lines + 1] = table.concat(terms, " + ", i, math.min(i + 3, #terms)) end
  return table.concat(lines, "\n        + ")
end

-- Schedules:
--   straight  every output one expression (I x O within the budget)
--   loop      dot products in vectors of 16 partial sums, TO rows of W at a time
--   lanes     batch-innermost GEMM tiles: TR rows x TB lane vectors (forward, dx);
--             dW (gemmT, first) as TO x TI tiles over x transposed once to [nb][I],
--             or (gemm) tiles of lane vectors summed across the lanes at the end,
--             or (outer) outer products over x transposed
function M.candidates(L, T)
  if L.lanes_layout then
    -- TR rows x TB lane vectors: TR * TB accumulators, TB loaded vectors kept in
    -- registers and one broadcast; TR = 6 fits AVX2's 16 registers (12 + 2 + 1)
    local TB = util.largest_divisor(L.lanes_R // L.vec, math.max(1, T.acc // 6))
    local t = {TB = TB, TR = math.max(1, math.min(16, T.acc) // TB)}
    -- the reduction in blocks of KB: a block of the input (KB x lanes) fits 16 KB
    local kb = math.max(8, 4096 // L.lanes_R)
    local tf = {TB = t.TB, TR = t.TR, KB = kb < L.nin and kb or nil}
    local tx = {TB = t.TB, TR = t.TR, KB = kb < L.nout and kb or nil}
    -- dW as a register-tiled GEMM over the lanes (TO x TI accumulators), or as
    -- outer products on x transposed to [nb][I]
    local TO = util.largest_divisor(L.nout, 4)
    local gemm = {TO = TO, TI = util.largest_divisor(L.nin, math.max(1, T.acc // TO))}
    -- gemmT: dW += dy x^T with x transposed once to [nb][I]: TO rows of dW (broadcasts
    -- of dy) x TI vectors along i, the batch the reduction; no horizontal sums
    local TIv = math.max(1, math.min(T.acc // 6, round_up(L.nin, L.vec) // L.vec))
    local gemmT = {TO = math.max(1, math.min(L.nout, T.acc // TIv)), TI = TIv}
    local c = {{name = "lanes+gemmT", layout = "lanes", fwd = {form = "lanes", tile = t}, dw = {form = "gemmT", tile = gemmT},
      dx = {form = "lanes", tile = t, apart = true}},
      {name = "lanes", layout = "lanes", fwd = {form = "lanes", tile = t}, dw = {form = "gemm", tile = gemm},
      dx = {form = "lanes", tile = t, apart = true}},
      {name = "lanes+outer", layout = "lanes", fwd = {form = "lanes", tile = t}, dw = {form = "outer"},
      dx = {form = "lanes", tile = t, apart = true}}}
    if tf.KB or tx.KB then
      table.insert(c, 1, {name = "lanes+gemmT+kb", layout = "lanes", fwd = {form = "lanes", tile = tf},
        dw = {form = "gemmT", tile = gemmT}, dx = {form = "lanes", tile = tx, apart = true}})
    end
    return c
  end
  local straight = sched.simple(L, "straight")
  local loop = sched.simple(L, "loop", {TO = math.min(4, L.nout)})
  -- gemm: register tiles over TN rows of the batch: forward TN x TO dot products
  -- along i (TN + TO vectors loaded per TN * TO FMAs), dx TN rows x TI vectors along
  -- i (dx apart), dW TO rows x TI vectors along i with the batch the reduction
  local TI = math.max(1, T.acc // 6)
  local TN = math.min(L.batch, T.acc >= 24 and 4 or 2)
  local gemm = {name = "gemm", layout = "nchw",
    fwd = {form = "gemm", tile = {TN = TN, TO = math.min(L.nout, math.max(1, T.acc * 2 // 3 // TN))}},
    dw = {form = "gemm", tile = {TO = math.min(L.nout, 6), TI = TI}},
    dx = {form = "gemm", tile = {TN = math.min(L.batch, 4), TI = TI}, apart = true}}
  -- dx with W read row by row (rows, backward_dx_rows): first when W is far larger than
  -- a core's L2 (more than 4 MB), where the tiles' dx walks W down column strips of 64
  -- bytes, a page a row: VGG-16's 25088 -> 4096 layer at batch 2, 2-core Zen 3, 36 ms
  -- a call (~11 GB/s of the weights)
  local IC = math.max(4 * L.vec, math.min(512, (8192 // L.batch) // L.vec * L.vec))
  local rows = {name = "gemm+rows", layout = "nchw", fwd = gemm.fwd, dw = gemm.dw,
    dx = {form = "rows", tile = {IC = IC}, apart = true}}
  local c = {}
  if L.nin * L.nout <= L.budget then c[#c + 1] = straight end
  if L.batch >= 2 then
    local big = 4 * L.nin * L.nout > 4 * 2^20 and L.nin >= 2 * IC
    if big then c[#c + 1] = rows end
    c[#c + 1] = gemm
    if not big and L.nin >= L.vec then c[#c + 1] = rows end
  end
  c[#c + 1] = loop
  return c
end

-- dx stores that can be masked with a relu's derivative (fuse.lua): every form that
-- writes each dx element once (not the loop form, which accumulates into dx)
function M.masks_dx(L)
  local S = L.sched
  return S.dw.form == "straight" or (S.dx and S.dx.apart and (S.dx.form == "lanes" or S.dx.form == "gemm"
    or S.dx.form == "rows")) or false
end

function M.forward(L, C, ctx)
  local I, O = L.nin, L.nout
  C:line("const float *restrict w = %s;", L.t.weight)
  if L.opt.bias then C:line("const float *restrict b = %s;", L.t.bias) end
  if L.sched.fwd.form == "straight" then
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("const float *restrict xn = x + (size_t)n * %d;", I)
    C:line("float *restrict yn = y + (size_t)n * %d;", O)
    for o = 0, O - 1 do
      local t = {}
      if L.opt.bias then t[1] = string.format("b[%d]", o) end
      for i = 0, I - 1 do t[#t + 1] = string.format("w[%d] * xn[%d]", o * I + i, i) end
      C:line("yn[%d] = %s;", o, fuse.s(L, terms_str(t, "0.0f")))
    end
    C:close()
    return {"P", "x", "y", "nb"}
  end
  if L.sched.fwd.form == "gemm" then return M.forward_gemm(L, C) end
  -- dot products in vectors of 16 partial sums (an in-order float sum would be one
  -- long chain of dependent adds), TO rows of W at a time
  local V = L.vec
  local TO, I16 = L.sched.fwd.tile.TO, I - I % V
  local function rows(to)
    C:line("const float *restrict wr = w + (size_t)o0 * %d;", I)
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("const float *restrict xn = x + (size_t)n * %d;", I)
    local acc = {}
    for j = 0, to - 1 do acc[#acc + 1] = string.format("s%d = vsplat(0.0f)", j) end
    C:line("cg_v %s;", table.concat(acc, ", "))
    if I16 > 0 then
      C:open("for (int i = 0; i < %d; i += %d) {", I16, V)
      local f = {"cg_v v = VLOAD(xn + i); VKEEP(v);"}
      for j = 0, to - 1 do f[#f + 1] = string.format("s%d += VLOAD(wr + %d + i) * v;", j, j * I) end
      C:line(table.concat(f, " "))
      C:close()
    end
    for j = 0, to - 1 do
      local tail = {}
      for i = I16, I - 1 do tail[#tail + 1] = string.format("wr[%d] * xn[%d]", j * I + i, i) end
      C:line("y[(size_t)n * %d + o0 + %d] = %s;", O, j, fuse.s(L, string.format("%svsum(s%d)%s",
        L.opt.bias and string.format("b[o0 + %d] + ", j) or "", j, #tail > 0 and (" + " .. table.concat(tail, " + ")) or "")))
    end
    C:close()
  end
  local full = O - O % TO
  C:open("for (int o0 = 0; o0 < %d; o0 += %d) {", full, TO)
  rows(TO)
  C:close()
  if O % TO > 0 then
    C:open("{")
    C:line("const int o0 = %d;", full)
    rows(O % TO)
    C:close()
  end
  return {"P", "x", "y", "nb"}
end

function M.backward(L, C, ctx)
  local I, O = L.nin, L.nout
  if L.sched.dw.form == "gemm" then return M.backward_gemm(L, C) end
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  if L.sched.dw.form == "straight" then
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("const float *restrict xn = x + (size_t)n * %d;", I)
    C:line("const float *restrict dyn = dy + (size_t)n * %d;", O)
    C:line("float *restrict dxn = dx + (size_t)n * %d;", I)
    for i = 0, I - 1 do
      local t = {}
      for o = 0, O - 1 do t[#t + 1] = string.format("w[%d] * dyn[%d]", o * I + i, o) end
      C:line("dxn[%d] = %s;", i, L.sched.dmask and fuse.ds(L, string.format("xn[%d]", i), "(" .. terms_str(t, "0.0f") .. ")")
        or terms_str(t, "0.0f"))
    end
    for o = 0, O - 1 do
      for i = 0, I - 1 do C:line("gw[%d] += dyn[%d] * xn[%d];", o * I + i, o, i) end
      if L.opt.bias then C:line("gb[%d] += dyn[%d];", o, o) end
    end
    C:close()
    return {"P", "G", "x", "dy", "dx", "nb"}
  end
  C:line("memset(dx, 0, sizeof(float) * (size_t)nb * %d);", I)
  C:open("for (int o = 0; o < %d; o++) {", O)
  C:line("const float *restrict wr = w + (size_t)o * %d;", I)
  C:line("float *restrict gwr = gw + (size_t)o * %d;", I)
  if L.opt.bias then C:line("float gbo = 0.0f;") end
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("const float d = dy[(size_t)n * %d + o];", O)
  C:line("const float *restrict xn = x + (size_t)n * %d;", I)
  C:line("float *restrict dxn = dx + (size_t)n * %d;", I)
  if L.opt.bias then C:line("gbo += d;") end
  C:line("for (int i = 0; i < %d; i++) { gwr[i] += d * xn[i]; dxn[i] += wr[i] * d; }", I)
  C:close()
  if L.opt.bias then C:line("gb[o] += gbo;") end
  C:close()
  return {"P", "G", "x", "dy", "dx", "nb"}
end


---------------------------------------------------------------------------
-- [N][size] register-tiled GEMMs (schedule gemm, batch >= 2)
---------------------------------------------------------------------------

-- the batch rows in tiles of TN, then one at a time: body(n0 expression, rows)
local function batch_tiles(C, TN, body)
  C:line("int n0 = 0;")
  if TN > 1 then
    C:open("for (; n0 + %d <= nb; n0 += %d) {", TN, TN)
    body("n0", TN)
    C:close()
  end
  C:open("for (; n0 < nb; n0++) {")
  body("n0", 1)
  C:close()
end

-- vector loads, each kept in a register: "cg_v p0 = VLOAD(...), ...; VKEEP(p0); ..."
local function kept_loads(C, prefix, n, addr)
  local ld, keep = {}, {}
  for j = 0, n - 1 do
    ld[#ld + 1] = string.format("%s%d = VLOAD(%s)", prefix, j, addr(j))
    keep[#keep + 1] = string.format("VKEEP(%s%d);", prefix, j)
  end
  C:line("cg_v %s; %s", table.concat(ld, ", "), table.concat(keep, " "))
end

local function zero_accs(C, nr, nc)
  for r = 0, nr - 1 do
    local a = {}
    for c = 0, nc - 1 do a[#a + 1] = string.format("a%d_%d = vsplat(0.0f)", r, c) end
    C:line("cg_v %s;", table.concat(a, ", "))
  end
end

-- y[n][o] = b[o] + sum_i x[n][i] w[o][i]: tiles of TN rows of the batch x TO rows of
-- W, each a dot product in vectors along i summed once at the end
function M.forward_gemm(L, C)
  local I, O, V = L.nin, L.nout, L.vec
  local TN, TO = L.sched.fwd.tile.TN, L.sched.fwd.tile.TO
  local IV = I - I % V
  local function tile(o0, to)
    return function(n0, tn)
      zero_accs(C, tn, to)
      if IV > 0 then
        C:open("for (int i = 0; i < %d; i += %d) {", IV, V)
        kept_loads(C, "x", tn, function(n) return string.format("x + (size_t)(%s + %d) * %d + i", n0, n, I) end)
        kept_loads(C, "w", to, function(j) return string.format("w + (size_t)(%s + %d) * %d + i", o0, j, I) end)
        for n = 0, tn - 1 do
          local f = {}
          for j = 0, to - 1 do f[#f + 1] = string.format("a%d_%d += x%d * w%d;", n, j, n, j) end
          C:line(table.concat(f, " "))
        end
        C:close()
      end
      for n = 0, tn - 1 do
        for j = 0, to - 1 do
          local t = {}
          if L.opt.bias then t[1] = string.format("b[%s + %d]", o0, j) end
          t[#t + 1] = string.format("vsum(a%d_%d)", n, j)
          for i = IV, I - 1 do
            t[#t + 1] = string.format("w[(size_t)(%s + %d) * %d + %d] * x[(size_t)(%s + %d) * %d + %d]", o0, j, I, i, n0, n, I, i)
          end
          C:line("y[(size_t)(%s + %d) * %d + %s + %d] = %s;", n0, n, O, o0, j, fuse.s(L, table.concat(t, " + ")))
        end
      end
    end
  end
  local full = O - O % TO
  if full > 0 then
    if full > TO then util.par(C, L) end
    C:open("for (int o0 = 0; o0 < %d; o0 += %d) {", full, TO)
    batch_tiles(C, TN, tile("o0", TO))
    C:close()
  end
  if O % TO > 0 then
    C:open("{")
    batch_tiles(C, TN, tile(tostring(full), O % TO))
    C:close()
  end
  return {"P", "x", "y", "nb"}
end

-- Columns i of a [rows][I] result in blocks of TI vectors (the last block shorter),
-- then the I % V scalar columns: block(i0 expression, vectors) and scalar(i).
local function column_blocks(C, L, I, V, TI, block, scalar, parallel)
  local IV = I - I % V
  util.blocks(C, "i0", IV, TI * V, parallel and L, function(i0, width) block(i0, width // V) end)
  if IV < I then
    C:open("for (int i = %d; i < %d; i++) {", IV, I)
    scalar("i")
    C:close()
  end
end

-- dW[o][i] += sum_n dy[n][o] x[n][i]: tiles of TO rows x TI vectors along i,
-- accumulated in registers over the batch; dx apart (backward_dx)
function M.backward_gemm(L, C)
  local I, O, V = L.nin, L.nout, L.vec
  local TO, TI = L.sched.dw.tile.TO, L.sched.dw.tile.TI
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then
    C:line("float *restrict gb = %s;", L.t_grad.bias)
    C:open("for (int o = 0; o < %d; o++) {", O)
    C:line("float s = 0.0f;")
    C:line("for (int n = 0; n < nb; n++) s += dy[(size_t)n * %d + o];", O)
    C:line("gb[o] += s;")
    C:close()
  end
  local function rows(o0, to, parallel)
    column_blocks(C, L, I, V, TI, function(i0, ti)
      for r = 0, to - 1 do
        local a = {}
        for v = 0, ti - 1 do
          a[#a + 1] = string.format("a%d_%d = VLOAD(gw + (size_t)(%s + %d) * %d + %s + %d)", r, v, o0, r, I, i0, v * V)
        end
        C:line("cg_v %s;", table.concat(a, ", "))
      end
      C:open("for (int n = 0; n < nb; n++) {")
      kept_loads(C, "s", ti, function(v) return string.format("x + (size_t)n * %d + %s + %d", I, i0, v * V) end)
      for r = 0, to - 1 do
        local f = {string.format("const float d%d = dy[(size_t)n * %d + %s + %d];", r, O, o0, r)}
        for v = 0, ti - 1 do f[#f + 1] = string.format("a%d_%d += d%d * s%d;", r, v, r, v) end
        C:line(table.concat(f, " "))
      end
      C:close()
      for r = 0, to - 1 do
        local st = {}
        for v = 0, ti - 1 do
          st[#st + 1] = string.format("VSTORE(gw + (size_t)(%s + %d) * %d + %s + %d, a%d_%d);", o0, r, I, i0, v * V, r, v)
        end
        C:line(table.concat(st, " "))
      end
    end, function(i)
      C:open("for (int o = %s; o < %s + %d; o++) {", o0, o0, to)
      C:line("float s = 0.0f;")
      C:line("for (int n = 0; n < nb; n++) s += dy[(size_t)n * %d + o] * x[(size_t)n * %d + %s];", O, I, i)
      C:line("gw[(size_t)o * %d + %s] += s;", I, i)
      C:close()
    end, parallel)
  end
  local full = O - O % TO
  if full > 0 then
    if full > TO then util.par(C, L) end
    C:open("for (int o0 = 0; o0 < %d; o0 += %d) {", full, TO)
    rows("o0", TO, false)
    C:close()
  end
  if O % TO > 0 then rows(tostring(full), O % TO, full == 0) end
  return {"G", "x", "dy", "nb"}
end

-- dx[n][i] = sum_o dy[n][o] w[o][i] with W read row by row: chunks of IC columns (the
-- threads' units of work), each chunk's nb x IC sums kept in dx (in L1) while every
-- row's IC weights stream past, contiguous; then masked with a fused relu's derivative.
-- The columns past the last whole vector as the tiles' form's.
local function backward_dx_rows(L, C)
  local I, O, V = L.nin, L.nout, L.vec
  local IC = L.sched.dx.tile.IC
  local IV = I - I % V
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("/* chunks of %d columns, W read a row at a time */", IC)
  local function chunk(c0, width)
    C:line("for (int n = 0; n < nb; n++) memset(dx + (size_t)n * %d + %s, 0, sizeof(float) * %d);", I, c0, width)
    -- U rows at a time: a pass over the sums per U rows (their chunks, U x IC floats,
    -- stay in L1 for the batch's other samples)
    local function rows_of(o0, u)
      local wr, d, t = {}, {}, {}
      for r = 0, u - 1 do
        wr[#wr + 1] = string.format("*restrict w%d = w + (size_t)(%s + %d) * %d + %s", r, o0, r, I, c0)
        d[#d + 1] = string.format("d%d = dy[(size_t)n * %d + %s + %d]", r, O, o0, r)
        t[#t + 1] = string.format("d%d * VLOAD(w%d + i)", r, r)
      end
      C:line("const float %s;", table.concat(wr, ", "))
      C:open("for (int n = 0; n < nb; n++) {")
      C:line("const float %s;", table.concat(d, ", "))
      C:line("float *restrict dr = dx + (size_t)n * %d + %s;", I, c0)
      C:line("for (int i = 0; i < %d; i += %d) VSTORE(dr + i, VLOAD(dr + i) + %s);", width, V, table.concat(t, " + "))
      C:close()
    end
    util.blocks(C, "o0", O, 8, nil, rows_of)
    if L.sched.dmask then
      C:open("for (int n = 0; n < nb; n++) {")
      C:line("float *restrict dr = dx + (size_t)n * %d + %s;", I, c0)
      C:line("const float *restrict xr = x + (size_t)n * %d + %s;", I, c0)
      C:line("for (int i = 0; i < %d; i += %d) VSTORE(dr + i, %s);", width, V, fuse.dv(L, "VLOAD(xr + i)", "VLOAD(dr + i)"))
      C:close()
    end
  end
  util.blocks(C, "c0", IV, IC, L, chunk)
  if IV < I then
    C:open("for (int i = %d; i < %d; i++) {", IV, I)
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("float s = 0.0f;")
    C:line("for (int o = 0; o < %d; o++) s += dy[(size_t)n * %d + o] * w[(size_t)o * %d + i];", O, O, I)
    C:line("dx[(size_t)n * %d + i] = %s;", I, fuse.ds(L, string.format("x[(size_t)n * %d + i]", I), "s"))
    C:close()
    C:close()
  end
  if L.sched.dmask then return {"P", "x", "dy", "dx", "nb"} end
  return {"P", "dy", "dx", "nb"}
end

-- dx[n][i] = sum_o dy[n][o] w[o][i]: tiles of TN rows of the batch x TI vectors along i
function M.backward_dx(L, C, ctx)
  if L.sched.dx.form == "rows" then return backward_dx_rows(L, C) end
  local I, O, V = L.nin, L.nout, L.vec
  local TN, TI = L.sched.dx.tile.TN, L.sched.dx.tile.TI
  C:line("const float *restrict w = %s;", L.t.weight)
  column_blocks(C, L, I, V, TI, function(i0, ti)
    batch_tiles(C, TN, function(n0, tn)
      zero_accs(C, tn, ti)
      C:open("for (int o = 0; o < %d; o++) {", O)
      kept_loads(C, "w", ti, function(v) return string.format("w + (size_t)o * %d + %s + %d", I, i0, v * V) end)
      for n = 0, tn - 1 do
        local f = {string.format("const float d%d = dy[(size_t)(%s + %d) * %d + o];", n, n0, n, O)}
        for v = 0, ti - 1 do f[#f + 1] = string.format("a%d_%d += d%d * w%d;", n, v, n, v) end
        C:line(table.concat(f, " "))
      end
      C:close()
      for n = 0, tn - 1 do
        local st = {}
        for v = 0, ti - 1 do
          local off = string.format("(size_t)(%s + %d) * %d + %s + %d", n0, n, I, i0, v * V)
          st[#st + 1] = string.format("VSTORE(dx + %s, %s);", off, fuse.dv(L, "VLOAD(x + " .. off .. ")", string.format("a%d_%d", n, v)))
        end
        C:line(table.concat(st, " "))
      end
    end)
  end, function(i)
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("float s = 0.0f;")
    C:line("for (int o = 0; o < %d; o++) s += dy[(size_t)n * %d + o] * w[(size_t)o * %d + %s];", O, O, I, i)
    C:line("dx[(size_t)n * %d + %s] = %s;", I, i, fuse.ds(L, string.format("x[(size_t)n * %d + %s]", I, i), "s"))
    C:close()
  end, true)
  if L.sched.dmask then return {"P", "x", "dy", "dx", "nb"} end
  return {"P", "dy", "dx", "nb"}
end


---------------------------------------------------------------------------
-- Batch-innermost ([features][R]): register tiles of TO rows x TB vectors of lanes.
---------------------------------------------------------------------------
-- dW's copy of x with the samples outermost, in the network's temporary region T
function M.temp(L)
  if L.sched.dw.form == "outer" then return L.lanes_R * L.nin end
  if L.sched.dw.form == "gemmT" then return L.lanes_R * gemmT_stride(L.nin, L.vec) end
  return 0
end


-- Emit a GEMM tile: for rows r = r0 .. r0+nr-1 and lane vectors v0 .. v0+TB-1,
-- acc[r][v] = init(r) + sum over k < K of coef(r, k) * src[k][lanes]; then store
-- (final(a, off), when given: what the last store writes instead of a, off its offset
-- in dst: the activation fused into the forward, or a relu's derivative masking dx,
-- fuse.lua; with blocks, only the last block's store, as the earlier ones hold partial sums).
-- With tl.KB < K the reduction runs in blocks of KB (a block of src, KB x lanes, stays
-- in L1 while the tiles of RB rows pass over it; dst is reloaded per block) and the
-- threads share the blocks of RB rows.
-- pack(k, r), when given: the coefficient of row r at k, copied per block into wp
-- [KB][RB] (the rows of dx's W^T are columns of W, 4 * I bytes apart: without the
-- copy a block's coefficients fall into a few L1 sets).
local function gemm_tiles(C, ctx, L, nrows, K, tl, src, dst, init, coef, rowname, pack, final)
  local R, V = ctx.lanes, ctx.vec
  local NV = R // V
  local TB, TR = tl.TB, tl.TR
  local KB = tl.KB and tl.KB < K and tl.KB or nil
  -- blocked: k from k0 to k1, the first block (k0 == 0) starting from init
  local RB = TR * (tl.RT or 4)
  local function tile(r0, nr, blocked)
    C:open("{")
    if blocked then
      local decl, ld, st = {}, {}, {}
      for t = 0, nr - 1 do
        for v = 0, TB - 1 do
          decl[#decl + 1] = string.format("a%d_%d", t, v)
          ld[#ld + 1] = string.format("a%d_%d = VLOAD(%s + (size_t)(%s + %d) * %d + (v0 + %d) * %d);", t, v, dst, r0, t, R, v, V)
          st[#st + 1] = string.format("a%d_%d = %s;", t, v, init(r0, t))
        end
      end
      C:line("cg_v %s;", table.concat(decl, ", "))
      C:open("if (k0) {")
      for j = 1, #ld, TB do C:line(table.concat(ld, " ", j, j + TB - 1)) end
      C:close("} else {")
      C.ind = C.ind + 1
      for j = 1, #st, TB do C:line(table.concat(st, " ", j, j + TB - 1)) end
      C:close()
    else
      for t = 0, nr - 1 do
        local accs = {}
        for v = 0, TB - 1 do accs[#accs + 1] = string.format("a%d_%d = %s", t, v, init(r0, t)) end
        C:line("cg_v %s;", table.concat(accs, ", "))
      end
    end
    if blocked then C:open("for (int k = k0; k < k1; k++) {") else C:open("for (int k = 0; k < %d; k++) {", K) end
    C:line("const float *restrict sk = %s + (size_t)k * %d + v0 * %d;", src, R, V)
    local xs, keep = {}, {}
    for v = 0, TB - 1 do
      xs[#xs + 1] = string.format("s%d = VLOAD(sk + %d)", v, v * V)
      keep[#keep + 1] = string.format("VKEEP(s%d);", v)
    end
    C:line("cg_v %s; %s", table.concat(xs, ", "), table.concat(keep, " "))
    if blocked and pack then C:line("const float *restrict pk = wp + (size_t)(k - k0) * %d + (%s - rb * %d);", RB, r0, RB) end
    for t = 0, nr - 1 do
      local parts = {}
      local cf = (blocked and pack) and string.format("pk[%d]", t) or coef(r0, t)
      for v = 0, TB - 1 do parts[#parts + 1] = string.format("a%d_%d += %s * s%d;", t, v, cf, v) end
      C:line(table.concat(parts, " "))
    end
    C:close()
    local function stores(with_final)
      for t = 0, nr - 1 do
        local parts = {}
        for v = 0, TB - 1 do
          local a = string.format("a%d_%d", t, v)
          local off = string.format("(size_t)(%s + %d) * %d + (v0 + %d) * %d", r0, t, R, v, V)
          parts[#parts + 1] = string.format("VSTORE(%s + %s, %s);", dst, off, with_final and final(a, off) or a)
        end
        C:line(table.concat(parts, " "))
      end
    end
    if blocked and final then
      -- partial sums until the last block of the reduction
      C:open("if (k1 == %d) {", K)
      stores(true)
      C:close("} else {")
      C.ind = C.ind + 1
      stores(false)
      C:close()
    else
      stores(final ~= nil)
    end
    C:close()
  end
  local full = nrows - nrows % TR
  if full > 0 and KB then
    local nblk = (full + RB - 1) // RB
    C:line("/* k in blocks of %d, rows in blocks of %d */", KB, RB)
    if nblk > 1 then util.par(C, L) end
    C:open("for (int rb = 0; rb < %d; rb++) {", nblk)
    C:open("for (int k0 = 0; k0 < %d; k0 += %d) {", K, KB)
    C:line("const int k1 = k0 + %d < %d ? k0 + %d : %d;", KB, K, KB, K)
    if pack then
      C:line("float wp[%d];", KB * RB)
      C:line("const int rn = rb * %d + %d < %d ? %d : %d - rb * %d;", RB, RB, full, RB, full, RB)
      C:line("for (int k = k0; k < k1; k++)")
      if RB % V == 0 then
        -- a full block in vector moves (gcc makes the scalar loop a memcpy call)
        local mv = {}
        for j = 0, RB - V, V do
          mv[#mv + 1] = string.format("VSTORE(wp + (k - k0) * %d + %d, VLOAD(&%s));", RB, j, pack("k", string.format("rb * %d + %d", RB, j)))
        end
        C:line("    if (rn == %d) { %s }", RB, table.concat(mv, " "))
        C:line("    else for (int r = 0; r < rn; r++) wp[(k - k0) * %d + r] = %s;", RB, pack("k", string.format("rb * %d + r", RB)))
      else
        C:line("    for (int r = 0; r < rn; r++) wp[(k - k0) * %d + r] = %s;", RB, pack("k", string.format("rb * %d + r", RB)))
      end
    end
    if full % RB == 0 then
      C:open("for (int %s = rb * %d; %s < rb * %d + %d; %s += %d) {", rowname, RB, rowname, RB, RB, rowname, TR)
    else
      C:open("for (int %s = rb * %d; %s < (rb * %d + %d < %d ? rb * %d + %d : %d); %s += %d) {",
        rowname, RB, rowname, RB, RB, full, RB, RB, full, rowname, TR)
    end
    C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
    tile(rowname, TR, true)
    C:close()
    C:close()
    C:close()
    C:close()
  elseif full > 0 then
    if full > TR then util.par(C, L) end
    C:open("for (int %s = 0; %s < %d; %s += %d) {", rowname, rowname, full, rowname, TR)
    C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
    tile(rowname, TR)
    C:close()
    C:close()
  end
  if nrows % TR > 0 then
    C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
    tile(tostring(full), nrows % TR)
    C:close()
  end
end

function M.forward_lanes(L, C, ctx)
  local I, O = L.nin, L.nout
  C:line("const float *restrict w = %s;", L.t.weight)
  if L.opt.bias then C:line("const float *restrict b = %s;", L.t.bias) end
  gemm_tiles(C, ctx, L, O, I, L.sched.fwd.tile, "x", "y",
    function(r0, t) return L.opt.bias and string.format("vsplat(b[%s + %d])", r0, t) or "vsplat(0.0f)" end,
    function(r0, t) return string.format("w[(size_t)(%s + %d) * %d + k]", r0, t, I) end, "o0", nil,
    L.sched.act and function(a) return fuse.v(L, a) end or nil)
  return {"P", "x", "y"}
end

function M.backward_dx_lanes(L, C, ctx)
  local I, O = L.nin, L.nout
  C:line("const float *restrict w = %s;", L.t.weight)
  gemm_tiles(C, ctx, L, I, O, L.sched.dx.tile, "dy", "dx",
    function() return "vsplat(0.0f)" end,
    function(r0, t) return string.format("w[(size_t)k * %d + %s + %d]", I, r0, t) end, "i0",
    function(k, r) return string.format("w[(size_t)%s * %d + %s]", k, I, r) end,
    L.sched.dmask and function(a, off) return fuse.dv(L, "VLOAD(x + " .. off .. ")", a) end or nil)
  if L.sched.dmask then return {"P", "x", "dy", "dx"} end
  return {"P", "dy", "dx"}
end

-- dW[o][i] += sum over the lanes of dy[o][b] x[i][b] (lanes >= nb hold zeros in dy).
-- gemm: TO x TI accumulators of lane vectors, reduced across lanes once at the end.
-- outer: x transposed once into S as [nb][I], outer products along i.
function M.backward_lanes(L, C, ctx)
  local I, O, R = L.nin, L.nout, ctx.lanes
  if L.sched.dw.form == "gemm" then
    local V = ctx.vec
    local NV, TO, TI = R // V, L.sched.dw.tile.TO, L.sched.dw.tile.TI
    C:line("float *restrict gw = %s;", L.t_grad.weight)
    if L.opt.bias then
      C:line("float *restrict gb = %s;", L.t_grad.bias)
      util.par(C, L)
      C:open("for (int o = 0; o < %d; o++) {", O)
      C:line("cg_v s = vsplat(0.0f);")
      C:line("for (int v = 0; v < %d; v++) s += VLOAD(dy + (size_t)o * %d + v * %d);", NV, R, V)
      C:line("gb[o] += vsum(s);")
      C:close()
    end
    C:line("/* tiles of %d rows x %d columns of dW */", TO, TI)
    util.par(C, L)
    C:open("for (int t = 0; t < %d; t++) {", (O // TO) * (I // TI))
    C:line("const int o0 = t / %d * %d, i0 = t %% %d * %d;", I // TI, TO, I // TI, TI)
    for a = 0, TO - 1 do
      local acc = {}
      for b = 0, TI - 1 do acc[#acc + 1] = string.format("a%d_%d = vsplat(0.0f)", a, b) end
      C:line("cg_v %s;", table.concat(acc, ", "))
    end
    C:open("for (int v = 0; v < %d; v++) {", NV)
    local ld = {}
    for a = 0, TO - 1 do ld[#ld + 1] = string.format("d%d = VLOAD(dy + (size_t)(o0 + %d) * %d + v * %d)", a, a, R, V) end
    for b = 0, TI - 1 do ld[#ld + 1] = string.format("x%d = VLOAD(x + (size_t)(i0 + %d) * %d + v * %d)", b, b, R, V) end
    C:line("const cg_v %s;", table.concat(ld, ", "))
    for a = 0, TO - 1 do
      local f = {}
      for b = 0, TI - 1 do f[#f + 1] = string.format("a%d_%d += d%d * x%d;", a, b, a, b) end
      C:line(table.concat(f, " "))
    end
    C:close()
    for a = 0, TO - 1 do
      local st = {}
      for b = 0, TI - 1 do st[#st + 1] = string.format("gw[(size_t)(o0 + %d) * %d + i0 + %d] += vsum(a%d_%d);", a, I, b, a, b) end
      C:line(table.concat(st, " "))
    end
    C:close()
    return {"G", "x", "dy"}
  end
  if L.sched.dw.form == "gemmT" then
    local V = ctx.vec
    local Ip, Sp = round_up(I, V), gemmT_stride(I, V)
    local TO, TI = L.sched.dw.tile.TO, L.sched.dw.tile.TI
    C:line("float *restrict gw = %s;", L.t_grad.weight)
    if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
    C:line("/* x transposed to T [nb][%d]%s */", Sp, Ip > I and string.format(" (columns %d .. %d zero)", I, Ip - 1) or "")
    util.par(C, L)
    C:open("for (int b = 0; b < nb; b++) {")
    C:line("for (int i = 0; i < %d; i++) T[(size_t)b * %d + i] = x[(size_t)i * %d + b];", I, Sp, R)
    if Ip > I then C:line("for (int i = %d; i < %d; i++) T[(size_t)b * %d + i] = 0.0f;", I, Ip, Sp) end
    C:close()
    if L.opt.bias then
      util.par(C, L)
      C:open("for (int o = 0; o < %d; o++) {", O)
      C:line("cg_v s = vsplat(0.0f);")
      C:line("for (int v = 0; v < %d; v++) s += VLOAD(dy + (size_t)o * %d + v * %d);", R // V, R, V)
      C:line("gb[o] += vsum(s);")
      C:close()
    end
    -- one tile: rows o0 .. o0+nr-1 of dW, vectors i0 .. i0+nv-1 (the last one holds
    -- `last` valid columns)
    local function tile(o0, nr, i0, nv, last)
      C:open("{")
      for r = 0, nr - 1 do
        local acc = {}
        for v = 0, nv - 1 do acc[#acc + 1] = string.format("a%d_%d = vsplat(0.0f)", r, v) end
        C:line("cg_v %s;", table.concat(acc, ", "))
      end
      C:open("for (int b = 0; b < nb; b++) {")
      C:line("const float *restrict sb = T + (size_t)b * %d + %s;", Sp, i0)
      local ld, keep = {}, {}
      for v = 0, nv - 1 do
        ld[#ld + 1] = string.format("s%d = VLOAD(sb + %d)", v, v * V)
        keep[#keep + 1] = string.format("VKEEP(s%d);", v)
      end
      C:line("cg_v %s; %s", table.concat(ld, ", "), table.concat(keep, " "))
      for r = 0, nr - 1 do
        local f = {string.format("const float d%d = dy[(size_t)(%s + %d) * %d + b];", r, o0, r, R)}
        for v = 0, nv - 1 do f[#f + 1] = string.format("a%d_%d += d%d * s%d;", r, v, r, v) end
        C:line(table.concat(f, " "))
      end
      C:close()
      for r = 0, nr - 1 do
        local st = {}
        for v = 0, nv - 1 do
          local at = string.format("gw + (size_t)(%s + %d) * %d + %s + %d", o0, r, I, i0, v * V)
          if v < nv - 1 or last == V then
            st[#st + 1] = string.format("VSTORE(%s, VLOAD(%s) + a%d_%d);", at, at, r, v)
          else
            st[#st + 1] = string.format("for (int l = 0; l < %d; l++) (%s)[l] += a%d_%d[l];", last, at, r, v)
          end
        end
        C:line(table.concat(st, " "))
      end
      C:close()
    end
    local NVI = Ip // V
    local nib, nob = NVI // TI, O // TO
    local lastcols = I - (Ip - V)
    -- full tiles, i-blocks outermost (a block of S stays in L1 across the rows); the
    -- last i-block may end in a partial vector
    if nib > 0 and nob > 0 then
      C:line("/* tiles of %d rows x %d vectors of dW */", TO, TI)
      if nib * nob > 1 then util.par(C, L) end
      C:open("for (int t = 0; t < %d; t++) {", nib * nob)
      C:line("const int o0 = t %% %d * %d, i0 = t / %d * %d;", nob, TO, nob, TI * V)
      if NVI % TI == 0 and lastcols < V then
        C:open("if (i0 == %d) {", (nib - 1) * TI * V)
        tile("o0", TO, "i0", TI, lastcols)
        C:close("} else {")
        C.ind = C.ind + 1
        tile("o0", TO, "i0", TI, V)
        C:close()
      else
        tile("o0", TO, "i0", TI, V)
      end
      C:close()
    end
    if O % TO > 0 and nib > 0 then
      C:open("for (int i0 = 0; i0 < %d; i0 += %d) {", nib * TI * V, TI * V)
      if NVI % TI == 0 and lastcols < V then
        C:open("if (i0 == %d) {", (nib - 1) * TI * V)
        tile(tostring(nob * TO), O % TO, "i0", TI, lastcols)
        C:close("} else {")
        C.ind = C.ind + 1
        tile(tostring(nob * TO), O % TO, "i0", TI, V)
        C:close()
      else
        tile(tostring(nob * TO), O % TO, "i0", TI, V)
      end
      C:close()
    end
    if NVI % TI > 0 then
      local i0 = tostring(nib * TI * V)
      if nob > 0 then
        C:open("for (int o0 = 0; o0 < %d; o0 += %d) {", nob * TO, TO)
        tile("o0", TO, i0, NVI % TI, lastcols)
        C:close()
      end
      if O % TO > 0 then tile(tostring(nob * TO), O % TO, i0, NVI % TI, lastcols) end
    end
    return {"G", "T", "x", "dy", "nb"}
  end
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  C:line("for (int b = 0; b < nb; b++)")
  C:line("    for (int i = 0; i < %d; i++) T[(size_t)b * %d + i] = x[(size_t)i * %d + b];", I, I, R)
  util.par(C, L)
  C:open("for (int o = 0; o < %d; o++) {", O)
  C:line("float *restrict gwo = gw + (size_t)o * %d;", I)
  if L.opt.bias then C:line("float sb = 0.0f;") end
  C:open("for (int b = 0; b < nb; b++) {")
  C:line("const float d = dy[(size_t)o * %d + b];", R)
  if L.opt.bias then C:line("sb += d;") end
  C:line("const float *restrict xb = T + (size_t)b * %d;", I)
  C:line("for (int i = 0; i < %d; i++) gwo[i] += d * xb[i];", I)
  C:close()
  if L.opt.bias then C:line("gb[o] += sb;") end
  C:close()
  return {"G", "T", "x", "dy", "nb"}
end

return M
