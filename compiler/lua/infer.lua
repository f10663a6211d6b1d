-- infer: `cnngen SPEC --inference [--weights W.npz] [--norm N.npz] [--batch B] [-o DIR]`
-- writes DIR/<name>_infer.c and DIR/<name>_infer.h: the forward pass alone, in
-- evaluation mode, as one self-contained C99 file (no malloc, no OpenMP, no libzip,
-- no libcnngen). Layer code comes from the same forward emitters as the trainer's
-- (layers/*.lua through cnngen.lua's emit_layer_fn); this module only rewrites the
-- layer list, plans a static arena and writes the glue. docs/inference.md has the contract.
--
-- The rewrite: a batchnorm right after a conv or dense is folded into that layer
-- (w' = w * a, b' = (b - mean) * a + beta, a = gamma / sqrt(var + eps), per output
-- channel; the layer gains a bias if it had none); any other batchnorm becomes a
-- per-channel (x - mean) * a + beta with the running statistics. The parameters of
-- the rewritten net ("folded layout") are either baked in (--weights) or computed
-- by NAME_init from the trainer's flat params/buffers arrays.
local util = require("util")
local M = {}

local USAGE = [[
usage: cnngen SPEC.yaml --inference [--weights W.npz] [--norm normalize.npz] [--batch B] [-o DIR]
  writes DIR/<name>_infer.c and DIR/<name>_infer.h (DIR: .)
  --weights W.npz   bake the parameters in (static const arrays); without it the file
                    has NAME_init(params, buffers) taking the trainer's flat layout
  --norm N.npz      per-channel input normalization (arrays 'mean' and 'std', as the
                    trainer's normalize.npz), applied inside NAME_infer
  --batch B         samples per forward chunk, the arena's batch (default 1)
  --no-fuse         no activation fused into its producer's stores (for A/B timing)
]]

local function is_affine(L) return L.kind:match("^conv") or L.kind == "dense" end
local function f32(x) return string.unpack("<f", string.pack("<f", x)) end

-- A batchnorm that is not folded: y = (x - mean[c]) * scale[c] + shift[c] on [N][C][spatial]
-- (or [C][spatial][lanes]); its three vectors live in the folded parameter array.
local BN_EVAL = {}
function BN_EVAL.tensors(L)
  local c = L.channels
  return {{suffix = "mean", shape = {c}, init = "zero"}, {suffix = "scale", shape = {c}, init = "one"},
          {suffix = "shift", shape = {c}, init = "zero"}}
end
function BN_EVAL.macs(L) return L.in_size end
function BN_EVAL.candidates(L, T)
  return {require("schedule").simple(L, L.lanes_layout and "lanes" or "loop")}
end
function BN_EVAL.forward(L, C, ctx)
  C:line("const float *restrict mean = %s, *restrict scale = %s, *restrict shift = %s;",
    L.t.mean, L.t.scale, L.t.shift)
  C:open("for (int n = 0; n < nb; n++) {")
  C:open("for (int c = 0; c < %d; c++) {", L.channels)
  C:line("const float *restrict xc = x + (size_t)n * %d + c * %d;", L.in_size, L.spatial)
  C:line("float *restrict yc = y + (size_t)n * %d + c * %d;", L.in_size, L.spatial)
  C:line("const float m = mean[c], a = scale[c], b = shift[c];")
  C:line("for (int i = 0; i < %d; i++) yc[i] = (xc[i] - m) * a + b;", L.spatial)
  C:close()
  C:close()
  return {"P", "x", "y", "nb"}
end
function BN_EVAL.forward_lanes(L, C, ctx)
  local R = ctx.lanes
  C:line("const float *restrict mean = %s, *restrict scale = %s, *restrict shift = %s;",
    L.t.mean, L.t.scale, L.t.shift)
  C:open("for (int c = 0; c < %d; c++) {", L.channels)
  C:line("const float *restrict xc = x + (size_t)c * %d;", L.spatial * R)
  C:line("float *restrict yc = y + (size_t)c * %d;", L.spatial * R)
  C:line("const float m = mean[c], a = scale[c], b = shift[c];")
  C:line("for (int i = 0; i < %d; i++) yc[i] = (xc[i] - m) * a + b;", L.spatial * R)
  C:close()
  return {"P", "x", "y"}
end

---------------------------------------------------------------------------
-- Rewrite: fold batchnorms; every tensor of the folded layout gets a recipe
-- {op, dst, src = original tensors by suffix, bn = the batchnorm's, eps}.
---------------------------------------------------------------------------
local function by_suffix(L)
  local t = {}
  for _, x in ipairs(L.tensors) do t[x.suffix] = x end
  return t
end

-- orig: the spec as the trainer plans it; spec: a second load of the same text, rewritten
local function rewrite(orig, spec)
  local keep = {}
  local newpos = {[0] = 0} -- producer positions: the spec's -> the rewritten net's
  local i, n = 1, #spec.layers
  while i <= n do
    local L, O = spec.layers[i], orig.layers[i]
    local nxt = spec.layers[i + 1]
    L.recipe = {}
    -- fold a batchnorm into the conv/dense it reads when nothing else reads that output
    if is_affine(L) and nxt and nxt.kind == "batchnorm" and #nxt.inputs == 1 and nxt.inputs[1] == i
      and L.readers == 1 then
      local src, bn = by_suffix(O), by_suffix(orig.layers[i + 1])
      L.opt.bias = true
      L.tensors = L.mod.tensors(L)
      L.folded = nxt
      for _, t in ipairs(L.tensors) do
        L.recipe[#L.recipe + 1] = {op = t.suffix == "weight" and "fold_w" or "fold_b", dst = t, src = src, bn = bn,
          eps = nxt.opt.eps}
      end
      newpos[i], newpos[i + 1] = #keep + 1, #keep + 1
      i = i + 2
    else
      if L.kind == "batchnorm" then
        L.mod = BN_EVAL
        L.tensors = BN_EVAL.tensors(L)
        local bn = by_suffix(O)
        for _, t in ipairs(L.tensors) do L.recipe[#L.recipe + 1] = {op = t.suffix, dst = t, bn = bn, eps = L.opt.eps} end
      else
        local src = by_suffix(O)
        for _, t in ipairs(L.tensors) do L.recipe[#L.recipe + 1] = {op = "copy", dst = t, src = src} end
      end
      newpos[i] = #keep + 1
      i = i + 1
    end
    keep[#keep + 1] = L
  end
  local readers = {}
  for p, L in ipairs(keep) do
    L.pos = p
    for j, q in ipairs(L.inputs) do
      L.inputs[j] = newpos[q]
      readers[newpos[q]] = (readers[newpos[q]] or 0) + 1
    end
  end
  for p, L in ipairs(keep) do L.readers = readers[p] or 0 end
  spec.layers = keep
end

---------------------------------------------------------------------------
-- Folded parameter values at generation time (--weights). Arithmetic in double in the
-- same order as the emitted NAME_init, each value rounded to float32 once.
---------------------------------------------------------------------------
local function load_weights(path, orig)
  local z, err = cnngen_c.read_npz(path)
  if not z then return nil, err end
  local want = {}
  for _, L in ipairs(orig.layers) do
    for _, t in ipairs(L.tensors) do
      want[t.name] = true
      local a = z[t.name]
      if not a then
        return nil, string.format("%s: missing tensor '%s' (shape (%s)) required by network '%s'", path, t.name,
          table.concat(t.shape, ", "), orig.name)
      end
      if t.kind ~= "counter" then
        if a.dtype ~= "<f4" and a.dtype ~= "<f8" then
          return nil, string.format("%s: tensor '%s' has dtype %s, expected <f4 (or <f8)", path, t.name, a.dtype)
        end
        local ok = #a.shape == #t.shape
        for d = 1, #t.shape do ok = ok and a.shape[d] == t.shape[d] end
        if not ok then
          return nil, string.format("%s: tensor '%s' has shape (%s), expected (%s)", path, t.name,
            table.concat(a.shape, ", "), table.concat(t.shape, ", "))
        end
      end
    end
  end
  for k in pairs(z) do
    if not want[k] then return nil, string.format("%s: unexpected tensor '%s' (not in network '%s')", path, k, orig.name) end
  end
  return z
end

local function fold_values(r, z)
  local function get(t) return z[t.name].data end
  local out = {}
  if r.op == "copy" then
    local s = get(r.src[r.dst.suffix])
    for k = 1, r.dst.size do out[k] = s[k] end
    return out
  end
  local g, be, m, v = get(r.bn.weight), get(r.bn.bias), get(r.bn.running_mean), get(r.bn.running_var)
  local function scale(c) return g[c] / math.sqrt(v[c] + r.eps) end
  if r.op == "fold_w" then
    local w = get(r.src.weight)
    local cout = r.dst.shape[1]
    local per = r.dst.size // cout
    for o = 1, cout do
      local a = scale(o)
      for j = 1, per do
        local k = (o - 1) * per + j
        out[k] = f32(w[k] * a)
      end
    end
  elseif r.op == "fold_b" then
    local b = r.src.bias and get(r.src.bias)
    for o = 1, r.dst.size do
      local t = ((b and b[o] or 0.0) - m[o]) * scale(o)
      out[o] = f32(t + be[o])
    end
  elseif r.op == "mean" then
    for c = 1, r.dst.size do out[c] = m[c] end
  elseif r.op == "scale" then
    for c = 1, r.dst.size do out[c] = f32(scale(c)) end
  else -- shift
    for c = 1, r.dst.size do out[c] = be[c] end
  end
  return out
end

local function load_norm(path, spec)
  local z, err = cnngen_c.read_npz(path)
  if not z then return nil, err end
  local C = #spec.input >= 2 and spec.input[1] or spec.in_size
  local m, s = z.mean, z.std
  if not m or not s then return nil, path .. ": normalization file needs arrays 'mean' and 'std'" end
  if #m.data ~= C or #s.data ~= C then
    return nil, string.format("%s: normalization has %d channels, network '%s' has %d", path, #m.data, spec.name, C)
  end
  local norm = {C = C, inner = spec.in_size // C, mean = {}, inv = {}}
  for c = 1, C do
    local mc, sc = m.data[c], s.data[c]
    if mc ~= mc or mc == math.huge or mc == -math.huge or not (sc > 0) then
      return nil, string.format("%s: channel %d has mean %g, std %g (std must be > 0)", path, c - 1, mc, sc)
    end
    norm.mean[c] = mc
    norm.inv[c] = f32(1.0 / sc)
  end
  return norm
end

---------------------------------------------------------------------------
-- Static arena: two ping-pong activation buffers (the input, in lanes or normalized,
-- in the second), one scratch region shared by the layers (forward only: one at a time).
---------------------------------------------------------------------------
-- Floats of scratch a layer's forward uses, and where its temporary region T starts in
-- it. The channel-major conv forms keep the padded input in S (kept floats) and put
-- the rest in T, the forward's regions (channel-vector form: its output tile,
-- transposed weights and bias) first, the backward's after: here T follows S.
local function fwd_scratch(L, lanes)
  local S = L.sched
  if L.kind:match("^conv") then
    if S.fwd.form == "wv" then return require("layers.conv_wv").scratch(L).kept end
    if S.fwd.form == "cv" then local sc = L.mod.cv_scratch(L); return sc.kept + sc.DYH, sc.kept end
    -- cv+wino: its transformed weights after the whole cv layout
    if S.fwd.form == "cvw" then
      local sc = require("layers.conv_cvw").layout(L, L.mod.cv_scratch)
      return sc.kept + sc.total, sc.kept
    end
    -- Winograd's transformed weights: all in T
    if S.layout == "lanes" and S.fwd.form == "wino" then return require("layers.conv_wino").scratch(L), 0 end
    if S.layout == "lanes" and S.fwd.form == "wino4" then return require("layers.conv_wino4").scratch(L), 0 end
    -- lanes+pad: the padded input in S (dy's padded planes, T, are the backward's)
    if S.layout == "lanes" and S.fwd.pad then return L.mod.lanes_pad(L, lanes).kept end
    return 0
  end
  return L.mod.scratch and L.mod.scratch(L) or 0
end

-- Activations by liveness: a layer's output lives from its forward to the forward of
-- its last reader (the network's output to the end), placed greedy-by-size like the
-- trainer's gradients; a chain needs two buffers, a residual network three or four.
local function arena(spec, V, R, norm, args, place)
  local layers, n = spec.layers, #spec.layers
  local last = {}
  for p, L in ipairs(layers) do
    for _, q in ipairs(L.inputs) do last[q] = math.max(last[q] or 0, p) end
  end
  local bufs, buf_of = {}, {}
  local function round(x) return (x + V - 1) // V * V end
  -- the input in lanes or normalized lives in the arena until its last reader
  if spec.lanes or norm then
    buf_of[0] = {id = 0, size = round(R * spec.in_size), t0 = -1, t1 = 2 * (last[0] or 0)}
    bufs[#bufs + 1] = buf_of[0]
  end
  for p, L in ipairs(layers) do
    if L.view or L.inplace then
      -- a view, or a layer written in place: its input's buffer, kept alive as long as
      -- the layer's output is read
      local b = buf_of[L.inputs[L.view and 1 or L.inplace]]
      b.t1 = math.max(b.t1, p == n and math.huge or 2 * (last[p] or p))
      buf_of[p] = b
      -- (L.view was set by emit_layers; an in-place layer is still called)
    else
      buf_of[p] = {id = p, size = round(R * L.out_size), t0 = 2 * p, t1 = p == n and math.huge or 2 * (last[p] or p)}
      bufs[#bufs + 1] = buf_of[p]
    end
  end
  local top = place(bufs)
  local maxs = 0
  for _, L in ipairs(layers) do
    if not L.view then
      local uses = false
      for _, a in ipairs(args[L]) do uses = uses or a == "S" or a == "T" end
      if uses then
        local sz, t_at = fwd_scratch(L, spec.lanes)
        maxs = math.max(maxs, sz)
        L.infer_t = t_at
      end
    end
  end
  local ws = round(top)
  spec.act_at = {}
  for p, b in pairs(buf_of) do spec.act_at[p] = b.off end
  spec.xin = buf_of[0] and buf_of[0].off or nil
  spec.scratch = maxs > 0 and ws or nil
  ws = ws + round(maxs)
  spec.arena = math.max(ws, V)
end

-- every layer's forward function (before the arena: its size depends on what they use)
local function emit_layers(I, spec, path)
  local F = util.code()
  local ctx = {budget = I.UNROLL_BUDGET, lanes = spec.lanes, vec = spec.target.vec}
  local args, seen = {}, {}
  for _, L in ipairs(spec.layers) do
    L.view = L.alias and (L.inputs[1] ~= 0 or spec.lanes ~= nil)
    if L.fused_into then
      -- an activation stored by its producer (fuse.lua): no function, no call
      args[L] = {}
    elseif not L.view then
      -- the layout of a forward alone (no region kept or made for a backward: conv's
      -- channels-last forms copy one sample at a time)
      L.fwd_only = true
      F:line("/* layer %d: %s %s -> %s (%s:%d:%d)%s */", L.index, L.kind, I.shape_str(L.in_shape),
        I.shape_str(L.out_shape), I.c_comment(path), L.node.line, L.node.col,
        L.folded and string.format(", batchnorm %d folded in", L.folded.index) or "")
      args[L] = I.emit_layer_fn(F, L, "fwd", ctx, spec, seen)
    end
  end
  return F, args
