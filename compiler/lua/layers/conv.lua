-- conv1d / conv2d: cross-correlation with bias, multi-channel in and out, groups,
-- zero padding (int, [h, w], valid, same, full), stride and dilation.
-- PyTorch: nn.Conv1d / nn.Conv2d; weight [C_out, C_in/groups, (KH,) KW], bias [C_out].
local util = require("util")
local window = require("window")
local wv = require("layers.conv_wv")
local wino = require("layers.conv_wino")
local wino4 = require("layers.conv_wino4")
local cvw_mod = require("layers.conv_cvw")
local fuse = require("fuse")
local M = {kinds = {"conv1d", "conv2d"}}

-- every forward form stores through fuse.s / fuse.v (fuse.lua)
function M.fuses_act(L) return true end
-- the batch-innermost dx stores once per input value: it can mask them with a relu's
-- derivative (fuse.lua), x and dx sharing their layout
function M.masks_dx(L)
  return L.sched.layout == "lanes" and L.sched.dx.apart and (L.sched.dx.form == "lanes" or L.sched.dx.form == "wino" or L.sched.dx.form == "wino4")
end
-- the same stores can add to the gradient another reader of x wrote (fuse.dstore)
M.dx_accumulates = M.masks_dx

function M.schema(kind)
  return {
    {key = "out", type = "posint", required = true},
    {key = "kernel", type = "int2", required = true},
    {key = "stride", type = "int2", default = {1, 1}},
    {key = "padding", type = "padding", default = {0, 0}},
    {key = "dilation", type = "int2", default = {1, 1}},
    {key = "groups", type = "posint", default = 1},
    {key = "bias", type = "bool", default = true},
  }
end

local function is2d(L) return L.kind == "conv2d" end

-- Per-axis padding (lo, hi) from the option; PyTorch's rules for valid/same/full.
local function padding(L, k, d, s)
  local p = L.opt.padding
  if p == "valid" then return 0, 0 end
  if p == "full" then return d * (k - 1), d * (k - 1) end
  if p == "same" then
    if s ~= 1 then
      util.fail(L.opt["@padding"], L.kind .. ".padding: 'same' needs stride 1 (as in PyTorch)")
    end
    local total = d * (k - 1)
    return total // 2, total - total // 2 -- the odd extra goes on the far side
  end
  return nil
end

function M.shape(L)
  local o = L.opt
  local rank = is2d(L) and 3 or 2
  if #L.in_shape ~= rank then
    util.fail(L.node, string.format("layer %d (%s): needs a %s input, got %s",
      L.index, L.kind, is2d(L) and "[C, H, W]" or "[C, L]", L.shape_str(L.in_shape)))
  end
  for _, key in ipairs({"kernel", "stride", "dilation", "padding"}) do
    local v = o[key]
    if not is2d(L) and o["@" .. key] and o["@" .. key].t == "seq" then
      util.fail(o["@" .. key], string.format("%s.%s: expected one integer for a 1-D layer, got a list", L.kind, key))
    end
  end
  local cin = L.in_shape[1]
  if cin % o.groups ~= 0 or o.out % o.groups ~= 0 then
    util.fail(o["@groups"] or L.node, string.format("layer %d (%s): groups %d must divide input channels %d and out %d",
      L.index, L.kind, o.groups, cin, o.out))
  end
  local axes, names = {}, {"height", "width"}
  local first = is2d(L) and 1 or 2
  for a = first, 2 do
    local I = is2d(L) and L.in_shape[a + 1] or L.in_shape[2]
    local k, s, d = o.kernel[a], o.stride[a], o.dilation[a]
    local lo, hi = padding(L, k, d, s)
    if lo == nil then lo, hi = o.padding[a], o.padding[a] end
    local need = d * (k - 1) + 1
    if I + lo + hi < need then
      util.fail(L.node, string.format("layer %d (%s): kernel %d with dilation %d needs %d inputs, got %d after padding%s",
        L.index, L.kind, k, d, need, I + lo + hi, is2d(L) and (" (" .. names[a] .. ")") or ""))
    end
    axes[a] = {I = I, O = window.out_size(I, k, s, d, lo, hi), K = k, S = s, D = d, lo = lo, hi = hi}
  end
  if not is2d(L) then axes[1] = window.unit_axis() end
  L.geom = {h = axes[1], w = axes[2]}
  L.cin, L.cout, L.groups = cin, o.out, o.groups
  L.cin_g, L.cout_g = cin // o.groups, o.out // o.groups
  if is2d(L) then
    L.out_shape = {o.out, axes[1].O, axes[2].O}
  else
    L.out_shape = {o.out, axes[2].O}
  end
end

function M.tensors(L)
  local g = L.geom
  local fan_in = L.cin_g * g.h.K * g.w.K
  local wshape = is2d(L) and {L.cout, L.cin_g, g.h.K, g.w.K} or {L.cout, L.cin_g, g.w.K}
  local t = {{suffix = "weight", shape = wshape, init = "kaiming", fan_in = fan_in}}
  if L.opt.bias then
    t[2] = {suffix = "bias", shape = {L.cout}, init = "bias", fan_in = fan_in}
  end
  return t
end

function M.macs(L)
  local g = L.geom
  return util.mul(util.mul(util.mul(L.cout, g.h.O * g.w.O), L.cin_g), g.h.K * g.w.K)
end

function M.window(L) return L.geom end

