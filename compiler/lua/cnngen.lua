-- cnngen driver: command line, spec validation, shape pass, memory plan, emission.
-- The C host gives us cnngen_c.parse_yaml(text) and cnngen_c.version.
local util = require("util")
local schedule = require("schedule")
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
-- lines of C one layer's passes may take: past it, the next candidate schedule (the
-- padded forms' code grows with the kernel, the border regions' with its square)
local CODE_BUDGET = 4000
local code_lines -- (L, S, ctx): lines the passes of L take under schedule S

-- Layer kinds, registered by name from one module per kind family.
local MODULES = {"layers.conv", "layers.pool", "layers.dense", "layers.flatten", "layers.act", "layers.batchnorm"}
local KINDS, KIND_NAMES = {}, {}
for _, modname in ipairs(MODULES) do
  local mod = require(modname)
  for _, k in ipairs(mod.kinds) do
    KINDS[k] = mod
    KIND_NAMES[#KIND_NAMES + 1] = k
  end
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
}
local MODE_ENUM = {minibatch = "CG_MODE_MINIBATCH", sgd = "CG_MODE_SGD", full = "CG_MODE_FULL"}
local ORDER_ENUM = {shuffle = "CG_ORDER_SHUFFLE", random = "CG_ORDER_RANDOM"}
local SCHED_ENUM = {constant = "CG_SCHED_CONSTANT", step = "CG_SCHED_STEP", cosine = "CG_SCHED_COSINE"}

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
        local opt = util.check_schema(optnode, mod.schema(kind), kind, errs)
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
  spec.train = spec.train or util.check_schema(nil, TRAIN_SCHEMA, "train", errs)
  spec.train_node = by.train and by.train.val
  return ok and spec or nil
end

---------------------------------------------------------------------------
-- Shape pass: every layer's output shape, tensors, receptive field.
---------------------------------------------------------------------------
local function infer_shapes(spec, errs)
  local shape = spec.input
  local rf, jump = {1, 1}, {1, 1}
  local flat = #shape == 1
  local batch = spec.train.batch
  for _, L in ipairs(spec.layers) do
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
    -- receptive field and jump (product of strides) per spatial axis
    local g = L.mod.window and L.mod.window(L)
    if L.kind == "flatten" or L.kind == "dense" then flat = true end
    if g and not flat then
      local keff, s = require("window").rf(g)
      for a = 1, 2 do
        rf[a] = rf[a] + (keff[a] - 1) * jump[a]
        jump[a] = jump[a] * s[a]
      end
    end
    L.rf = (not flat) and {rf[1], rf[2]} or nil
    L.jump = (not flat) and {jump[1], jump[2]} or nil
    L.rank1 = #spec.input == 2
    shape = L.out_shape
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
-- Batch-innermost plan: every activation is [size][R] with R = the batch rounded up
-- to whole vectors, so the lanes of one vector are 16 samples and every layer's inner
-- loops are full-width whatever its spatial size. Input and output are converted at
-- the network's edges (the runtime sees [N][size] as always); lanes >= n hold zeros
-- in the gradients, so padded lanes never reach a parameter gradient.
local function plan_lanes(spec)
  local B = spec.train.batch
  local R = (B + VEC - 1) // VEC * VEC
  spec.lanes = R
  local ws = 0
  local function take(nfloats)
    local at = ws
    ws = ws + (nfloats + VEC - 1) // VEC * VEC -- keep every region vector-aligned
    return at
  end
  spec.xin = take(R * prod(spec.input))
  local maxin = 0
  local prev = spec.xin
  for _, L in ipairs(spec.layers) do
    L.is_alias = L.alias
    if L.is_alias then L.act = prev else L.act = take(R * L.out_size) end
    prev = L.act
    if L.in_size > maxin then maxin = L.in_size end
  end
  for _, L in ipairs(spec.layers) do
    local sz = L.mod.scratch and L.mod.scratch(L) or 0
    if sz > 0 then L.scratch = take(sz) end
  end
  spec.out_offset = take(B * spec.out_size)
  spec.dout = take(B * spec.out_size)
  spec.dout_lanes = take(R * spec.out_size)
  spec.grad_a = take(R * maxin)
  spec.grad_b = take(R * maxin)
  spec.workspace = ws
  return true
