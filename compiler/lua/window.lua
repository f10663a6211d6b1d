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
-- par: the row loop of a region with more than one row is split across threads (its
-- iterations write disjoint outputs).
function M.windows(C, g, unroll, body, keep, par)
  local h, w = g.h, g.w
  local IW, OW = w.I, w.O
  for _, ry in ipairs(M.regions(h)) do
    for _, rx in ipairs(M.regions(w)) do
      local ntap = 0
      for ky = ry.k0, ry.k1 do
        for kx = rx.k0, rx.k1 do
          if not keep or keep(ky, kx) then ntap = ntap + 1 end
        end
      end
      if keep and ntap == 0 then goto next_region end
      if not unroll and (ry.o1 > ry.o0 or rx.o1 > rx.o0) then
        local what
        if h.O == 1 then
          what = string.format("outputs %d..%d", rx.o0, rx.o1)
        else
          what = string.format("rows %d..%d, cols %d..%d", ry.o0, ry.o1, rx.o0, rx.o1)
        end
        C:line("/* %s: %s */", what, ntap == h.K * w.K and "every tap" or (ntap .. " of " .. h.K * w.K .. " taps"))
      end
      if par and not unroll and ry.o1 > ry.o0 then C:line("CG_PARALLEL_FOR") end
      util.loop(C, "oy", ry.o0, ry.o1, unroll, function(oy)
        util.loop(C, "ox", rx.o0, rx.o1, unroll, function(ox)
          local out = util.aff(0):term(oy, OW):term(ox, 1)
          local taps = {}
          for ky = ry.k0, ry.k1 do
            for kx = rx.k0, rx.k1 do
              if not keep or keep(ky, kx) then
                local at = util.aff((-h.lo + ky * h.D) * IW + (-w.lo + kx * w.D))
                  :term(oy, h.S * IW):term(ox, w.S)
                taps[#taps + 1] = {ky = ky, kx = kx, k = ky * w.K + kx, at = at}
              end
            end
          end
          -- scoped: the body is alone in a loop body, so it needs no braces of its own
          body(out, taps, {nvalid = #taps, scoped = not unroll and rx.o1 > rx.o0})
        end)
      end)
      ::next_region::
    end
  end
end

-- Transposed regions of an axis, for gathering input gradients: input i = r + S*t
-- (phase r) receives from tap k the output o = t + c_k when (r + lo - k*D) is a
-- multiple of S. Returns {r, t0, t1, taps = {{k, c}}} with consecutive t sharing taps.
function M.tregions(ax)
  local out = {}
  for r = 0, ax.S - 1 do
    local t, last = 0, nil
    while r + ax.S * t < ax.I do
      local taps, sig = {}, {}
      for k = 0, ax.K - 1 do
        local num = r + ax.lo - k * ax.D
        if num % ax.S == 0 then
          local c = num // ax.S
          local o = t + c
          if o >= 0 and o < ax.O then
            taps[#taps + 1] = {k = k, c = c}
            sig[#sig + 1] = k
          end
        end
      end
      local key = table.concat(sig, ",")
      if last and last.key == key then
        last.t1 = t
      else
        last = {r = r, t0 = t, t1 = t, taps = taps, key = key}
        out[#out + 1] = last
      end
      t = t + 1
    end
  end
  return out
end

-- Emit every input position of a 2-D geometry with the output windows that read it:
-- body(in, taps, info) with in = affine offset of the input in its plane and
-- taps = {{ky, kx, k, at = affine offset of the output in its plane}}; par as in windows.
function M.twindows(C, g, body, unroll, par)
  local h, w = g.h, g.w
  for _, ry in ipairs(M.tregions(h)) do
    for _, rx in ipairs(M.tregions(w)) do
      if not unroll and (ry.t1 > ry.t0 or rx.t1 > rx.t0) then
        C:line("/* inputs %s: %d taps */", h.I == 1 and string.format("%d+%d*t, t=%d..%d", rx.r, w.S, rx.t0, rx.t1)
          or string.format("rows %d+%d*t (t=%d..%d), cols %d+%d*t (t=%d..%d)", ry.r, h.S, ry.t0, ry.t1, rx.r, w.S, rx.t0, rx.t1),
          #ry.taps * #rx.taps)
      end
      if par and not unroll and ry.t1 > ry.t0 then C:line("CG_PARALLEL_FOR") end
      util.loop(C, "ty", ry.t0, ry.t1, unroll, function(ty)
        util.loop(C, "tx", rx.t0, rx.t1, unroll, function(tx)
          local inp = util.aff(ry.r * w.I + rx.r):term(ty, h.S * w.I):term(tx, w.S)
          local taps = {}
          for _, a in ipairs(ry.taps) do
            for _, b in ipairs(rx.taps) do
              local at = util.aff(a.c * w.O + b.c):term(ty, w.O):term(tx, 1)
              taps[#taps + 1] = {ky = a.k, kx = b.k, k = a.k * w.K + b.k, at = at}
            end
          end
          body(inp, taps, {scoped = not unroll and rx.t1 > rx.t0})
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
