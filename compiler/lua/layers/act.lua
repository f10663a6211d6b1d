-- Elementwise activations: relu, leaky_relu, sigmoid, tanh (PyTorch's nn.ReLU,
-- nn.LeakyReLU(slope), nn.Sigmoid, nn.Tanh). Backward uses the saved output
-- (relu, sigmoid, tanh) or input (leaky_relu), as PyTorch does; NaN propagates as in
-- PyTorch (tests/check_layers.c test_nan_semantics).
local util = require("util")
local sched = require("schedule")
local M = {kinds = {"relu", "leaky_relu", "sigmoid", "tanh"}}

function M.schema(kind)
  if kind == "leaky_relu" then
    return {{key = "slope", type = "number", default = 0.01}}
  end
  return {}
end

function M.shape(L) L.out_shape = L.in_shape end
function M.tensors(L) return {} end
function M.macs(L) return 0 end

local function fwd_expr(L, v)
  local k = L.kind
  -- NaN stays NaN (PyTorch's clamp_min): the comparison is false for NaN
  if k == "relu" then return string.format("%s <= 0.0f ? 0.0f : %s", v, v) end
  if k == "leaky_relu" then return string.format("%s > 0.0f ? %s : %s * %s", v, v, v, util.flt(L.opt.slope)) end
  if k == "sigmoid" then return string.format("1.0f / (1.0f + expf(-%s))", v) end
  return string.format("tanhf(%s)", v)
end

-- g: how dy[i] is read (relu's straight-line form passes a local loaded beforehand)
local function bwd_expr(L, i, g)
  local k = L.kind
  -- PyTorch's threshold_backward: y <= 0 ? 0 : dy (a NaN output passes dy on)
  if k == "relu" then return string.format("y[%s] <= 0.0f ? 0.0f : %s", i, g or string.format("dy[%s]", i)) end
  if k == "leaky_relu" then return string.format("x[%s] > 0.0f ? dy[%s] : dy[%s] * %s", i, i, i, util.flt(L.opt.slope)) end
  if k == "sigmoid" then return string.format("dy[%s] * y[%s] * (1.0f - y[%s])", i, i, i) end
  return string.format("dy[%s] * (1.0f - y[%s] * y[%s])", i, i, i)
end

-- Schedules: batch-innermost, or straight-line (small tensors, element by element),
-- or one flat loop.
function M.candidates(L, T)
  if L.lanes_layout then return {sched.simple(L, "lanes")} end
  local loop = sched.simple(L, "loop")
  if L.in_size <= 64 and L.in_size <= L.budget then return {sched.simple(L, "straight"), loop} end
  return {loop}
end

local function each(L, C, ctx, emit)
  if L.sched.fwd.form == "straight" then
    C:open("for (int n = 0; n < nb; n++) {")
    for j = 0, L.in_size - 1 do
      emit(string.format("(size_t)n * %d + %d", L.in_size, j))
    end
    C:close()
  else
    C:line("for (size_t i = 0; i < (size_t)nb * %d; i++)", L.in_size)
    C.ind = C.ind + 1
    emit("i")
    C.ind = C.ind - 1
  end
end

-- Batch-innermost: the same expressions over [size][lanes], one flat vectorizable loop.
local function each_lanes(L, C, ctx, emit)
  if L.in_size * ctx.lanes >= 16384 then util.par(C, L) end
  C:line("for (int i = 0; i < %d; i++)", L.in_size * ctx.lanes)
  C.ind = C.ind + 1
  emit("i")
  C.ind = C.ind - 1
end

-- In place (L.inplace): y is also the input (the planner saw that nothing else needs
-- the input's values); relu, sigmoid and tanh differentiate from y, leaky_relu from x.
function M.inplace_ok(L) return L.kind ~= "leaky_relu" end

function M.forward_lanes(L, C, ctx)
  local src = L.inplace and "y" or "x"
  each_lanes(L, C, ctx, function(i) C:line("y[%s] = %s;", i, fwd_expr(L, src .. "[" .. i .. "]")) end)
  return {L.inplace and "y" or "x", "y"}
end

function M.backward_lanes(L, C, ctx)
  each_lanes(L, C, ctx, function(i) C:line("dx[%s] = %s;", i, bwd_expr(L, i)) end)
  return {L.kind == "leaky_relu" and "x" or "y", "dy", "dx"}
end

function M.forward(L, C, ctx)
  local src = L.inplace and "y" or "x"
  each(L, C, ctx, function(i)
    C:line("y[%s] = %s;", i, fwd_expr(L, src .. "[" .. i .. "]"))
  end)
  return {src, "y", "nb"}
end

function M.backward(L, C, ctx)
  each(L, C, ctx, function(i)
    if L.kind == "relu" and L.sched.fwd.form == "straight" then
      -- dy is loaded unconditionally: GCC 12 -O3 with AVX2/AVX-512 vectorizes the
      -- conditional load `y <= 0 ? 0 : dy` of this loop (stride in_size, every element
      -- written out) into masked loads that drop elements (tests/nets/t_act_relu14)
      C:line("{ const float g = dy[%s]; dx[%s] = %s; }", i, i, bwd_expr(L, i, "g"))
    else
      C:line("dx[%s] = %s;", i, bwd_expr(L, i))
    end
  end)
  return {L.kind == "leaky_relu" and "x" or "y", "dy", "dx", "nb"}
end

return M
