-- flatten: [C, H, W] or [C, L] -> [C*H*W]; PyTorch nn.Flatten(). No data moves:
-- the planner aliases its output to its input (a copy only at the network's edges).
local util = require("util")
local sched = require("schedule")
local M = {kinds = {"flatten"}}

function M.schema(kind) return {} end

function M.shape(L)
  local n = 1
  for _, v in ipairs(L.in_shape) do n = n * v end
  L.out_shape = {n}
  L.alias = true
end

function M.tensors(L) return {} end
function M.macs(L) return 0 end
function M.candidates(L, T) return {sched.simple(L, L.lanes_layout and "lanes" or "alias")} end

function M.forward(L, C, ctx)
  C:line("memcpy(y, x, sizeof(float) * (size_t)nb * %d);", L.in_size)
  return {"x", "y", "nb"}
end

function M.backward(L, C, ctx)
  C:line("memcpy(dx, dy, sizeof(float) * (size_t)nb * %d);", L.in_size)
  return {"dy", "dx", "nb"}
end

return M
