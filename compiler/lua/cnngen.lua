-- cnngen driver: command line, spec validation, shape pass, memory plan, emission.
-- The C host gives us cnngen_c.parse_yaml(text) and cnngen_c.version.
local util = require("util")
local schedule = require("schedule")
local fuse = require("fuse")
local M = {}

local VERSION = cnngen_c and cnngen_c.version or "dev"
local UNROLL_BUDGET = 1024      -- terms per layer and pass written out as straight-line code
local MAX_TENSOR = 1 << 28      -- floats in one sample's activation or one parameter tensor
local MAX_PARAMS = 1 << 31      -- floats in all parameters
local MAX_BATCH = 65536
local MAX_SPEC_BYTES = 1 << 20  -- bytes of a spec file
local MAX_LAYERS = 1000         -- layers in a spec
local MAX_MACS = 1 << 44        -- multiply-adds of one layer for one sample
local VEC = 16                  -- batch-innermost lanes come in multiples of this (the runtime's
                                -- 16x16 transposes); the vectors of the code are the target's
local LANES_MIN_BATCH = 16      -- from this batch on, activations are batch-innermost
local PARALLEL_MIN_WORK = 1 << 20
-- values a memory-bound pass (batch norm, an activation, add, a gradient sum) moves
-- before a second thread pays: a 64 Ki-value pass takes ~15 us on one core, an OpenMP
-- region ~1-2 us to start (ResNet-20 at batch 64: its 0.8 M-value passes ran on one core
-- while the other spun in the barrier, 17 % of the step)
local PARALLEL_MIN_MOVES = 1 << 16
-- lines of C one layer's passes may take: past it, the next candidate schedule (the
-- padded forms' code grows with the kernel, the border regions' with its square)
local CODE_BUDGET = 4000
local code_lines -- (L, S, ctx): lines the passes of L take under schedule S
local reads_arg  -- (L, pass, arg, ctx): does the layer's function for the pass read arg?

-- Layer kinds, registered by name from one module per kind family.
-- A module holds everything kind-specific: its schema, shape rule, tensors, schedules
-- and emitters; the driver knows none of it. Its interface is checked here, when it
-- is registered, so a module missing a function fails at startup, not on some spec.
local MODULES = {"layers.conv", "layers.pool", "layers.dense", "layers.flatten", "layers.act", "layers.batchnorm",
  "layers.graph"}
local MODULE_API = {"schema", "shape", "tensors", "macs", "candidates", "forward", "backward"}
-- optional: the batch-innermost emitters and dx apart, and the hooks of the planners
-- (in place, fusion: fuse.lua)
local MODULE_API_OPTIONAL = {"forward_lanes", "backward_lanes", "backward_dx", "backward_dx_lanes", "scratch", "temp",
  "inplace_ok", "fuses_act", "fuses_add", "masks_dx", "masks_dy", "dx_same"}
