-- qr_spec.lua: contiguity.qr, read back by an independent decoder (rsvg-convert, then zbarimg).
local contiguity = require "contiguity"

local SHORT = "sms:+15550000000?body=1234"
-- ~1000 characters of everything a URL or a message may hold
local LONG = (function()
  local parts = {}
  for i = 1, 40 do parts[#parts + 1] = string.format("item%03d=Value_%d-x.y~z&", i, i * 7919) end
  local s = "https://example.com/verify?" .. table.concat(parts)
  return (s .. string.rep("AbC123", 200)):sub(1, 1000)
end)()

local function tmp(suffix)
  local name = os.tmpname()
  os.remove(name)
  return name .. suffix
end

local write = require("spec.helpers.shell").write_file

local function run(cmd)
  local p = assert(io.popen(cmd))
  local out = p:read("*a")
  p:close()
  return out
end

-- zbarimg's payload for an image file ("--raw" ends each symbol with "\n").
local function zbar(image)
  local out = run("zbarimg --raw -q '" .. image .. "' 2>/dev/null")
  return (out:gsub("\n$", ""))
end

local function decode_svg(svg)
  local svgfile, png = tmp(".svg"), tmp(".png")
  write(svgfile, svg)
  run("rsvg-convert -o '" .. png .. "' '" .. svgfile .. "' 2>&1")
  local text = zbar(png)
  os.remove(svgfile)
  os.remove(png)
  return text
end

-- The terminal art as the screen shows it: each character cell is two
-- pixels high. `ink` is what the terminal's foreground shows (light on a
-- dark terminal, dark on a light one); the background is the other.
local HALF = { [" "] = { false, false }, ["\226\150\128"] = { true, false },
               ["\226\150\132"] = { false, true }, ["\226\150\136"] = { true, true } }