---------------------------------------------------------------------------
-- Schedules (see schedule.lua). The forms:
--   straight  one expression per output (tiny layers); dx computed with dW
--   loop      NCHW loops over channels, the kernel window unrolled; dx with dW
--   wv        row vectors: NCHW kept, vectors of 16 along output rows, zero-padded
--             planes (conv_wv.lua); stride 1, groups 1, rows of 16 or more
--   cv        channel vectors: each sample moved to a padded channels-last copy,
--             vectors of 16 output channels; stride 1, groups 1; dx in the cv form
--             or the wv form (rows fill more of a vector than the input channels)
--   lanes     batch-innermost [C][H][W][R] activations (the network's layout from
--             batch 16): register tiles of channels x lane vectors
-- Tiles are counted in accumulators of 16 floats; T.acc is the target's budget.
---------------------------------------------------------------------------
local function fill(n, V) return n / ((n + V - 1) // V * V) end

local function lanes_tiles(L, T)
  local ld, NV = util.largest_divisor, L.lanes_R // L.vec
  -- a tile of TC channels x TB lane vectors, TB at most cap. When the channel blocks
  -- alone give no parallel work: every lane vector in one tile (PY = 1: threads share
  -- the output rows instead) when the channels leave room for them, so few channels
  -- (1 input channel of dx) still give 8 or more independent accumulators; else at
  -- most half the lanes, so the lane blocks give the parallel work.
  local function tile(TC, cap, nblocks)
    local t = {TB = ld(NV, cap)}
    if L.groups == 1 and nblocks == 1 and NV >= 2 then
      if t.TB == NV and TC * NV <= T.acc and TC * NV >= 8 then t.PY = 1 else t.TB = ld(NV, math.min(cap, NV // 2)) end
    end
    return t
  end
  local TC = ld(L.cout_g, math.min(16, T.acc))
  local TCI = ld(L.cin_g, math.min(16, T.acc))
  local KW, KK = L.geom.w.K, L.geom.h.K * L.geom.w.K
  -- dW: every tap of the kernel at once when it fits, else one kernel row a pass
  local rows = KK <= T.acc and L.geom.h.K or 1
  local fwd, dx = tile(TC, math.max(1, T.acc // TC), L.cout_g // TC), tile(TCI, math.max(1, T.acc // TCI), L.cin_g // TCI)
  fwd.TC, dx.TCI = TC, TCI
  return {
    fwd = fwd,
    dx = dx,
    dw = {TCW = ld(L.cout_g, math.max(1, T.acc // (rows * KW))), rows = rows},
  }
end

-- A schedule mixing the passes of three candidates (schedule.lua, "F|W|X"): the
-- batch-innermost forms without padded copies (a padded copy is shared between passes:
-- the forward's kept input is what the padded dW reads, and the scratch is sized for
-- the candidates as listed); every pass then reads only x, dy and the weights.
function M.compose_ok(L, S)
  return S.layout == "lanes" and not (S.fwd.pad or S.dw.pad or S.dx.pad)
end

-- "v * k", or v when k is 1 (a stride or dilation in an emitted index)
local function times(v, k) return k == 1 and v or string.format("%s * %d", v, k) end

local function cv_tiles(L, T, nch, width)
  local TV = util.largest_divisor((nch + L.vec - 1) // L.vec, 4)
  return {TV = TV, TP = math.max(1, math.min(width, T.acc // TV))}
end

function M.candidates(L, T)
  if L.lanes_layout then
    local t = lanes_tiles(L, T)
    local lanes = {name = "lanes", layout = "lanes", fwd = {form = "lanes", tile = t.fwd},
      dw = {form = "lanes", tile = t.dw}, dx = {form = "lanes", tile = t.dx, apart = true}}
    local c = {lanes}
    -- tiny layers: every loop but the lane vectors' written out
    if M.macs(L) <= L.budget then
      table.insert(c, 1, {name = "lanes+straight", layout = "lanes", fwd = {form = "lanes", tile = t.fwd, unroll = true},
        dw = {form = "lanes", tile = t.dw, unroll = true}, dx = {form = "lanes", tile = t.dx, apart = true, unroll = true}})
    end
    local g = L.geom
    local padded = g.h.lo + g.h.hi + g.w.lo + g.w.hi > 0
    if padded or g.h.K * g.w.K > 1 then
      -- dx of one input channel: tiles of TX inputs along a row share the dy vectors
      -- they load (dx_row_tiles); 2 lane vectors (a cache line) x 4 inputs
      local dxt = t.dx
      local NV = L.lanes_R // L.vec
      if t.dx.TCI == 1 and g.w.S == 1 and g.w.K > 1 and T.acc >= 12 and L.geom.w.I >= 4 then
        dxt = {TCI = 1, TB = util.largest_divisor(NV, 2), TX = 4}
        if L.groups == 1 and L.cin_g == 1 and NV // dxt.TB < 2 then dxt.PY = 1 end
      end
      c[2] = {name = "lanes+pad", layout = "lanes", fwd = {form = "lanes", tile = t.fwd, pad = padded},
        dw = {form = "lanes", tile = t.dw, pad = padded}, dx = {form = "lanes", tile = dxt, apart = true, pad = true}}
      -- dy padded along rows only: one region of unrolled taps per border row pattern
      -- (code O(K^3)), no multiply-adds on the zero rows: with a kernel large next to
      -- the output (LeNet's 5x5 on 10x10: 49% of the padded dx's multiply-adds are on
      -- zeros) it is the first that fits the code budget after the unpadded one; last
      -- for a layer reading the network's input, whose dx training never computes
      -- (the smaller code, for the tuner to overrule when dx is wanted)
      if g.h.K > 1 then
        table.insert(c, (L.inputs and L.inputs[1] == 0) and 3 or 2, {name = "lanes+padw", layout = "lanes",
          fwd = c[2].fwd, dw = c[2].dw, dx = {form = "lanes", tile = dxt, apart = true, pad = "w"}})
      end
    end
    -- the forward with the channel blocks inside each output position (CBI, for the
    -- tuner): the window's input vectors come from memory once and serve every block
    -- from L1, where the lanes order reads the input once per channel block. A tile
    -- of the most lane vectors that leave 4 or more channels (whole cache lines of
    -- a position's samples). On the Xeon of session 16: ResNet-20's stride-2 3x3
    -- forward 1.2-1.5x faster than the lanes order.
    local NV = L.lanes_R // L.vec
    local cbi
    if L.groups == 1 and L.cout_g >= 4 and NV >= 2 then
      local TB = util.largest_divisor(NV, math.max(1, T.acc // 4))
      local TC = util.largest_divisor(L.cout_g, math.min(16, T.acc // TB))
      if TC > 1 and L.cout_g // TC > 1 then
        cbi = {form = "lanes", tile = {TB = TB, TC = TC, CBI = 1}}
        -- dx likewise: the input-channel blocks inside each input position
        local TCI = util.largest_divisor(L.cin_g, math.min(16, T.acc // TB))
        local dx = {form = "lanes", tile = t.dx, apart = true}
        if TCI > 1 and L.cin_g // TCI > 1 then dx = {form = "lanes", tile = {TB = TB, TCI = TCI, CBI = 1}, apart = true} end
        c[#c + 1] = {name = "lanes+cbi", layout = "lanes", fwd = cbi, dw = {form = "lanes", tile = t.dw}, dx = dx, variants = false}
        -- the CBI forward alone (the Xeon's stride-2 layers: forward 1.5x, dx in
        -- the CBI order slower than the lanes order)
        if dx.tile.CBI then
          c[#c + 1] = {name = "lanes+cbifwd", layout = "lanes", fwd = cbi, dw = lanes.dw, dx = lanes.dx, variants = false}
        end
      end
    end
    -- the CBI forward with the lanes order's own tile (its channels x lane vectors),
    -- dW and dx as the lanes order's: the window from L1 for every block and the
    -- tile's register use. 2-core Zen 3, ResNet-20 b64 (AVX2, tile 8 channels x 1
    -- vector): the stride-2 16 -> 32 forward 1.33-1.53 -> 1.06-1.08 ms, 32 -> 64
    -- 1.10-1.21 -> 0.95 ms; dx in that order no faster (not offered)
    -- (more than one channel block: one block is the lanes order itself, and no PY)
    local lt = t.fwd
    if L.groups == 1 and NV >= 2 and L.cout_g // lt.TC > 1
       and not (cbi and cbi.tile.TB == lt.TB and cbi.tile.TC == lt.TC) then
      c[#c + 1] = {name = "lanes+cbi+lt", layout = "lanes", fwd = {form = "lanes", tile = {TB = lt.TB, TC = lt.TC, CBI = 1}},
        dw = lanes.dw, dx = lanes.dx, variants = false}
    end
    -- Winograd F(2x2, 3x3) for the forward, dx and dW (conv_wino.lua; dW direct when
    -- its buffers would not fit a thread's stack comfortably): first
    -- for layers of channels and outputs enough to amortize its transforms
    if wino.ok(L) then
      -- (M too large for lane vectors, VA nil: the lane form sums across the lanes at
      -- every chunk, as many operations as its multiply-adds at 7x7; the GEMM form
      -- instead where the input channels come in whole vectors: ResNet-20's 64-channel
      -- 7x7 dW, b32 on one Zen 4 core, 1.03 -> 0.72 ms)
      local dwt = wino.dw_tile(L, T)
      if dwt and not dwt.VA then dwt = wino.dw_tile(L, T, nil, 2, true) or dwt end
      local wdw = dwt and {form = "wino", tile = dwt} or {form = "lanes", tile = t.dw}
      local wdx = {form = "wino", tile = wino.tile(L, T, L.cin), apart = true}
      local wfwd = {form = "wino", tile = wino.tile(L, T, L.cout)}
      local at = wino.preferred(L) and 1 or #c + 1
      table.insert(c, at, {name = "lanes+wino", layout = "lanes", fwd = wfwd, dw = wdw, dx = wdx})
      -- the products' channels in blocks of a divisor of them (wino.tile): next, for
      -- when the even blocks' code is over the budget (AVX-512's 64 channels), and for
      -- the tuner
      local dfwd = {form = "wino", tile = wino.tile(L, T, L.cout, nil, true)}
      local ddx = {form = "wino", tile = wino.tile(L, T, L.cin, nil, true), apart = true}
      if dfwd.tile.TC ~= wfwd.tile.TC or ddx.tile.TC ~= wdx.tile.TC then
        table.insert(c, at + 1, {name = "lanes+wino+tcd", layout = "lanes", fwd = dfwd, dw = wdw, dx = ddx, variants = false})
      end
      -- for the tuner, on cores whose L2 holds more: dW with the transformed rows of
      -- every lane vector at once (up to 1 MiB); the CBI forward with Winograd's dx
      -- and dW (either tile)
      local dwl = wino.dw_tile(L, T, 1024)
      dwl = dwt and dwl and dwl.TB ~= dwt.TB and {form = "wino", tile = dwl} or nil
      if dwl then c[#c + 1] = {name = "lanes+wino+dwl", layout = "lanes", fwd = wfwd, dw = dwl, dx = wdx, variants = false} end
      if cbi then
        c[#c + 1] = {name = "lanes+cbi+wino", layout = "lanes", fwd = cbi, dw = wdw, dx = wdx, variants = false}
        if dwl then c[#c + 1] = {name = "lanes+cbi+wino+dwl", layout = "lanes", fwd = cbi, dw = dwl, dx = wdx, variants = false} end
      end
      -- F(4x4, 3x3) for the forward and dx (conv_wino4.lua), dW as lanes+wino's; for
      -- the tuner, dW with F(4x4) too (36 multiply-adds per channel pair and 4x4 outputs
      -- instead of 64, for larger transforms), its products as lane vectors (dw4) or as
      -- a GEMM over vectors of input channels (dw4g, conv_wino.lua's G form)
      if wino4.ok(L) then
        local fwd4 = {form = "wino4", tile = wino4.tile(L, T, L.cout)}
        local dx4 = {form = "wino4", tile = wino4.tile(L, T, L.cin), apart = true}
        c[#c + 1] = {name = "lanes+wino4", layout = "lanes", fwd = fwd4, dw = wdw, dx = dx4}
        for _, v in ipairs({{"lanes+wino4+dw4", wino4.dw_tile(L, T)}, {"lanes+wino4+dw4g", wino4.dw_tile(L, T, nil, true)}}) do
          if v[2] then
            c[#c + 1] = {name = v[1], layout = "lanes", fwd = fwd4, dw = {form = "wino4", tile = v[2]}, dx = dx4, variants = false}
          end
        end
      end
      -- for the tuner: F(2x2)'s dW in the GEMM form
      local dwg = not (dwt and dwt.G) and wino.dw_tile(L, T, nil, 2, true)
      if dwg then
        c[#c + 1] = {name = "lanes+wino+dwg", layout = "lanes", fwd = wfwd, dw = {form = "wino", tile = dwg}, dx = wdx, variants = false}
      end
      -- for the tuner: the forward's and dx's tiles of the other number of lane vectors
      -- (conv_wino.lua's M.tb: 2 when they fit L1, else 1), where the lanes allow it
      local forms = {{"wino", wino}, wino4.ok(L) and {"wino4", wino4} or nil}
      for _, f in ipairs(forms) do
        local form, mod = f[1], f[2]
        local tb = 3 - mod.tile(L, T, L.cout).TB
        local fwd = mod.tile(L, T, L.cout, tb)
        if fwd.TB == tb then
          c[#c + 1] = {name = "lanes+" .. form .. "+tb" .. tb, layout = "lanes", fwd = {form = form, tile = fwd},
            dw = wdw, dx = {form = form, tile = mod.tile(L, T, L.cin, tb), apart = true}, variants = false}
        end
      end
    end
    return c
  end
  local straight = {name = "straight", layout = "nchw", fwd = {form = "straight"}, dw = {form = "straight"},
    dx = {form = "straight", apart = false}}
  local loop = {name = "loop", layout = "nchw", fwd = {form = "loop"}, dw = {form = "loop"},
    dx = {form = "loop", apart = false}}
  local c = {}
  if wv.ok(L) then
    c[#c + 1] = {name = "wv", layout = "nchw", fwd = {form = "wv", tile = wv.fwd_tile(L, T)},
      dw = {form = "wv", tile = wv.dw_tile(L, T)}, dx = {form = "wv", tile = wv.dx_tile(L, T), apart = true}}
  end
  if wv.tileable(L) then
    local dw = {TV = util.largest_divisor((L.cout + L.vec - 1) // L.vec, 4)}
    dw.TPR = math.max(1, T.acc // dw.TV)
    local cv = {name = "cv", layout = "nchw", fwd = {form = "cv", tile = cv_tiles(L, T, L.cout, L.geom.w.O)},
      dw = {form = "cv", tile = dw}, dx = {form = "cv", tile = cv_tiles(L, T, L.cin, L.geom.w.I), apart = true}}
    local cvw
    if wv.dx_ok(L) then
      cvw = {name = "cv+dx:wv", layout = "nchw", fwd = cv.fwd, dw = cv.dw,
        dx = {form = "wv", tile = wv.dx_tile(L, T), apart = true}}
    end
    -- dx in the row-vector form when rows fill more of a vector than the channels
    if cvw and fill(L.geom.w.I, L.vec) > fill(L.cin, L.vec) then cv, cvw = cvw, cv end
    c[#c + 1] = cv
    c[#c + 1] = cvw
    -- Winograd F(2x2, 3x3) for the forward and dx on the same copies (conv_cvw.lua),
    -- dW as the cv form's, Winograd's (the heuristic's from 64 channels, below) or wv's
    if cvw_mod.ok(L) then
      local ft, xt = cvw_mod.tile(L, T, L.cin, L.cout), cvw_mod.tile(L, T, L.cout, L.cin)
      if ft and xt then
        c[#c + 1] = {name = "cv+wino", layout = "nchw", fwd = {form = "cvw", tile = ft}, dw = cv.dw,
          dx = {form = "cvw", tile = xt, apart = true}, variants = false}
        -- dW in Winograd's form too, from the same copies
        c[#c + 1] = {name = "cv+wino+dw", layout = "nchw", fwd = {form = "cvw", tile = ft},
          dw = {form = "cvw", tile = cvw_mod.dw_tile(L, T)}, dx = {form = "cvw", tile = xt, apart = true}, variants = false}
        -- dW as the row-vector form's, from its padded planes (conv64 at batch 8 on
        -- 2 Zen 3 cores: the cv form's dW 38 ms, wv's 16)
        if wv.ok(L) then
          c[#c + 1] = {name = "wv+wino", layout = "nchw", fwd = {form = "cvw", tile = ft},
            dw = {form = "wv", tile = wv.dw_tile(L, T)}, dx = {form = "cvw", tile = xt, apart = true}, variants = false}
        end
      end
    end
  end
  -- strided: the channel-vector form's forward and dW on the padded copy read at the
  -- stride, its dx scattered (backward_dx_cv_strided). Before it the strided layers of
  -- a batch below the batch-innermost layout's had the loop forms alone (ResNet-18's
  -- stem, its 3x3 stride-2 convolutions and projections at batch 8)
  if not wv.tileable(L) and L.groups == 1 and M.strided(L) then
    local dw = {TV = util.largest_divisor((L.cout + L.vec - 1) // L.vec, 4)}
    dw.TPR = math.max(1, T.acc // dw.TV)
    c[#c + 1] = {name = "cv", layout = "nchw", fwd = {form = "cv", tile = cv_tiles(L, T, L.cout, L.geom.w.O)},
      dw = {form = "cv", tile = dw}, dx = {form = "cv", tile = cv_tiles(L, T, L.cin, L.geom.w.O), apart = true}}
  end
  -- 64 or more channels in and out: Winograd on channels-last copies, dW too, first.
  -- F(2x2, 3x3) takes 16 multiply-adds for 36, and its products run as GEMMs. VGG-16 at
  -- 224, batch 2, 2 Zen 3 cores (bench/tune.py, each layer alone): its 8 signatures past
  -- the first 1.29-2.47x the row-vector form, cv+wino+dw the fastest of 6 and within 1 %
  -- and 11 % of wv+wino on the 2 others; the network with it on all of them 1.67x
  -- the row-vector form's (bench/ab.py), the tuner's mix 1.63x. (conv64, 64 -> 64 on
  -- 56x56 at batch 8: wv+wino 1.02x cv+wino+dw, both over the row-vector form.)
  if L.cin >= 64 and L.cout >= 64 then
    for i, s in ipairs(c) do
      if s.name == "cv+wino+dw" then table.remove(c, i); table.insert(c, 1, s); break end
    end
  end
  -- the heuristic's order: straight-line for tiny layers, then row vectors, channel
  -- vectors from 6 output channels, then loops
  local tiny = M.macs(L) <= L.budget
  local first
  if tiny then first = {straight}
  elseif c[1] and (c[1].fwd.form == "wv" or L.cout >= 6) then first = {}
  else first = {loop} end
  local out = {}
  for _, s in ipairs(first) do out[#out + 1] = s end
  for _, s in ipairs(c) do out[#out + 1] = s end
  if not tiny then
    if first[1] ~= loop then out[#out + 1] = loop end
    -- straight-line code grows with the multiply-adds: offered up to 4x the budget
    if M.macs(L) <= 4 * L.budget then out[#out + 1] = straight end
  else
    out[#out + 1] = loop
  end
  return out
end

-- sizes used by both passes
local function dims(L)
  local g = L.geom
  return {
    IHW = g.h.I * g.w.I, OHW = g.h.O * g.w.O, KHW = g.h.K * g.w.K,
    IN = L.in_size, OUT = L.out_size,
  }
end

local function tap_name(t) return "w" .. t.k end

-- taps of an axis that some output reads (with padding larger than the input, e.g. a
-- 3x3 kernel, padding 1 on a 1x1 input, the outer taps meet only padding)
local function used_taps(ax)
  local used = {}
  for _, r in ipairs(window.regions(ax)) do
    for k = r.k0, r.k1 do used[k] = true end
  end
  return used
end

-- some output reads some input (not so for, e.g., kernel 4, dilation 2, 'same' padding
-- on a 1-row input: every tap meets padding and the output is the bias alone)
local function any_tap(g)
  return next(used_taps(g.h)) ~= nil and next(used_taps(g.w)) ~= nil
end

-- Declare the kernel window of (co, ci) as scalars w0..w{KHW-1} (the taps some
-- output reads: the others would be unused variables).
local function load_taps(C, L, wc)
  local g, n = L.geom, L.geom.h.K * L.geom.w.K
  local uy, ux = used_taps(g.h), used_taps(g.w)
  for ky = 0, g.h.K - 1 do
    local parts = {}
    for kx = 0, g.w.K - 1 do
      local k = ky * g.w.K + kx
      if uy[ky] and ux[kx] then parts[#parts + 1] = string.format("w%d = %s[%d]", k, wc, k) end
    end
    if #parts > 0 then C:line("const float %s;", table.concat(parts, ", ")) end
  end
  return n
end

-- Output-channel loops: calls body(co, g) with co an affine expression and g the
-- group (name or constant). Groups become an outer loop over g.
local function channel_loops(C, L, unroll, body)
  util.loop(C, "g", 0, L.groups - 1, unroll, function(g)
    util.loop(C, "col", 0, L.cout_g - 1, unroll, function(col)
      body(util.aff(0):term(g, L.cout_g):term(col, 1), g)
    end)
  end)
end

local function join_terms(terms, empty)
  if #terms == 0 then return empty end
  local lines, cur = {}, {}
  for i, t in ipairs(terms) do
    cur[#cur + 1] = t
    if #cur == 4 or i == #terms then
      lines[#lines + 1] = table.concat(cur, " + ")
      cur = {}
    end
  end
  return table.concat(lines, "\n        + ")
end

function M.forward(L, C, ctx)
  local form = L.sched.fwd.form
  if form == "wv" then return wv.forward(L, C) end
  if form == "cv" then return M.forward_cv(L, C, ctx) end
  if form == "cvw" then return cvw_mod.forward(L, C, M.cv_scratch, dims(L)) end
  local d = dims(L)
  local unroll = form == "straight"
  C:line("const float *restrict w = %s;", L.t.weight)
  if L.opt.bias then C:line("const float *restrict b = %s;", L.t.bias) end
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("const float *restrict xn = x + (size_t)n * %d;", d.IN)
  C:line("float *restrict yn = y + (size_t)n * %d;", d.OUT)
  if unroll and not any_tap(L.geom) then C:line("(void)xn; (void)w; /* no tap meets the input */") end
  if unroll then
    -- straight-line: one expression per output element
    channel_loops(C, L, true, function(co)
      local coi = co.c
      window.windows(C, L.geom, true, function(out, taps)
        local terms = {}
        if L.opt.bias then terms[1] = string.format("b[%d]", coi) end
        for ci = 0, L.cin_g - 1 do
          local cig = (coi // L.cout_g) * L.cin_g + ci
          for _, t in ipairs(taps) do
            terms[#terms + 1] = string.format("w[%d] * xn[%d]",
              (coi * L.cin_g + ci) * d.KHW + t.k, cig * d.IHW + t.at.c)
          end
        end
        C:line("yn[%d] = %s;", coi * d.OHW + out.c, fuse.s(L, join_terms(terms, "0.0f")))
      end)
    end)
  else
    channel_loops(C, L, false, function(co, g)
      C:line("float *restrict yc = yn + %s;", tostring(co:scale(d.OHW)))
      C:line("for (int i = 0; i < %d; i++) yc[i] = %s;", d.OHW, L.opt.bias and ("b[" .. tostring(co) .. "]") or "0.0f")
      util.loop(C, "ci", 0, L.cin_g - 1, false, function(ci)
        local cig = util.aff(0):term(g, L.cin_g):term(ci, 1)
        local wci = co:scale(L.cin_g * d.KHW):term(ci, d.KHW)
        C:line("const float *restrict xc = xn + %s;", tostring(cig:scale(d.IHW)))
        C:line("const float *restrict wc = w + %s;", tostring(wci))
        if not any_tap(L.geom) then C:line("(void)xc; (void)wc; /* no tap meets the input */") end
        load_taps(C, L, "wc")
        window.windows(C, L.geom, false, function(out, taps)
          local terms = {}
          for _, t in ipairs(taps) do
            terms[#terms + 1] = string.format("%s * xc[%s]", tap_name(t), tostring(t.at))
          end
          if #terms > 0 then
            C:line("yc[%s] += %s;", tostring(out), join_terms(terms))
          end
        end)
      end)
      if L.sched.act then C:line("for (int i = 0; i < %d; i++) yc[i] = %s;", d.OHW, fuse.s(L, "yc[i]")) end
    end)
  end
  C:close()
  return {"P", "x", "y", "nb"}
end

function M.backward(L, C, ctx)
  local form = L.sched.dw.form
  if form == "wv" then return wv.backward(L, C) end
  if form == "cv" then return M.backward_cv(L, C, ctx) end
  if form == "cvw" then return cvw_mod.backward_dw(L, C, M.cv_scratch, dims(L)) end
  local d = dims(L)
  local unroll = form == "straight"
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  if unroll then
    C:open("for (int n = 0; n < nb; n++) {")
    C:line("const float *restrict xn = x + (size_t)n * %d;", d.IN)
    C:line("const float *restrict dyn = dy + (size_t)n * %d;", d.OUT)
    C:line("float *restrict dxn = dx + (size_t)n * %d;", d.IN)
    if not any_tap(L.geom) then C:line("(void)xn; (void)dyn; (void)w; (void)gw; /* no tap meets the input */") end
    local dxterms, gwterms, gbterms = {}, {}, {}
    for co = 0, L.cout - 1 do
      local g = co // L.cout_g
      window.windows(C, L.geom, true, function(out, taps)
        local o = co * d.OHW + out.c
        gbterms[co] = gbterms[co] or {}
        table.insert(gbterms[co], string.format("dyn[%d]", o))
        for ci = 0, L.cin_g - 1 do
          local cig = g * L.cin_g + ci
          for _, t in ipairs(taps) do
            local wi = (co * L.cin_g + ci) * d.KHW + t.k
            local xi = cig * d.IHW + t.at.c
            dxterms[xi] = dxterms[xi] or {}
            table.insert(dxterms[xi], string.format("w[%d] * dyn[%d]", wi, o))
            gwterms[wi] = gwterms[wi] or {}
            table.insert(gwterms[wi], string.format("dyn[%d] * xn[%d]", o, xi))
          end
        end
      end)
    end
    for i = 0, d.IN - 1 do
      C:line("dxn[%d] = %s;", i, join_terms(dxterms[i] or {}, "0.0f"))
    end
    for i = 0, L.cout * L.cin_g * d.KHW - 1 do
      if gwterms[i] then C:line("gw[%d] += %s;", i, join_terms(gwterms[i])) end
    end
    if L.opt.bias then
      for co = 0, L.cout - 1 do
        if gbterms[co] then C:line("gb[%d] += %s;", co, join_terms(gbterms[co])) end
      end
    end
    C:close()
    return {"P", "G", "x", "dy", "dx", "nb"}
  end
  C:line("memset(dx, 0, sizeof(float) * (size_t)nb * %d);", d.IN)
  channel_loops(C, L, false, function(co, g)
    local cos = tostring(co)
    util.loop(C, "ci", 0, L.cin_g - 1, false, function(ci)
      local cig = util.aff(0):term(g, L.cin_g):term(ci, 1)
      local wci = co:scale(L.cin_g * d.KHW):term(ci, d.KHW)
      C:line("const float *restrict wc = w + %s;", tostring(wci))
      C:line("float *restrict gwc = gw + %s;", tostring(wci))
      load_taps(C, L, "wc")
      for ky = 0, L.geom.h.K - 1 do
        local acc = {}
        for kx = 0, L.geom.w.K - 1 do acc[#acc + 1] = string.format("g%d = 0.0f", ky * L.geom.w.K + kx) end
        C:line("float %s;", table.concat(acc, ", "))
      end
      C:open("for (int n = 0; n < nb; n++) {")
      C:line("const float *restrict xc = x + (size_t)n * %d + %s;", d.IN, tostring(cig:scale(d.IHW)))
      C:line("float *restrict dxc = dx + (size_t)n * %d + %s;", d.IN, tostring(cig:scale(d.IHW)))
      C:line("const float *restrict dyc = dy + (size_t)n * %d + %s;", d.OUT, tostring(co:scale(d.OHW)))
      if not any_tap(L.geom) then C:line("(void)xc; (void)dxc; (void)dyc; (void)wc; /* no tap meets the input */") end
      window.windows(C, L.geom, false, function(out, taps, info)
        if #taps == 0 then return end
        if not info.scoped then C:open("{") end
        C:line("const float d = dyc[%s];", tostring(out))
        for _, t in ipairs(taps) do
          C:line("g%d += d * xc[%s]; dxc[%s] += w%d * d;", t.k, tostring(t.at), tostring(t.at), t.k)
        end
        if not info.scoped then C:close() end
      end)
      C:close()
      for k = 0, d.KHW - 1 do
        C:line("gwc[%d] += g%d;", k, k)
      end
    end)
    if L.opt.bias then
      C:open("{")
      C:line("float s = 0.0f;")
      C:line("for (int n = 0; n < nb; n++)")
      C:line("    for (int i = 0; i < %d; i++) s += dy[(size_t)n * %d + %s + i];", d.OHW, d.OUT, tostring(co:scale(d.OHW)))
      C:line("gb[%s] += s;", cos)
      C:close()
    end
  end)
  return {"P", "G", "x", "dy", "dx", "nb"}
end


---------------------------------------------------------------------------
-- Batch-innermost ([C][H][W][R]): register-blocked direct convolution. A tile holds
-- TC output channels x TB vectors of 16 samples in registers across the input
-- channels and the unrolled kernel window; every input vector loaded feeds TC FMAs.
---------------------------------------------------------------------------
local largest_divisor = util.largest_divisor

-- Floats of the layer's own scratch S (what the backward reads of the forward's: the
-- padded input) and of the network's temporary region T a pass uses (padded dy, turned
-- or transformed weights, Winograd's blocks: nothing kept from one call to the next)
local function scratch_sizes(L)
  local S = L.sched
  if S.layout == "lanes" then
    -- each Winograd pass transforms the weights into T (none keeps it for another;
    -- Winograd's schedules pad nothing)
    local s = wino.dw_scratch(L)
    if S.fwd.form == "wino" or S.dx.form == "wino" then s = math.max(s, wino.scratch(L)) end
    if S.fwd.form == "wino4" or S.dx.form == "wino4" then s = math.max(s, wino4.scratch(L)) end
    if s > 0 then return 0, s end
    if not (S.fwd.pad or S.dx.pad) then return 0, 0 end
    local pl = M.lanes_pad(L, L.lanes_R)
    return pl.kept, pl.total
  end
  if S.fwd.form == "wv" then local r = wv.scratch(L); return r.kept, r.total end
  if S.fwd.form == "cvw" then local r = cvw_mod.layout(L, M.cv_scratch); return r.kept, r.total end
  if S.fwd.form ~= "cv" then return 0, 0 end
  local r = M.cv_scratch(L)
  return r.kept, r.total + (S.dx.form == "wv" and wv.dyp_size(L) or 0)
end
function M.scratch(L) return (scratch_sizes(L)) end
function M.temp(L) return select(2, scratch_sizes(L)) end

-- Loops over groups, channel blocks and lane blocks (outermost first), the first one
-- with work to share marked parallel: every iteration writes its own outputs.
-- body(g, cb) runs inside the lane-block loop over v0.
-- an unrolled loop's body in braces of its own (its declarations repeat)
local function braced(C, unroll, f)
  return function(v)
    if unroll then C:open("{") end
    f(v)
    if unroll then C:close() end
  end
end

-- unroll (the straight-line schedule): every loop written out, v0 a constant per block
-- rows: the body splits its row loops across threads (tile PY), so these loops do not
-- traffic: the floats of {input, weights} a pass streams (the loop order's choice)
local function block_loops(C, L, nblocks, name, NV, TB, body, unroll, rows, traffic)
  local par_g = L.groups > 1 and not rows
  local par_c = not par_g and nblocks > 1 and not rows
  local function loop(var, hi, par, f)
    if unroll then util.loop(C, var, 0, hi, true, f) else util.ploop(C, var, 0, hi, par, f) end
  end
  -- One group, several lane blocks and channel blocks: the order that streams fewer
  -- floats. With the channel blocks outside, each one reads the whole input (its lane
  -- vectors, a lane block at a time) and keeps its block of weights in cache: nblocks x
  -- the input. With the lane blocks outside, a lane block's channel blocks read the same
  -- input lines, which stay in L2/L3 between them, and the whole weights are read once
  -- a lane block: NV/TB x the weights. ResNet-20 at batch 128 (6.4 MB inputs, 9 KB of
  -- weights): the forward +20 %, the step +15 % with the lane blocks outside; VGG-16's
  -- 512-channel layers (9.4 MB of weights, inputs of 0.3-1 MB) keep the channel blocks
  -- outside. Threads split the two loops together (collapse(2), an iteration at a time:
  -- cnngen.lua's CG_PARALLEL_FOR2).
  if not unroll and not rows and L.groups == 1 and NV // TB > 1 and nblocks > 1
      and nblocks * traffic.input > (NV // TB) * traffic.weights then
    if L.parallel then C:line("CG_PARALLEL_FOR2") end
    C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
    util.loop(C, name, 0, nblocks - 1, false, function(cb) body(0, cb) end)
    C:close()
    return
  end
  loop("g", L.groups - 1, par_g and L.parallel, function(g)
    loop(name, nblocks - 1, par_c and L.parallel, function(cb)
      if unroll then
        for v0 = 0, NV - 1, TB do
          C:open("{")
          C:line("const int v0 = %d;", v0)
          body(g, cb)
          C:close()
        end
        return
      end
      if not par_g and not par_c and not rows and NV // TB > 1 then util.par(C, L) end
      C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
      body(g, cb)
      C:close()
    end)
  end)
end

-- The padded lanes variant ("lanes+pad"): the input copied once into zero-padded
-- planes [C][Hp][Wp][R] (forward; kept for dW) and dy into planes wide enough that
-- every input position of dx receives every tap of its phase, so each pass is one
-- region of unrolled taps instead of one per border pattern (code size O(K^2), not
-- O(K^4)), at the price of the copies and the multiply-adds on the zeros.
--   gx:  the forward's geometry on the padded input (padding 0)
--   gdy: the transposed geometry on the padded dy (pdy = dy's offset per axis)
function M.lanes_pad(L, R)
  local function in_ax(a) return {I = a.I + a.lo + a.hi, O = a.O, K = a.K, S = a.S, D = a.D, lo = 0, hi = 0} end
  local function dy_ax(a)
    local P = math.max(0, -((a.lo - (a.K - 1) * a.D) // a.S)) -- ceil(((K-1)D - lo) / S)
    local O2 = math.max(P + a.O, (a.I - 1 + a.lo) // a.S + P + 1)
    return {I = a.I, O = O2, K = a.K, S = a.S, D = a.D, lo = a.lo + P * a.S, hi = 0}, P
  end
  local g = L.geom
  local r = {gx = {h = in_ax(g.h), w = in_ax(g.w)}}
  local dh, ph = dy_ax(g.h)
  local dw, pw = dy_ax(g.w)
  -- pad = "w": rows as they are (dx's row regions come from the real geometry)
  if L.sched.dx.pad == "w" then dh, ph = g.h, 0 end
  r.gdy, r.pdy = {h = dh, w = dw}, {ph, pw}
  -- xp in S (kept floats, kept for dW), dyp in T (total floats)
  r.kept = L.sched.fwd.pad and L.cin * r.gx.h.I * r.gx.w.I * R or 0
  if L.sched.fwd.pad then r.xp = 0 end
  if L.sched.dx.pad then r.dyp = 0 end
  r.total = L.sched.dx.pad and L.cout * dh.O * dw.O * R or 0
  return r
end

-- Copy nplanes planes of H x W x R lanes from src into zero-padded planes of gp's
-- input extents (or output extents when off = {top, left} is given: the dy copy).
local function lanes_pad_copy(C, L, dst, src, nplanes, H, W, gp, R, off)
  local Hp, Wp, top, left
  if off then
    Hp, Wp, top, left = gp.h.O, gp.w.O, off[1], off[2]
  else
    Hp, Wp, top, left = gp.h.I, gp.w.I, L.geom.h.lo, L.geom.w.lo
  end
  local right, bottom = Wp - left - W, Hp - top - H
  C:line("/* %s -> zero-padded planes %dx%d (lanes) */", src, Hp, Wp)
  util.par(C, L)
  C:open("for (int pl = 0; pl < %d; pl++) {", nplanes)
  C:line("const float *restrict s = %s + (size_t)pl * %d;", src, H * W * R)
  C:line("float *restrict d = %s + (size_t)pl * %d;", dst, Hp * Wp * R)
  if top > 0 then C:line("memset(d, 0, sizeof(float) * %d);", top * Wp * R) end
  C:open("for (int r = 0; r < %d; r++) {", H)
  C:line("float *restrict dr = d + (size_t)(r + %d) * %d;", top, Wp * R)
  if left > 0 then C:line("memset(dr, 0, sizeof(float) * %d);", left * R) end
  C:line("memcpy(dr + %d, s + (size_t)r * %d, sizeof(float) * %d);", left * R, W * R, W * R)
  if right > 0 then C:line("memset(dr + %d, 0, sizeof(float) * %d);", (left + W) * R, right * R) end
  C:close()
  if bottom > 0 then C:line("memset(d + %d, 0, sizeof(float) * %d);", (top + H) * Wp * R, bottom * Wp * R) end
  C:close()
end

-- The CBI order's outer loop: the lane blocks (shared by the threads when there are
-- two or more, else the rows are), the channel blocks (var) inside each position of
-- the body, so the vectors of its window are read from memory once and stay in L1
-- for every block
local function cbi_lanes(C, L, NV, TB, var, body)
  if NV // TB > 1 then util.par(C, L) end
  C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TB)
  body(0, var)
  C:close()
end

-- "+ n" or "- |n|": a constant offset after a pointer
local function plus(n) return n < 0 and ("- " .. -n) or ("+ " .. n) end

-- The multiply-adds of one channel's taps in the direct lanes kernels (the forward over
-- an input channel, dx over an output channel): per tap, TB vectors v of src (named
-- xn..v) from the tap's offset (`shifted`: src already points at the window's first tap),
-- into the accumulators a<v>_<t> of NT channels, weight wc[t * wstride + tap].
local function tap_fmas(C, taps, src, shifted, xn, R, V, TB, NT, wstride)
  for _, tp in ipairs(taps) do
    local loads = {}
    if shifted then
      for v = 0, TB - 1 do loads[#loads + 1] = string.format("%s%d = VLOAD(%s %s)", xn, v, src, plus(tp.at.c * R + v * V)) end
    else
      local at = tostring(tp.at:scale(R))
      for v = 0, TB - 1 do loads[#loads + 1] = string.format("%s%d = VLOAD(%s + %s + %d)", xn, v, src, at, v * V) end
    end
    C:open("{")
    C:line("const cg_v %s;", table.concat(loads, ", "))
    for t = 0, NT - 1 do
      local fmas = {}
      for v = 0, TB - 1 do fmas[#fmas + 1] = string.format("a%d_%d += wc[%d] * %s%d;", v, t, t * wstride + tp.k, xn, v) end
      C:line(table.concat(fmas, " "))
    end
    C:close()
  end
end

-- Software prefetch in the interior windows of the direct lanes kernels: the lines of
-- the taps that no earlier window read, `ahead` floats on (at least 1 KiB). Each channel
-- plane is its own stream and a layer reads 16 to 64 of them at once, more than the
-- hardware prefetchers follow; on Zen 4, 16x28x28 forward at batch 64: 1.39 -> 1.30 ms
-- with warm caches, 2.33 -> 1.70 ms with cold ones (2 threads).
-- A tap is new along an axis when no earlier window (S, 2S, ... inputs back) read its
-- input, i.e. no other tap lies a multiple of S further on: at stride 1 the last tap of
-- each axis, the far corner alone; at stride 2 the last two of each, four lines a
-- channel, where the far corner alone left the middle row and the even columns to
-- stall. `dir` is 1 where tap k reads input k*D on (the forward), -1 where it reads
-- -k*D (dx, whose windows walk dy).
local function fresh(ax, k, dir)
  for k2 = 0, ax.K - 1 do
    local on = dir * (k2 - k) * ax.D -- how far tap k2 reads past tap k
    if on > 0 and on % ax.S == 0 then return false end
  end
  return true
end

local function prefetch_fresh(C, geo, taps, base, R, V, TB, step, rel, dir)
  if #taps ~= geo.h.K * geo.w.K then return end
  local ahead = math.max(4 * step * R, 256)
  for _, tp in ipairs(taps) do
    if fresh(geo.h, tp.ky, dir) and fresh(geo.w, tp.kx, dir) then
      for v = 0, TB - 1 do
        if rel then
          C:line("__builtin_prefetch(%s %s);", base, plus(tp.at.c * R + v * V + ahead))
        else
          C:line("__builtin_prefetch(%s + %s + %d);", base, tostring(tp.at:scale(R)), v * V + ahead)
        end
      end
    end
  end
end

local function vec_list(fmt, n, ...)
  local t = {}
  for v = 0, n - 1 do t[#t + 1] = string.format(fmt, v, ...) end
  return table.concat(t, ", ")
end

-- the Winograd form's two passes (conv_wino.lua)
local function forward_wino(L, C, R, V)
  local WK = L.cin * 9
  local emitter = L.sched.fwd.form == "wino4" and wino4 or wino
  emitter.emit(C, L, R, V, {src = "x", nci = L.cin, dst = "y", nco = L.cout, geo = emitter.fwd_geom(L),
    tile = L.sched.fwd.tile,
    bias = L.opt.bias and function(co) return string.format("(%s)[%s]", L.t.bias, co) end or nil,
    wt = function(co, ci, k) return string.format("%s[%s * %d + %s * 9 + %d]", L.t.weight, co, WK, ci, k) end,
    store = function(off, v) return string.format("VSTORE(y + %s, %s);", off, fuse.v(L, v)) end})
  return {"P", "T", "x", "y"}
end

-- dx: dy correlated with the kernel flipped, channels swapped (this pass's output
-- channel ci reads w[co][ci][2 - ky][2 - kx])
local function backward_dx_wino(L, C, R, V)
  local WK = L.cin * 9
  local emitter = L.sched.dx.form == "wino4" and wino4 or wino
  emitter.emit(C, L, R, V, {src = "dy", nci = L.cout, dst = "dx", nco = L.cin, geo = emitter.dx_geom(L),
    tile = L.sched.dx.tile,
    wt = function(ci, co, k) return string.format("%s[%s * %d + %s * 9 + %d]", L.t.weight, co, WK, ci, 8 - k) end,
    store = function(off, v)
      return fuse.dstore(L, "dx + " .. off, "x + " .. off, v)
    end})
  return L.sched.dmask and {"P", "T", "x", "dy", "dx"} or {"P", "T", "dy", "dx"}
end

function M.forward_lanes(L, C, ctx)
  if L.sched.fwd.form == "wino" or L.sched.fwd.form == "wino4" then return forward_wino(L, C, ctx.lanes, ctx.vec) end
  local d, R, V = dims(L), ctx.lanes, ctx.vec
  local NV = R // V
  local TC, TB = L.sched.fwd.tile.TC, L.sched.fwd.tile.TB
  local unroll = L.sched.fwd.unroll
  local WK = L.cin_g * d.KHW -- weights per output channel
  local geo, src, IHW, used = L.geom, "x", d.IHW, {"P", "x", "y"}
  if L.sched.fwd.pad then
    local pl = M.lanes_pad(L, R)
    C:line("float *restrict xp = S + %d;", pl.xp)
    lanes_pad_copy(C, L, "xp", "x", L.cin, L.geom.h.I, L.geom.w.I, pl.gx, R)
    geo, src, IHW, used = pl.gx, "xp", pl.gx.h.I * pl.gx.w.I, {"P", "S", "x", "y"}
  end
  C:line("const float *restrict w = %s;", L.t.weight)
  if L.opt.bias then C:line("const float *restrict bias = %s;", L.t.bias) end
  local PY = L.sched.fwd.tile.PY == 1
  local CBI = L.sched.fwd.tile.CBI == 1
  local function blocks(body)
    if not CBI then return block_loops(C, L, L.cout_g // TC, "cb", NV, TB, body, unroll, PY, {input = L.cin_g * IHW * R, weights = L.cout_g * WK}) end
    cbi_lanes(C, L, NV, TB, "cb", body)
  end
  blocks(function(g, cb)
    local co0 = util.aff(0):term(g, L.cout_g):term(cb, TC)
    -- wb: the block's weights, declared where a tap reads them (CBI: outputs whose
    -- window lies in the padding alone read none)
    local function bases(xg, wb)
      if wb then C:line("const float *restrict wb = w + %s;", tostring(co0:scale(WK))) end
      if xg then C:line("const float *restrict xg = %s + %s + v0 * %d;", src, tostring(util.aff(0):term(g, L.cin_g * IHW * R)), V) end
      if not any_tap(geo) then C:line("%s(void)xg; /* no tap meets the input */", wb and "(void)wb; " or "") end
      C:line("float *restrict yb = y + %s + v0 * %d;", tostring(co0:scale(d.OHW * R)), V)
    end
    if CBI then
      C:line("const float *restrict xg = %s + v0 * %d;", src, V)
    else
      bases(true, true)
    end
    window.windows(C, geo, unroll, function(out, taps, info)
      if not info.scoped then C:open("{") end
      -- CBI: the window's base pointer once a position; its taps at constant offsets
      -- from it (one pointer, where an offset per tap leaves gcc short of registers)
      local xbase = "xg"
      if CBI and #taps > 0 then
        C:line("const float *restrict xq = xg + %s;", tostring(util.aff(0, taps[1].at.t):scale(R)))
        xbase = "xq"
      end
      if CBI then C:open("for (int cb = 0; cb < %d; cb++) {", L.cout_g // TC); bases(false, #taps > 0) end
      for t = 0, TC - 1 do
        local init = L.opt.bias and string.format("vsplat(bias[%s])", tostring(co0:add(t))) or "vsplat(0.0f)"
        C:line("cg_v %s;", vec_list("a%d_" .. t .. " = " .. init, TB))
      end
      if #taps > 0 then util.loop(C, "ci", 0, L.cin_g - 1, unroll, braced(C, unroll, function(ci)
        C:line("const float *restrict xc = %s + %s;", xbase, tostring(util.aff(0):term(ci, IHW * R)))
        C:line("const float *restrict wc = wb + %s;", tostring(util.aff(0):term(ci, d.KHW)))
        prefetch_fresh(C, geo, taps, "xc", R, V, TB, geo.w.S, xbase == "xq", 1)
        tap_fmas(C, taps, "xc", xbase == "xq", "x", R, V, TB, TC, WK)
      end)) end
      for t = 0, TC - 1 do
        local st = {}
        for v = 0, TB - 1 do
          st[#st + 1] = string.format("VSTORE(yb + %s, %s);", tostring(out:scale(R):add(t * d.OHW * R + v * V)),
            fuse.v(L, string.format("a%d_%d", v, t)))
        end
        C:line(table.concat(st, " "))
      end
      if CBI then C:close() end
      if not info.scoped then C:close() end
    end, nil, (PY or (CBI and NV // TB == 1)) and L.parallel)
  end)
  return used
end

-- dx of the padded form (stride 1 along rows: every input of a row receives every tap)
-- in tiles of TX consecutive inputs x TB lane vectors x TCI channels: a dy vector
-- loaded once feeds every (input, tap) pair of the tile that reads it (up to
-- min(TX, KW) multiply-adds), where a tile of one input loads one per multiply-add.
local function dx_row_tiles(C, L, geo, OHW, TCI, TB, TX, R, V, par)
  local d = dims(L)
  local h, w = geo.h, geo.w
  local rx = window.tregions(w)[1]
  local IW, OW = w.I, w.O
  for _, ry in ipairs(window.tregions(h)) do
    local function tile(ty, tx0, tp)
      C:line("/* inputs %s..+%d of the row: %d taps each */", tx0, tp - 1, #ry.taps * #rx.taps)
      for t = 0, TCI - 1 do
        for j = 0, tp - 1 do C:line("cg_v %s;", vec_list("a%d_" .. t .. "_" .. j .. " = vsplat(0.0f)", TB)) end
      end
      -- rows no tap reaches (a dilation past the padded dy): zeros, no loop over dy
      local any = #ry.taps * #rx.taps > 0
      if any then
        C:line("const float *restrict dyt = dyg + %s;", tostring(util.aff(0):term(ty, OW * R):term(tx0, R)))
        C:open("for (int co = 0; co < %d; co++) {", L.cout_g)
        C:line("const float *restrict dyc = dyt + co * %d;", OHW * R)
        C:line("const float *restrict wc = wg + co * %d;", L.cin_g * d.KHW)
      end
      for _, a in ipairs(ry.taps) do
        -- dy column offsets this kernel row reads, each with its (input, tap) pairs
        local by, order = {}, {}
        for j = 0, tp - 1 do
          for _, b in ipairs(rx.taps) do
            local o = b.c + j
            if not by[o] then by[o] = {}; order[#order + 1] = o end
            table.insert(by[o], {j = j, k = a.k * w.K + b.k})
          end
        end
        table.sort(order)
        for _, o in ipairs(order) do
          local at = (a.c * OW + o) * R
          local loads = {}
          for v = 0, TB - 1 do loads[#loads + 1] = string.format("d%d = VLOAD(dyc + %d)", v, at + v * V) end
          C:open("{")
          C:line("cg_v %s; %s", table.concat(loads, ", "), vec_list("VKEEP(d%d);", TB):gsub(",", ""))
          for _, pr in ipairs(by[o]) do
            local fmas = {}
            for t = 0, TCI - 1 do
              for v = 0, TB - 1 do
                fmas[#fmas + 1] = string.format("a%d_%d_%d += wc[%d] * d%d;", v, t, pr.j, t * d.KHW + pr.k, v)
              end
            end
            C:line(table.concat(fmas, " "))
          end
          C:close()
        end
      end
      if any then C:close() end
      for t = 0, TCI - 1 do
        for j = 0, tp - 1 do
          local inp = util.aff((ry.r * IW + rx.r + j) * R + t * d.IHW * R):term(ty, h.S * IW * R):term(tx0, R)
          local st = {}
          for v = 0, TB - 1 do
            local a = string.format("a%d_%d_%d", v, t, j)
            st[#st + 1] = fuse.dstore(L, string.format("dxb + %s + %d", tostring(inp), v * V),
              string.format("xb + %s + %d", tostring(inp), v * V), a)
          end
          C:line(table.concat(st, " "))
        end
      end
    end
    local n = rx.t1 - rx.t0 + 1
    if par and ry.t1 > ry.t0 then C:line("CG_PARALLEL_FOR") end
    util.loop(C, "ty", ry.t0, ry.t1, false, function(ty)
      local full = n - n % TX
      if full > 0 then
        C:open("for (int tx0 = %d; tx0 < %d; tx0 += %d) {", rx.t0, rx.t0 + full, TX)
        tile(ty, "tx0", TX)
        C:close()
      end
      if n % TX > 0 then
        C:open("{")
        C:line("const int tx1 = %d;", rx.t0 + full)
        tile(ty, "tx1", n % TX)
        C:close()
      end
    end)
  end
end

-- dx gathered: every input position sums w * dy over the output windows that read it
-- (window.twindows), TCI input channels x TB lane vectors per tile.
function M.backward_dx_lanes(L, C, ctx)
  if L.sched.dx.form == "wino" or L.sched.dx.form == "wino4" then return backward_dx_wino(L, C, ctx.lanes, ctx.vec) end
  local d, R, V = dims(L), ctx.lanes, ctx.vec
  local NV = R // V
  local TCI, TB = L.sched.dx.tile.TCI, L.sched.dx.tile.TB
  local TX = L.sched.dx.tile.TX or 1
  local unroll = L.sched.dx.unroll
  local WK = L.cin_g * d.KHW
  local geo, src, OHW, used = L.geom, "dy", d.OHW, {"P", "dy", "dx"}
  if L.sched.dx.pad then
    local pl = M.lanes_pad(L, R)
    C:line("float *restrict dyp = T + %d;", pl.dyp)
    lanes_pad_copy(C, L, "dyp", "dy", L.cout, L.geom.h.O, L.geom.w.O, pl.gdy, R, pl.pdy)
    geo, src, OHW, used = pl.gdy, "dyp", pl.gdy.h.O * pl.gdy.w.O, {"P", "T", "dy", "dx"}
  end
  C:line("const float *restrict w = %s;", L.t.weight)
  local PY = L.sched.dx.tile.PY == 1
  -- CBI: the input-channel blocks inside each input position, as the forward's
  local CBI = L.sched.dx.tile.CBI == 1
  local function blocks(body)
    if not CBI then return block_loops(C, L, L.cin_g // TCI, "cib", NV, TB, body, unroll, PY, {input = L.cout_g * OHW * R, weights = L.cout_g * WK}) end
    cbi_lanes(C, L, NV, TB, "cib", body)
  end
  blocks(function(g, cib)
    local ci0 = util.aff(0):term(g, L.cin_g):term(cib, TCI)
    local function bases(dyg)
      C:line("float *restrict dxb = dx + %s + v0 * %d;", tostring(ci0:scale(d.IHW * R)), V)
      -- the relu's output whose derivative masks the stores (fuse.lua), laid out as dx
      if L.sched.dmask then C:line("const float *restrict xb = x + %s + v0 * %d;", tostring(ci0:scale(d.IHW * R)), V) end
      if dyg then C:line("const float *restrict dyg = %s + %s + v0 * %d;", src, tostring(util.aff(0):term(g, L.cout_g * OHW * R)), V) end
      C:line("const float *restrict wg = w + %s;", tostring(util.aff(0):term(g, L.cout_g * WK):term(cib, TCI * d.KHW)))
      if not any_tap(geo) then C:line("(void)dyg; (void)wg; /* no tap meets the input */") end
    end
    if CBI then C:line("const float *restrict dyg = %s + v0 * %d;", src, V) else bases(true) end
    if TX > 1 then return dx_row_tiles(C, L, geo, OHW, TCI, TB, TX, R, V, PY and L.parallel) end
    window.twindows(C, geo, function(inp, taps, info)
      if not info.scoped then C:open("{") end
      local dybase = "dyg"
      if CBI and #taps > 0 then
        C:line("const float *restrict dq = dyg + %s;", tostring(util.aff(0, taps[1].at.t):scale(R)))
        dybase = "dq"
      end
      if CBI then
        C:open("for (int cib = 0; cib < %d; cib++) {", L.cin_g // TCI)
        bases(false)
        -- a window no tap meets (stride 2 and a 1x1 kernel: every other row) stores zeros
        if #taps == 0 then C:line("(void)wg; /* no tap meets these inputs */") end
      end
      for t = 0, TCI - 1 do C:line("cg_v %s;", vec_list("a%d_" .. t .. " = vsplat(0.0f)", TB)) end
      if #taps > 0 then
        util.loop(C, "co", 0, L.cout_g - 1, unroll, braced(C, unroll, function(co)
          C:line("const float *restrict dyc = %s + %s;", dybase, tostring(util.aff(0):term(co, OHW * R)))
          C:line("const float *restrict wc = wg + %s;", tostring(util.aff(0):term(co, WK)))
          prefetch_fresh(C, geo, taps, "dyc", R, V, TB, 1, dybase == "dq", -1)
          tap_fmas(C, taps, "dyc", dybase == "dq", "d", R, V, TB, TCI, d.KHW)
        end))
      end
      for t = 0, TCI - 1 do
        local st = {}
        for v = 0, TB - 1 do
          local off = tostring(inp:scale(R):add(t * d.IHW * R + v * V))
          st[#st + 1] = fuse.dstore(L, "dxb + " .. off, "xb + " .. off, string.format("a%d_%d", v, t))
        end
        C:line(table.concat(st, " "))
      end
      if CBI then C:close() end
      if not info.scoped then C:close() end
    end, unroll, (PY or (CBI and NV // TB == 1)) and L.parallel)
  end)
  if L.sched.dmask then used[#used + 1] = "x" end
  return used
end

-- the bias's gradient: dy summed over positions and lanes
local function bias_grad_lanes(L, C, d, R, V)
  if not L.opt.bias then return end
  C:line("float *restrict gb = %s;", L.t_grad.bias)
  util.par(C, L)
  C:open("for (int co = 0; co < %d; co++) {", L.cout)
  C:line("cg_v s = vsplat(0.0f);")
  C:line("for (int i = 0; i < %d; i++) s += VLOAD(dy + (size_t)co * %d + i * %d);", d.OHW * (R // V), d.OHW * R, V)
  C:line("gb[co] += vsum(s);")
  C:close()
end

-- dW: for each input channel and kernel row, TCW output channels x KW taps of lane
-- vectors accumulate over every output position and lane, then reduce across lanes.
function M.backward_lanes(L, C, ctx)
  local d, R, V = dims(L), ctx.lanes, ctx.vec
  local NV = R // V
  local g = L.geom
  local KW = g.w.K
  local TCW, rows_at_once = L.sched.dw.tile.TCW, L.sched.dw.tile.rows == g.h.K
  local WK = L.cin_g * d.KHW
  -- with a padded forward, the zero-padded input it kept (so no tap needs a region)
  local geo, xsrc, IHW = L.geom, "x", d.IHW
  if L.sched.dw.pad then
    local pl = M.lanes_pad(L, R)
    geo, xsrc, IHW = pl.gx, string.format("(S + %d)", pl.xp), pl.gx.h.I * pl.gx.w.I
  end
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  bias_grad_lanes(L, C, d, R, V)
  if L.sched.dw.form == "wino" or L.sched.dw.form == "wino4" then
    (L.sched.dw.form == "wino4" and wino4 or wino).emit_dw(C, L, R, V, {gw = "gw"})
    return {"G", "T", "x", "dy"}
  end
  -- every tap of the kernel at once when it fits (TCW output channels x KH*KW taps):
  -- one pass over dy per input channel, the input plane (L1-sized) read by every tap;
  -- else one pass per kernel row (TCW x KW)
  local KK = g.h.K * KW
  local nblocks = L.cout_g // TCW
  local unroll = L.sched.dw.unroll
  local function ploop(var, hi, par, f)
    if unroll then util.loop(C, var, 0, hi, true, braced(C, true, f)) else util.ploop(C, var, 0, hi, par, f) end
  end
  -- The order of the channel loops: the one that streams fewer floats. With the output
  -- channel blocks outside, each reads every input plane (nblocks x the input); with
  -- the input channels outside (threads splitting them, 8 or more), each reads every dy
  -- plane (cin x dy), its own plane staying in L2 across the blocks. ResNet-20's
  -- stride-2 3x3 layers (16 -> 32 and 32 -> 64 channels, batch 64: 26 against 7 M floats
  -- and 103 against 27): the step 1.016 (1.008-1.022) on 2-core Zen 3 (bench/ab.py);
  -- with the two loops' iterations handed out one at a time (CG_PARALLEL_FOR2) 1.004.
  local X, DY = L.cin_g * IHW * R, L.cout_g * d.OHW * R
  local ci_out = L.groups == 1 and not unroll and L.cin_g >= 8 and nblocks > 1
    and L.cin_g * DY + X < nblocks * X + DY
  local function dy_base(co0) C:line("const float *restrict dyb = dy + %s;", tostring(co0:scale(d.OHW * R))) end
  local function x_base(gg, ci)
    C:line("const float *restrict xc = %s + %s;", xsrc, tostring(util.aff(0):term(gg, L.cin_g * IHW * R):term(ci, IHW * R)))
  end
  local function pair_loops(body)
    if ci_out then
      ploop("ci", L.cin_g - 1, L.parallel, function(ci)
        x_base(0, ci)
        util.loop(C, "cb", 0, nblocks - 1, false, function(cb)
          local co0 = util.aff(0):term(cb, TCW)
          dy_base(co0)
          body(0, co0, ci)
        end)
      end)
      return
    end
    ploop("g", L.groups - 1, L.groups > 1 and L.parallel, function(gg)
    ploop("cb", nblocks - 1, L.groups == 1 and L.parallel, function(cb)
      local co0 = util.aff(0):term(gg, L.cout_g):term(cb, TCW)
      dy_base(co0)
      util.loop(C, "ci", 0, L.cin_g - 1, unroll, braced(C, unroll, function(ci)
        x_base(gg, ci)
        body(gg, co0, ci)
      end))
    end)
    end)
  end
  pair_loops(function(gg, co0, ci)
    if not any_tap(geo) then C:line("(void)dyb; (void)xc; /* no tap meets the input */") end
    C:line("float *restrict gwc = gw + %s;", tostring(co0:scale(WK):term(ci, d.KHW)))
    local pass = function(label, ntaps, slot, keep, k_of)
      C:open("{ /* %s */", label)
      for t = 0, TCW - 1 do C:line("cg_v %s;", vec_list("a" .. t .. "_%d = vsplat(0.0f)", ntaps)) end
      window.windows(C, geo, unroll, function(out, taps, info)
        C:open("for (int v = 0; v < %d; v++) {", NV)
        local loads, keepd = {}, {}
        for t = 0, TCW - 1 do
          loads[#loads + 1] = string.format("d%d = VLOAD(dyb + %s + v * %d)", t, tostring(out:scale(R):add(t * d.OHW * R)), V)
          keepd[#keepd + 1] = string.format("VKEEP(d%d);", t)
        end
        C:line("cg_v %s; %s", table.concat(loads, ", "), table.concat(keepd, " "))
        for _, tp in ipairs(taps) do
          local fmas = {}
          for t = 0, TCW - 1 do fmas[#fmas + 1] = string.format("a%d_%d += d%d * xv;", t, slot(tp), t) end
          C:line("{ cg_v xv = VLOAD(xc + %s + v * %d); VKEEP(xv); %s }", tostring(tp.at:scale(R)), V, table.concat(fmas, " "))
        end
        C:close()
      end, keep)
      for t = 0, TCW - 1 do
        local parts = {}
        for j = 0, ntaps - 1 do
          parts[#parts + 1] = string.format("gwc[%d] += vsum(a%d_%d);", t * WK + k_of(j), t, j)
        end
        C:line(table.concat(parts, " "))
      end
      C:close()
    end
    if rows_at_once then
      pass("every tap", KK, function(tp) return tp.k end, function() return true end, function(j) return j end)
    else
      for ky = 0, g.h.K - 1 do
        pass("kernel row " .. ky, KW, function(tp) return tp.kx end, function(ky2) return ky2 == ky end,
          function(j) return ky * KW + j end)
      end
    end
  end)
  return L.sched.dw.pad and {"G", "S", "dy"} or {"G", "x", "dy"}
end


---------------------------------------------------------------------------
-- Channel-vector direct convolution for small batches ([N][C][H][W] activations, as
-- the rest of the network). Inside the layer each sample is moved to a zero-padded
-- channels-last copy, so padding costs no test; a tile holds TP output positions of
-- a row x TV vectors of 16 output channels in registers, every input value
-- broadcast feeds TV FMAs, every weight vector TP FMAs. Stride 1, groups 1.
---------------------------------------------------------------------------
local function ceilv(L, n) return (n + L.vec - 1) // L.vec * L.vec end

-- scratch layout (floats, each region a multiple of 16): the input kept for dW in S
-- (kept floats), a pass's own regions in T (total floats: the network's temporary
-- region, shared by the layers)
function M.cv_scratch(L)
  local g = L.geom
  local CP, CIP = ceilv(L, L.cout), ceilv(L, L.cin)
  local Hp, Wp = g.h.I + g.h.lo + g.h.hi, g.w.I + g.w.lo + g.w.hi
  local Qh, Qw = g.h.D * (g.h.K - 1) - g.h.lo, g.w.D * (g.w.K - 1) - g.w.lo
  local Hq, Wq = g.h.I + g.h.D * (g.h.K - 1), g.w.I + g.w.D * (g.w.K - 1)
  local KK, OHW, IHW = g.h.K * g.w.K, g.h.O * g.w.O, g.h.I * g.w.I
  local r = {CP = CP, CIP = CIP, Hp = Hp, Wp = Wp, Qh = Qh, Qw = Qw, Hq = Hq, Wq = Wq}
  local at = 0
  local function take(name, n) r[name] = at; at = at + ceilv(L, n) end
  -- S: padded channels-last input of every sample (kept for dW; one sample's in a forward
  -- alone, L.fwd_only: the inference export)
  take("XP", (L.fwd_only and 1 or L.batch) * Hp * Wp * L.cin)
  r.kept, at = at, 0
  take("YH", OHW * CP)                    -- one sample's output, channels-last
  take("WT", L.cin * KK * CP)             -- weights as [ci][k][co]
  take("BP", CP)                          -- bias padded to whole vectors
  take("DYH", L.batch * OHW * CP)         -- dy of every sample, channels-last
  take("WF", L.cout * KK * CIP)           -- weights as [co][k][ci]
  if M.strided(L) then
    -- dx scattered (backward_dx_cv_strided): one sample's dx on the padded grid
    r.DYP = at
    take("DXH", Hp * Wp * CIP)
  else
    take("DYP", Hq * Wq * L.cout)         -- one sample's dy, zero-padded for the gather
    take("DXH", IHW * CIP)                -- one sample's dx, channels-last
  end
  r.total = at
  return r
end

-- a stride above 1 on either axis (the channel-vector form's forward and dW read the
-- padded copy at oy * S + ky * D; its dx scatters instead of gathering)
function M.strided(L) return L.geom.h.S > 1 or L.geom.w.S > 1 end

-- row of output tiles: emits loops over x0 (full tiles) and a tail tile
local function cv_row_tiles(C, width, TP, tile)
  local full = width - width % TP
  if full > 0 then
    C:open("for (int x0 = 0; x0 < %d; x0 += %d) {", full, TP)
    tile("x0", TP)
    C:close()
  end
  if width % TP > 0 then
    C:open("{")
    C:line("const int x0 = %d;", full)
    tile("x0", width % TP)
    C:close()
  end
end

-- A cv tile's taps: for tap k = (ky, kx), the TV weight vectors at wr + k * CS (CS: the
-- padded channel count of a tap's row), each times the scalar src[off(ky, kx, p)] of the
-- tile's positions p = 0 .. tp - 1, added to the accumulators a<p>_<v>.
local function cv_taps(C, g, V, CS, TV, tp, src, off)
  for ky = 0, g.h.K - 1 do
    for kx = 0, g.w.K - 1 do
      local k = ky * g.w.K + kx
      local loads = {}
      for v = 0, TV - 1 do loads[#loads + 1] = string.format("w%d = VLOAD(wr + %d)", v, k * CS + v * V) end
      C:open("{")
      C:line("const cg_v %s;", table.concat(loads, ", "))
      util.fma_rows(C, tp, TV, function(p) return string.format("%s[%d]", src, off(ky, kx, p)) end, "w")
      C:close()
    end
  end
end

function M.forward_cv(L, C, ctx)
  local g, d, sc = L.geom, dims(L), M.cv_scratch(L)
  local CP, Cin, Cout, KK = sc.CP, L.cin, L.cout, d.KHW
  local V = L.vec
  local NV = CP // V
  local TV, TP = L.sched.fwd.tile.TV, L.sched.fwd.tile.TP
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict yh = T + %d, *restrict wt = T + %d, *restrict bp = T + %d;", sc.YH, sc.WT, sc.BP)
  C:line("/* weights [co][ci][k] -> [ci][k][co], channels padded to %d */", CP)
  C:line("for (int i = 0; i < %d; i++) wt[i] = 0.0f;", Cin * KK * CP)
  C:line("for (int co = 0; co < %d; co++)", Cout)
  C:line("    for (int j = 0; j < %d; j++) wt[j * %d + co] = w[co * %d + j];", Cin * KK, CP, Cin * KK)
  C:line("for (int co = 0; co < %d; co++) bp[co] = %s;", CP,
    L.opt.bias and string.format("co < %d ? (%s)[co] : 0.0f", Cout, L.t.bias) or "0.0f")
  C:open("for (int n = 0; n < nb; n++) {")
  cvw_mod.pad_input_cl(C, L, d, "xp", sc.XP, sc.Hp, sc.Wp)
  C:line("float *restrict yn = y + (size_t)n * %d;", d.OUT)
  util.par(C, L)
  C:open("for (int oy = 0; oy < %d; oy++) {", g.h.O)
  C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TV)
  cv_row_tiles(C, g.w.O, TP, function(x0, tp)
    for p = 0, tp - 1 do
      local init = {}
      for v = 0, TV - 1 do init[#init + 1] = string.format("a%d_%d = VLOAD(bp + (v0 + %d) * %d)", p, v, v, V) end
      C:line("cg_v %s;", table.concat(init, ", "))
    end
    C:open("for (int ci = 0; ci < %d; ci++) {", Cin)
    C:line("const float *restrict xr = xp + (oy * %d + %s) * %d + ci;", g.h.S * sc.Wp, times(x0, g.w.S), Cin)
    C:line("const float *restrict wr = wt + ci * %d + v0 * %d;", KK * CP, V)
    cv_taps(C, g, V, CP, TV, tp, "xr", function(ky, kx, p) return (ky * g.h.D * sc.Wp + kx * g.w.D + p * g.w.S) * Cin end)
    C:close()
    for p = 0, tp - 1 do
      local st = {}
      for v = 0, TV - 1 do
        st[#st + 1] = string.format("VSTORE(yh + (oy * %d + %s + %d) * %d + (v0 + %d) * %d, %s);", g.w.O, x0, p, CP, v, V,
          fuse.v(L, string.format("a%d_%d", p, v)))
      end
      C:line(table.concat(st, " "))
    end
  end)
  C:close()
  C:close()
  cvw_mod.store_planes(C, "yn", "yh", "co", Cout, d.OHW, CP)
  C:close()
  return {"P", "S", "T", "x", "y", "nb"}
end

-- dW and bias from the saved padded inputs: accumulators over (ci, tap) pairs x
-- vectors of output channels, summed over every sample and position.
function M.backward_cv(L, C, ctx)
  local g, d, sc = L.geom, dims(L), M.cv_scratch(L)
  local CP, Cin, Cout, KK = sc.CP, L.cin, L.cout, d.KHW
  local V = L.vec
  local NV = CP // V
  local TV, TPR = L.sched.dw.tile.TV, L.sched.dw.tile.TPR -- TPR: (ci, tap) pairs per tile
  local npairs = Cin * KK
  C:line("float *restrict gw = %s;", L.t_grad.weight)
  if L.opt.bias then C:line("float *restrict gb = %s;", L.t_grad.bias) end
  C:line("float *restrict dyh = T + %d;", sc.DYH)
  C:line("/* dy of every sample -> channels-last, padded channels zero */")
  util.par(C, L)
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("float *restrict dn = dyh + (size_t)n * %d;", d.OHW * CP)
  -- two loops, not `co < Cout ? dy[..] : 0`: no conditional load for a vectorizer to turn
  -- into a masked one (GCC 12 miscompiled that pattern in relu's backward, see act.lua)
  C:open("for (int i = 0; i < %d; i++) {", d.OHW)
  C:line("for (int co = 0; co < %d; co++) dn[i * %d + co] = dy[(size_t)n * %d + co * %d + i];", Cout, CP, d.OUT, d.OHW)
  if CP > Cout then C:line("for (int co = %d; co < %d; co++) dn[i * %d + co] = 0.0f;", Cout, CP, CP) end
  C:close()
  C:close()
  cvw_mod.bias_grad(C, L, d)
  local function tile(p0expr, np)
    -- pair q = p0 + j: ci = q / KK, tap = q % KK, known at generation time only when p0 is;
    -- p0 is a runtime multiple of TPR, so compute offsets per pair at run time once.
    C:line("int off[%d], gidx[%d];", np, np)
    C:open("for (int j = 0; j < %d; j++) {", np)
    C:line("const int q = %s + j, ci = q / %d, k = q %% %d, ky = k / %d, kx = k %% %d;", p0expr, KK, KK, g.w.K, g.w.K)
    C:line("off[j] = (ky * %d * %d + kx * %d) * %d + ci;", g.h.D, sc.Wp, g.w.D, Cin)
    C:line("gidx[j] = ci * %d + k;", KK)
    C:close()
    local tv = TV
    C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TV)
    do
      for j = 0, np - 1 do C:line("cg_v %s;", vec_list("a" .. j .. "_%d = vsplat(0.0f)", tv)) end
      C:open("for (int n = 0; n < nb; n++) {")
      C:line("const float *restrict xp = S + %d + (size_t)n * %d;", sc.XP, sc.Hp * sc.Wp * Cin)
      C:line("const float *restrict dn = dyh + (size_t)n * %d + v0 * %d;", d.OHW * CP, V)
      C:open("for (int oy = 0; oy < %d; oy++) {", g.h.O)
      C:open("for (int ox = 0; ox < %d; ox++) {", g.w.O)
      C:line("const float *restrict xr = xp + (oy * %d + %s) * %d;", g.h.S * sc.Wp, times("ox", g.w.S), Cin)
      local dl = {}
      for v = 0, tv - 1 do dl[#dl + 1] = string.format("d%d = VLOAD(dn + (oy * %d + ox) * %d + %d)", v, g.w.O, CP, v * V) end
      C:line("const cg_v %s;", table.concat(dl, ", "))
      util.fma_rows(C, np, tv, function(j) return string.format("xr[off[%d]]", j) end, "d")
      C:close()
      C:close()
      C:close()
      for j = 0, np - 1 do
        for v = 0, tv - 1 do
          C:line("for (int l = 0; l < %d && (v0 + %d) * %d + l < %d; l++) gw[((v0 + %d) * %d + l) * %d + gidx[%d]] += a%d_%d[l];",
            V, v, V, Cout, v, V, npairs, j, j, v)
        end
      end
    end
    C:close()
  end
  local full = npairs - npairs % TPR
  if full > 0 then
    util.par(C, L)
    C:open("for (int p0 = 0; p0 < %d; p0 += %d) {", full, TPR)
    tile("p0", TPR)
    C:close()
  end
  if npairs % TPR > 0 then
    C:open("{")
    tile(tostring(full), npairs % TPR)
    C:close()
  end
  return {"G", "S", "T", "dy", "nb"}
end


-- dx of a strided layer, scattered: for each tile of TP outputs along a row x TV vectors
-- of input channels and each tap, the sum over the output channels of dy times the
-- tap's weights (as [co][k][ci]) is added to the padded channels-last dx at the tap's
-- input, oy * S + ky * D (every tap lands inside the padded grid: no bounds tests).
-- Outputs m rows apart, m = (K - 1) * D / S + 1, touch disjoint input rows: the rows go
-- in m phases, each phase's rows and vector blocks shared by the threads. Then the
-- padding is cropped and the sample's planes written.
local function backward_dx_cv_strided(L, C)
  local g, d, sc = L.geom, dims(L), M.cv_scratch(L)
  local CIP, Cin, Cout, KK = sc.CIP, L.cin, L.cout, d.KHW
  local V = L.vec
  local NV = CIP // V
  local TV, TP = L.sched.dx.tile.TV, L.sched.dx.tile.TP
  local m = (g.h.K - 1) * g.h.D // g.h.S + 1
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict wf = T + %d, *restrict dxp = T + %d;", sc.WF, sc.DXH)
  C:line("for (int i = 0; i < %d; i++) wf[i] = 0.0f;", Cout * KK * CIP)
  C:line("for (int co = 0; co < %d; co++)", Cout)
  C:line("    for (int ci = 0; ci < %d; ci++)", Cin)
  C:line("        for (int k = 0; k < %d; k++) wf[(co * %d + k) * %d + ci] = w[(co * %d + ci) * %d + k];", KK, KK, CIP, Cin, KK)
  C:open("for (int n = 0; n < nb; n++) {")
  C:line("const float *restrict dn = dy + (size_t)n * %d;", d.OUT)
  C:line("float *restrict dxn = dx + (size_t)n * %d;", d.IN)
  C:line("memset(dxp, 0, sizeof(float) * %d);", sc.Hp * sc.Wp * CIP)
  for r = 0, m - 1 do
    local rows = (g.h.O - r + m - 1) // m
    if rows > 0 then
      if m > 1 then C:line("/* rows %d + %d t: their taps' input rows do not meet */", r, m) end
      if L.parallel then C:line("CG_PARALLEL_FOR2") end
      C:open("for (int t = 0; t < %d; t++) {", rows)
      C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TV)
      C:line("const int oy = %d + t * %d;", r, m)
      cv_row_tiles(C, g.w.O, TP, function(x0, tp)
        -- the taps a loop (the sum over the output channels is each one's work): the
        -- code does not grow with the kernel
        C:open("for (int ky = 0; ky < %d; ky++) {", g.h.K)
        C:open("for (int kx = 0; kx < %d; kx++) {", g.w.K)
        for p = 0, tp - 1 do C:line("cg_v %s;", vec_list("a" .. p .. "_%d = vsplat(0.0f)", TV)) end
        C:open("for (int co = 0; co < %d; co++) {", Cout)
        C:line("const float *restrict dr = dn + co * %d + oy * %d + %s;", d.OHW, g.w.O, x0)
        C:line("const float *restrict wr = wf + (co * %d + ky * %d + kx) * %d + v0 * %d;", KK, g.w.K, CIP, V)
        local loads = {}
        for v = 0, TV - 1 do loads[#loads + 1] = string.format("w%d = VLOAD(wr + %d)", v, v * V) end
        C:line("const cg_v %s;", table.concat(loads, ", "))
        util.fma_rows(C, tp, TV, function(p) return string.format("dr[%d]", p) end, "w")
        C:close()
        C:line("float *restrict xq = dxp + ((%s + %s) * %d + %s + %s) * %d + v0 * %d;",
          times("oy", g.h.S), times("ky", g.h.D), sc.Wp, times(x0, g.w.S), times("kx", g.w.D), CIP, V)
        for p = 0, tp - 1 do
          local st = {}
          for v = 0, TV - 1 do
            local at = string.format("xq + %d", p * g.w.S * CIP + v * V)
            st[#st + 1] = string.format("VSTORE(%s, VLOAD(%s) + a%d_%d);", at, at, p, v)
          end
          C:line(table.concat(st, " "))
        end
        C:close()
        C:close()
      end)
      C:close()
      C:close()
    end
  end
  C:line("/* the padding cropped, channels-last -> the sample's planes */")
  util.par(C, L)
  C:line("for (int ci = 0; ci < %d; ci++)", Cin)
  C:line("    for (int iy = 0; iy < %d; iy++)", g.h.I)
  C:line("        for (int ix = 0; ix < %d; ix++) dxn[(ci * %d + iy) * %d + ix] = dxp[((iy + %d) * %d + ix + %d) * %d + ci];",
    g.w.I, g.h.I, g.w.I, g.h.lo, sc.Wp, g.w.lo, CIP)
  C:close()
  return {"P", "T", "dy", "dx", "nb"}
end

-- dx gathered with the same tiles: positions of an input row x vectors of 16 input
-- channels; dy is zero-padded so every tap reads memory, and the weights are
-- re-laid as [co][k][ci].
function M.backward_dx(L, C, ctx)
  if L.sched.dx.form == "cvw" then return cvw_mod.backward_dx(L, C, M.cv_scratch, dims(L)) end
  if L.sched.dx.form == "wv" then
    -- after the cv form's scratch when the forward is channel-vector
    return wv.backward_dx(L, C, L.sched.fwd.form == "cv" and M.cv_scratch(L).total or nil)
  end
  if M.strided(L) then return backward_dx_cv_strided(L, C) end
  local g, d, sc = L.geom, dims(L), M.cv_scratch(L)
  local CIP, Cin, Cout, KK = sc.CIP, L.cin, L.cout, d.KHW
  local V = L.vec
  local NV = CIP // V
  local TV, TP = L.sched.dx.tile.TV, L.sched.dx.tile.TP
  C:line("const float *restrict w = %s;", L.t.weight)
  C:line("float *restrict wf = T + %d, *restrict dyp = T + %d, *restrict dxh = T + %d;", sc.WF, sc.DYP, sc.DXH)
  C:line("for (int i = 0; i < %d; i++) wf[i] = 0.0f;", Cout * KK * CIP)
  C:line("for (int co = 0; co < %d; co++)", Cout)
  C:line("    for (int ci = 0; ci < %d; ci++)", Cin)
  C:line("        for (int k = 0; k < %d; k++) wf[(co * %d + k) * %d + ci] = w[(co * %d + ci) * %d + k];", KK, KK, CIP, Cin, KK)
  C:open("for (int n = 0; n < nb; n++) {")
  cvw_mod.pad_dy_cl(C, L, d, sc)
  util.par(C, L)
  C:open("for (int iy = 0; iy < %d; iy++) {", g.h.I)
  C:open("for (int v0 = 0; v0 < %d; v0 += %d) {", NV, TV)
  cv_row_tiles(C, g.w.I, TP, function(x0, tp)
    for p = 0, tp - 1 do C:line("cg_v %s;", vec_list("a" .. p .. "_%d = vsplat(0.0f)", TV)) end
    C:open("for (int co = 0; co < %d; co++) {", Cout)
    C:line("const float *restrict dr = dyp + (iy * %d + %s) * %d + co;", sc.Wq, x0, Cout)
    C:line("const float *restrict wr = wf + co * %d + v0 * %d;", KK * CIP, V)
    -- input iy reads output oy = iy + lo - ky*D, stored at row oy + Q = iy + D*(K-1-ky)
    cv_taps(C, g, V, CIP, TV, tp, "dr", function(ky, kx, p)
      return (g.h.D * (g.h.K - 1 - ky) * sc.Wq + g.w.D * (g.w.K - 1 - kx) + p) * Cout
    end)
    C:close()
    for p = 0, tp - 1 do
      local st = {}
      for v = 0, TV - 1 do
        st[#st + 1] = string.format("VSTORE(dxh + (iy * %d + %s + %d) * %d + (v0 + %d) * %d, a%d_%d);", g.w.I, x0, p, CIP, v, V, p, v)
      end
      C:line(table.concat(st, " "))
    end
  end)
  C:close()
  C:close()
  cvw_mod.store_planes(C, "dxn", "dxh", "ci", Cin, d.IHW, CIP)
  C:close()
  return {"P", "T", "dy", "dx", "nb"}
end

return M
