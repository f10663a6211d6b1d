-- Fusion: an elementwise activation applied in its producer's store loop.
--
-- conv2d/conv1d, dense or batchnorm followed by a relu that the memory plan runs in
-- place over the producer's output (its only reader, a buffer no backward reads as the
-- producer's y): the producer stores relu(value) and the relu has no forward pass of
-- its own. Its backward (dy where y > 0) stays a pass of its own, reading the same y.
-- The decision is part of the producer's schedule record (S.act = "relu", shown as
-- "+relu" after the forward form), made after the schedule is chosen: a wisdom file
-- names schedules without it and still applies.
--
-- Emitters wrap every forward store of a fusing module in M.s (a scalar expression)
-- or M.v (a vector); both are the identity when the layer fuses nothing.
local M = {}

-- activations that can be fused, and the helpers of the generated prelude that apply
-- them (NaN stays NaN and -0 becomes +0, as act.lua's `v <= 0 ? 0 : v`)
M.KINDS = {relu = {s = "cg_relu", v = "vrelu"}}

function M.s(L, e)
  local a = L.sched.act
  if not a then return e end
  return string.format("%s(%s)", M.KINDS[a].s, e)
end

function M.v(L, e)
  local a = L.sched.act
  if not a then return e end
  return string.format("%s(%s)", M.KINDS[a].v, e)
end

-- the prelude's definitions (after cg_v, cg_vi and vsplat)
function M.prelude(O)
  O:line("/* activations fused into a producer's stores (relu(NaN) = NaN, as PyTorch's) */")
  O:line("static inline __attribute__((unused)) float cg_relu(float v) { return v <= 0.0f ? 0.0f : v; }")
  -- a macro (a function returning a vector wider than the target's changes the ABI):
  -- the emitters pass it a variable, read twice
  O:line("#define vrelu(v) ((cg_v)((cg_vi)(v) & ~((v) <= vsplat(0.0f))))")
end

-- Decide, after the memory plan: an activation layer A of a fusable kind, in place over
-- its only input P (so P has no other reader), P's module fusing its forward stores.
function M.plan(spec, on)
  for _, A in ipairs(spec.layers) do
    A.fused_into = nil
    if on and M.KINDS[A.kind] and A.inplace == 1 and #A.inputs == 1 and A.inputs[1] > 0 then
      local P = spec.layers[A.inputs[1]]
      if P.mod.fuses_act and P.mod.fuses_act(P) and P.readers == 1 and not P.sched.act then
        P.sched.act = A.kind
        A.fused_into = P
      end
    end
  end
end

return M