end

---------------------------------------------------------------------------
-- Emission
---------------------------------------------------------------------------
local function float_array(O, decl, vals)
  O:line("%s = {", decl)
  local row = {}
  for k = 1, #vals do
    row[#row + 1] = util.flt(vals[k])
    if #row == 8 or k == #vals then
      O:line("    %s,", table.concat(row, ", "))
      row = {}
    end
  end
  if #vals == 0 then O:line("    0.0f,") end
  O:line("};")
end

local function prelude(I, O, V)
  -- the SIMD vocabulary of the forward emitters, as the trainer's, single-threaded
  I.simd_prelude(O, V, false)
  O:line("")
end

-- NAME_init: the folded layout from the trainer's params/buffers (before the fp-contract
-- pragma, and one operation a statement, so it rounds exactly as the generator does)
local function emit_init(O, spec, pname)
  local uses_fold = false
  for _, L in ipairs(spec.layers) do uses_fold = uses_fold or L.folded ~= nil end
  if uses_fold then
  O:line("static void fold_(float *restrict w, float *restrict b, const float *W, const float *bias, const float *bn_g,")
  O:line("                  const float *bn_b, const float *bn_m, const float *bn_v, double eps, int cout, int per)")
  O:open("{")
  O:open("for (int o = 0; o < cout; o++) {")
  O:line("double a = sqrt((double)bn_v[o] + eps);")
  O:line("a = (double)bn_g[o] / a;")
  O:line("if (w) for (int j = 0; j < per; j++) { const double t = W[(size_t)o * per + j] * a; w[(size_t)o * per + j] = (float)t; }")
  O:open("if (b) {")
  O:line("double t = (bias ? (double)bias[o] : 0.0) - bn_m[o];")
  O:line("t = t * a;")
  O:line("t = t + bn_b[o];")
  O:line("b[o] = (float)t;")
  O:close()
  O:close()
  O:close()
  O:line("")
  end
  O:line("int %s_init(const float *params, const float *buffers)", spec.name)
  O:open("{")
  O:line("if (!params%s) return -1;", spec.orig_n_buffers > 0 and " || !buffers" or "")
  if spec.orig_n_buffers == 0 then O:line("(void)buffers;") end
  local function src(t) return (t.kind == "param" and "params + " or "buffers + ") .. t.offset end
  for _, L in ipairs(spec.layers) do
    for _, r in ipairs(L.recipe) do
      local dst = string.format("%s + %d", pname, r.dst.offset)
      if r.op == "copy" then
        O:line("memcpy(%s, %s, sizeof(float) * %d); /* %s */", dst, src(r.src[r.dst.suffix]), r.dst.size, r.src[r.dst.suffix].name)
      elseif r.op == "mean" or r.op == "shift" then
        local t = r.op == "mean" and r.bn.running_mean or r.bn.bias
        O:line("memcpy(%s, %s, sizeof(float) * %d); /* %s */", dst, src(t), r.dst.size, t.name)
      elseif r.op == "scale" then -- a = gamma / sqrt(var + eps)
        local bn = r.bn
        O:open("for (int c = 0; c < %d; c++) {", r.dst.size)
        O:line("double a = sqrt((double)(%s)[c] + %.17g);", src(bn.running_var), r.eps)
        O:line("a = (double)(%s)[c] / a;", src(bn.weight))
        O:line("(%s)[c] = (float)a;", dst)
        O:close()
      else
        local bn = r.bn
        local cout = r.dst.shape[1]
        local w, b, W = "NULL", "NULL", "NULL"
        if r.op == "fold_w" then w, W = dst, src(r.src.weight) else b = dst end
        O:line("fold_(%s, %s, %s, %s, %s, %s, %s, %s, %.17g, %d, %d); /* layer %d %s, batchnorm %s folded */", w, b, W,
          (r.op == "fold_b" and r.src.bias) and src(r.src.bias) or "NULL", src(bn.weight), src(bn.bias),
          src(bn.running_mean), src(bn.running_var), r.eps, cout, r.dst.size // cout, L.index, r.dst.suffix,
          L.folded.index)
      end
    end
  end
  O:line("%s_ready_ = 1;", spec.name)
  O:line("return 0;")
  O:close()
  O:line("")
