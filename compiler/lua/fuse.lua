-- Fusion: an elementwise activation applied in its producer's store loop.
--
-- conv2d/conv1d, dense or batchnorm followed by a relu that the memory plan runs in
-- place over the producer's output (its only reader, a buffer no backward reads as the
-- producer's y): the producer stores relu(value) and the relu has no forward pass of
-- its own. The decision is part of the producer's schedule record (S.act = "relu",
-- shown as "+relu" after the forward form), made after the schedule is chosen: a
-- wisdom file names schedules without it and still applies.
--
-- Backward, the other way round: a relu whose output only one layer reads (through
-- views such as flatten), a max pool, dense layer or batch-innermost conv whose dx
-- stores can mask (module.masks_dx: each writes every dx value once, after its last
-- term), has no backward pass of its own. That consumer stores relu'(its x) * dx, its
-- x being the relu's y (S.dmask = "relu", shown as "+relu'" after the form that
-- writes dx), and the relu's input gradient is the consumer's dx buffer (the planner
-- passes it through, as for a view). A max pool masks with its window's maximum, the
-- one value it routes dy to.
--
-- A relu that several layers read, after an add that only it reads (a residual block's
-- output), is masked the other way: the add's backward applies relu'(the relu's y) to
-- dy as it reads it and writes every input's gradient from that (module.masks_dy).
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
  O:line("static inline __attribute__((unused)) float cg_drelu(float y, float g) { return y <= 0.0f ? 0.0f : g; }")
  O:line("#define vdrelu(y, g) ((cg_v)((cg_vi)(g) & ~((y) <= vsplat(0.0f))))")
end

-- the derivative as a mask on the consumer's dx stores, y its input (the relu's output):
-- PyTorch's threshold_backward, y <= 0 ? 0 : g (a NaN y passes g on)
M.DKINDS = {relu = {s = "cg_drelu", v = "vdrelu"}}

function M.ds(L, y, e)
  local a = L.sched.dmask
  if not a then return e end
  return string.format("%s(%s, %s)", M.DKINDS[a].s, y, e)
end

function M.dv(L, y, e)
  local a = L.sched.dmask
  if not a then return e end
  return string.format("%s(%s, %s)", M.DKINDS[a].v, y, e)
end

-- A dx store of a consumer whose stores write every dx value once (module.masks_dx):
-- VSTORE(addr, value), value masked with the fused relu's derivative (y the address of
-- the consumer's x), or added to what addr holds when the memory plan has the layer
-- accumulate into a gradient another reader wrote first (L.dx_acc: no temporary and no
-- separate "gradients add" pass; the same sum, old + new, in the same order)
function M.dstore(L, addr, yaddr, v)
  if L.dx_acc then
    assert(not L.sched.dmask, "a dx masked and accumulated")
    return string.format("VSTORE(%s, VLOAD(%s) + %s);", addr, addr, v)
  end
  return string.format("VSTORE(%s, %s);", addr, M.dv(L, "VLOAD(" .. yaddr .. ")", v))
end

-- Decide, before the memory plan (the consumer's backward now reads its x, the relu's
-- gradient is planned as a pass-through): a relu A, not the network's last layer and
-- not reading the network's input, whose one reader C reads nothing else; views
-- between them (flatten) are looked through, as they move no values.
function M.plan_bwd(spec, on)
  local layers = spec.layers
  local reader = {}
  for p, C in ipairs(layers) do
    C.bwd_fused_into, C.dmask_dy, C.dmask_y = nil, nil, nil
    for _, q in ipairs(C.inputs) do reader[q] = C end
  end
  if not on then return end
  for p, A in ipairs(layers) do
    if M.DKINDS[A.kind] and p < #layers and #A.inputs == 1 and A.inputs[1] > 0 then
      local X, C = A, nil
      while X.readers == 1 do
        local R = reader[X.pos]
        if #R.inputs ~= 1 then break end
        if not R.alias then C = R break end
        X = R
      end
      if C and C.mod.masks_dx and C.mod.masks_dx(C) and not C.sched.dmask then
        C.sched.dmask = A.kind
        A.bwd_fused_into = C
      end
    end
  end
  -- The other way round: a relu A several layers read (a residual block's output) whose
  -- one input P is read by A alone and masks the gradient it reads (module.masks_dy: add
  -- writes each input's gradient from dy once): P's backward applies relu'(A's y) to dy
  -- as it reads it (S.dmask = "relu", A.dmask_dy = true), A has no backward pass and its
  -- gradient passes through to P.
  for p, A in ipairs(layers) do
    if M.DKINDS[A.kind] and not A.bwd_fused_into and p < #layers and #A.inputs == 1 and A.inputs[1] > 0 then
      local P = layers[A.inputs[1]]
      if P.readers == 1 and P.mod.masks_dy and P.mod.masks_dy(P) and not P.sched.dmask then
        P.sched.dmask = A.kind
        P.dmask_y = A
        A.bwd_fused_into = P
        A.dmask_dy = true
      end
    end
  end
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

-- Decide, after plan: an add of two inputs in place over a batch norm's output (the
-- norm's only reader, a residual block's second norm) has no forward pass of its own
-- when its other input is computed before the norm: the norm stores act(its value +
-- the other input), the add's fused activation included (S.fwd_add = "add" or
-- "add+relu"; L.fwd_add = the add, whose other input is the norm's argument r). The
-- norm's backward reads its x and the add's its y: neither reads the norm's own y,
-- which is never stored. One pass over a block's output instead of two (the norm's
-- stores, then the add's read, add and store). Not in the inference export, whose
-- plan folds norms into convolutions (infer.lua).
function M.plan_add(spec, on)
  for _, L in ipairs(spec.layers) do
    L.fwd_add = nil
    if L.sched then L.sched.fwd_add = nil end
  end
  if not on then return end
  for _, A in ipairs(spec.layers) do
    local j = A.inplace
    -- (a downsampling block's main-path norm runs before its shortcut: not fused)
    if A.kind == "add" and #A.inputs == 2 and j and A.inputs[3 - j] < A.inputs[j] then
      local P = spec.layers[A.inputs[j]]
      if P.mod.fuses_add and P.mod.fuses_add(P) and P.readers == 1 and not P.sched.act then
        P.fwd_add = A
        P.sched.fwd_add = "add" .. (A.sched.act and ("+" .. A.sched.act) or "")
        A.fused_into = P
      end
    end
  end
end

return M