end

local function plan(spec, opts)
  local P, Bf = 0, 0
  for _, L in ipairs(spec.layers) do
    L.t, L.t_grad = {}, {}
    for _, t in ipairs(L.tensors) do
      t.kind = t.kind or "param"
      t.name = string.format("%d.%s", L.index, t.suffix)
      t.size = prod(t.shape)
      if t.kind == "param" then
        t.offset = P
        P = P + t.size
        L.t[t.suffix] = "P + " .. t.offset
        L.t_grad[t.suffix] = "G + " .. t.offset
      else
        t.offset = Bf
        Bf = Bf + t.size
        L.t[t.suffix] = "B + " .. t.offset
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
    -- threads pay off from about a million multiply-adds (or values moved) a pass;
    -- below that, waking the other core costs more than it saves
    L.parallel = math.max(L.mod.macs(L), L.out_size) * B >= PARALLEL_MIN_WORK
    local ctx = {budget = UNROLL_BUDGET, lanes = L.lanes_R, vec = T.vec}
    L.sched, L.candidates = schedule.choose(L, T, opts.wisdom, CODE_BUDGET, function(S) return code_lines(L, S, ctx) end)
  end
  if B >= LANES_MIN_BATCH then return plan_lanes(spec) end
  local ws = 0
  local n = #spec.layers
  local maxin = 0
  for i, L in ipairs(spec.layers) do
    L.is_alias = L.alias and i > 1 and i < n
    if L.is_alias then
      L.act = spec.layers[i - 1].act
    else
      L.act = ws
      ws = ws + B * L.out_size
    end
    if L.in_size > maxin then maxin = L.in_size end
  end
  for _, L in ipairs(spec.layers) do
    local s = L.mod.scratch and L.mod.scratch(L) or 0
    if s > 0 then
      L.scratch = ws
      ws = ws + s
    end
  end
  spec.dout = ws
  ws = ws + B * spec.out_size
  spec.grad_a = ws
  ws = ws + B * maxin
  spec.grad_b = ws
  ws = ws + B * maxin
  spec.workspace = ws
  spec.out_offset = spec.layers[n].act
  return true
end