end

local function emit(core, spec, path, text, z, norm, F, args)
  local I = core.internal
  local name, UP = spec.name, spec.name:upper()
  local V, R = spec.target.vec, spec.lanes or spec.train.batch
  local B = spec.train.batch
  local version = cnngen_c and cnngen_c.version or "dev"
  local banner = string.format("/* Generated by cnngen %s --inference from %s (fnv1a64 %s). Do not edit.\n", version,
    I.c_comment(path), util.fnv1a(text))
  local folded = {}
  for _, L in ipairs(spec.layers) do
    if L.folded then folded[#folded + 1] = string.format("%d into %d", L.folded.index, L.index) end
  end
  local summary = string.format(" * %s: input %s, output %s; evaluation mode, batchnorm folded: %s;\n" ..
    " * parameters %s; input normalization %s; chunks of %d sample%s%s. */", name, I.shape_str(spec.input),
    I.shape_str(spec.out_shape), #folded > 0 and table.concat(folded, ", ") or "none",
    z and "baked in" or ("from " .. name .. "_init()"), norm and "folded in" or "none", B, B > 1 and "s" or "",
    spec.lanes and string.format(" (batch-innermost, %d lanes)", R) or "")

  -- header
  local H = util.code()
  H.lines[1] = banner .. summary
  H:line("#ifndef %s_INFER_H", UP)
  H:line("#define %s_INFER_H", UP)
  H:line("")
  H:line("#define %s_INFER_IN_SIZE %d /* floats per input sample, %s */", UP, spec.in_size, I.shape_str(spec.input))
  H:line("#define %s_INFER_OUT_SIZE %d /* floats per output sample (logits), %s */", UP, spec.out_size,
    I.shape_str(spec.out_shape))
  H:line("#define %s_INFER_BATCH %d /* samples per forward chunk */", UP, B)
  H:line("#define %s_INFER_ARENA ((size_t)%d) /* floats in the static arena (%s bytes) */", UP, spec.arena,
    util.commas(4 * spec.arena))
  H:line("#define %s_INFER_N_WEIGHTS ((size_t)%d) /* floats of folded parameters */", UP, spec.n_params)
  if not z then
    H:line("#define %s_INFER_N_PARAMS ((size_t)%d) /* %s_init's params: the trainer's %s_N_PARAMS */", UP,
      spec.orig_n_params, name, UP)
    H:line("#define %s_INFER_N_BUFFERS ((size_t)%d) /* %s_init's buffers: the trainer's %s_N_BUFFERS */", UP,
      spec.orig_n_buffers, name, UP)
  end
  H:line("")
  H:line("#ifdef __cplusplus")
  H:line("extern \"C\" {")
  H:line("#endif")
  H:line("")
  if not z then
    H:line("/* Parameters in the trainer's flat layout (what %s_forward takes; offsets in floats):", name)
    for _, L in ipairs(spec.orig_layers) do
      for _, t in ipairs(L.tensors) do
        H:line(" *   %-9s + %-9d %-28s %s", t.kind == "param" and "params" or "buffers", t.offset, t.name,
          #t.shape > 0 and table.concat(t.shape, "x") or "scalar")
      end
    end
    H:line(" * Folds the batch norms and copies everything it needs (the arrays may be freed");
    H:line(" * afterwards). Returns 0, or -1 on a NULL pointer. Call once before %s_infer. */", name)
    H:line("int %s_init(const float *params, const float *buffers);", name)
    H:line("")
  end
  H:line("/* Logits y[n][%s_INFER_OUT_SIZE] of n samples x[n][%s_INFER_IN_SIZE] (the spec's input", UP, UP)
  H:line(" * layout, C-order), processed %d at a time in a static arena: not reentrant. Returns 0,", B)
  H:line(" * or -1 if n < 0, a pointer is NULL with n > 0%s. */", z and "" or (", or " .. name .. "_init has not run"))
  H:line("int %s_infer(const float *x, int n, float *y);", name)
  H:line("")
  H:line("/* Row-wise softmax of n rows of %s_INFER_OUT_SIZE logits (p may equal logits). */", UP)
  H:line("void %s_softmax(const float *logits, int n, float *p);", name)
  H:line("")
  H:line("#ifdef __cplusplus")
  H:line("}")
  H:line("#endif")
  H:line("")
  H:line("#endif")

  -- C file
  local O = util.code()
  O.lines[1] = banner .. summary .. "\n/*\n * layer  kind            input -> output"
  for _, L in ipairs(spec.layers) do
    O.lines[#O.lines + 1] = string.format(" * %5d  %-14s  %s%s", L.index, L.kind,
      I.shape_str(L.in_shape) .. " -> " .. I.shape_str(L.out_shape),
      L.folded and string.format("  (+ batchnorm %d folded)", L.folded.index) or
      (L.mod == BN_EVAL and "  (running statistics)" or ""))
  end
  O.lines[#O.lines + 1] = " */"
  O:line("#include <math.h>")
  O:line("#include <stddef.h>")
  O:line("#include <string.h>")
  O:line("")
  O:line("#include \"%s_infer.h\"", name)
  O:line("")
  local pname = name .. "_w_"
  if spec.n_params == 0 then
    O:line("/* no parameters */")
    if not z then
      O:line("static int %s_ready_;", name)
      O:line("")
      O:line("int %s_init(const float *params, const float *buffers)", name)
      O:open("{")
      O:line("(void)params;")
      O:line("(void)buffers;")
      O:line("%s_ready_ = 1;", name)
      O:line("return 0;")
      O:close()
    end
    O:line("")
  elseif z then
    local vals = {}
    for _, L in ipairs(spec.layers) do
      for _, r in ipairs(L.recipe) do
        local v = fold_values(r, z)
        for k = 1, r.dst.size do vals[r.dst.offset + k] = v[k] end
      end
    end
    O:line("/* folded parameters (%s floats) */", util.commas(spec.n_params))
    float_array(O, string.format("static const float %s[%d]", pname, math.max(spec.n_params, 1)), vals)
    O:line("")
  else
    O:line("static float %s[%d]; /* folded parameters, written by %s_init */", pname, math.max(spec.n_params, 1), name)
    O:line("static int %s_ready_;", name)
    O:line("")
    emit_init(O, spec, pname)
  end
  O:line("static float %s_arena_[%d] __attribute__((aligned(64)));", name, spec.arena)
  O:line("")
  if norm then
    O:line("/* input normalization per channel: (x - mean) * (1 / std) */")
    float_array(O, string.format("static const float %s_nmean_[%d]", name, norm.C), norm.mean)
    float_array(O, string.format("static const float %s_ninv_[%d]", name, norm.C), norm.inv)
    O:line("")
  end
  prelude(I, O, V)

  for _, l in ipairs(F.lines) do O.lines[#O.lines + 1] = l end

  local IN, OUT = spec.in_size, spec.out_size
  local function norm_expr(src, i)
    if not norm then return src end
    local c = norm.inner == 1 and i or string.format("%s / %d", i, norm.inner)
    return string.format("(%s - %s_nmean_[%s]) * %s_ninv_[%s]", src, name, c, name, c)
  end
  if spec.lanes then
    O:line("/* [nb][%d] -> [%d][%d], lanes >= nb zero%s */", IN, IN, R, norm and ", inputs normalized" or "")
    O:line("static void to_lanes_(const float *restrict x, float *restrict xl, int nb)")
    O:open("{")
    O:line("for (int i = 0; i < %d; i++)", IN)
    O:line("    for (int b = 0; b < %d; b++)", R)
    O:line("        xl[(size_t)i * %d + b] = b < nb ? %s : 0.0f;", R, norm_expr(string.format("x[(size_t)b * %d + i]", IN), "i"))
    O:close()
    O:line("")
    O:line("/* [%d][%d] -> [nb][%d] */", OUT, R, OUT)
    O:line("static void from_lanes_(const float *restrict xl, float *restrict y, int nb)")
    O:open("{")
    O:line("for (int b = 0; b < nb; b++)")
    O:line("    for (int i = 0; i < %d; i++)", OUT)
    O:line("        y[(size_t)b * %d + i] = xl[(size_t)i * %d + b];", OUT, R)
    O:close()
    O:line("")
  elseif norm then
    O:line("static void normalize_(const float *restrict x, float *restrict xn, int nb)")
    O:open("{")
    O:line("for (int b = 0; b < nb; b++)")
    O:line("    for (int i = 0; i < %d; i++)", IN)
    O:line("        xn[(size_t)b * %d + i] = %s;", IN, norm_expr(string.format("x[(size_t)b * %d + i]", IN), "i"))
    O:close()
    O:line("")
  end

  O:line("/* one chunk of nb <= %d samples */", B)
  O:line("static void forward_(const float *restrict x, int nb, float *restrict y)")
  O:open("{")
  O:line("float *const ws = %s_arena_;", name)
  if spec.lanes then
    O:line("to_lanes_(x, ws + %d, nb);", spec.xin)
  elseif norm then
    O:line("normalize_(x, ws + %d, nb);", spec.xin)
  end
  local function at(q)
    if q == 0 and not spec.xin then return "x" end
    return "ws + " .. spec.act_at[q]
  end
  local cur
  for p, L in ipairs(spec.layers) do
    if L.view then
      O:line("/* layer %d: %s is a view of its input */", L.index, L.kind)
    elseif L.fused_into then
      O:line("/* layer %d: %s fused into layer %d's stores */", L.index, L.kind, L.fused_into.index)
    else
      local map = {P = pname .. (L.pbase == 0 and "" or (" + " .. L.pbase)), S = "ws + " .. tostring(spec.scratch),
        T = L.infer_t and ("ws + " .. tostring(spec.scratch + L.infer_t)),
        x = at(L.inputs[1]), y = at(p), nb = "nb",
        training = "0"}
      for j, q in ipairs(L.inputs) do map["x" .. j] = at(q) end
      local a = {}
      for _, arg in ipairs(args[L]) do
        a[#a + 1] = assert(map[arg], "inference: no argument " .. arg)
      end
      O:line("%s(%s);", L.fn.fwd, table.concat(a, ", "))
    end
    cur = at(p)
  end
  if spec.lanes then
    O:line("from_lanes_(%s, y, nb);", cur)
  else
    O:line("memcpy(y, %s, sizeof(float) * (size_t)nb * %d);", cur, OUT)
  end
  O:line("(void)ws;")
  O:close()
  O:line("")
  O:line("int %s_infer(const float *x, int n, float *y)", name)
  O:open("{")
  O:line("if (n < 0 || (n > 0 && (!x || !y))%s) return -1;", z and "" or (" || !" .. name .. "_ready_"))
  O:open("for (int done = 0; done < n; done += %d) {", B)
  O:line("const int nb = n - done < %d ? n - done : %d;", B, B)
  O:line("forward_(x + (size_t)done * %d, nb, y + (size_t)done * %d);", IN, OUT)
  O:close()
  O:line("return 0;")
  O:close()
  O:line("")
  O:line("void %s_softmax(const float *logits, int n, float *p)", name)
  O:open("{")
  O:open("for (int s = 0; s < n; s++) {")
  O:line("const float *z = logits + (size_t)s * %d;", OUT)
  O:line("float *q = p + (size_t)s * %d;", OUT)
  O:line("float m = z[0];")
  O:line("for (int i = 1; i < %d; i++) if (z[i] > m) m = z[i];", OUT)
  O:line("double sum = 0.0;")
  O:line("for (int i = 0; i < %d; i++) { q[i] = expf(z[i] - m); sum += q[i]; }", OUT)
  O:line("for (int i = 0; i < %d; i++) q[i] = (float)(q[i] / sum);", OUT)
  O:close()
  O:close()
  return O:text(), H:text()
end

---------------------------------------------------------------------------
-- Command line
---------------------------------------------------------------------------
function M.main(core, args)
  local I = core.internal
  local path, outdir, wpath, npath, batch, target, no_fuse
  local i = 1
  while i <= #args do
    local a = args[i]
    local function val()
      i = i + 1
      if not args[i] then error({usage = a .. " needs a value"}, 0) end
      return args[i]
    end
    local ok, err = pcall(function()
      if a == "--inference" then return
      elseif a == "-h" or a == "--help" then error({help = true}, 0)
      elseif a == "-o" then outdir = val()
      elseif a == "--weights" then wpath = val()
      elseif a == "--norm" then npath = val()
      elseif a == "--target" then target = val()
      elseif a == "--no-fuse" then no_fuse = true
      elseif a == "--batch" then
        local v = tonumber(val())
        batch = v and math.tointeger(v)
        if not batch or batch < 1 or batch > 65536 then error({usage = "--batch needs an integer in 1..65536"}, 0) end
      elseif a:sub(1, 1) == "-" then error({usage = "unknown option " .. a}, 0)
      elseif path then error({usage = "one spec at a time (got " .. path .. " and " .. a .. ")"}, 0)
      else path = a end
    end)
    if not ok then
      if type(err) ~= "table" then error(err, 0) end
      if err.help then io.stdout:write(USAGE); return 0 end
      io.stderr:write("cnngen: " .. err.usage .. "\n" .. USAGE)
      return 2
    end
    i = i + 1
  end
  if not path then io.stderr:write("cnngen: no spec given\n" .. USAGE); return 2 end
  local h, err = io.open(path, "rb")
  if not h then io.stderr:write("cnngen: cannot read " .. tostring(err) .. "\n"); return 1 end
  local text = h:read("a")
  h:close()
  local errs = util.errors(20)
  local orig = core.load(text, errs)
  local spec = orig and core.load(text, errs)
  if not spec then
    I.report(path, text, errs)
    return 1
  end
  -- the rewritten net, planned at the inference batch (its own parameter layout)
  spec.orig_layers, spec.orig_n_params, spec.orig_n_buffers = orig.layers, orig.n_params, orig.n_buffers
  spec.in_size = I.prod(spec.input)
  rewrite(orig, spec)
  spec.train.batch = batch or 1
  spec.lanes = nil
  local T = I.schedule.target(target or "native")
  if not T then io.stderr:write("cnngen: --target: expected avx512, avx2, generic or native, got " .. target .. "\n"); return 2 end
  local ok, perr = I.plan(spec, {target = T, no_fuse = no_fuse, inference = true})
  if not ok then io.stderr:write("cnngen: " .. perr .. "\n"); return 1 end
  for _, L in ipairs(spec.layers) do L.parallel = false end
  local R = spec.lanes or spec.train.batch
  local z, norm
  if wpath then
    z, err = load_weights(wpath, orig)
    if not z then io.stderr:write("cnngen: " .. err .. "\n"); return 1 end
  end
  if npath then
    norm, err = load_norm(npath, spec)
    if not norm then io.stderr:write("cnngen: " .. err .. "\n"); return 1 end
  end
  local F, args = emit_layers(I, spec, path)
  arena(spec, I.VEC, R, norm, args, I.place)
  if spec.arena >= (1 << 31) then
    io.stderr:write(string.format("cnngen: the arena needs %s floats at batch %d (limit 2^31)\n",
      util.commas(spec.arena), spec.train.batch))
    return 1
  end
  local c, hdr = emit(core, spec, path, text, z, norm, F, args)
  if outdir == "" then io.stderr:write("cnngen: -o '': the output directory is an empty path\n"); return 1 end
  outdir = outdir or "."
  -- mkdir -p, as the trainer's export does; the new directories go again on error
  local made, merr = cnngen_c.mkdir_p(outdir)
  if not made then io.stderr:write("cnngen: " .. merr .. "\n"); return 1 end
  local base = (outdir:sub(-1) == "/" and outdir or outdir .. "/") .. spec.name .. "_infer"
  local wok, werr = I.write_atomic({{path = base .. ".h", text = hdr}, {path = base .. ".c", text = c}})
  if not wok then
    for k = #made, 1, -1 do os.remove(made[k]) end
    io.stderr:write("cnngen: " .. tostring(werr) .. "\n")
    return 1
  end
  io.stdout:write(base .. ".c\n")
  return 0
end

return M
