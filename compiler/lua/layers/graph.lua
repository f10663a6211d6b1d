-- Graph layers: add (elementwise sum of two or more earlier outputs), concat (channel
-- concatenation: the first axis of a sample), global_avgpool ([C, H, W] -> [C, 1, 1],
-- [C, L] -> [C, 1]: PyTorch's AdaptiveAvgPool2d(1) / AdaptiveAvgPool1d(1)) and dropout
-- (inverted dropout, PyTorch's nn.Dropout(p): training only, identity in eval).
--
-- add and concat read several tensors: their functions take x1..xk (forward) and
-- dx1..dxk (backward), in the order of `from`.
--
-- Dropout's mask is a hash of (the step's seed, the layer, the sample, the element),
-- not a stream: the generated forward draws it in any layout and any thread order with
-- the same bits, the trainer passes a seed derived from its own seed and the step
-- (so --resume stays bitwise), and tests/torch_ref.py recomputes it. The kept mask
-- (0 or 1/(1-p)) is saved in scratch for backward.
local util = require("util")
local sched = require("schedule")
local fuse = require("fuse")
local M = {kinds = {"add", "concat", "global_avgpool", "dropout"}}

-- these kinds take `from: [a, b, ...]` (two or more inputs)
M.multi_input = {add = true, concat = true}

-- add may write its sum over one of its inputs (its backward reads neither x nor y)
function M.inplace_ok(L) return L.kind == "add" end

-- add stores its sum through a relu that only reads it, and its backward masks dy with
-- that relu's derivative as it reads it (fuse.lua): a residual block's output relu has
-- no pass of its own
function M.fuses_act(L) return L.kind == "add" end
function M.masks_dy(L) return L.kind == "add" end
-- every input of an add receives the same gradient: the memory planner may give two of
-- them one buffer (L.dx_same_as[j]: input j's gradient is another input's buffer,
-- written once)
function M.dx_same(L) return L.kind == "add" end

function M.schema(kind)
  if kind == "dropout" then
    return {{key = "p", type = "number", default = 0.5,
             check = function(v) return (v < 0 or v >= 1) and "must be in [0, 1)" or nil end}}
  end
  return {}
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function refname(L, j)
  return L.input_names and L.input_names[j] or ("input " .. j)
end

function M.shape(L)
  local k = L.kind
  if k == "add" then
    for j = 2, #L.in_shapes do
      if not same(L.in_shapes[j], L.in_shapes[1]) then
        util.fail(L.from_node or L.node, string.format("layer %d (add): shapes differ: %s is %s, %s is %s",
          L.index, refname(L, 1), L.shape_str(L.in_shapes[1]), refname(L, j), L.shape_str(L.in_shapes[j])))
      end
    end
    L.out_shape = L.in_shapes[1]
    L.in_sizes = {}
    for j = 1, #L.in_shapes do L.in_sizes[j] = L.in_size end
  elseif k == "concat" then
    local first = L.in_shapes[1]
    local c, rest = 0, 1
    for i = 2, #first do rest = rest * first[i] end
    L.in_sizes = {}
    for j, s in ipairs(L.in_shapes) do
      local ok = #s == #first
      for i = 2, #first do if s[i] ~= first[i] then ok = false end end
      if not ok then
        util.fail(L.from_node or L.node, string.format(
          "layer %d (concat): %s is %s and %s is %s: concatenation joins channels, the other axes must be equal",
          L.index, refname(L, 1), L.shape_str(first), refname(L, j), L.shape_str(s)))
      end
      c = c + s[1]
      L.in_sizes[j] = s[1] * rest
    end
    L.out_shape = {c}
    for i = 2, #first do L.out_shape[i] = first[i] end
  elseif k == "global_avgpool" then
    if #L.in_shape < 2 then
      util.fail(L.node, string.format("layer %d (global_avgpool): needs a [C, H, W] or [C, L] input, got %s",
        L.index, L.shape_str(L.in_shape)))
    end
    L.out_shape = {L.in_shape[1]}
    for i = 2, #L.in_shape do L.out_shape[i] = 1 end
    L.channels = L.in_shape[1]
    L.plane = L.in_size // L.channels
  else
    L.out_shape = L.in_shape
  end
end

function M.tensors(L) return {} end
function M.macs(L) return 0 end

function M.candidates(L, T)
  return {sched.simple(L, L.lanes_layout and "lanes" or "loop")}
end

-- dropout keeps a value when (hash >> 8) >= this threshold; 0 (p rounds to 0) is the identity
local function drop_threshold(L) return math.floor(L.opt.p * 16777216 + 0.5) end

-- dropout keeps its mask (one float per value of the batch) for backward; none for p = 0
function M.scratch(L)
  if L.kind ~= "dropout" or drop_threshold(L) == 0 then return 0 end
  return (L.lanes_R or L.batch) * L.out_size
end

local function args(prefix, n)
  local a = {}
  for j = 1, n do a[j] = prefix .. j end
  return a
end

-- values per sample in the buffer of one tensor: in the batch-innermost layout a
-- sample's values are `lanes` apart and a "row" holds all lanes
local function rows(ctx) return ctx.lanes and string.format("%d", ctx.lanes) or "nb" end

-- one flat loop over the values of the batch
local function flat(L, C, ctx, n_per_sample, body)
  local count = ctx.lanes and tostring(n_per_sample * ctx.lanes) or string.format("(size_t)nb * %d", n_per_sample)
  if n_per_sample * (ctx.lanes or L.batch) >= 16384 then util.par(C, L) end
  C:line("for (size_t i = 0; i < %s; i++)", count)
  C.ind = C.ind + 1
  body("i")
  C.ind = C.ind - 1
end

-- the 32-bit hash of dropout (lowbias32, Chris Wellons' constants); tests/torch_ref.py
-- has its twin
local function hash_fn(C)
  C:line("#define CG_MIX32(h) ((h) ^= (h) >> 16, (h) *= 0x7feb352du, (h) ^= (h) >> 15, (h) *= 0x846ca68bu, (h) ^= (h) >> 16)")
end

-- in the batch-innermost layout every loop covers all lanes: nb is not an argument
local function no_nb(used)
  local out = {}
  for _, a in ipairs(used) do if a ~= "nb" then out[#out + 1] = a end end
  return out
end
function M.forward(L, C, ctx) return M.forward_any(L, C, ctx) end
function M.forward_lanes(L, C, ctx) return no_nb(M.forward_any(L, C, ctx)) end
function M.backward(L, C, ctx) return M.backward_any(L, C, ctx) end
function M.backward_lanes(L, C, ctx) return no_nb(M.backward_any(L, C, ctx)) end

function M.forward_any(L, C, ctx)
  local k, lanes = L.kind, ctx.lanes
  local used = {}
  if k == "add" then
    -- in place (L.inplace = j): y is input j's buffer, added in at its place in the sum
    local terms = {}
    for j = 1, #L.in_shapes do terms[j] = j == L.inplace and "y[i]" or string.format("x%d[i]", j) end
    flat(L, C, ctx, L.out_size, function(i) C:line("y[i] = %s;", fuse.s(L, table.concat(terms, " + "))) end)
    used = {}
    for j = 1, #L.in_shapes do if j ~= L.inplace then used[#used + 1] = "x" .. j end end
  elseif k == "concat" then
    local off = 0
    if lanes then
      for j, sz in ipairs(L.in_sizes) do
        C:line("memcpy(y + %d, x%d, sizeof(float) * %d);", off * lanes, j, sz * lanes)
        off = off + sz
      end
    else
      C:open("for (int n = 0; n < nb; n++) {")
      for j, sz in ipairs(L.in_sizes) do
        C:line("memcpy(y + (size_t)n * %d + %d, x%d + (size_t)n * %d, sizeof(float) * %d);", L.out_size, off, j, sz, sz)
        off = off + sz
      end
      C:close()
    end
    used = args("x", #L.in_shapes)
  elseif k == "global_avgpool" then
    local Cn, S = L.channels, L.plane
    if lanes then
      C:open("for (int c = 0; c < %d; c++) {", Cn)
      C:line("float *yc = y + (size_t)c * %d;", lanes)
      C:line("const float *xc = x + (size_t)c * %d;", S * lanes)
      C:line("for (int l = 0; l < %d; l++) yc[l] = 0.0f;", lanes)
      C:line("for (int s = 0; s < %d; s++)", S)
      C:line("    for (int l = 0; l < %d; l++) yc[l] += xc[(size_t)s * %d + l];", lanes, lanes)
      C:line("for (int l = 0; l < %d; l++) yc[l] *= %s;", lanes, util.flt(1 / S))
      C:close()
    else
      C:open("for (size_t r = 0; r < (size_t)nb * %d; r++) {", Cn)
      C:line("float s = 0.0f;")
      C:line("for (int j = 0; j < %d; j++) s += x[r * %d + j];", S, S)
      C:line("y[r] = s * %s;", util.flt(1 / S))
      C:close()
    end
    used = {"x", "y", "nb"}
  else -- dropout
    local p = L.opt.p
    local keep = drop_threshold(L)
    local copy = string.format("memcpy(y, x, sizeof(float) * %s * %d);", lanes and tostring(lanes) or "(size_t)nb", L.out_size)
    if keep == 0 then -- p = 0: the identity
      C:line(copy)
      return {"x", "y", "nb"}
    end
    C:open("if (!training) {")
    C:line(copy)
    C:line("return;")
    C:close()
    hash_fn(C)
    C:line("unsigned seed = (unsigned)training ^ %du * 0x85ebca6bu;", L.index + 1)
    C:line("CG_MIX32(seed);")
    local scale = util.flt(1 / (1 - p))
    -- a team's replica (cnngen --team): its samples' places in the team's batch, so the
    -- masks are those of one call on the whole batch (team NULL: the plain entry points)
    if ctx.team then C:line("const unsigned n0 = team ? (unsigned)team->n0 : 0u;") end
    local function draw(nexpr, iexpr, at)
      if ctx.team then nexpr = "(n0 + " .. nexpr .. ")" end
      C:line("unsigned h = (unsigned)(%s * %d + %s) * 0x9e3779b1u ^ seed;", nexpr, L.out_size, iexpr)
      C:line("CG_MIX32(h);")
      C:line("float m = (h >> 8) >= %du ? %s : 0.0f;", keep, scale)
      C:line("S[%s] = m;", at)
      C:line("y[%s] = x[%s] * m;", at, at)
    end
    if lanes then
      C:open("for (int i = 0; i < %d; i++)", L.out_size)
      C:open("for (int l = 0; l < %d; l++) {", lanes)
      draw("(unsigned)l", "(unsigned)i", string.format("(size_t)i * %d + l", lanes))
      C:close()
      C.ind = C.ind - 1
    else
      C:open("for (int n = 0; n < nb; n++)")
      C:open("for (int i = 0; i < %d; i++) {", L.out_size)
      draw("(unsigned)n", "(unsigned)i", string.format("(size_t)n * %d + i", L.out_size))
      C:close()
      C.ind = C.ind - 1
    end
    C:line("#undef CG_MIX32")
    used = {"S", "x", "y", "nb", "training", ctx.team and "team" or nil}
  end
  if k == "add" or k == "concat" then used[#used + 1] = "y"; used[#used + 1] = "nb" end
  return used
end

function M.backward_any(L, C, ctx)
  local k, lanes = L.kind, ctx.lanes
  if k == "add" then
    local n = #L.in_shapes
    local same = L.dx_same_as or {}
    if L.parallel or L.sched.dmask then
      -- dy read once (masked with relu'(y) when the relu after the add fused its
      -- backward here: y is then the relu's output), every input's gradient written in
      -- the same pass, on the threads
      local w = {}
      for j = 1, n do if not same[j] then w[#w + 1] = string.format("dx%d[i] = g;", j) end end
      util.par(C, L)
      C:open("for (size_t i = 0; i < %s; i++) {", lanes and tostring(lanes * L.out_size) or string.format("(size_t)nb * %d", L.out_size))
      C:line("const float g = %s; %s", fuse.ds(L, "y[i]", "dy[i]"), table.concat(w, " "))
      C:close()
    else
      for j = 1, n do
        if not same[j] then
          C:line("memcpy(dx%d, dy, sizeof(float) * %s * %d);", j, lanes and tostring(lanes) or "(size_t)nb", L.out_size)
        end
      end
    end
    local u = {}
    for j = 1, n do if not same[j] then u[#u + 1] = "dx" .. j end end
    if L.sched.dmask then u[#u + 1] = "y" end
    u[#u + 1] = "dy"; u[#u + 1] = "nb"
    return u
  elseif k == "concat" then
    local off = 0
    if lanes then
      for j, sz in ipairs(L.in_sizes) do
        C:line("memcpy(dx%d, dy + %d, sizeof(float) * %d);", j, off * lanes, sz * lanes)
        off = off + sz
      end
    else
      C:open("for (int n = 0; n < nb; n++) {")
      for j, sz in ipairs(L.in_sizes) do
        C:line("memcpy(dx%d + (size_t)n * %d, dy + (size_t)n * %d + %d, sizeof(float) * %d);", j, sz, L.out_size, off, sz)
        off = off + sz
      end
      C:close()
    end
    local u = args("dx", #L.in_shapes)
    u[#u + 1] = "dy"; u[#u + 1] = "nb"
    return u
  elseif k == "global_avgpool" then
    local Cn, S = L.channels, L.plane
    if lanes then
      C:open("for (int c = 0; c < %d; c++) {", Cn)
      C:line("const float *dyc = dy + (size_t)c * %d;", lanes)
      C:line("float *dxc = dx + (size_t)c * %d;", S * lanes)
      C:line("for (int s = 0; s < %d; s++)", S)
      C:line("    for (int l = 0; l < %d; l++) dxc[(size_t)s * %d + l] = dyc[l] * %s;", lanes, lanes, util.flt(1 / S))
      C:close()
    else
      C:open("for (size_t r = 0; r < (size_t)nb * %d; r++) {", Cn)
      C:line("float g = dy[r] * %s;", util.flt(1 / S))
      C:line("for (int j = 0; j < %d; j++) dx[r * %d + j] = g;", S, S)
      C:close()
    end
    return {"dy", "dx", "nb"}
  else -- dropout: the mask of the training forward
    if drop_threshold(L) == 0 then
      C:line("memcpy(dx, dy, sizeof(float) * %s * %d);", lanes and tostring(lanes) or "(size_t)nb", L.out_size)
      return {"dy", "dx", "nb"}
    end
    flat(L, C, ctx, L.out_size, function(i) C:line("dx[i] = dy[i] * S[i];") end)
    return {"S", "dy", "dx", "nb"}
  end
end

return M