local KINDS, KIND_NAMES = {}, {}
for _, modname in ipairs(MODULES) do
  local mod = require(modname)
  assert(type(mod.kinds) == "table" and #mod.kinds > 0, modname .. ": no kinds")
  for _, f in ipairs(MODULE_API) do
    assert(type(mod[f]) == "function", string.format("%s: missing function %s", modname, f))
  end
  for _, f in ipairs(MODULE_API_OPTIONAL) do
    assert(mod[f] == nil or type(mod[f]) == "function", string.format("%s: %s is not a function", modname, f))
  end
  for _, k in ipairs(mod.kinds) do
    assert(not KINDS[k], string.format("%s: kind %s registered twice", modname, k))
    KINDS[k] = mod
    KIND_NAMES[#KIND_NAMES + 1] = k
  end
end

-- options every layer takes besides its kind's own: `name` (its state-dict prefix and
-- a handle for `from`) and `from` (the earlier output(s) it reads)
local REF_EXPECT = "a layer name, a layer index or input"
util.types.layer_name = {expect = "a name of lowercase letters, digits and _ ([a-z_][a-z0-9_]*)", conv = function(n)
  local v, why = util.types.name.conv(n)
  if v == "input" then return nil, "is reserved (from: input reads the network's input)" end
  return v, why
end}
local function ref_conv(n)
  if n.t ~= "str" then return nil end
  if n.plain and n.v:match("^%d+$") then
    local v = tonumber(n.v)
    if v > 1e9 then return nil end
    return {index = math.tointeger(v), node = n}
  end
  if n.v == "input" then return {input = true, node = n} end
  if n.v:match("^[a-z_][a-z0-9_]*$") then return {name = n.v, node = n} end
  return nil
end
util.types.ref = {expect = REF_EXPECT, conv = function(n)
  local r = ref_conv(n)
  return r and {r} or nil
end}
util.types.refs = {expect = "a list of two or more of: " .. REF_EXPECT, conv = function(n)
  if n.t ~= "seq" or #n.v < 2 then return nil end
  local out = {}
  for i, item in ipairs(n.v) do
    local r = ref_conv(item)
    if not r then return nil, string.format("has %s at position %d (expected %s)", util.describe(item), i, REF_EXPECT) end
    out[i] = r
  end
  return out
end}
local function layer_schema(mod, kind)
  local s = {}
  for _, f in ipairs(mod.schema(kind)) do s[#s + 1] = f end
  s[#s + 1] = {key = "name", type = "layer_name"}
  if mod.multi_input and mod.multi_input[kind] then
    s[#s + 1] = {key = "from", type = "refs", required = true}
  else
    s[#s + 1] = {key = "from", type = "ref"}
  end
  return s
end

local C_KEYWORDS = {}
for w in ([[auto break case char const continue default do double else enum extern float for goto if
  inline int long register restrict return short signed sizeof static struct switch typedef union
  unsigned void volatile while _Bool _Complex _Imaginary main]]):gmatch("%S+") do C_KEYWORDS[w] = true end

local function shape_str(s)
  local t = {}
  for i, v in ipairs(s) do t[i] = tostring(v) end
  return #t == 0 and "scalar" or table.concat(t, "x")
end

local function prod(s)
  local n = 1
  for _, v in ipairs(s) do n = util.mul(n, v) end
  return n
end

---------------------------------------------------------------------------
-- Validation: YAML tree -> spec
---------------------------------------------------------------------------
local TOP_SCHEMA = {
  {key = "name", type = "name", required = true},
  {key = "input", type = "input", required = true},
  {key = "layers", type = "layers", required = true},
  {key = "loss", type = "enum", values = {"softmax_cross_entropy", "mse"}, default = "softmax_cross_entropy"},
  {key = "train", type = "train"},
}

local TRAIN_SCHEMA = {
  {key = "batch", type = "posint", default = 32,
   check = function(v) return v > MAX_BATCH and ("must be at most " .. MAX_BATCH) or nil end},
  {key = "epochs", type = "posint", default = 10},
  {key = "lr", type = "number", default = 0.01, check = function(v) return v <= 0 and "must be positive" or nil end},
  {key = "momentum", type = "number", default = 0.0,
   check = function(v) return (v < 0 or v >= 1) and "must be in [0, 1)" or nil end},
  {key = "weight_decay", type = "number", default = 0.0, check = function(v) return v < 0 and "must be non-negative" or nil end},
  {key = "mode", type = "enum", values = {"minibatch", "sgd", "full"}, default = "minibatch"},
  {key = "order", type = "enum", values = {"shuffle", "random"}, default = "shuffle"},
  {key = "schedule", type = "enum", values = {"constant", "step", "cosine"}, default = "constant"},
  {key = "step_size", type = "posint", default = 10},
  {key = "gamma", type = "number", default = 0.1,
   check = function(v) return (v <= 0 or v > 1) and "must be in (0, 1]" or nil end},
  {key = "patience", type = "nonneg", default = 5},
  {key = "eval_every", type = "nonneg", default = 0},
  {key = "val", type = "nonneg"},
  {key = "val_frac", type = "number", check = function(v) return (v <= 0 or v >= 1) and "must be in (0, 1)" or nil end},
  {key = "seed", type = "nonneg", default = 0},
  {key = "normalize", type = "bool", default = false},
  {key = "checkpoint_every", type = "nonneg", default = 0},
  {key = "monitor", type = "enum", values = {"loss", "error"}, default = "loss"},
  {key = "optimizer", type = "enum", values = {"sgd", "adam", "adamw"}, default = "sgd"},
  {key = "betas", type = "betas"},
  {key = "eps", type = "number", check = function(v) return v < 0 and "must be non-negative" or nil end},
  {key = "warmup", type = "nonneg", default = 0},
  {key = "augment", type = "augment"},
}
-- train.betas: [beta1, beta2] as torch.optim.Adam's, each in [0, 1)
util.types.betas = {expect = "[beta1, beta2], two numbers in [0, 1)", conv = function(n)
  if n.t ~= "seq" or #n.v ~= 2 then return nil end
  local b = {}
  for i = 1, 2 do
    b[i] = util.to_number(n.v[i])
    if b[i] == nil or b[i] < 0 or b[i] >= 1 then return nil end
  end
  return b
end}
-- train.augment: its mapping, checked against AUGMENT_SCHEMA by check_train
util.types.augment = {expect = "a mapping {crop: P, flip: true|false}", conv = function(n)
  if n.t == "map" or util.is_null(n) then return n end
  return nil
end}
local AUGMENT_SCHEMA = {
  {key = "crop", type = "nonneg", default = 0},
  {key = "flip", type = "bool", default = false},
}
-- What TRAIN_SCHEMA cannot check key by key: augment's options and the input rank it
-- needs, and keys that belong to another optimizer. Fills the defaults of betas, eps and
-- augment.
local function check_train(t, input, errs)
  local ok = true
  local aug_node = t["@augment"]
  local aug = util.check_schema(aug_node, AUGMENT_SCHEMA, "train.augment", errs)
  if not aug then
    ok = false
  elseif (aug.crop > 0 or aug.flip) and input and #input ~= 3 then
    errs:add(aug_node, string.format("train.augment: random crop and flip need a [C, H, W] input, got %s",
      #input == 2 and "a 1-D input [C, L]" or "a flat input [N]"))
    ok = false
  end
  t.augment = aug or {crop = 0, flip = false}
  if t.optimizer == "sgd" then
    for _, k in ipairs({"betas", "eps"}) do
      if t["@" .. k] then
        errs:add(t["@" .. k], string.format("train.%s: only for optimizer adam or adamw (SGD takes momentum)", k))
        ok = false
      end
    end
  elseif t["@momentum"] then
    errs:add(t["@momentum"], string.format("train.momentum: only for optimizer sgd (%s takes betas)", t.optimizer))
    ok = false
  end
  t.betas = t.betas or {0.9, 0.999}
  t.eps = t.eps or 1e-8
  return ok and t or nil
end
local MODE_ENUM = {minibatch = "CG_MODE_MINIBATCH", sgd = "CG_MODE_SGD", full = "CG_MODE_FULL"}
local ORDER_ENUM = {shuffle = "CG_ORDER_SHUFFLE", random = "CG_ORDER_RANDOM"}
local SCHED_ENUM = {constant = "CG_SCHED_CONSTANT", step = "CG_SCHED_STEP", cosine = "CG_SCHED_COSINE"}
local OPTIMIZER_ENUM = {sgd = "CG_OPT_SGD", adam = "CG_OPT_ADAM", adamw = "CG_OPT_ADAMW"}

local function check_input(node, errs)
  local expect = "[C, H, W], [C, L] or [N] with positive integers"
  if node.t ~= "seq" or #node.v < 1 or #node.v > 3 then
    errs:add(node, "input: expected " .. expect .. ", got " .. util.describe(node))
    return nil
  end
  local s = {}
  for i, n in ipairs(node.v) do
    local v, why = util.to_int(n)
    if why or (v and v > MAX_TENSOR) then
      errs:add(n, string.format("input: %s is too large (at most %s)", util.describe(n), util.commas(MAX_TENSOR)))
      return nil
    end
    if v == nil or v < 1 then
      errs:add(n, "input: expected a positive integer, got " .. util.describe(n))
      return nil
    end
    s[i] = v
  end
  if prod(s) > MAX_TENSOR then
    errs:add(node, string.format("input: %s has %s values, more than the limit %s", shape_str(s), util.commas(prod(s)),
      util.commas(MAX_TENSOR)))
    return nil
  end
  return s
end

local function check_layers(node, errs)
  if node.t ~= "seq" or #node.v == 0 then
    errs:add(node, "layers: expected a non-empty list of layers, got " .. util.describe(node))
    return nil
  end
  if #node.v > MAX_LAYERS then
    errs:add(node, string.format("layers: %s layers, more than the limit %s", util.commas(#node.v), util.commas(MAX_LAYERS)))
    return nil
  end
  local layers, ok = {}, true
  for i, item in ipairs(node.v) do
    local kind, kindnode, optnode
    if item.t == "str" then
      kind, kindnode = item.v, item
    elseif item.t == "map" and #item.v == 1 and item.v[1].k.t == "str" then
      kind, kindnode, optnode = item.v[1].k.v, item.v[1].k, item.v[1].v
    else
      errs:add(item, string.format("layers[%d]: expected a layer name or a mapping 'kind: {options}' with one key, got %s",
        i - 1, util.describe(item)))
      ok = false
    end
    if kind then
      local mod = KINDS[kind]
      if not mod then
        errs:add(kindnode, string.format("layers[%d]: unknown layer kind '%s' (expected one of: %s)",
          i - 1, kind, table.concat(KIND_NAMES, ", ")))
        ok = false
      else
        local multi = mod.multi_input and mod.multi_input[kind]
        local opt
        if multi and (optnode == nil or util.is_null(optnode)) then
          errs:add(kindnode, string.format("layers[%d]: %s needs from: [a, b, ...] (two or more earlier outputs)", i - 1, kind))
        else
          opt = util.check_schema(optnode, layer_schema(mod, kind), kind, errs)
        end
        if opt then
          layers[#layers + 1] = {index = i - 1, kind = kind, mod = mod, opt = opt, node = kindnode,
                                 shape_str = shape_str}
        else
          ok = false
        end
      end
    end
  end
  return ok and layers or nil
end

local function validate(root, errs)
  if root.t ~= "map" then
    errs:add(root, "spec: expected a mapping with name, input and layers, got " .. util.describe(root))
    return nil
  end
  local by, order = util.map_entries(root, nil, errs)
  local known, spec, ok = {}, {}, true
  for _, f in ipairs(TOP_SCHEMA) do known[f.key] = f end
  for _, k in ipairs(order) do
    if not known[k] then
      errs:add(by[k].key, string.format("spec: unknown key '%s' (expected one of: name, input, layers, loss, train)", k))
      ok = false
    end
  end
  for _, f in ipairs(TOP_SCHEMA) do
    local e = by[f.key]
    if not e then
      if f.required then
        errs:add(root, string.format("spec: missing required key '%s'", f.key))
        ok = false
      end
    elseif f.type == "input" then
      spec.input = check_input(e.val, errs)
      ok = ok and spec.input ~= nil
    elseif f.type == "layers" then
      spec.layers = check_layers(e.val, errs)
      ok = ok and spec.layers ~= nil
    elseif f.type == "train" then
      spec.train = util.check_schema(e.val, TRAIN_SCHEMA, "train", errs)
      spec.train = spec.train and check_train(spec.train, spec.input, errs)
      ok = ok and spec.train ~= nil
    else
      local v = util.check_schema({t = "map", line = root.line, col = root.col, v = {{k = e.key, v = e.val}}},
        {f}, nil, errs)
      if v then spec[f.key] = v[f.key] else ok = false end
    end
  end
  if spec.name and C_KEYWORDS[spec.name] then
    errs:add(by.name.val, string.format("name: '%s' is a C keyword; choose another name", spec.name))
    ok = false
  end
  spec.loss = spec.loss or "softmax_cross_entropy"
  spec.train = spec.train or check_train(util.check_schema(nil, TRAIN_SCHEMA, "train", errs), nil, errs)
  spec.train_node = by.train and by.train.val
  return ok and spec or nil
end

---------------------------------------------------------------------------
-- Graph pass: which earlier outputs each layer reads. A layer reads the previous
-- layer's output unless `from:` names an earlier layer (by name or index) or the
-- input. L.inputs[j] is a producer position: 0 the network input, p > 0 the output of
-- spec.layers[p]. Every output but the last must be read (no dead code); the output
-- of the network is the last layer's.
---------------------------------------------------------------------------
local function resolve_graph(spec, errs)
  local layers, ok = spec.layers, true
  local by_name = {}
  for p, L in ipairs(layers) do
    L.pos = p
    L.name = L.opt.name
    if L.name then
      if by_name[L.name] then
        errs:add(L.opt["@name"], string.format("layer %d (%s): name '%s' is already layer %d's (line %d)",
          L.index, L.kind, L.name, by_name[L.name].index, by_name[L.name].opt["@name"].line))
        ok = false
      else
        by_name[L.name] = L
      end
    end
  end
  spec.graph = false
  for p, L in ipairs(layers) do
    L.inputs, L.input_names = {}, {}
    local refs = L.opt.from
    L.from_node = L.opt["@from"]
    if refs then spec.graph = true end
    refs = refs or {{index = L.index - 1, implicit = true}}
    for j, r in ipairs(refs) do
      local q, label
      if r.input or r.index == -1 then
        q, label = 0, "input"
      elseif r.index then
        if r.index >= L.index then
          errs:add(r.node, string.format("layer %d (%s): from: %d is %s; a layer reads only earlier outputs (no cycles)",
            L.index, L.kind, r.index, r.index == L.index and "the layer itself" or "a later layer"))
          ok = false
        else
          q = r.index + 1
          label = layers[q].name and string.format("%s (layer %d)", layers[q].name, r.index) or ("layer " .. r.index)
          if r.implicit then label = "its input" end
        end
      else
        local P = by_name[r.name]
        if not P then
          local names = {}
          for _, l in ipairs(layers) do if l.name then names[#names + 1] = l.name end end
          errs:add(r.node, string.format("layer %d (%s): from: no layer is named '%s' (named layers: %s)",
            L.index, L.kind, r.name, #names > 0 and table.concat(names, ", ") or "none; give one `name:`"))
          ok = false
        elseif P.pos >= p then
          errs:add(r.node, string.format("layer %d (%s): from: '%s' is %s; a layer reads only earlier outputs (no cycles)",
            L.index, L.kind, r.name, P.pos == p and "the layer itself" or ("layer " .. P.index .. ", a later one")))
          ok = false
        else
          q, label = P.pos, string.format("%s (layer %d)", r.name, P.index)
        end
      end
      if q then
        L.inputs[j], L.input_names[j] = q, label
      end
    end
  end
  if not ok then return false end
  local readers = {}
  for _, L in ipairs(layers) do
    for _, q in ipairs(L.inputs) do readers[q] = (readers[q] or 0) + 1 end
  end
  for p, L in ipairs(layers) do
    L.readers = readers[p] or 0
    if p < #layers and L.readers == 0 then
      errs:add(L.node, string.format("layer %d (%s%s): its output is never read (dead code): the network's output is "
        .. "the last layer's, so read it with from: or remove the layer", L.index, L.kind,
        L.name and (" '" .. L.name .. "'") or ""))
      ok = false
    end
  end
  spec.input_readers = readers[0] or 0
  return ok
end

---------------------------------------------------------------------------
-- Shape pass: every layer's output shape, tensors, receptive field.
---------------------------------------------------------------------------
local function infer_shapes(spec, errs)
  local shape = spec.input
  -- per producer position: shape, receptive field and jump (nil once flat)
  local shapes = {[0] = spec.input}
  local rfs = {[0] = #spec.input > 1 and {rf = {1, 1}, jump = {1, 1}} or nil}
  local batch = spec.train.batch
  for p, L in ipairs(spec.layers) do
    L.in_shapes = {}
    local rfin
    for j, q in ipairs(L.inputs) do
      L.in_shapes[j] = shapes[q]
      local r = rfs[q]
      if j == 1 then rfin = r and {rf = {r.rf[1], r.rf[2]}, jump = {r.jump[1], r.jump[2]}}
      elseif rfin and r then
        for a = 1, 2 do
          rfin.rf[a] = math.max(rfin.rf[a], r.rf[a])
          rfin.jump[a] = math.max(rfin.jump[a], r.jump[a])
        end
      else rfin = nil end
    end
    shape = L.in_shapes[1]
    L.in_shape = shape
    L.in_size = prod(shape)
    local ok, err = pcall(L.mod.shape, L)
    if not ok then
      if type(err) == "table" and err.user then
        errs:add(err.node, err.msg)
        return false
      end
      error(err, 0)
    end
    L.out_size = prod(L.out_shape)
    if L.kind == "batchnorm" and L.in_size == L.in_shape[1] and batch < 2 then
      errs:add(L.node, string.format("layer %d (batchnorm): one value per channel (input %s) needs train.batch >= 2 "
        .. "to train (PyTorch raises), got %d", L.index, shape_str(L.in_shape), batch))
      return false
    end
    if L.out_size > MAX_TENSOR or L.out_size * batch > (1 << 31) - 1 then
      errs:add(L.node, string.format("layer %d (%s): output %s x batch %d is too large (limit %d values per sample, 2^31 per batch)",
        L.index, L.kind, shape_str(L.out_shape), batch, MAX_TENSOR))
      return false
    end
    L.tensors = L.mod.tensors(L)
    if L.mod.macs(L) > MAX_MACS then
      errs:add(L.node, string.format("layer %d (%s): %s multiply-adds per sample, more than the limit %s",
        L.index, L.kind, util.commas(L.mod.macs(L)), util.commas(MAX_MACS)))
      return false
    end
    for _, t in ipairs(L.tensors) do
      if prod(t.shape) > MAX_TENSOR then
        errs:add(L.node, string.format("layer %d (%s): %s %s has %s values, more than the limit %s",
          L.index, L.kind, t.suffix, shape_str(t.shape), util.commas(prod(t.shape)), util.commas(MAX_TENSOR)))
        return false
      end
    end
    -- receptive field and jump (product of strides) per spatial axis, until the
    -- output is flat; over several inputs, the largest
    local g = L.mod.window and L.mod.window(L)
    if #L.out_shape == 1 then rfin = nil end
    if g and rfin then
      local keff, s = require("window").rf(g)
      for a = 1, 2 do
        rfin.rf[a] = rfin.rf[a] + (keff[a] - 1) * rfin.jump[a]
        rfin.jump[a] = rfin.jump[a] * s[a]
      end
    end
    rfs[p] = rfin
    L.rf = rfin and {rfin.rf[1], rfin.rf[2]} or nil
    L.jump = rfin and {rfin.jump[1], rfin.jump[2]} or nil
    L.rank1 = #spec.input == 2
    shape = L.out_shape
    shapes[p] = shape
  end
  spec.out_shape = shape
  spec.out_size = prod(shape)
  if spec.loss == "softmax_cross_entropy" and #shape ~= 1 then
    errs:add(spec.layers[#spec.layers].node, string.format(
      "loss softmax_cross_entropy needs a flat output [classes], the last layer gives %s (add flatten and dense)",
      shape_str(shape)))
    return false
  end
  if spec.loss == "softmax_cross_entropy" and spec.out_size < 2 then
    errs:add(spec.layers[#spec.layers].node, "loss softmax_cross_entropy needs at least 2 classes, the last layer gives 1")
    return false
  end
  return true
end

---------------------------------------------------------------------------
-- Memory plan (all offsets in floats).
---------------------------------------------------------------------------
-- The workspace, in floats. Activations: every layer's output is kept for backward
-- ([N][size], or batch-innermost [size][R] with R = the batch rounded up to whole
-- vectors: the lanes of one vector are 16 samples; input and output are converted at
-- the network's edges, and lanes >= n hold zeros in the gradients, so padded lanes
-- never reach a parameter gradient). A flatten is a view of its input.
-- Gradients live in an arena planned by liveness: the gradient of a tensor is born at
-- the backward of its last reader and dies after the backward of its producer, so the
-- arena holds the peak of the live gradients, not their sum. A tensor read by several
-- layers gets its gradient summed in backward order (a fixed order, the same bits on
-- every run): the first reader writes it, each next one writes a temporary that is
-- added in.
-- Offline placement of buffers with known lifetimes (TFLite's greedy-by-size): the
-- largest first, each at the lowest offset free of every placed buffer whose lifetime
-- overlaps its own. Returns the arena's size.
local function place(bufs)
  local order = {}
  for i, b in ipairs(bufs) do order[i] = b end
  table.sort(order, function(x, y)
    if x.size ~= y.size then return x.size > y.size end
    return x.id < y.id
  end)
  local placed, top = {}, 0
  for _, b in ipairs(order) do
    local busy = {}
    for _, o in ipairs(placed) do
      if o.t0 <= b.t1 and b.t0 <= o.t1 then busy[#busy + 1] = o end
    end
    table.sort(busy, function(x, y) return x.off < y.off end)
    local at = 0
    for _, o in ipairs(busy) do
      if at + b.size <= o.off then break end
      at = math.max(at, o.off + o.size)
    end
    b.off = at
    placed[#placed + 1] = b
    top = math.max(top, at + b.size)
  end
  return top
end

local function plan_memory(spec)
  local B = spec.train.batch
  local R = spec.lanes -- nil: [N][size]
  local rows = R or B
  local layers, n = spec.layers, #spec.layers
  local ws = 0
  local function take(nfloats)
    local at = ws
    ws = ws + (nfloats + VEC - 1) // VEC * VEC -- keep every region vector-aligned
    return at
  end
  local size = {[0] = prod(spec.input)}
  local act = {}
  spec.xin = nil
  if R then
    spec.xin = take(R * size[0])
    act[0] = spec.xin
  end
  -- In place: a relu (sigmoid, tanh) or add writes its output over an input's buffer
  -- when that input is read by nothing else, is not the network's input or a view, and
  -- no backward needs its values: its producer's backward does not read its own y and
  -- the layer's backward does not read x. (conv -> batchnorm -> relu: the relu overwrites
  -- the batch norm's output, whose backward reads the conv's output, not its own.)
  local ctx = {budget = UNROLL_BUDGET, lanes = R, vec = spec.target.vec}
  local function inplace_slot(L)
    if not (L.mod.inplace_ok and L.mod.inplace_ok(L)) then return nil end
    if reads_arg(L, "bwd", "x", ctx) or reads_arg(L, "bwdx", "x", ctx) then return nil end
    for k, q in ipairs(L.inputs) do
      local P = layers[q]
      -- (a producer masking dy with this relu's derivative reads the relu's y: fuse.lua)
      if q > 0 and not P.is_alias and P.readers == 1 and (P.dmask_y == L or not reads_arg(P, "bwd", "y", ctx)
        and not reads_arg(P, "bwdx", "y", ctx)) then
        return k
      end
    end
    return nil
  end
  for p, L in ipairs(layers) do
    size[p] = L.out_size
    local q = L.inputs[1]
    -- a view of its input when that input is in the workspace (not the caller's x)
    -- and, in the [N][size] layout, it is not the network's output
    L.is_alias = L.alias and act[q] ~= nil and (R ~= nil or p < n)
    L.inplace = (not L.is_alias) and inplace_slot(L) or nil
    if L.is_alias then L.act = act[q]
    elseif L.inplace then L.act = act[L.inputs[L.inplace]]
    else L.act = take(rows * L.out_size) end
    act[p] = L.act
  end
  -- S: a layer's own scratch, kept from its forward to its backward (a batch norm's
  -- statistics, a convolution's padded input); T: one temporary region for what a
  -- pass uses and drops (padded dy, transformed weights, Winograd's blocks), shared
  -- by the layers as one runs at a time, its size the largest of theirs
  local tmax = 0
  for _, L in ipairs(layers) do
    local sz = L.mod.scratch and L.mod.scratch(L) or 0
    if sz > 0 then L.scratch = take(sz) end
    L.temp = L.mod.temp and L.mod.temp(L) or 0
    tmax = math.max(tmax, L.temp)
  end
  spec.temp, spec.temp_size = nil, tmax
  if tmax > 0 then spec.temp = take(tmax) end
  if R then
    spec.out_offset = take(B * spec.out_size)
    spec.dout = take(B * spec.out_size)
    spec.dout_lanes = take(R * spec.out_size)
  else
    spec.out_offset = layers[n].act
    spec.dout = take(B * spec.out_size)
  end
  spec.act_of = act

  -- backward, simulated: what each layer's backward writes where. Buffers get their
  -- lifetimes here (allocations of a step at time 2s, releases at 2s + 1) and their
  -- offsets afterwards (place).
  local base = ws
  local bufs, now = {}, 0
  local function newbuf(q, label)
    local b = {id = #bufs + 1, size = (rows * size[q] + VEC - 1) // VEC * VEC, t0 = now, t1 = math.huge,
      label = label or (q == 0 and "DIN" or string.format("D%02d", layers[q].index))}
    bufs[#bufs + 1] = b
    return b
  end
  local function release(b) if type(b) == "table" then b.t1 = now + 1 end end
  local grad = {[n] = R and spec.dout_lanes or spec.dout} -- a number: a fixed region
  local edges_left = {}
  for _, L in ipairs(layers) do
    for _, q in ipairs(L.inputs) do edges_left[q] = (edges_left[q] or 0) + 1 end
  end
  local written = {}
  local readers = {} -- readers[q]: the positions of the layers that read q
  for p, L in ipairs(layers) do
    for _, q in ipairs(L.inputs) do readers[q] = readers[q] or {}; table.insert(readers[q], p) end
  end
  -- A layer whose inputs all receive the same gradient (dx_same: add) writes it once
  -- when two inputs meet it first: q_hi's gradient is then q_lo's buffer. Legal when
  -- nothing writes that buffer before q_hi's backward has read it: the layer is q_hi's
  -- only reader, q_hi's backward is its own (not a view, not fused into another's),
  -- and every other reader of q_lo comes before q_hi (its backward runs after q_hi's).
  -- A residual block's add: one write of dy instead of two.
  local function shares(L, p)
    if not (L.mod.dx_same and L.mod.dx_same(L)) or #L.inputs ~= 2 then return false end
    local a, b = L.inputs[1], L.inputs[2]
    local lo, hi = math.min(a, b), math.max(a, b)
    if lo == hi or lo == 0 or written[a] or written[b] then return false end
    local H = layers[hi]
    if #readers[hi] ~= 1 or H.is_alias or H.bwd_fused_into then return false end
    for _, r in ipairs(readers[lo]) do
      if r ~= p and r >= hi then return false end
    end
    return lo, hi
  end
  -- the caller's dx receives the input gradient directly when one layer reads the input
  -- ([N][size] layout); otherwise the input's gradient is summed in the arena
  local direct_dx = (R == nil) and spec.input_readers == 1
  for p = n, 1, -1 do
    now = 2 * (n - p)
    local L = layers[p]
    L.dx_acc = nil
    local step = {dy = grad[p], dx = {}, acc = {}}
    L.bstep = step
    if L.is_alias or L.bwd_fused_into then
      local q = L.inputs[1]
      edges_left[q] = edges_left[q] - 1
      if not written[q] and edges_left[q] == 0 and type(grad[p]) == "table" then
        grad[q] = grad[p] -- the view's gradient is its input's: nothing moves
        step.pass = true
      elseif not written[q] then
        grad[q] = newbuf(q)
        step.copy = {to = grad[q], from = grad[p], n = size[q]}
      else
        step.acc[#step.acc + 1] = {to = grad[q], from = grad[p], n = size[q]}
      end
      written[q] = true
      if not step.pass then release(grad[p]) end
    else
      local lo, hi = shares(L, p)
      L.dx_same_as = nil
      if lo then
        grad[lo] = newbuf(lo)
        grad[lo].shared = {hi = layers[hi].index, by = L.index, kind = L.kind}
        grad[hi] = grad[lo]
        written[lo], written[hi] = true, true
      end
      for j, q in ipairs(L.inputs) do
        edges_left[q] = edges_left[q] - 1
        if lo and (q == lo or q == hi) then
          -- one buffer for both (shares): the layer writes it as input lo's gradient
          step.dx[j] = {off = grad[q]}
          if q == hi then L.dx_same_as = {[j] = true} end
        elseif q == 0 and direct_dx then
          local t = newbuf(0, "DIN")
          release(t)
          step.dx[j] = {direct = true, tmp = t}
        elseif not written[q] then
          grad[q] = newbuf(q)
          written[q] = true
          step.dx[j] = {off = grad[q]}
        elseif #L.inputs == 1 and L.mod.dx_accumulates and L.mod.dx_accumulates(L) and not L.sched.dmask then
          -- its dx stores add to the gradient already there (fuse.dstore)
          L.dx_acc = true
          step.dx[j] = {off = grad[q]}
        else
          local t = newbuf(q, string.format("T%02d_%d", L.index, j))
          release(t)
          step.dx[j] = {off = t}
          step.acc[#step.acc + 1] = {to = grad[q], from = t, n = size[q]}
        end
      end
      release(grad[p])
    end
  end
  local top = place(bufs)
  -- the steps keep their buffers (the emitter names them); their offsets are base + off
  for _, b in ipairs(bufs) do b.at = base + b.off end
  spec.grad_bufs = bufs
  spec.grad_input = grad[0]
  spec.direct_dx = direct_dx
  spec.grad_arena = top
  spec.act_floats = base
  spec.workspace = base + top
  return true
end

local function plan(spec, opts)
  local P, Bf = 0, 0
  -- A layer's functions see P, G and B at its own first tensor (the call adds the
  -- layer's base), so layers of the same shape and schedule have the same code and
  -- share one function (emit).
  local function rel(base, off) return off == base and "" or (" + " .. (off - base)) end
  for _, L in ipairs(spec.layers) do
    L.t, L.t_grad = {}, {}
    L.pbase, L.bbase = P, Bf
    for _, t in ipairs(L.tensors) do
      t.kind = t.kind or "param"
      -- the state-dict key: NAME.suffix for a named layer, index.suffix otherwise
      t.name = string.format("%s.%s", L.name or tostring(L.index), t.suffix)
      t.size = prod(t.shape)
      if t.kind == "param" then
        t.offset = P
        P = P + t.size
        L.t[t.suffix] = "P" .. rel(L.pbase, t.offset)
        L.t_grad[t.suffix] = "G" .. rel(L.pbase, t.offset)
      else
        t.offset = Bf
        Bf = Bf + t.size
        L.t[t.suffix] = "B" .. rel(L.bbase, t.offset)
      end
    end
  end
  if P > MAX_PARAMS then return nil, string.format("the network has %s parameters, more than the limit %s", util.commas(P), util.commas(MAX_PARAMS)) end
  spec.n_params, spec.n_buffers = P, Bf
  local B = spec.train.batch
  -- the network's layout: batch-innermost from a batch of LANES_MIN_BATCH
  local lanes = B >= LANES_MIN_BATCH
  local T = opts.target
  spec.target = T
  for _, L in ipairs(spec.layers) do
    -- facts the schedules depend on
    L.batch, L.budget, L.batch_lanes = B, UNROLL_BUDGET, lanes
    L.lanes_layout, L.lanes_R, L.vec = lanes, lanes and (B + VEC - 1) // VEC * VEC or nil, T.vec
    -- threads pay off from about a million multiply-adds a pass, or PARALLEL_MIN_MOVES
    -- values moved; below that, waking the other core costs more than it saves
    L.parallel = L.mod.macs(L) * B >= PARALLEL_MIN_WORK or L.out_size * B >= PARALLEL_MIN_MOVES
    local ctx = {budget = UNROLL_BUDGET, lanes = L.lanes_R, vec = T.vec, team = spec.team}
    L.sched, L.candidates = schedule.choose(L, T, opts.wisdom, CODE_BUDGET, function(S) return code_lines(L, S, ctx) end)
  end
  spec.lanes = lanes and (B + VEC - 1) // VEC * VEC or nil
  -- relu backward into its consumer's dx stores (fuse.lua): before the memory plan,
  -- which passes the relu's gradient through
  fuse.plan_bwd(spec, not opts.no_fuse)
  local ok, err = plan_memory(spec)
  if not ok then return nil, err end
  -- activations into their producers' stores (fuse.lua): needs the in-place plan
  fuse.plan(spec, not opts.no_fuse)
  -- an add into the stores of the batch norm it overwrites (fuse.lua), training code only
  fuse.plan_add(spec, not opts.no_fuse and not opts.inference)
  return true
end

---------------------------------------------------------------------------
-- Emission
---------------------------------------------------------------------------
local ARG_DECL = {
  fwd = {P = "const float *restrict P", B = "float *restrict B", S = "float *restrict S", T = "float *restrict T",
         x = "const float *restrict x", y = "float *restrict y", r = "const float *restrict r", nb = "int nb",
         training = "int training", team = "cg_team *team"},
  bwd = {P = "const float *restrict P", G = "float *restrict G", S = "float *restrict S", T = "float *restrict T",
         x = "const float *restrict x", y = "const float *restrict y", dy = "const float *restrict dy",
         dx = "float *restrict dx", nb = "int nb", team = "cg_team *team"},
}
-- r: the other input of an add fused into the layer's forward stores (fuse.plan_add)
-- team: the replica's team (--team), read by batch norm
local ARG_ORDER = {"P", "G", "B", "S", "T", "x", "y", "r", "dy", "dx", "nb", "training", "team"}

local PASS_SUFFIX = {fwd = "forward", bwd = "backward", bwdx = "backward_dx"}
local function layer_fn(L, pass)
  return string.format("l%02d_%s_%s", L.index, L.kind, PASS_SUFFIX[pass])
end

-- The module function for a pass: forward/backward, or in the batch-innermost layout
-- forward_lanes/backward_lanes; backward_dx(_lanes) when the schedule computes dx apart.
local function pass_fn(L, pass, ctx)
  local m = L.mod
  if pass == "bwdx" and not L.sched.dx.apart then return nil end
  if L.sched.layout == "lanes" then
    return ({fwd = m.forward_lanes, bwd = m.backward_lanes, bwdx = m.backward_dx_lanes})[pass]
  end
  return ({fwd = m.forward, bwd = m.backward, bwdx = m.backward_dx})[pass]
end

reads_arg = function(L, pass, arg, ctx)
  local f = pass_fn(L, pass, ctx)
  if not f then return false end
  for _, a in ipairs(f(L, util.code(), ctx)) do if a == arg then return true end end
  return false
end

-- counted by emitting, up to 25 budgets (past that the count is only "too many")
code_lines = function(L, S, ctx)
  local keep = L.sched
  L.sched = S
  local n, cap = 0, 25 * CODE_BUDGET
  for _, pass in ipairs({"fwd", "bwd", "bwdx"}) do
    local f = pass_fn(L, pass, ctx)
    if f then
      local C = util.code(cap - n)
      local ok, err = pcall(f, L, C, ctx)
      if not ok then
        if err ~= util.TOO_LONG then error(err, 0) end
        n = cap
        break
      end
      n = n + #C.lines
    end
  end
  L.sched = keep
  return n
end

-- Emit one layer's function for a pass; returns its used args in canonical order.
-- A function whose text equals an earlier one's is not emitted again: L.fn[pass]
-- names the earlier one (ResNet-20's 18 3x3 convolutions have 5 distinct shapes).
local function emit_layer_fn(out, L, pass, ctx, spec, seen)
  local body = util.code()
  body.ind = 1
  local used = pass_fn(L, pass, ctx)(L, body, ctx)
  local set = {}
  for _, a in ipairs(used) do set[a] = true end
  -- x1..xk, dx1..dxk: the inputs of a layer that reads several tensors
  local order = {}
  for _, a in ipairs(ARG_ORDER) do
    order[#order + 1] = a
    if a == "x" or a == "dx" then
      for j = 1, #L.inputs do order[#order + 1] = a .. j end
    end
  end
  local args = {}
  for _, a in ipairs(order) do
    if set[a] then args[#args + 1] = a end
  end
  local decl = {}
  for i, a in ipairs(args) do
    local d = ARG_DECL[pass == "fwd" and "fwd" or "bwd"][a]
    if not d and a:match("^x%d+$") then d = "const float *restrict " .. a end
    if not d and a:match("^dx%d+$") then d = "float *restrict " .. a end
    decl[i] = d
  end
  -- the shapes of the tensors, in the layout of the batch
  local function lay(shape)
    if L.sched.layout == "lanes" then return string.format("[%s][lanes]", shape_str(shape)) end
    return string.format("[N][%s]", shape_str(shape))
  end
  local legend = {}
  if #L.inputs > 1 then
    for j, sh in ipairs(L.in_shapes) do legend[#legend + 1] = string.format("x%d %s", j, lay(sh)) end
  else
    legend[1] = "x " .. lay(L.in_shape)
  end
  legend[#legend + 1] = "y " .. lay(L.out_shape)
  if pass == "fwd" and L.fwd_add then
    legend[#legend + 1] = string.format("r %s (the other input of the add fused in)", lay(L.out_shape))
  end
  table.insert(body.lines, 1, "    /* " .. table.concat(legend, ", ") .. " */")
  local sig = table.concat(decl, ", ")
  local text = body:text():sub(1, -2)
  local key = sig .. "\n" .. text
  L.fn = L.fn or {}
  if seen and seen[key] then
    L.fn[pass] = seen[key]
    out:line("/* %s: the code of %s */", layer_fn(L, pass), seen[key])
    out:line("")
    return args
  end
  L.fn[pass] = layer_fn(L, pass)
  if seen then seen[key] = L.fn[pass] end
  out:line("static void %s(%s)", layer_fn(L, pass), sig)
  out:line("{")
  out.lines[#out.lines + 1] = text
  out:line("}")
  out:line("")
  return args
end

local function c_string(s)
  local body = s:gsub('[\\"?]', "\\%0"):gsub("[^ -~]", function(c) return string.format("\\%03o", c:byte()) end)
  return '"' .. body .. '"'
end

-- text safe inside a /* */ comment on one line
local function c_comment(s)
  return (s:gsub("%*/", "*\\/"):gsub("[^ -~]", "?"))
end

local INIT_ENUM = {zero = "CG_INIT_ZERO", one = "CG_INIT_ONE", kaiming = "CG_INIT_KAIMING_UNIFORM", bias = "CG_INIT_BIAS_UNIFORM"}
local KIND_ENUM = {param = "CG_PARAM", buffer = "CG_BUFFER", counter = "CG_COUNTER"}

local function int_list(t, n)
  local r = {}
  for i = 1, n do r[i] = tostring(t[i] or 0) end
  return "{" .. table.concat(r, ", ") .. "}"
end

-- The parallel-loop macros of the generated code and their OpenMP pragmas (empty
-- without -fopenmp and in the inference export). The two-loop ones' iterations are
-- coarse (a tile row of a lane block, a channel block of one): handed out one at a
-- time, a thread that the VM slows for a while takes fewer of them, where the static
-- split made the other wait at the barrier. ResNet-20 b64, 2-core Zen 3, bench/ab.py:
-- 1.025 (1.003-1.064), 1.060 (1.019-1.089); guided 0.980 of dynamic. (Dynamic for
-- every loop, the fine-grained elementwise ones too: 0.32x; bench/RESULTS.md, session
-- 23: 0.19x.) CG_FOR2_NOWAIT's nests sit in a CG_PARALLEL region (conv_wino.lua).
local PARALLEL_MACROS = {
  {"CG_PARALLEL_FOR", "omp parallel for schedule(static)"},
  {"CG_PARALLEL_FOR2", "omp parallel for collapse(2) schedule(dynamic)"},
  {"CG_PARALLEL", "omp parallel"},
  {"CG_FOR2_NOWAIT", "omp for collapse(2) schedule(dynamic) nowait"},
  {"CG_PARALLEL_SECTIONS", "omp parallel sections"},
  {"CG_SECTION", "omp section"},
}

-- The SIMD vocabulary of the emitters for vectors of V floats; openmp: the loops marked
-- with PARALLEL_MACROS run on all threads with -fopenmp (the inference export has none).
local function simd_prelude(O, V, openmp)
  O:line("/* a += b * c compiles to one FMA (gcc turns contraction off under -std=c11) */")
  O:line("#if defined(__GNUC__) && !defined(__clang__)")
  O:line("#pragma GCC optimize(\"fp-contract=fast\")")
  O:line("#endif")
  if V == 16 then
    O:line("/* SIMD vectors of %d floats (one AVX-512 register; gcc and clang split them", V)
    O:line(" * on narrower targets). */")
  else
    O:line("/* SIMD vectors of %d floats (one AVX2 register; the --target of the generator). */", V)
  end
  O:line("typedef float cg_v __attribute__((vector_size(%d), aligned(4), may_alias));", V * 4)
  if openmp then
    O:line("/* loops whose iterations write disjoint outputs run on all threads with -fopenmp (the")
    O:line(" * two-loop ones, of coarse iterations, hand them out one at a time) */")
    O:line("#ifdef _OPENMP")
    for _, m in ipairs(PARALLEL_MACROS) do O:line("#define %s _Pragma(\"%s\")", m[1], m[2]) end
    O:line("#else")
    for _, m in ipairs(PARALLEL_MACROS) do O:line("#define %s", m[1]) end
    O:line("#endif")
  else
    for _, m in ipairs(PARALLEL_MACROS) do O:line("#define %s", m[1]) end
  end
  O:line("typedef int cg_vi __attribute__((vector_size(%d)));", V * 4)
  O:line("#define VSEL(u, a, b) ((cg_v)(((cg_vi)(a) & (u)) | ((cg_vi)(b) & ~(u))))")
  O:line("#define VLOAD(p) (*(const cg_v *)(p))")
  O:line("#define VSTORE(p, v) (*(cg_v *)(p) = (v))")
  O:line("/* the first n lanes of v */")
  if V == 16 then
    O:line("#if defined(__AVX512F__)")
    O:line("#include <immintrin.h>")
    O:line("#define VSTORE_N(p, v, n) _mm512_mask_storeu_ps((p), (__mmask16)((1u << (n)) - 1u), (__m512)(v))")
  else
    O:line("#if defined(__AVX2__)")
    O:line("#include <immintrin.h>")
    O:line("#define VSTORE_N(p, v, n) _mm256_maskstore_ps((p), _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), (__m256)(v))")
  end
  O:line("#else")
  O:line("#define VSTORE_N(p, v, n) do { for (int l_ = 0; l_ < (n); l_++) (p)[l_] = (v)[l_]; } while (0)")
  O:line("#endif")
  O:line("#define vsplat(s) ((cg_v){0} + (s))")
  O:line("/* VKEEP(v): v stays in a register; otherwise gcc folds the load into every FMA")
  O:line(" * that uses v (one memory read per FMA instead of one per tile) */")
  if V == 16 then
    O:line("#if defined(__AVX512F__) && defined(__GNUC__)")
    O:line("#define VKEEP(v) __asm__(\"\" : \"+v\"(v))")
  else
    O:line("#if defined(__AVX2__) && defined(__GNUC__)")
    O:line("#define VKEEP(v) __asm__(\"\" : \"+x\"(v))")
  end
  O:line("#else")
  O:line("#define VKEEP(v) ((void)0)")
  O:line("#endif")
  O:line("static inline __attribute__((unused)) float vsum_(const cg_v *v) { float s = 0.0f; for (int i = 0; i < %d; i++) s += (*v)[i]; return s; }", V)
  O:line("#define vsum(v) vsum_(&(v))")
  fuse.prelude(O)
end

-- vtr: a V x V transpose, for Winograd dW's GEMM form (conv_wino.lua's dw_gemm); in
-- registers on AVX-512 (V = 16) and AVX (V = 8), else a loop
local function vtr_prelude(O, V)
  O:line("/* d[l * ld + c] = s[c * ss][l] for c, l < %d: a %d x %d transpose */", V, V, V)
  if V == 16 then
    O:line("#if defined(__AVX512F__)")
    O:line("static inline __attribute__((unused)) void vtr(float *restrict d, size_t ld, const cg_v *restrict s, size_t ss)")
    O:line("{")
    O:line("    __m512 r[16], t[16];")
    O:line("    for (int i = 0; i < 16; i++) r[i] = (__m512)s[(size_t)i * ss];")
    O:line("    for (int i = 0; i < 16; i += 2) { /* pairs of rows interleaved */")
    O:line("        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);")
    O:line("        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);")
    O:line("    }")
    O:line("    for (int i = 0; i < 16; i += 4) { /* then pairs of pairs */")
    O:line("        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);")
    O:line("        const __m512d c = _mm512_castps_pd(t[i + 2]), e = _mm512_castps_pd(t[i + 3]);")
    O:line("        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));")
    O:line("        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));")
    O:line("        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, e));")
    O:line("        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, e));")
    O:line("    }")
    O:line("    for (int q = 0; q < 4; q++) { /* then the 128-bit quarters, twice */")
    O:line("        t[q] = _mm512_shuffle_f32x4(r[q], r[q + 4], 0x88);")
    O:line("        t[q + 4] = _mm512_shuffle_f32x4(r[q], r[q + 4], 0xdd);")
    O:line("        t[q + 8] = _mm512_shuffle_f32x4(r[q + 8], r[q + 12], 0x88);")
    O:line("        t[q + 12] = _mm512_shuffle_f32x4(r[q + 8], r[q + 12], 0xdd);")
    O:line("    }")
    O:line("    for (int q = 0; q < 4; q++) {")
    O:line("        r[q] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0x88);")
    O:line("        r[q + 8] = _mm512_shuffle_f32x4(t[q], t[q + 8], 0xdd);")
    O:line("        r[q + 4] = _mm512_shuffle_f32x4(t[q + 4], t[q + 12], 0x88);")
    O:line("        r[q + 12] = _mm512_shuffle_f32x4(t[q + 4], t[q + 12], 0xdd);")
    O:line("    }")
    O:line("    for (int i = 0; i < 16; i++) _mm512_storeu_ps(d + (size_t)i * ld, r[i]);")
    O:line("}")
  else
    O:line("#if defined(__AVX2__)")
    O:line("static inline __attribute__((unused)) void vtr(float *restrict d, size_t ld, const cg_v *restrict s, size_t ss)")
    O:line("{")
    O:line("    __m256 r[8], t[8], u[8];")
    O:line("    for (int i = 0; i < 8; i++) r[i] = (__m256)s[(size_t)i * ss];")
    O:line("    for (int i = 0; i < 8; i += 2) {")
    O:line("        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);")
    O:line("        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);")
    O:line("    }")
    O:line("    for (int i = 0; i < 8; i += 4) {")
    O:line("        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);")
    O:line("        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);")
    O:line("        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);")
    O:line("        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);")
    O:line("    }")
    O:line("    for (int i = 0; i < 4; i++) {")
    O:line("        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);")
    O:line("        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);")
    O:line("    }")
    O:line("    for (int i = 0; i < 8; i++) _mm256_storeu_ps(d + (size_t)i * ld, r[i]);")
    O:line("}")
  end
  O:line("#else")
  O:line("static inline __attribute__((unused)) void vtr(float *restrict d, size_t ld, const cg_v *restrict s, size_t ss)")
  O:line("{")
  O:line("    for (size_t c = 0; c < %d; c++)", V)
  O:line("        for (size_t l = 0; l < %d; l++) d[l * ld + c] = s[c * ss][l];", V)
  O:line("}")
  O:line("#endif")
end

local function emit(spec, spec_path, spec_text)
  local name, UP = spec.name, spec.name:upper()
  local hash = util.fnv1a(spec_text)
  local B = spec.train.batch
  local V = spec.target.vec
  local ctx = {budget = UNROLL_BUDGET, lanes = spec.lanes, vec = V, team = spec.team}
  local banner = string.format("/* Generated by cnngen %s from %s (fnv1a64 %s). Do not edit.\n", VERSION,
    c_comment(spec_path), hash)

  -- header
  local H = util.code()
  H.lines[1] = banner .. string.format(" * %s: input %s, output %s, loss %s, batch up to %d. */",
    name, shape_str(spec.input), shape_str(spec.out_shape), spec.loss, B)
  H:line("#ifndef %s_H", UP)
  H:line("#define %s_H", UP)
  H:line("")
  H:line("#include \"cnngen.h\"")
  H:line("")
  H:line("/* Sizes in floats. N_PARAMS or N_BUFFERS may be 0 (no learned layer, no batch norm):")
  H:line(" * declare and allocate with the _ALLOC sizes, which are at least 1. */")
  if spec.team then
    H:line("#define %s_BATCH %d /* largest batch forward/backward accept: one replica's of a team of %d (%s), train.batch %d */",
      UP, B, spec.team, spec.team_wisdom and "make tune's wisdom" or "--team", spec.team_batch)
  else
    H:line("#define %s_BATCH %d /* largest batch forward/backward accept */", UP, B)
  end
  H:line("#define %s_IN_SIZE %d /* floats per input sample, %s */", UP, prod(spec.input), shape_str(spec.input))
  H:line("#define %s_OUT_SIZE %d /* floats per output sample, %s */", UP, spec.out_size, shape_str(spec.out_shape))
  H:line("#define %s_N_PARAMS ((size_t)%d) /* learned floats: weights, biases, gamma, beta */", UP, spec.n_params)
  H:line("#define %s_N_PARAMS_ALLOC ((size_t)%d) /* N_PARAMS, at least 1 */", UP, math.max(spec.n_params, 1))
  H:line("#define %s_N_BUFFERS ((size_t)%d) /* batch-norm running statistics and counters */", UP, spec.n_buffers)
  H:line("#define %s_N_BUFFERS_ALLOC ((size_t)%d) /* N_BUFFERS, at least 1 */", UP, math.max(spec.n_buffers, 1))
  H:line("#define %s_WORKSPACE ((size_t)%d) /* floats: activations, gradients, scratch */", UP, spec.workspace)
  H:line("#define %s_OUT_OFFSET ((size_t)%d) /* network output in the workspace */", UP, spec.out_offset)
  H:line("#define %s_DOUT_OFFSET ((size_t)%d) /* dLoss/dOutput goes here before backward */", UP, spec.dout)
  H:line("")
  H:line("/* %s.c also defines main() (the trainer, cg_main) unless compiled with -DCNNGEN_NO_MAIN,", name)
  H:line(" * which links it into another program: docs/embedding.md. */")
  H:line("#ifdef __cplusplus")
  H:line("extern \"C\" {")
  H:line("#endif")
  H:line("")
  H:line("void %s_forward(const float *params, float *buffers, const float *x, float *ws, int nb, int training);", name)
  H:line("void %s_backward(const float *params, float *grads, const float *x, float *dx, float *ws, int nb);", name)
  if spec.team then
    H:line("/* one replica of a team (cnngen.h's forward_team / backward_team); team NULL: the above */")
    H:line("void %s_forward_team(const float *params, float *buffers, const float *x, float *ws, int nb, int training, cg_team *team);", name)
    H:line("void %s_backward_team(const float *params, float *grads, const float *x, float *dx, float *ws, int nb, cg_team *team);", name)
  end
  H:line("extern const cg_net %s_net;", name)
  H:line("")
  H:line("#ifdef __cplusplus")
  H:line("}")
  H:line("#endif")
  H:line("")
  H:line("#endif")

  local O = util.code()
  O.lines[1] = banner .. string.format(" * Register tiles for %s (%d accumulators of %d floats).\n", spec.target.isa, spec.target.acc, V)
    .. " *\n * layer  kind            input -> output          params"
  for _, L in ipairs(spec.layers) do
    local np = 0
    for _, t in ipairs(L.tensors) do if t.kind == "param" then np = np + t.size end end
    O.lines[#O.lines + 1] = string.format(" * %5d  %-14s  %-24s %s", L.index, L.kind,
      shape_str(L.in_shape) .. " -> " .. shape_str(L.out_shape), util.commas(np))
  end
  O.lines[#O.lines + 1] = " */"
  O:line("#include <math.h>")
  O:line("#include <stddef.h>")
  O:line("#include <string.h>")
  O:line("#ifdef _OPENMP")
  O:line("#include <omp.h> /* %s_threads%s */", name, spec.team and (", " .. name .. "_team_run") or "")
  O:line("#endif")
  O:line("")
  O:line("#include \"%s.h\"", name)
  O:line("")
  local fargs, bargs, dxargs, seen = {}, {}, {}, {}
  do
    simd_prelude(O, V, true)
    for _, L in ipairs(spec.layers) do
      local dw = L.sched and L.sched.dw
      if dw and dw.tile and dw.tile.G then vtr_prelude(O, V); break end
    end
    O:line("")
  end
  if ctx.lanes then
    O:line("/* Activations are batch-innermost: [size][%d]. */", spec.lanes)
    O:line("/* cg_to_lanes / cg_from_lanes (runtime): [nb][size] <-> [size][%d], lanes >= nb zero */", spec.lanes)
    O:line("")
  end
  for _, L in ipairs(spec.layers) do
    if not L.is_alias then
      O:line("/* layer %d: %s %s -> %s (%s:%d:%d)", L.index, L.kind, shape_str(L.in_shape),
        shape_str(L.out_shape), c_comment(spec_path), L.node.line, L.node.col)
      O:line(" * schedule %s%s */", schedule.describe(L.sched), L.sched.from_wisdom and " (from wisdom)" or "")
      -- a pass fused into another layer (fuse.lua) emits a comment in its place
      local function pass_or_note(pass, into, what)
        if not into then return emit_layer_fn(O, L, pass, ctx, spec, seen) end
        O:line("/* %s: none, layer %d %s */", layer_fn(L, pass), into.index, what)
        O:line("")
        return {}
      end
      fargs[L] = pass_or_note("fwd", L.fused_into, "stores its output through the " .. L.kind)
      bargs[L] = pass_or_note("bwd", L.bwd_fused_into, L.dmask_dy and ("masks the dy it reads with the " .. L.kind .. "'s derivative")
        or ("masks its dx stores with the " .. L.kind .. "'s derivative"))
      if pass_fn(L, "bwdx", ctx) then dxargs[L] = emit_layer_fn(O, L, "bwdx", ctx, spec, seen) end
    end
  end

  local n = #spec.layers
  local R = ctx.lanes
  -- Workspace offsets by name: A05 layer 5's output, S05 its scratch, D05 the gradient
  -- of that output (gradients share arena space when their lifetimes do not overlap),
  -- T05_2 a temporary for layer 5's second input when that tensor's gradient is summed
  local names, defs = {}, {}
  local function def(name, off, what)
    if names[off .. name] then return end
    names[off .. name] = true
    defs[#defs + 1] = string.format("#define %-7s %d /* %s */", name, off, what)
  end
  local lay = function(L) return string.format("[%s][%s]", R and shape_str(L.out_shape) or "N", R and "lanes" or shape_str(L.out_shape)) end
  if R then def("XIN", spec.xin, string.format("the input, [%s][lanes]", shape_str(spec.input))) end
  for _, L in ipairs(spec.layers) do
    if not L.is_alias and not L.inplace then
      def(string.format("A%02d", L.index), L.act, string.format("output of layer %d (%s), %s", L.index, L.kind, lay(L)))
    end
    if L.scratch then def(string.format("S%02d", L.index), L.scratch, string.format("scratch of layer %d (%s)", L.index, L.kind)) end
  end
  if spec.temp then
    def("TMP", spec.temp, string.format("the layers' temporary region, %d floats (the largest a pass uses)", spec.temp_size))
  end
  if R then def("OUT", spec.out_offset, string.format("the output, [N][%d]", spec.out_size)) end
  def("DOUT", spec.dout, string.format("dLoss/dOutput, [N][%d]", spec.out_size))
  if R then def("DOUT_L", spec.dout_lanes, string.format("dLoss/dOutput, [%d][lanes]", spec.out_size)) end
  local function grad_what(label)
    if label:sub(1, 1) == "T" then return "a gradient summed into its tensor's" end
    if label == "DIN" then return "dLoss/dInput" end
    local A = spec.layers[tonumber(label:sub(2)) + 1]
    if A.dmask_dy then
      return string.format("dLoss/d(layer %d output), which layer %d's backward masks as it reads it", A.index, A.bwd_fused_into.index)
    end
    if A.bwd_fused_into then
      return string.format("dLoss/d(layer %d output), then layer %d's dx masks it to dLoss/d(its input)", A.index, A.bwd_fused_into.index)
    end
    return "dLoss/d(layer " .. A.index .. " output)"
  end
  for _, b in ipairs(spec.grad_bufs) do
    local what = grad_what(b.label)
    if b.shared then
      what = what .. string.format(", and layer %d's: layer %d's %s gives both one gradient", b.shared.hi, b.shared.by, b.shared.kind)
    end
    def(b.label, b.at, "gradient arena: " .. what)
  end
  local function W(v)
    if type(v) == "table" then return "ws + " .. v.label end
    if R and v == spec.dout_lanes then return "ws + DOUT_L" end
    if v == spec.dout then return "ws + DOUT" end
    return "ws + " .. v
  end
  local function inptr(q)
    if q == 0 then return R and "ws + XIN" or "x" end
    -- the layer whose buffer it is: through views and in-place layers
    local P = spec.layers[q]
    while P.is_alias or P.inplace do
      local r = P.inputs[P.is_alias and 1 or P.inplace]
      if r == 0 then return "ws + XIN" end
      P = spec.layers[r]
    end
    return string.format("ws + A%02d", P.index)
  end
  O:line("/* Workspace regions, in floats (NAME.h gives the total). */")
  for _, d in ipairs(defs) do O:line(d) end
  O:line("")
  local function call(L, pass, argl, map)
    local a = {}
    for _, arg in ipairs(argl) do a[#a + 1] = map[arg] end
    return string.format("%s(%s);", L.fn[pass], table.concat(a, ", "))
  end
  local function base(off) return off == 0 and "" or (" + " .. off) end
  local function count(sz) return R and tostring(R * sz) or string.format("(size_t)nb * %d", sz) end

  -- network forward
  O:line("/* Forward over nb <= %d samples; activations stay in ws for backward. */", B)
  if spec.team then
    O:line("void %s_forward_team(const float *params, float *buffers, const float *x, float *ws, int nb, int training, cg_team *team)", name)
  else
    O:line("void %s_forward(const float *params, float *buffers, const float *x, float *ws, int nb, int training)", name)
  end
  O:open("{")
  -- no samples, nothing to do; and the compiler knows nb > 0 in the layers inlined
  -- below (gcc -O3 -march=znver3 read (size_t)nb * 16 in a memset as possibly
  -- negative and warned, -Wstringop-overflow: random spec 53041). A team's replica
  -- with no samples still takes part in the team's barriers.
  if not spec.team then O:line("if (nb <= 0) return;") end
  local uses = {}
  for _, L in ipairs(spec.layers) do
    if not L.is_alias then
      for _, a in ipairs(fargs[L]) do uses[a] = true end
    end
  end
  if not uses.B then O:line("(void)buffers;") end
  if not uses.training then O:line("(void)training;") end
  if spec.team and not uses.team then O:line("(void)team;") end
  if R then
    O:line("cg_to_lanes(x, ws + XIN, nb, %d, %d);", prod(spec.input), R)
  end
  for _, L in ipairs(spec.layers) do
    if L.is_alias then
      O:line("/* layer %d: %s is a view of its input */", L.index, L.kind)
    elseif L.fused_into then
      O:line("/* layer %d: %s fused into layer %d's stores */", L.index, L.kind, L.fused_into.index)
    else
      if L.inplace then
        O:line("/* (in place: layer %d's %s writes over its input%s) */", L.index, L.kind, #L.inputs > 1 and (" " .. L.inplace) or "")
      end
      local map = {P = "params" .. base(L.pbase), B = "buffers" .. base(L.bbase),
        S = L.scratch and string.format("ws + S%02d", L.index), T = spec.temp and "ws + TMP", x = inptr(L.inputs[1]),
        y = inptr(L.pos), nb = "nb", training = "training", team = "team"}
      for j, q in ipairs(L.inputs) do map["x" .. j] = inptr(q) end
      if L.fwd_add then
        -- the add's input other than this layer's output (fuse.plan_add)
        local A = L.fwd_add
        map.r = inptr(A.inputs[3 - A.inplace])
      end
      O:line(call(L, "fwd", fargs[L], map))
    end
  end
  if R then
    O:line("cg_from_lanes(%s, ws + OUT, nb, %d, %d);", inptr(n), spec.out_size, R)
  end
  O:close()
  O:line("")

  -- network backward
  O:line("/* Backward after a training forward: dLoss/dOutput at ws + DOUT (%d); grads accumulate. */", spec.dout)
  if spec.team then
    O:line("")
    O:line("void %s_forward(const float *params, float *buffers, const float *x, float *ws, int nb, int training)", name)
    O:open("{")
    O:line("%s_forward_team(params, buffers, x, ws, nb, training, NULL);", name)
    O:close()
    O:line("")
    O:line("void %s_backward_team(const float *params, float *grads, const float *x, float *dx, float *ws, int nb, cg_team *team)", name)
  else
    O:line("void %s_backward(const float *params, float *grads, const float *x, float *dx, float *ws, int nb)", name)
  end
  O:open("{")
  if not spec.team then O:line("if (nb <= 0) return; /* as the forward */") end
  if R then
    O:line("cg_to_lanes(ws + DOUT, ws + DOUT_L, nb, %d, %d);", spec.out_size, R)
  end
  local uses_dx, uses_x = false, false
  for _, L in ipairs(spec.layers) do
    for _, argl in ipairs({bargs[L] or {}, dxargs[L] or {}}) do
      for _, a in ipairs(argl) do
        if a == "x" and L.inputs[1] == 0 and not R then uses_x = true end
        local j = a:match("^x(%d+)$")
        if j and L.inputs[tonumber(j)] == 0 and not R then uses_x = true end
      end
    end
  end
  if not uses_x then O:line("(void)x;") end
  -- the input's only reader computes its dx apart: skipped when the caller wants no dx
  local only_input_reader = spec.input_readers == 1 and #spec.layers[1].inputs == 1
  for i = n, 1, -1 do
    local L = spec.layers[i]
    local st = L.bstep
    if L.is_alias or L.bwd_fused_into then -- no call of its own (its step: pass, copy or acc)
      if L.dmask_dy then
        O:line("/* layer %d: %s's backward is in layer %d's reads of dy */", L.index, L.kind, L.bwd_fused_into.index)
      elseif L.bwd_fused_into then
        O:line("/* layer %d: %s's backward is in layer %d's dx stores */", L.index, L.kind, L.bwd_fused_into.index)
      elseif st.pass then
        O:line("/* layer %d: %s passes the gradient through */", L.index, L.kind)
      else
        O:line("/* layer %d: %s: its input's gradient is its own */", L.index, L.kind)
      end
      if st.copy then O:line("memcpy(%s, %s, sizeof(float) * %s);", W(st.copy.to), W(st.copy.from), count(st.copy.n)) end
    else
      local map = {P = "params" .. base(L.pbase), G = "grads" .. base(L.pbase),
        S = L.scratch and string.format("ws + S%02d", L.index), T = spec.temp and "ws + TMP", x = inptr(L.inputs[1]),
        y = inptr(L.dmask_y and L.dmask_y.pos or L.pos), dy = W(st.dy), nb = "nb", team = "team"}
      for j, q in ipairs(L.inputs) do
        local d = st.dx[j]
        local e
        if d.direct then
          e = "dx ? dx : " .. W(d.tmp)
          uses_dx = true
        else
          e = W(d.off)
        end
        map["x" .. j], map["dx" .. j] = inptr(q), e
        if j == 1 then map.dx = e end
      end
      O:line(call(L, "bwd", bargs[L], map))
      if dxargs[L] then
        local gate = (L.inputs[1] == 0 and only_input_reader) and "if (dx) " or ""
        if L.dx_acc then O:line("/* a tensor read again: layer %d's dx stores add to its gradient */", L.index) end
        O:line(gate .. call(L, "bwdx", dxargs[L], map))
      end
    end
    for _, a in ipairs(st.acc) do
      -- on the threads when the batch's copy of the tensor is work enough
      if a.n * B >= PARALLEL_MIN_MOVES then O:line("CG_PARALLEL_FOR") end
      O:line("for (size_t i = 0; i < %s; i++) (%s)[i] += (%s)[i]; /* a tensor read again: gradients add */",
        count(a.n), W(a.to), W(a.from))
    end
  end
  if R then
    O:line("if (dx) cg_from_lanes(%s, dx, nb, %d, %d);", W(spec.grad_input), prod(spec.input), R)
    uses_dx = true
  elseif not spec.direct_dx then
    O:line("if (dx) memcpy(dx, %s, sizeof(float) * (size_t)nb * %d);", W(spec.grad_input), prod(spec.input))
    uses_dx = true
  end
  if not uses_dx then O:line("(void)dx;") end
  if spec.team then
    local bteam = false
    for _, L in ipairs(spec.layers) do
      for _, argl in ipairs({bargs[L] or {}, dxargs[L] or {}}) do
        for _, a in ipairs(argl) do if a == "team" then bteam = true end end
      end
    end
    if not bteam then O:line("(void)team;") end
  end
  O:close()
  O:line("")
  if spec.team then
    O:line("void %s_backward(const float *params, float *grads, const float *x, float *dx, float *ws, int nb)", name)
    O:open("{")
    O:line("%s_backward_team(params, grads, x, dx, ws, nb, NULL);", name)
    O:close()
    O:line("")
  end

  -- descriptors
  O:line("static const cg_tensor %s_tensors[] = {", name)
  local ntens = 0
  for _, L in ipairs(spec.layers) do
    for _, t in ipairs(L.tensors) do
      ntens = ntens + 1
      O:line("    {%s, %s, %d, %d, %s, %d, %d, %s, %d},", c_string(t.name), KIND_ENUM[t.kind], L.index, #t.shape,
        int_list(t.shape, 4), t.offset, t.size, INIT_ENUM[t.init], t.fan_in or 0)
    end
  end
  if ntens == 0 then O:line("    {\"\", 0, 0, 0, {0, 0, 0, 0}, 0, 0, 0, 0},") end
  O:line("};")
  O:line("")
  O:line("/* what each layer reads: earlier layers' outputs by index, -1 the network's input */")
  O:line("static const int %s_inputs[] = {", name)
  local in_at, nin = {}, 0
  for _, L in ipairs(spec.layers) do
    local r = {}
    for j, q in ipairs(L.inputs) do r[j] = tostring(q - 1) end
    in_at[L] = nin
    nin = nin + #r
    O:line("    %s, /* %d: %s */", table.concat(r, ", "), L.index, L.kind)
  end
  O:line("};")
  O:line("")
  O:line("static const cg_layer %s_layers[] = {", name)
  for _, L in ipairs(spec.layers) do
    local has_bias = 0
    for _, t in ipairs(L.tensors) do if t.kind == "param" and t.suffix == "bias" then has_bias = 1 end end
    local g = L.geom
    local o = L.opt
    local mom = o.momentum
    O:line("    {.kind = %s, .ndim_in = %d, .in_shape = %s, .ndim_out = %d, .out_shape = %s,",
      c_string(L.kind), #L.in_shape, int_list(L.in_shape, 3), #L.out_shape, int_list(L.out_shape, 3))
    O:line("     .in_size = %d, .out_size = %d, .act_offset = %d, .lanes = %d, .line = %d, .col = %d,",
      L.in_size, L.out_size, L.act, spec.lanes or 0, L.node.line, L.node.col)
    O:line("     .schedule = %s, .n_inputs = %d, .inputs = %s_inputs + %d, .name = %s, .inplace = %d,",
      c_string(schedule.describe(L.sched)), #L.inputs, name, in_at[L], L.name and c_string(L.name) or "NULL", L.inplace or 0)
    if g then
      O:line("     .kernel = {%d, %d}, .stride = {%d, %d}, .pad_lo = {%d, %d}, .pad_hi = {%d, %d}, .dilation = {%d, %d},",
        g.h.K, g.w.K, g.h.S, g.w.S, g.h.lo, g.w.lo, g.h.hi, g.w.hi, g.h.D, g.w.D)
    end
    O:line("     .groups = %d, .has_bias = %d, .count_include_pad = %d, .slope = %s, .eps = %s, .momentum = %s%s},",
      L.groups or 1, has_bias,
      o.count_include_pad and 1 or 0, util.flt(o.slope or 0), util.flt(o.eps or 0),
      mom == "null" and "-1.0f" or util.flt(mom or 0), o.p and (", .p = " .. util.flt(o.p)) or "")
  end
  O:line("};")
  O:line("")
  O:line("/* the runtime's loops over independent pieces (the MSE loss), on this code's threads */")
  O:line("static void %s_parallel_for(int n, void (*body)(void *ctx, int i), void *ctx)", name)
  O:open("{")
  O:line("CG_PARALLEL_FOR")
  O:line("for (int i = 0; i < n; i++) body(ctx, i);")
  O:close()
  O:line("")
  O:line("/* the threads of the next parallel loops: n > 0 sets them; returns the count in force */")
  O:line("static int %s_threads(int n)", name)
  O:open("{")
  O:line("#ifdef _OPENMP")
  O:line("if (n > 0) omp_set_num_threads(n);")
  O:line("return omp_get_max_threads();")
  O:line("#else")
  O:line("(void)n;")
  O:line("return 1;")
  O:line("#endif")
  O:close()
  O:line("")
  if spec.team then
    O:line("/* the team's threads (--team): body(ctx, rank) for rank 0..T-1, all at once, one thread each;")
    O:line(" * returns 0, having run nothing, when OpenMP does not give T threads (or, for T > 1, the")
    O:line(" * code was compiled without -fopenmp) */")
    O:line("static int %s_team_run(int T, void (*body)(void *ctx, int rank), void *ctx)", name)
    O:open("{")
    O:line("#ifdef _OPENMP")
    O:line("int ran = 0;")
    O:line("#pragma omp parallel num_threads(T) reduction(+ : ran)")
    O:open("if (omp_get_num_threads() == T) {")
    O:line("body(ctx, omp_get_thread_num());")
    O:line("ran = 1;")
    O:close()
    O:line("return ran == T;")
    O:line("#else")
    O:line("if (T != 1) return 0;")
    O:line("body(ctx, 0);")
    O:line("return 1;")
    O:line("#endif")
    O:close()
    O:line("")
  end
  local t = spec.train
  O:line("const cg_net %s_net = {", name)
  O:line("    .abi = CG_ABI_VERSION, .name = %s,", c_string(name))
  O:line("    .spec_file = %s, .spec_hash = %s, .generator_version = %s,", c_string(spec_path), c_string(hash), c_string(VERSION))
  O:line("    .in_ndim = %d, .in_shape = %s, .in_size = %d, .out_size = %d,", #spec.input, int_list(spec.input, 3),
    prod(spec.input), spec.out_size)
  O:line("    .batch = %d, .loss = %s,", B, spec.loss == "mse" and "CG_LOSS_MSE" or "CG_LOSS_SOFTMAX_CE")
  O:line("    .n_params = %s_N_PARAMS, .n_buffers = %s_N_BUFFERS, .workspace = %s_WORKSPACE,", UP, UP, UP)
  O:line("    .out_offset = %s_OUT_OFFSET, .dout_offset = %s_DOUT_OFFSET,", UP, UP)
  O:line("    .n_tensors = %d, .tensors = %s_tensors, .n_layers = %d, .layers = %s_layers,", ntens, name, n, name)
  O:line("    .train = {.batch = %d, .epochs = %d, .lr = %s, .momentum = %s, .weight_decay = %s,",
    spec.team_batch or t.batch, t.epochs, util.flt(t.lr), util.flt(t.momentum), util.flt(t.weight_decay))
  O:line("              .mode = %s, .order = %s, .schedule = %s, .step_size = %d, .gamma = %s,",
    MODE_ENUM[t.mode], ORDER_ENUM[t.order], SCHED_ENUM[t.schedule], t.step_size, util.flt(t.gamma))
  O:line("              .patience = %d, .eval_every = %d, .val = %d, .val_frac = %s, .seed = %d,",
    t.patience, t.eval_every, t.val or -1, util.flt(t.val_frac or 0), t.seed)
  O:line("              .normalize = %d, .checkpoint_every = %d, .monitor = %s,", t.normalize and 1 or 0,
    t.checkpoint_every, t.monitor == "error" and "CG_MONITOR_ERROR" or "CG_MONITOR_LOSS")
  O:line("              .optimizer = %s, .beta1 = %s, .beta2 = %s, .eps = %s, .warmup = %d,",
    OPTIMIZER_ENUM[t.optimizer], util.flt(t.betas[1]), util.flt(t.betas[2]), util.flt(t.eps), t.warmup)
  O:line("              .aug_crop = %d, .aug_flip = %d},", t.augment.crop, t.augment.flip and 1 or 0)
  O:line("    .forward = %s_forward, .backward = %s_backward, .parallel_for = %s_parallel_for,", name, name, name)
  O:line("    .threads = %s_threads,", name)
  if spec.temp then O:line("    .temp_offset = TMP, .temp_size = %d,", spec.temp_size) end
  if spec.team then
    local slot = 1
    for _, L in ipairs(spec.layers) do
      if L.kind == "batchnorm" then slot = math.max(slot, 3 * L.channels) end
    end
    O:line("    .forward_team = %s_forward_team, .backward_team = %s_backward_team, .team_run = %s_team_run,", name, name, name)
    O:line("    .team_slot = %d, .team = %d,", slot, spec.team)
  end
  O:line("};")
  O:line("")
  O:line("/* the trainer; -DCNNGEN_NO_MAIN leaves it out (docs/embedding.md) */")
  O:line("#ifndef CNNGEN_NO_MAIN")
  O:line("int main(int argc, char **argv) { return cg_main(&%s_net, argc, argv); }", name)
  O:line("#endif")
  return O:text(), H:text()
end

---------------------------------------------------------------------------
-- Summary table
---------------------------------------------------------------------------
local function summary(spec, path)
  local rows = {{"#", "layer", "output", "params", "MACs", "receptive field", "jump", "schedule"}}
  local total_p, total_m = 0, 0
  local function axes(v)
    if v == nil then return "-" end
    if #spec.input == 2 then return tostring(v[2]) end
    return v[1] .. "x" .. v[2]
  end
  rows[2] = {"", "input", shape_str(spec.input), "", "", "", "", ""}
  for _, L in ipairs(spec.layers) do
    local np = 0
    for _, t in ipairs(L.tensors) do if t.kind == "param" then np = np + t.size end end
    local macs = L.mod.macs(L)
    total_p, total_m = total_p + np, total_m + macs
    rows[#rows + 1] = {tostring(L.index), L.kind, shape_str(L.out_shape), util.commas(np), util.commas(macs),
      axes(L.rf), axes(L.jump), L.sched.name .. (L.sched.act and ("+" .. L.sched.act) or "")
        .. (L.fused_into and string.format(" (in layer %d)", L.fused_into.index) or "")
        .. (L.sched.from_wisdom and " (wisdom)" or "")}
  end
  local w = {}
  for _, r in ipairs(rows) do
    for i, c in ipairs(r) do w[i] = math.max(w[i] or 0, #c) end
  end
  local out = {string.format("%s (%s), loss %s, batch %d", spec.name, path, spec.loss, spec.train.batch)}
  for ri, r in ipairs(rows) do
    local cells = {}
    for i, c in ipairs(r) do
      local right = (i == 1 or i == 4 or i == 5)
      cells[i] = right and string.rep(" ", w[i] - #c) .. c or c .. string.rep(" ", w[i] - #c)
    end
    out[#out + 1] = (table.concat(cells, "  "):gsub("%s+$", ""))
    if ri == 1 then out[#out + 1] = string.rep("-", #out[#out]) end
  end
  out[#out + 1] = string.format("Total params: %s", util.commas(total_p))
  out[#out + 1] = string.format("Total multiply-adds per sample (forward): %s", util.commas(total_m))
  out[#out + 1] = string.format("Workspace at batch %d: %s floats (activations and scratch %s, of which the layers' "
    .. "shared temporary region %s; gradients %s: the peak of the live ones); buffers: %s floats", spec.train.batch,
    util.commas(spec.workspace), util.commas(spec.act_floats), util.commas(spec.temp_size), util.commas(spec.grad_arena),
    util.commas(spec.n_buffers))
  out[#out + 1] = string.format("Schedules for target %s (%d accumulators a register tile):", spec.target.isa, spec.target.acc)
  for _, L in ipairs(spec.layers) do
    out[#out + 1] = string.format("  %d %s", L.index, schedule.describe(L.sched))
  end
  return table.concat(out, "\n") .. "\n"
end

-- For the tuner (bench/tune.py): per layer with more than one legal schedule, one
-- line "index<TAB>signature<TAB>candidate,candidate,..." (the chosen one first).
-- A candidate whose code is over TUNE_BUDGET lines is marked with a trailing "!": legal
-- (a wisdom file may name it; make schedules-check tests it), but not worth its compile
-- time, so the tuner skips it. That is 4 x the heuristic's per-layer budget: F(4x4)'s dW
-- of ResNet-20's 16-channel 28x28 layers (~6,000 lines, compiled in 8 s) made the
-- team's step 1.063x as fast on Zen 4 (bench/RESULTS.md, session 43).
local TUNE_BUDGET = 4 * CODE_BUDGET
local function schedules_list(spec)
  local out = {}
  for _, L in ipairs(spec.layers) do
    if #L.candidates > 1 then
      local names = {L.sched.name}
      local ctx = {budget = UNROLL_BUDGET, lanes = L.lanes_R, vec = L.vec}
      for _, c in ipairs(L.candidates) do
        if c.name ~= L.sched.name then
          names[#names + 1] = c.name .. (code_lines(L, c, ctx) > TUNE_BUDGET and "!" or "")
        end
      end
      out[#out + 1] = string.format("%d\t%s\t%s\n", L.index, schedule.signature(L), table.concat(names, ","))
    end
  end
  return table.concat(out)
end

---------------------------------------------------------------------------
-- Command line
---------------------------------------------------------------------------
local USAGE = [[
usage: cnngen SPEC.yaml [-o DIR]     write DIR/<name>.c and DIR/<name>.h (DIR: ., created if missing)
       cnngen --summary SPEC.yaml    print shapes, parameters, multiply-adds, receptive fields
       cnngen --check SPEC.yaml      validate only
       cnngen SPEC.yaml --inference [--weights W.npz] [--norm N.npz] [--batch B] [-o DIR]
                                     write DIR/<name>_infer.c and .h (docs/inference.md)
       cnngen --schedules SPEC.yaml  per layer: signature and legal schedules (for make tune)
       cnngen --net-signature SPEC.yaml  the network's key in a wisdom file (its team line)
       cnngen --help | --version
options: --target avx512|avx2|generic|native   register tiles for this ISA (default: native,
                                 from /proc/cpuinfo)
         --wisdom FILE           schedules timed on this machine by `make tune` (default:
                                 $CNNGEN_WISDOM when set)
         --layer N               emit layer N alone (its input, MSE loss): for timing it
         --no-fuse               no activation fused into its producer's stores (for A/B timing)
         --team T                code for one of T replicas that split train.batch between T
                                 threads (cnngen.h: cg_team): its batch is ceil(batch / T); also
                                 emits NAME_forward_team / NAME_backward_team, whose batch norm
                                 takes its statistics over the team's batch. Without --team, a
                                 wisdom file's line for the network (make tune) may choose
                                 one; --team 1: no team whatever the wisdom says
Exit status: 0 success, 1 error in the spec (or unreadable/unwritable file), 2 misuse.
]]

local function report(path, text, errs)
  local lines = {}
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  table.sort(errs.list, function(a, b) return a.line < b.line or (a.line == b.line and a.col < b.col) end)
  for i, e in ipairs(errs.list) do
    if i > errs.max then
      io.stderr:write(string.format("%s: %d more errors not shown\n", util.printable(path), #errs.list - errs.max))
      break
    end
    io.stderr:write(string.format("%s:%d:%d: %s\n", util.printable(path), e.line, e.col, util.printable(e.msg)))
    local src = lines[e.line]
    if src then
      -- one printable cell per character, so the caret lines up; long lines cut around the column
      src = src:gsub("\r$", ""):gsub("[\192-\255][\128-\191]*", "?"):gsub("[%c\128-\255]", " ")
      local col, from = e.col, 1
      if #src > 160 then
        from = math.max(1, col - 80)
        src = src:sub(from, from + 159)
        col = col - from + 1
      end
      io.stderr:write("  " .. src .. "\n  " .. string.rep(" ", math.max(0, col - 1)) .. "^\n")
    end
  end
end

-- A network's key in a wisdom file (its team line): name, batch, and a hash of its
-- layers' kinds, shapes, windows and wiring, so an edit that changes the work drops it.
function M.net_signature(spec)
  local p = {}
  for _, L in ipairs(spec.layers) do
    local g = L.geom
    p[#p + 1] = string.format("%s:%s:%s:%s:%s:%s", L.kind, table.concat(L.in_shape or {}, "x"),
      table.concat(L.out_shape or {}, "x"), table.concat(L.inputs or {}, ","), tostring(L.groups or 1),
      g and string.format("%d,%d,%d,%d,%d,%d,%d,%d", g.h.K, g.w.K, g.h.S, g.w.S, g.h.D, g.w.D, g.h.lo, g.w.lo) or "")
  end
  return string.format("net:%s:b%d:%s", spec.name, spec.train.batch, util.fnv1a(table.concat(p, ";")))
end

-- Parse and check a spec text; returns spec or nil (errors in errs).
function M.load(text, errs, opts)
  opts = opts or {}
  opts.target = opts.target or schedule.target("avx512")
  local root, msg, line, col = cnngen_c.parse_yaml(text)
  if not root then
    errs:add({line = line, col = col}, msg)
    return nil
  end
  local spec = validate(root, errs)
  if not spec or errs:count() > 0 then return nil end
  if not resolve_graph(spec, errs) or errs:count() > 0 then return nil end
  if not infer_shapes(spec, errs) or errs:count() > 0 then return nil end
  if opts.layer then
    -- one layer alone (its input shape, MSE loss, the spec's batch): what `make tune` times
    local L
    for _, l in ipairs(spec.layers) do if l.index == opts.layer then L = l end end
    if not L then
      errs:add(root, string.format("--layer %d: the spec has layers 0 to %d", opts.layer, #spec.layers - 1))
      return nil
    end
    if #L.inputs > 1 then
      errs:add(root, string.format("--layer %d: %s reads %d tensors; only a layer with one input is emitted alone",
        opts.layer, L.kind, #L.inputs))
      return nil
    end
    spec.name, spec.input, spec.layers, spec.loss = spec.name .. "_l" .. L.index, L.in_shape, {L}, "mse"
    L.inputs, L.pos, L.readers, spec.input_readers = {0}, 1, 0, 1
    if not infer_shapes(spec, errs) or errs:count() > 0 then return nil end
  end
  spec.net_signature = M.net_signature(spec)
  local team, team_wisdom = opts.team, false
  if not team and opts.wisdom and not opts.layer then
    -- make tune's choice for this network on this machine (bench/tune.py --decide-team):
    -- a team of T when the whole step measured faster so, else 1; applied where it can be
    local w = opts.wisdom[opts.target.isa .. "\t" .. spec.net_signature]
    team, team_wisdom = w and tonumber(w:match("^team=(%d+)$") or ""), true
  end
  -- each replica takes ceil(batch / team) samples: the compile-time batch of the code.
  -- A team of 1 (--team 1, team=1) is the plain code; a wisdom line the batch cannot
  -- follow is too, where --team's is an error
  local rb = team and team >= 2 and (spec.train.batch + team - 1) // team
  if rb and rb < LANES_MIN_BATCH and not team_wisdom then
    errs:add(spec.train["@batch"] or spec.train_node or root, string.format("--team %d: a replica's batch, ceil(train.batch %d / %d) = %d, is below %d: "
      .. "a team's replicas need the batch-innermost layout", team, spec.train.batch, team, rb, LANES_MIN_BATCH))
    return nil
  end
  if rb and rb >= LANES_MIN_BATCH then
    spec.team, spec.team_batch, spec.train.batch = team, spec.train.batch, rb
    spec.team_wisdom = team_wisdom
  end
  local ok, perr = plan(spec, opts)
  if not ok then
    errs:add(root, perr)
    return nil
  end
  return spec
end

local function write_atomic(files)
  local tmps = {}
  for _, f in ipairs(files) do
    local tmp = f.path .. ".tmp"
    local h, err = io.open(tmp, "wb")
    if not h then
      for _, t in ipairs(tmps) do os.remove(t) end
      return nil, string.format("cannot write %s: %s", f.path, tostring(err):gsub("^.*: ", ""))
    end
    local ok, werr = h:write(f.text)
    local cok, cerr = h:close()
    if not ok or not cok then
      os.remove(tmp)
      for _, t in ipairs(tmps) do os.remove(t) end
      return nil, string.format("cannot write %s: %s", f.path, tostring(werr or cerr):gsub("^.*: ", ""))
    end
    tmps[#tmps + 1] = tmp
  end
  for i, f in ipairs(files) do
    local ok, err = os.rename(tmps[i], f.path)
    if not ok then return nil, err end
  end
  return true
end

function M.main(args)
  for _, a in ipairs(args) do
    if a == "--inference" then return require("infer").main(M, args) end
  end
  local mode, outdir, path = "gen", ".", nil
  local target, wisdom_path, layer = "native", os.getenv("CNNGEN_WISDOM"), nil
  local no_fuse, team = false, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then io.stdout:write(USAGE); return 0
    elseif a == "--version" then io.stdout:write("cnngen " .. VERSION .. "\n"); return 0
    elseif a == "--summary" then mode = "summary"
    elseif a == "--check" then mode = "check"
    elseif a == "--schedules" then mode = "schedules"
    elseif a == "--net-signature" then mode = "net-signature"
    elseif a == "--no-fuse" then no_fuse = true
    elseif a == "--target" or a == "--wisdom" or a == "--layer" or a == "--team" then
      i = i + 1
      if not args[i] then io.stderr:write("cnngen: " .. a .. " needs a value\n" .. USAGE); return 2 end
      if a == "--target" then target = args[i]
      elseif a == "--wisdom" then wisdom_path = args[i]
      elseif a == "--team" then
        team = tonumber(args[i]:match("^%d+$") or "")
        if not team or team < 1 or team > 64 then io.stderr:write("cnngen: --team: expected a number of replicas from 1 to 64, got " .. args[i] .. "\n"); return 2 end
      else
        layer = tonumber(args[i]:match("^%d+$") or "")
        if not layer or layer > 100000 then io.stderr:write("cnngen: --layer: expected a layer index, got " .. args[i] .. "\n"); return 2 end
      end
    elseif a == "-o" then
      i = i + 1
      if not args[i] then io.stderr:write("cnngen: -o needs a directory\n" .. USAGE); return 2 end
      outdir = args[i]
    elseif a:sub(1, 1) == "-" then
      io.stderr:write("cnngen: unknown option " .. a .. "\n" .. USAGE); return 2
    elseif path then
      io.stderr:write("cnngen: one spec at a time (got " .. path .. " and " .. a .. ")\n" .. USAGE); return 2
    else path = a end
    i = i + 1
  end
  if not path then io.stderr:write("cnngen: no spec given\n" .. USAGE); return 2 end
  if outdir == "" then io.stderr:write("cnngen: -o '': the output directory is an empty path\n"); return 1 end
  local h, err = io.open(path, "rb")
  if not h then io.stderr:write("cnngen: cannot read " .. tostring(err) .. "\n"); return 1 end
  local text, rerr = h:read(MAX_SPEC_BYTES + 1) -- bounded: /dev/zero or a FIFO must not exhaust memory
  h:close()
  if not text and not rerr then text = "" end
  if not text then io.stderr:write("cnngen: cannot read " .. util.printable(path) .. ": " .. tostring(rerr) .. "\n"); return 1 end
  if #text > MAX_SPEC_BYTES then
    io.stderr:write(string.format("cnngen: %s: larger than %s bytes, the limit of a spec file\n", util.printable(path),
      util.commas(MAX_SPEC_BYTES)))
    return 1
  end
  local T = schedule.target(target)
  if not T then io.stderr:write("cnngen: --target: expected avx512, avx2, generic or native, got " .. target .. "\n"); return 2 end
  local wisdom
  if wisdom_path and wisdom_path ~= "" then
    local werr
    wisdom, werr = schedule.read_wisdom(wisdom_path)
    if not wisdom then io.stderr:write("cnngen: wisdom: " .. tostring(werr) .. "\n"); return 1 end
  end
  local errs = util.errors(20)
  local spec = M.load(text, errs, {target = T, wisdom = wisdom, layer = layer, no_fuse = no_fuse, team = team})
  if not spec then
    report(path, text, errs)
    return 1
  end
  if mode == "summary" then io.stdout:write(summary(spec, path)); return 0 end
  if mode == "check" then return 0 end
  if mode == "schedules" then io.stdout:write(schedules_list(spec)); return 0 end
  if mode == "net-signature" then io.stdout:write(spec.net_signature, "\n"); return 0 end
  local c, hdr = emit(spec, path, text)
  local made, merr = cnngen_c.mkdir_p(outdir) -- mkdir -p; the new directories go again on error
  if not made then io.stderr:write("cnngen: " .. merr .. "\n"); return 1 end
  local base = (outdir:sub(-1) == "/" and outdir or outdir .. "/") .. spec.name
  local ok, werr = write_atomic({{path = base .. ".h", text = hdr}, {path = base .. ".c", text = c}})
  if not ok then
    for k = #made, 1, -1 do os.remove(made[k]) end
    io.stderr:write("cnngen: " .. tostring(werr) .. "\n")
    return 1
  end
  io.stdout:write(base .. ".c\n")
  return 0
end

-- for compiler/lua/infer.lua (the --inference export), which reuses the forward emitters
M.internal = {
  VEC = VEC, UNROLL_BUDGET = UNROLL_BUDGET, simd_prelude = simd_prelude, place = place, schedule = schedule, plan = plan, pass_fn = pass_fn, layer_fn = layer_fn,
  emit_layer_fn = emit_layer_fn, report = report, write_atomic = write_atomic,
  shape_str = shape_str, prod = prod, c_comment = c_comment, c_string = c_string,
}

return M
