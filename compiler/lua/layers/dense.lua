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
--             dW from x transposed once to [nb][I]
function M.candidates(L, T)
  if L.lanes_layout then
    local TB = util.largest_divisor(L.lanes_R // L.vec, 4)
    local t = {TB = TB, TR = math.max(1, math.min(16, T.acc) // TB)}
    -- dW as a register-tiled GEMM over the lanes (TO x TI accumulators), or as
    -- outer products on x transposed to [nb][I]
    local TO = util.largest_divisor(L.nout, 4)
    local gemm = {TO = TO, TI = util.largest_divisor(L.nin, math.max(1, T.acc // TO))}
    return {{name = "lanes", layout = "lanes", fwd = {form = "lanes", tile = t}, dw = {form = "gemm", tile = gemm},
      dx = {form = "lanes", tile = t, apart = true}},
      {name = "lanes+outer", layout = "lanes", fwd = {form = "lanes", tile = t}, dw = {form = "outer"},
      dx = {form = "lanes", tile = t, apart = true}}}
  end
  local straight = sched.simple(L, "straight")
  local loop = sched.simple(L, "loop", {TO = math.min(4, L.nout)})
  if L.nin * L.nout <= L.budget then return {straight, loop} end
  return {loop}
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
      C:line("dxn[%d] = %s;", i, terms_str(t, "0.0f"))
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
-- Batch-innermost ([features][R]): register tiles of TO rows x TB vectors of lanes.
---------------------------------------------------------------------------
function M.scratch(L) return L.sched.dw.form == "outer" and L.lanes_R * L.nin or 0 end


-- Emit a GEMM tile: for rows r = r0 .. r0+nr-1 and lane vectors v0 .. v0+TB-1,
-- acc[r][v] = init(r) + sum over k < K of coef(r, k) * src[k][lanes]; then store
-- (act: through the activation fused into the forward, fuse.lua).
local function gemm_tiles(C, ctx, L, nrows, K, tl, src, dst, init, coef, rowname, act)
  local R, V = ctx.lanes, ctx.vec
  local NV = R // V
  local TB, TR = tl.TB, tl.TR
  local function tile(r0, nr)
    C:open("{")
    for t = 0, nr - 1 do
      local accs = {}
      for v = 0, TB - 1 do accs[#accs + 1] = string.format("a%d_%d = %s", t, v, init(r0, t)) end
      C:line("cg_v %s;", table.concat(accs, ", "))
    end
    C:open("for (int k = 0; k < %d; k++) {", K)
    C:line("const float *restrict sk = %s + (size_t)k * %d + v0 * %d;", src, R, V)
    local xs = {}
    for v = 0, TB - 1 do xs[#xs + 1] = string.format("s%d = VLOAD(sk + %d)", v, v * V) end
    C:line("const cg_v %s;", table.concat(xs, ", "))
    for t = 0, nr - 1 do
      local parts = {}
      for v = 0, TB - 1 do parts[#parts + 1] = string.format("a%d_%d += %s * s%d;", t, v, coef(r0, t), v) end
      C:line(table.concat(parts, " "))
    end
    C:close()
    for t = 0, nr - 1 do
      local parts = {}
      for v = 0, TB - 1 do
        local a = string.format("a%d_%d", t, v)
        parts[#parts + 1] = string.format("VSTORE(%s + (size_t)(%s + %d) * %d + (v0 + %d) * %d, %s);", dst, r0, t, R, v, V,
          act and fuse.v(L, a) or a)
      end
      C:line(table.concat(parts, " "))
    end
    C:close()
  end
  local full = nrows - nrows % TR
  if full > 0 then
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
    function(r0, t) return string.format("w[(size_t)(%s + %d) * %d + k]", r0, t, I) end, "o0", true)
  return {"P", "x", "y"}
end

function M.backward_dx_lanes(L, C, ctx)
  local I, O = L.nin, L.nout
  C:line("const float *restrict w = %s;", L.t.weight)
  gemm_tiles(C, ctx, L, I, O, L.sched.dx.tile, "dy", "dx",
    function() return "vsplat(0.0f)" end,
    function(r0, t) return string.format("w[(size_t)k * %d + %s + %d]", I, r0, t) end, "i0")
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
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  C:line("for (int b = 0; b < nb; b++)")
  C:line("    for (int i = 0; i < %d; i++) S[(size_t)b * %d + i] = x[(size_t)i * %d + b];", I, I, R)
  util.par(C, L)
  C:open("for (int o = 0; o < %d; o++) {", O)
  C:line("float *restrict gwo = gw + (size_t)o * %d;", I)
  if L.opt.bias then C:line("float sb = 0.0f;") end
  C:open("for (int b = 0; b < nb; b++) {")
  C:line("const float d = dy[(size_t)o * %d + b];", R)
  if L.opt.bias then C:line("sb += d;") end
  C:line("const float *restrict xb = S + (size_t)b * %d;", I)
  C:line("for (int i = 0; i < %d; i++) gwo[i] += d * xb[i];", I)
  C:close()
  if L.opt.bias then C:line("gb[o] += sb;") end
  C:close()
  return {"G", "S", "x", "dy", "nb"}
end

return M
