-- A long-running workload: keeps state in a table and prints a line every 50 ms.
local state = { ticks = 0, total = 0 }
while true do
  state.ticks = state.ticks + 1
  state.total = state.total + math.abs(-5)
  print(string.format("tick %d abs %d total %d", state.ticks, math.abs(-5), state.total))
  io.stdout:flush()
  local t = os.clock()
  while os.clock() - t < 0.05 do end
end