local function art_pixels(art)
  local rows = {}
  for line in art:gmatch("([^\n]*)\n") do
    local top, bottom = {}, {}
    for ch in line:gmatch("[%z\1-\127\194-\244][\128-\191]*") do
      local cell = assert(HALF[ch], "unexpected character in terminal art: " .. ch)
      top[#top + 1], bottom[#bottom + 1] = cell[1], cell[2]
    end
    rows[#rows + 1] = top
    rows[#rows + 1] = bottom
  end
  return rows
end

-- A binary PGM (zbarimg reads it through ImageMagick), scaled up, with an
-- extra border of the terminal's background around the art.
local function decode_art(art, ink_is_light)
  local rows = art_pixels(art)
  local scale, border = 4, 8
  local w, h = #rows[1], #rows
  local W, H = (w + 2 * border) * scale, (h + 2 * border) * scale
  local bg = ink_is_light and "\0" or "\255"
  local fg = ink_is_light and "\255" or "\0"
  local out = { string.format("P5\n%d %d\n255\n", W, H) }
  for y = 1, h + 2 * border do
    local line = {}
    for x = 1, w + 2 * border do
      local r = rows[y - border]
      local on = r ~= nil and r[x - border] == true
      line[#line + 1] = string.rep(on and fg or bg, scale)
    end
    local s = table.concat(line)
    for _ = 1, scale do out[#out + 1] = s end
  end
  local name = tmp(".pgm")
  write(name, table.concat(out))
  local text = zbar(name)
  os.remove(name)
  return text
end

describe("contiguity.qr", function()
  describe("svg (the default)", function()
    it("round-trips a short payload through rsvg-convert and zbarimg", function()
      local svg = assert(contiguity.qr(SHORT))
      assert.are.equal(SHORT, decode_svg(svg))
    end)

    for _, level in ipairs { "L", "M", "Q", "H" } do
      it("round-trips a short and a ~1000 character payload at level " .. level, function()
        assert.are.equal(SHORT, decode_svg(assert(contiguity.qr(SHORT, { level = level }))))
        local n = #assert(contiguity.qr(LONG, { format = "matrix", level = level }))
        -- 4 pixels per module, quiet zone included
        local svg = assert(contiguity.qr(LONG, { level = level, size = (n + 8) * 4 }))
        assert.are.equal(LONG, decode_svg(svg))
      end)
    end

    it("round-trips UTF-8 text", function()
      local text = "Code für Zoë: 1234 ✓"
      assert.are.equal(text, decode_svg(assert(contiguity.qr(text))))
    end)

    it("is a compact standalone SVG: size, quiet zone, crisp edges, one path of runs", function()
      local svg = assert(contiguity.qr(SHORT, { size = 300 }))
      local n = #contiguity.qr(SHORT, { format = "matrix" })
      assert.truthy(svg:find('^<svg xmlns="http://www.w3.org/2000/svg"'))
      assert.truthy(svg:find('width="300" height="300"', 1, true))
      assert.truthy(svg:find(string.format('viewBox="0 0 %d %d"', n + 8, n + 8), 1, true))
      assert.truthy(svg:find('shape-rendering="crispEdges"', 1, true))
      local _, paths = svg:gsub("<path", "")
      assert.are.equal(1, paths)
      -- the first run starts at the quiet zone's edge: the finder pattern's 7 modules
      assert.truthy(svg:find('d="M4 4.5h7m', 1, true))
      -- runs, not one rect per module
      assert.is_true(#svg < n * n * 3)
      assert.truthy(svg:find("</svg>\n$"))
    end)

    it("takes the quiet zone from opts.margin", function()
      local n = #contiguity.qr(SHORT, { format = "matrix" })
      local svg = assert(contiguity.qr(SHORT, { margin = 0 }))
      assert.truthy(svg:find(string.format('viewBox="0 0 %d %d"', n, n), 1, true))
      assert.truthy(svg:find('d="M0 0.5h7m', 1, true))
      assert.are.equal(SHORT, decode_svg(assert(contiguity.qr(SHORT, { margin = 10 }))))
    end)

    it("encodes text with NUL bytes", function()
      local m = assert(contiguity.qr("a\0b", { format = "matrix" }))
      assert.are.equal(21, #m)
      -- all three bytes: neither the text cut at the NUL nor with it dropped
      assert.are_not.same(assert(contiguity.qr("a", { format = "matrix" })), m)
      assert.are_not.same(assert(contiguity.qr("ab", { format = "matrix" })), m)
    end)
  end)

  describe("terminal", function()
    it("decodes as seen on a dark terminal (the default: the ink draws the light modules)", function()
      local art = assert(contiguity.qr(SHORT, { format = "terminal" }))
      assert.are.equal(SHORT, decode_art(art, true))
      assert.are.equal(LONG, decode_art(assert(contiguity.qr(LONG, { format = "terminal" })), true))
    end)

    it("decodes as seen on a light terminal with invert", function()
      local art = assert(contiguity.qr(SHORT, { format = "terminal", invert = true }))
      assert.are.equal(SHORT, decode_art(art, false))
    end)

    it("draws a 4-module quiet zone and two modules per line", function()
      local n = #contiguity.qr(SHORT, { format = "matrix" })
      local art = contiguity.qr(SHORT, { format = "terminal" })
      local lines = {}
      for line in art:gmatch("([^\n]*)\n") do lines[#lines + 1] = line end
      assert.are.equal(math.ceil((n + 8) / 2), #lines)
      local full = string.rep("\226\150\136", n + 8)
      assert.are.equal(full, lines[1])
      assert.are.equal(full, lines[2])
      local inverted = contiguity.qr(SHORT, { format = "terminal", invert = true })
      assert.are.equal(string.rep(" ", n + 8), inverted:match("^([^\n]*)"))
      local bare = contiguity.qr(SHORT, { format = "terminal", margin = 0 })
      assert.are.equal(math.ceil(n / 2), select(2, bare:gsub("\n", "")))
    end)
  end)

  describe("matrix", function()
    it("is rows of booleans without the quiet zone, growing with the payload and the level", function()
      local m = assert(contiguity.qr(SHORT, { format = "matrix" }))
      assert.are.equal(#m, #m[1])
      assert.are.equal(0, (#m - 21) % 4) -- 17 + 4 * version
      for y = 1, #m do
        assert.are.equal(#m, #m[y])
        for x = 1, #m do assert.are.equal("boolean", type(m[y][x])) end
      end
      -- the finder pattern's top row, the separator after it
      for x = 1, 7 do assert.is_true(m[1][x]) end
      assert.is_false(m[1][8])
      assert.are.equal(21, #contiguity.qr("1", { format = "matrix" }))
      local low = #contiguity.qr(LONG, { format = "matrix", level = "L" })
      local high = #contiguity.qr(LONG, { format = "matrix", level = "H" })
      assert.is_true(high > low)
      assert.is_true(low > #m)
    end)
  end)

  describe("bad input", function()
    local function invalid(field, ...)
      local res, err = contiguity.qr(...)
      assert.is_nil(res)
      assert.are.equal("invalid", err.kind)
      assert.are.equal("qr", err.op)
      assert.are.equal(field, err.field)
      assert.are.equal("string", type(err.message))
      assert.truthy(tostring(err):find("^contiguity: qr: "))
      return err
    end

    it("returns nil, err for values", function()
      invalid("text", "")
      local err = invalid("text", string.rep("x", 3000), { level = "H" })
      assert.truthy(err.message:find("too long", 1, true))
      invalid("text", string.rep("x", 8000))
      invalid("format", SHORT, { format = "png" })
      invalid("level", SHORT, { level = "X" })
      invalid("level", SHORT, { level = "m" })
      invalid("size", SHORT, { size = 0 })
      invalid("size", SHORT, { size = 10.5 })
      invalid("margin", SHORT, { margin = -1 })
    end)

    it("raises for misuse", function()
      assert.error_matches(function() contiguity.qr(42) end, "string expected, got number", 1, true)
      assert.error_matches(function() contiguity.qr() end, "string expected, got no value", 1, true)
      assert.error_matches(function() contiguity.qr(SHORT, "svg") end, "options must be a table", 1, true)
      assert.error_matches(function() contiguity.qr(SHORT, { format = 1 }) end, "option 'format' must be a string", 1, true)
      assert.error_matches(function() contiguity.qr(SHORT, { size = "big" }) end, "option 'size' must be a number", 1, true)
      assert.error_matches(function() contiguity.qr(SHORT, { invert = 1 }) end, "option 'invert' must be a boolean", 1, true)
      assert.error_matches(function() contiguity.qr(SHORT, { formt = "svg" }) end, "unknown option 'formt'", 1, true)
    end)

    it("keeps working after many calls and errors (nothing leaks into the Lua state)", function()
      local function round(i)
        assert.is_string(contiguity.qr(SHORT .. i, { format = i % 2 == 0 and "svg" or "terminal" }))
        assert.is_false((pcall(contiguity.qr, SHORT, { nope = true })))
        local res, err = contiguity.qr(string.rep("y", 3000), { level = "H" })
        assert.is_nil(res) -- too long at level H: nil, err
        assert.equals("invalid", err.kind)
      end
      for i = 1, 50 do round(i) end
      collectgarbage(); collectgarbage()
      local before = collectgarbage("count")
      for i = 51, 250 do round(i) end
      collectgarbage(); collectgarbage()
      assert.is_true(collectgarbage("count") - before < 64, "Lua heap grew by "
        .. (collectgarbage("count") - before) .. " KiB over 200 rounds")
    end)
  end)
end)
