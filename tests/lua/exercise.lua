-- Exercises the interpreter broadly; prints a checksum line per area.
local t = {}
for i = 1, 20000 do t[i] = (i * 7919) % 1000 end
table.sort(t)
local s = 0
for i = 1, #t, 97 do s = s + t[i] end
print("tables", #t, s)
local parts = {}
for w in ("the quick brown fox jumps over the lazy dog"):gmatch("%a+") do parts[#parts + 1] = w:upper():reverse() end
print("strings", table.concat(parts, ","), ("%5.2f|%x|%q"):format(math.pi, 255, "a\nb"))
local function fib(n) if n < 2 then return n end return fib(n - 1) + fib(n - 2) end
print("calls", fib(22))
local co = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i * i) end end)
print("coroutines", co(), co(), co())
local ok, err = pcall(function() error({ code = 42 }) end)
print("errors", ok, err.code, select(2, pcall(error, "boom", 0)))
print("math", math.floor(-3.5), math.abs(-7), math.max(3, 9, 1), 7 // 2, 7 % -3, 2 ^ 0.5)
local mt = setmetatable({}, { __index = function(_, k) return k .. "!" end, __add = function() return 99 end })
print("metatables", mt.x, mt + mt)
print("utf8", utf8.len("héllo"), utf8.char(72, 228))
collectgarbage()
print("gc", collectgarbage("count") > 0)
