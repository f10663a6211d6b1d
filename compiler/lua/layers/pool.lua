-- maxpool1d/2d and avgpool1d/2d with PyTorch's semantics (floor mode): padding is
-- -inf for max and zeros for average; avgpool divides by the whole window when
-- count_include_pad (PyTorch's default), else by the number of valid taps.
-- Max backward recomputes the argmax (first maximum wins, NaN propagates, as PyTorch).
local util = require("util")
local fuse = require("fuse")
local window = require("window")
local sched = require("schedule")
local M = {kinds = {"maxpool1d", "maxpool2d", "avgpool1d", "avgpool2d"}}

local function is2d(L) return L.kind:sub(-2) == "2d" end
local function ismax(L) return L.kind:sub(1, 3) == "max" end

function M.schema(kind)
  local s = {
    {key = "kernel", type = "int2", required = true},
    {key = "stride", type = "int2"}, -- defaults to kernel
    {key = "padding", type = "nonneg2", default = {0, 0}},
  }
  if kind:sub(1, 3) == "avg" then
    s[#s + 1] = {key = "count_include_pad", type = "bool", default = true}
  end
  return s
end

function M.shape(L)
  local o = L.opt
  local rank = is2d(L) and 3 or 2
  if #L.in_shape ~= rank then
    util.fail(L.node, string.format("layer %d (%s): needs a %s input, got %s",
      L.index, L.kind, is2d(L) and "[C, H, W]" or "[C, L]", L.shape_str(L.in_shape)))
  end
  local stride = o.stride or o.kernel
  local axes = {}
  for a = is2d(L) and 1 or 2, 2 do
    local I = is2d(L) and L.in_shape[a + 1] or L.in_shape[2]
    local k, s, p = o.kernel[a], stride[a], o.padding[a]
    if p > k // 2 then
      util.fail(o["@padding"] or L.node, string.format("%s.padding: %d must be at most half the kernel (%d), as in PyTorch",
        L.kind, p, k))
    end
    if I + 2 * p < k then
      util.fail(L.node, string.format("layer %d (%s): kernel %d needs %d inputs, got %d after padding",
        L.index, L.kind, k, k, I + 2 * p))
    end
    axes[a] = {I = I, O = window.out_size(I, k, s, 1, p, p), K = k, S = s, D = 1, lo = p, hi = p}
  end
  if not is2d(L) then axes[1] = window.unit_axis() end
  L.geom = {h = axes[1], w = axes[2]}
  L.channels = L.in_shape[1]
  L.out_shape = is2d(L) and {L.channels, axes[1].O, axes[2].O} or {L.channels, axes[2].O}
end

function M.tensors(L) return {} end
function M.macs(L) return 0 end
function M.window(L) return L.geom end

-- The planes (sample, channel) one at a time: the window written out per plane, or, the
-- "loop" form of a layer with work for the threads, one loop over every sample's planes
-- that they share (plane pl of the batch at x + pl * IHW: channels-major [N][C][H][W])
local function plane_loops(C, L, unroll, body)
  local g = L.geom
  local IHW, OHW = g.h.I * g.w.I, g.h.O * g.w.O
  if not unroll and L.parallel then
    util.par(C, L)
    C:open("for (int pl = 0; pl < nb * %d; pl++) {", L.channels)
    body(string.format("(size_t)pl * %d", IHW), string.format("(size_t)pl * %d", OHW))
    C:close()
    return
  end
  C:open("for (int n = 0; n < nb; n++) {")
  util.loop(C, "c", 0, L.channels - 1, unroll, function(c)
    local base_in = util.aff(0):term("n", L.in_size):term(c, IHW)
    local base_out = util.aff(0):term("n", L.out_size):term(c, OHW)
    if type(c) == "number" and L.channels > 1 then C:open("{") end
    body(tostring(base_in), tostring(base_out))
    if type(c) == "number" and L.channels > 1 then C:close() end
  end)
  C:close()
end

-- some window of g reads more than one input (else max pooling's backward never reads x:
-- kernel 1, or a kernel that meets one valid input everywhere)
local function multi_tap(g)
  for _, ry in ipairs(window.regions(g.h)) do
    for _, rx in ipairs(window.regions(g.w)) do
      if (ry.k1 - ry.k0 + 1) * (rx.k1 - rx.k0 + 1) > 1 then return true end
    end
  end
  return false
end

-- no input lies in two windows (stride >= kernel on both axes): backward can store each
-- input's gradient instead of adding it to what is there
local function disjoint(g) return g.h.S >= g.h.K and g.w.S >= g.w.K end
-- the windows cover every input exactly once (kernel = stride, no padding, no input
-- left over by the floor): with disjoint stores, dx needs no zeroing first
local function tiles(g)
  for _, a in ipairs({g.h, g.w}) do
    if not (a.K == a.S and a.lo == 0 and a.hi == 0 and a.I == a.O * a.K) then return false end
  end
  return true
end

-- Start of a batch-innermost backward over dx of n floats: zero dx unless the windows
-- tile it; returns whether each input's gradient is stored (disjoint windows) or added.
local function dx_start(C, g, n)
  local put = disjoint(g)
  if not (put and tiles(g)) then C:line("memset(dx, 0, sizeof(float) * %d);", n) end
  return put
end

-- Schedules: batch-innermost, straight-line (every window written out) when small,
-- else loops over planes with the window unrolled.
function M.candidates(L, T)
  if L.lanes_layout then return {sched.simple(L, "lanes")} end
  local loop = sched.simple(L, "loop")
  if L.out_size * L.geom.h.K * L.geom.w.K <= L.budget then return {sched.simple(L, "straight"), loop} end
  return {loop}
end

function M.forward(L, C, ctx)
  local g = L.geom
  local unroll = L.sched.fwd.form == "straight"
  local ktot = g.h.K * g.w.K
  plane_loops(C, L, unroll, function(bin, bout)
    C:line("const float *restrict xc = x + %s;", bin)
    C:line("float *restrict yc = y + %s;", bout)
    window.windows(C, g, unroll, function(out, taps, info)
      if ismax(L) and #taps == 1 then
        C:line("yc[%s] = xc[%s];", tostring(out), tostring(taps[1].at))
      elseif ismax(L) then
        if not info.scoped then C:open("{") end
        C:line("float m = xc[%s], v;", tostring(taps[1].at))
        for i = 2, #taps do
          C:line("v = xc[%s]; if (v > m || isnan(v)) m = v;", tostring(taps[i].at))
        end
        C:line("yc[%s] = m;", tostring(out))
        if not info.scoped then C:close() end
      else
        local terms = {}
        for _, t in ipairs(taps) do terms[#terms + 1] = "xc[" .. tostring(t.at) .. "]" end
        local div = L.opt.count_include_pad and ktot or #taps
        C:line("yc[%s] = (%s) / %s;", tostring(out), table.concat(terms, " + "), util.flt(div))
      end
    end)
  end)
  return {"x", "y", "nb"}
end

-- Max pooling can mask its dx stores with a relu's derivative (fuse.lua): the only
-- input its dy reaches in a window is the maximum m, so the mask is relu'(m).
function M.masks_dx(L) return ismax(L) end

function M.backward(L, C, ctx)
  local g = L.geom
  local unroll = L.sched.dw.form == "straight"
  local ktot = g.h.K * g.w.K
  local dm = L.sched.dmask
  -- zeroed all at once when the windows are written out, else a plane at a time (on
  -- the thread that adds into it, while the plane is in its cache)
  if unroll then C:line("memset(dx, 0, sizeof(float) * (size_t)nb * %d);", L.in_size) end
  plane_loops(C, L, unroll, function(bin, bout)
    if ismax(L) and (multi_tap(g) or dm) then C:line("const float *restrict xc = x + %s;", bin) end
    C:line("float *restrict dxc = dx + %s;", bin)
    if not unroll then C:line("memset(dxc, 0, sizeof(float) * %d);", g.h.I * g.w.I) end
    C:line("const float *restrict dyc = dy + %s;", bout)
    window.windows(C, g, unroll, function(out, taps, info)
      if ismax(L) and #taps == 1 then
        local at = tostring(taps[1].at)
        C:line("dxc[%s] += %s;", at, fuse.ds(L, "xc[" .. at .. "]", "dyc[" .. tostring(out) .. "]"))
        return
      end
      if not info.scoped then C:open("{") end
      if ismax(L) then
        C:line("int a = %s; float m = xc[a];", tostring(taps[1].at))
        for i = 2, #taps do
          local at = tostring(taps[i].at)
          C:line("if (xc[%s] > m || isnan(xc[%s])) { m = xc[%s]; a = %s; }", at, at, at, at)
        end
        -- dy loaded unconditionally (act.lua: GCC 12 turns conditional loads into masked ones)
        if dm then
          C:line("const float d = dyc[%s]; dxc[a] += %s;", tostring(out), fuse.ds(L, "m", "d"))
        else
          C:line("dxc[a] += dyc[%s];", tostring(out))
        end
      else
        local div = L.opt.count_include_pad and ktot or #taps
        C:line("const float d = dyc[%s] / %s;", tostring(out), util.flt(div))
        local parts = {}
        for _, t in ipairs(taps) do parts[#parts + 1] = "dxc[" .. tostring(t.at) .. "] += d;" end
        for i = 1, #parts, 4 do
          C:line(table.concat(parts, " ", i, math.min(i + 3, #parts)))
        end
      end
      if not info.scoped then C:close() end
    end)
  end)
  if ismax(L) and (multi_tap(g) or dm) then return {"x", "dy", "dx", "nb"} end
  return {"dy", "dx", "nb"}
end

-- Batch-innermost: [C][H][W][R]; per window, one loop over the R lanes (vectorized).
local function lanes_windows(L, C, ctx, body)
  local g, R = L.geom, ctx.lanes
  local IHW, OHW = g.h.I * g.w.I, g.h.O * g.w.O
  if L.channels > 1 then util.par(C, L) end
  C:open("for (int c = 0; c < %d; c++) {", L.channels)
  body.head(string.format("c * %d", IHW * R), string.format("c * %d", OHW * R))
  window.windows(C, g, false, function(out, taps, info)
    local ats = {}
    for i, t in ipairs(taps) do ats[i] = tostring(t.at:scale(R)) end
    C:open("for (int b = 0; b < %d; b++) {", R)
    body.window(tostring(out:scale(R)), ats, #taps)
    C:close()
  end)
  C:close()
end

function M.forward_lanes(L, C, ctx)
  local g = L.geom
  local ktot = g.h.K * g.w.K
  lanes_windows(L, C, ctx, {
    head = function(bin, bout)
      C:line("const float *restrict xc = x + %s;", bin)
      C:line("float *restrict yc = y + %s;", bout)
    end,
    window = function(out, ats, ntap)
      if ismax(L) then
        C:line("float m = xc[%s + b];", ats[1])
        for i = 2, ntap do
          C:line("{ const float v = xc[%s + b]; if (v > m || isnan(v)) m = v; }", ats[i])
        end
        C:line("yc[%s + b] = m;", out)
      else
        local terms = {}
        for i = 1, ntap do terms[i] = "xc[" .. ats[i] .. " + b]" end
        local div = L.opt.count_include_pad and ktot or ntap
        C:line("yc[%s + b] = (%s) / %s;", out, table.concat(terms, " + "), util.flt(div))
      end
    end,
  })
  return {"x", "y"}
end

-- Max pooling backward on whole vectors: the argmax is recomputed per lane as an
-- index vector (PyTorch's rule: a later tap wins when greater or NaN) and dy goes to
-- the tap whose index matches.
local function max_backward_vec(L, C, ctx)
  local g, R, V = L.geom, ctx.lanes, ctx.vec
  local NV = R // V
  local IHW, OHW = g.h.I * g.w.I, g.h.O * g.w.O
  local dm = L.sched.dmask
  local put = dx_start(C, g, L.in_size * R)
  if L.channels > 1 then util.par(C, L) end
  C:open("for (int c = 0; c < %d; c++) {", L.channels)
  if multi_tap(g) or dm then C:line("const float *restrict xc = x + c * %d;", IHW * R) end
  C:line("float *restrict dxc = dx + c * %d;", IHW * R)
  C:line("const float *restrict dyc = dy + c * %d;", OHW * R)
  window.windows(C, g, false, function(out, taps, info)
    C:open("for (int v = 0; v < %d; v++) {", NV)
    local ats = {}
    for i, t in ipairs(taps) do ats[i] = tostring(t.at:scale(R)) .. " + v * " .. V end
    if #taps == 1 then
      C:line("const cg_v d = VLOAD(dyc + %s + v * %d);", tostring(out:scale(R)), V)
      local g1 = fuse.dv(L, "VLOAD(xc + " .. ats[1] .. ")", "d")
      if put then C:line("VSTORE(dxc + %s, %s);", ats[1], g1)
      else C:line("VSTORE(dxc + %s, VLOAD(dxc + %s) + %s);", ats[1], ats[1], g1) end
    else
      C:line("const cg_v d0 = VLOAD(dyc + %s + v * %d);", tostring(out:scale(R)), V)
      C:line("cg_v m = VLOAD(xc + %s); cg_vi idx = (cg_vi){0};", ats[1])
      for i = 2, #taps do
        C:line("{ const cg_v t = VLOAD(xc + %s); const cg_vi u = (t > m) | (t != t); m = VSEL(u, t, m); idx = (idx & ~u) | (u & %d); }",
          ats[i], i - 1)
      end
      -- with a relu's derivative fused: dy reaches the maximum m only
      C:line("const cg_v d = %s;", fuse.dv(L, "m", "d0"))
      for i = 1, #taps do
        if put then
          C:line("VSTORE(dxc + %s, (cg_v)((cg_vi)d & (idx == %d)));", ats[i], i - 1)
        else
          C:line("VSTORE(dxc + %s, VLOAD(dxc + %s) + (cg_v)((cg_vi)d & (idx == %d)));", ats[i], ats[i], i - 1)
        end
      end
    end
    C:close()
  end)
  C:close()
  if multi_tap(g) or dm then return {"x", "dy", "dx"} end
  return {"dy", "dx"}
end

-- Average pooling batch-innermost (max pooling: max_backward_vec): dy / divisor to
-- every tap of its window.
function M.backward_lanes(L, C, ctx)
  if ismax(L) then return max_backward_vec(L, C, ctx) end
  local g = L.geom
  local ktot = g.h.K * g.w.K
  local put = dx_start(C, g, L.in_size * ctx.lanes)
  lanes_windows(L, C, ctx, {
    head = function(bin, bout)
      C:line("float *restrict dxc = dx + %s;", bin)
      C:line("const float *restrict dyc = dy + %s;", bout)
    end,
    window = function(out, ats, ntap)
      local div = L.opt.count_include_pad and ktot or ntap
      C:line("const float d = dyc[%s + b] / %s;", out, util.flt(div))
      for i = 1, ntap do C:line("dxc[%s + b] %s d;", ats[i], put and "=" or "+=") end
    end,
  })
  return {"dy", "dx"}
end

return M
