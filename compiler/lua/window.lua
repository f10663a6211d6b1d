-- window: sliding-window geometry shared by convolution and pooling.
--
-- An axis is {I=input extent, O=output extent, K=taps, S=stride, D=dilation,
-- lo=padding before, hi=padding after}. Output o reads input o*S - lo + k*D for tap k.
-- The generator splits every axis into regions of consecutive outputs that read the
-- same set of valid taps, so zero padding is resolved here: the interior region reads
-- every tap with no test, border regions read exactly their valid taps.
local util = require("util")
local M = {}

function M.out_size(I, K, S, D, lo, hi)
  return (I + lo + hi - D * (K - 1) - 1) // S + 1
end

-- 1-D geometry for a spatial axis that does not exist (the H axis of a 1-D layer).
function M.unit_axis()
  return {I = 1, O = 1, K = 1, S = 1, D = 1, lo = 0, hi = 0}
end

-- Regions of an axis: list of {o0, o1, k0, k1}, inclusive; k0 > k1 means no valid tap.
function M.regions(ax)
  local out = {}
  for o = 0, ax.O - 1 do
    local base = o * ax.S - ax.lo
    local k0 = base >= 0 and 0 or (-base + ax.D - 1) // ax.D -- first tap inside
    local k1 = math.min(ax.K - 1, (ax.I - 1 - base) // ax.D)
    local r = out[#out]
    if r and r.k0 == k0 and r.k1 == k1 then
      r.o1 = o
    else
      out[#out + 1] = {o0 = o, o1 = o, k0 = k0, k1 = k1}
    end
  end
  return out
end

-- Emit every output window of a 2-D geometry g = {h=axis, w=axis}.
-- For each region pair, emits loops over oy/ox (or constants when unroll or the
-- region has one row/column) and calls body(out, taps, info) where
--   out  = affine offset of the output in its plane (oy*OW + ox)
--   taps = list of {ky, kx, k = ky*KW + kx, at = affine offset of the input in its plane}
--   info = {ny = rows, nx = cols, nvalid = #taps}
function M.windows(C, g, unroll, body)
  local h, w = g.h, g.w
  local IW, OW = w.I, w.O
  for _, ry in ipairs(M.regions(h)) do
    for _, rx in ipairs(M.regions(w)) do
      local ntap = math.max(0, ry.k1 - ry.k0 + 1) * math.max(0, rx.k1 - rx.k0 + 1)
      if not unroll and (ry.o1 > ry.o0 or rx.o1 > rx.o0) then
        local what
        if h.O == 1 then
          what = string.format("outputs %d..%d", rx.o0, rx.o1)
        else
          what = string.format("rows %d..%d, cols %d..%d", ry.o0, ry.o1, rx.o0, rx.o1)
        end
        C:line("/* %s: %s */", what, ntap == h.K * w.K and "every tap" or (ntap .. " of " .. h.K * w.K .. " taps"))
      end
      util.loop(C, "oy", ry.o0, ry.o1, unroll, function(oy)
        util.loop(C, "ox", rx.o0, rx.o1, unroll, function(ox)
          local out = util.aff(0):term(oy, OW):term(ox, 1)
          local taps = {}
          for ky = ry.k0, ry.k1 do
            for kx = rx.k0, rx.k1 do
              local at = util.aff((-h.lo + ky * h.D) * IW + (-w.lo + kx * w.D))
                :term(oy, h.S * IW):term(ox, w.S)
              taps[#taps + 1] = {ky = ky, kx = kx, k = ky * w.K + kx, at = at}
            end
          end
          -- scoped: the body is alone in a loop body, so it needs no braces of its own
          body(out, taps, {nvalid = #taps, scoped = not unroll and rx.o1 > rx.o0})
        end)
      end)
    end
  end
end

-- Receptive-field step of a window: effective kernel and stride per axis.
function M.rf(g)
  return {g.h.D * (g.h.K - 1) + 1, g.w.D * (g.w.K - 1) + 1}, {g.h.S, g.w.S}
end

return M