---------------------------------------------------------------------------
-- Emission
---------------------------------------------------------------------------
local ARG_DECL = {
  fwd = {P = "const float *restrict P", B = "float *restrict B", S = "float *restrict S",
         x = "const float *restrict x", y = "float *restrict y", nb = "int nb", training = "int training"},
  bwd = {P = "const float *restrict P", G = "float *restrict G", S = "float *restrict S",
         x = "const float *restrict x", y = "const float *restrict y", dy = "const float *restrict dy",
         dx = "float *restrict dx", nb = "int nb"},
}
local ARG_ORDER = {"P", "G", "B", "S", "x", "y", "dy", "dx", "nb", "training"}

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
local function emit_layer_fn(out, L, pass, ctx, spec)
  local body = util.code()
  body.ind = 1
  local used = pass_fn(L, pass, ctx)(L, body, ctx)
  local set = {}
  for _, a in ipairs(used) do set[a] = true end
  local args = {}
  for _, a in ipairs(ARG_ORDER) do
    if set[a] then args[#args + 1] = a end
  end
  local decl = {}
  for i, a in ipairs(args) do decl[i] = ARG_DECL[pass == "fwd" and "fwd" or "bwd"][a] end
  out:line("static void %s(%s)", layer_fn(L, pass), table.concat(decl, ", "))
  out:line("{")
  out.lines[#out.lines + 1] = body:text():sub(1, -2)
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

-- The SIMD vocabulary of the emitters for vectors of V floats; openmp: loops marked
-- CG_PARALLEL_FOR run on all threads with -fopenmp (the inference export has none).
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
    O:line("/* loops whose iterations write disjoint outputs run on all threads with -fopenmp */")
    O:line("#ifdef _OPENMP")
    O:line("#define CG_PARALLEL_FOR _Pragma(\"omp parallel for schedule(static)\")")
    O:line("#else")
    O:line("#define CG_PARALLEL_FOR")
    O:line("#endif")
  else
    O:line("#define CG_PARALLEL_FOR")
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
end

local function emit(spec, spec_path, spec_text)
  local name, UP = spec.name, spec.name:upper()
  local hash = util.fnv1a(spec_text)
  local B = spec.train.batch
  local V = spec.target.vec
  local ctx = {budget = UNROLL_BUDGET, lanes = spec.lanes, vec = V}
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
  H:line("#define %s_BATCH %d /* largest batch forward/backward accept */", UP, B)
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
  O:line("")
  O:line("#include \"%s.h\"", name)
  O:line("")
  local fargs, bargs, dxargs = {}, {}, {}
  do
    simd_prelude(O, V, true)
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
      fargs[L] = emit_layer_fn(O, L, "fwd", ctx, spec)
      bargs[L] = emit_layer_fn(O, L, "bwd", ctx, spec)
      if pass_fn(L, "bwdx", ctx) then dxargs[L] = emit_layer_fn(O, L, "bwdx", ctx, spec) end
    end
  end

  local n = #spec.layers
  local function inptr(i)
    if i == 1 then return ctx.lanes and ("ws + " .. spec.xin) or "x" end
    return string.format("ws + %d", spec.layers[i - 1].act)
  end
  local function call(L, pass, argl, map)
    local a = {}
    for _, arg in ipairs(argl) do a[#a + 1] = map[arg] end
    return string.format("%s(%s);", layer_fn(L, pass), table.concat(a, ", "))
  end

  -- network forward
  O:line("/* Forward over nb <= %d samples; activations stay in ws for backward. */", B)
  O:line("void %s_forward(const float *params, float *buffers, const float *x, float *ws, int nb, int training)", name)
  O:open("{")
  local uses = {}
  for _, L in ipairs(spec.layers) do
    if not L.is_alias then
      for _, a in ipairs(fargs[L]) do uses[a] = true end
    end
  end
  if not uses.B then O:line("(void)buffers;") end
  if not uses.training then O:line("(void)training;") end
  if ctx.lanes then
    O:line("cg_to_lanes(x, ws + %d, nb, %d, %d);", spec.xin, prod(spec.input), spec.lanes)
  end
  for i, L in ipairs(spec.layers) do
    if L.is_alias then
      O:line("/* layer %d: %s is a view of its input */", L.index, L.kind)
    else
      O:line(call(L, "fwd", fargs[L], {P = "params", B = "buffers", S = "ws + " .. tostring(L.scratch),
        x = inptr(i), y = "ws + " .. L.act, nb = "nb", training = "training"}))
    end
  end
  if ctx.lanes then
    O:line("cg_from_lanes(ws + %d, ws + %d, nb, %d, %d);", spec.layers[n].act, spec.out_offset, spec.out_size, spec.lanes)
  end
  O:close()
  O:line("")

  -- network backward
  O:line("/* Backward after a training forward: dLoss/dOutput at ws + %d; grads accumulate. */", spec.dout)
  O:line("void %s_backward(const float *params, float *grads, const float *x, float *dx, float *ws, int nb)", name)
  O:open("{")
  local dy = spec.dout
  if ctx.lanes then
    O:line("(void)x;")
    O:line("cg_to_lanes(ws + %d, ws + %d, nb, %d, %d);", spec.dout, spec.dout_lanes, spec.out_size, spec.lanes)
    dy = spec.dout_lanes
  end
  local bufs = {spec.grad_a, spec.grad_b}
  local uses_dx, uses_x = false, false
  for i, L in ipairs(spec.layers) do
    for _, argl in ipairs({bargs[L] or {}, dxargs[L] or {}}) do
      for _, a in ipairs(argl) do if a == "x" and i == 1 then uses_x = true end end
    end
  end
  if not uses_x and not ctx.lanes then O:line("(void)x;") end
  for i = n, 1, -1 do
    local L = spec.layers[i]
    if L.is_alias then
      O:line("/* layer %d: %s passes the gradient through */", L.index, L.kind)
    else
      local other = (dy == bufs[1]) and bufs[2] or bufs[1]
      local dxexpr = "ws + " .. other
      if i == 1 and not ctx.lanes then
        dxexpr = "dx ? dx : ws + " .. other
        uses_dx = true
      end
      local map = {P = "params", G = "grads", S = "ws + " .. tostring(L.scratch), x = inptr(i),
        y = "ws + " .. L.act, dy = "ws + " .. dy, dx = dxexpr, nb = "nb"}
      O:line(call(L, "bwd", bargs[L], map))
      if dxargs[L] then
        O:line((i == 1 and "if (dx) " or "") .. call(L, "bwdx", dxargs[L], map))
      end
      dy = other
    end
  end
  if ctx.lanes then
    O:line("if (dx) cg_from_lanes(ws + %d, dx, nb, %d, %d);", dy, prod(spec.input), spec.lanes)
    uses_dx = true
  end
  if not uses_dx then O:line("(void)dx;") end
  O:close()
  O:line("")

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
  O:line("static const cg_layer %s_layers[] = {", name)
  for _, L in ipairs(spec.layers) do
    local g = L.geom
    local o = L.opt
    local mom = o.momentum
    O:line("    {.kind = %s, .ndim_in = %d, .in_shape = %s, .ndim_out = %d, .out_shape = %s,",
      c_string(L.kind), #L.in_shape, int_list(L.in_shape, 3), #L.out_shape, int_list(L.out_shape, 3))
    O:line("     .in_size = %d, .out_size = %d, .act_offset = %d, .lanes = %d, .line = %d, .col = %d,",
      L.in_size, L.out_size, L.act, spec.lanes or 0, L.node.line, L.node.col)
    O:line("     .schedule = %s,", c_string(schedule.describe(L.sched)))
    if g then
      O:line("     .kernel = {%d, %d}, .stride = {%d, %d}, .pad_lo = {%d, %d}, .pad_hi = {%d, %d}, .dilation = {%d, %d},",
        g.h.K, g.w.K, g.h.S, g.w.S, g.h.lo, g.w.lo, g.h.hi, g.w.hi, g.h.D, g.w.D)
    end
    O:line("     .groups = %d, .has_bias = %d, .count_include_pad = %d, .slope = %s, .eps = %s, .momentum = %s},",
      L.groups or 1, (o.bias == false or not (L.kind:match("^conv") or L.kind == "dense")) and 0 or 1,
      o.count_include_pad and 1 or 0, util.flt(o.slope or 0), util.flt(o.eps or 0),
      mom == "null" and "-1.0f" or util.flt(mom or 0))
  end
  O:line("};")
  O:line("")
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
    t.batch, t.epochs, util.flt(t.lr), util.flt(t.momentum), util.flt(t.weight_decay))
  O:line("              .mode = %s, .order = %s, .schedule = %s, .step_size = %d, .gamma = %s,",
    MODE_ENUM[t.mode], ORDER_ENUM[t.order], SCHED_ENUM[t.schedule], t.step_size, util.flt(t.gamma))
  O:line("              .patience = %d, .eval_every = %d, .val = %d, .val_frac = %s, .seed = %d,",
    t.patience, t.eval_every, t.val or -1, util.flt(t.val_frac or 0), t.seed)
  O:line("              .normalize = %d, .checkpoint_every = %d, .monitor = %s},", t.normalize and 1 or 0,
    t.checkpoint_every, t.monitor == "error" and "CG_MONITOR_ERROR" or "CG_MONITOR_LOSS")
  O:line("    .forward = %s_forward, .backward = %s_backward,", name, name)
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
      axes(L.rf), axes(L.jump), L.sched.name .. (L.sched.from_wisdom and " (wisdom)" or "")}
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
  out[#out + 1] = string.format("Workspace at batch %d: %s floats; buffers: %s floats",
    spec.train.batch, util.commas(spec.workspace), util.commas(spec.n_buffers))
  out[#out + 1] = string.format("Schedules for target %s (%d accumulators a register tile):", spec.target.isa, spec.target.acc)
  for _, L in ipairs(spec.layers) do
    out[#out + 1] = string.format("  %d %s", L.index, schedule.describe(L.sched))
  end
  return table.concat(out, "\n") .. "\n"
end

-- For the tuner (bench/tune.py): per layer with more than one legal schedule, one
-- line "index<TAB>signature<TAB>candidate,candidate,..." (the chosen one first).
-- A candidate whose code is over the budget is marked with a trailing "!": legal (a
-- wisdom file may name it; make schedules-check tests it), but not worth its compile
-- time, so the tuner skips it.
local function schedules_list(spec)
  local out = {}
  for _, L in ipairs(spec.layers) do
    if #L.candidates > 1 then
      local names = {L.sched.name}
      local ctx = {budget = UNROLL_BUDGET, lanes = L.lanes_R, vec = L.vec}
      for _, c in ipairs(L.candidates) do
        if c.name ~= L.sched.name then
          names[#names + 1] = c.name .. (code_lines(L, c, ctx) > CODE_BUDGET and "!" or "")
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
       cnngen --help | --version
options: --target avx512|avx2|generic|native   register tiles for this ISA (default: native,
                                 from /proc/cpuinfo)
         --wisdom FILE           schedules timed on this machine by `make tune` (default:
                                 $CNNGEN_WISDOM when set)
         --layer N               emit layer N alone (its input, MSE loss): for timing it
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
  if not infer_shapes(spec, errs) or errs:count() > 0 then return nil end
  if opts.layer then
    -- one layer alone (its input shape, MSE loss, the spec's batch): what `make tune` times
    local L
    for _, l in ipairs(spec.layers) do if l.index == opts.layer then L = l end end
    if not L then
      errs:add(root, string.format("--layer %d: the spec has layers 0 to %d", opts.layer, #spec.layers - 1))
      return nil
    end
    spec.name, spec.input, spec.layers, spec.loss = spec.name .. "_l" .. L.index, L.in_shape, {L}, "mse"
    if not infer_shapes(spec, errs) or errs:count() > 0 then return nil end
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
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--help" or a == "-h" then io.stdout:write(USAGE); return 0
    elseif a == "--version" then io.stdout:write("cnngen " .. VERSION .. "\n"); return 0
    elseif a == "--summary" then mode = "summary"
    elseif a == "--check" then mode = "check"
    elseif a == "--schedules" then mode = "schedules"
    elseif a == "--target" or a == "--wisdom" or a == "--layer" then
      i = i + 1
      if not args[i] then io.stderr:write("cnngen: " .. a .. " needs a value\n" .. USAGE); return 2 end
      if a == "--target" then target = args[i]
      elseif a == "--wisdom" then wisdom_path = args[i]
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
  local spec = M.load(text, errs, {target = T, wisdom = wisdom, layer = layer})
  if not spec then
    report(path, text, errs)
    return 1
  end
  if mode == "summary" then io.stdout:write(summary(spec, path)); return 0 end
  if mode == "check" then return 0 end
  if mode == "schedules" then io.stdout:write(schedules_list(spec)); return 0 end
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
  VEC = VEC, UNROLL_BUDGET = UNROLL_BUDGET, simd_prelude = simd_prelude, schedule = schedule, plan = plan, pass_fn = pass_fn, layer_fn = layer_fn,
  emit_layer_fn = emit_layer_fn, report = report, write_atomic = write_atomic,
  shape_str = shape_str, prod = prod, c_comment = c_comment, c_string = c_string,
}

return M
