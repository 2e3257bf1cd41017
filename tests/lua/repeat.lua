-- Runs exercise.lua over and over in one interpreter, printing for each round
-- whether its output equals the first round's: "round N same" or "round N DIFF".
local script = arg[1]
local first, n = nil, 0
while true do
  n = n + 1
  local out = {}
  local real = print
  print = function(...)
    local t = {}
    for i = 1, select('#', ...) do t[#t + 1] = tostring((select(i, ...))) end
    out[#out + 1] = table.concat(t, '\t')
  end
  dofile(script)
  print = real
  local s = table.concat(out, '\n')
  first = first or s
  io.write('round ', n, ' ', s == first and 'same' or ('DIFF\n' .. s), '\n')
  io.stdout:flush()
end
