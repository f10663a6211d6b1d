-- dense: fully connected layer y = W x + b on a flat input.
-- PyTorch: nn.Linear(in, out); weight [out, in], bias [out].
local util = require("util")
local M = {kinds = {"dense"}}

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

function M.macs(L) return L.nin * L.nout end

local function terms_str(terms, empty)
  if #terms == 0 then return empty end
  local lines = {}
  for i = 1, #terms, 4 do lines[#lines + 1] = table.concat(terms, " + ", i, math.min(i + 3, #terms)) end
  return table.concat(lines, "\n        + ")
end

function M.forward(L, C, ctx)
  local I, O = L.nin, L.nout
  C:line("const float *restrict w = %s;", L.t.weight)
  if L.opt.bias then C:line("const float *restrict b = %s;", L.t.bias) end
  if I * O <= ctx.budget then
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("const float *restrict xn = x + (size_t)n * %d;", I)
    C:line("float *restrict yn = y + (size_t)n * %d;", O)
    for o = 0, O - 1 do
      local t = {}
      if L.opt.bias then t[1] = string.format("b[%d]", o) end
      for i = 0, I - 1 do t[#t + 1] = string.format("w[%d] * xn[%d]", o * I + i, i) end
      C:line("yn[%d] = %s;", o, terms_str(t, "0.0f"))
    end
    C:close()
    return {"P", "x", "y", "nb"}
  end
  C:open("for (int o = 0; o < %d; o++) {", O)
  C:line("const float *restrict wr = w + (size_t)o * %d;", I)
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("const float *restrict xn = x + (size_t)n * %d;", I)
  C:line("float s = %s;", L.opt.bias and "b[o]" or "0.0f")
  C:line("for (int i = 0; i < %d; i++) s += wr[i] * xn[i];", I)
  C:line("y[(size_t)n * %d + o] = s;", O)
  C:close()
  C:close()
  return {"P", "x", "y", "nb"}
end

function M.backward(L, C, ctx)
  local I, O = L.nin, L.nout
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  if I * O <= ctx.budget then
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

return M
