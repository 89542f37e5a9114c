-- Not a script of its own: the body of older(a, b), true when stream entry
-- id a sorts before id b (ids compare as two numbers, not as strings), used
-- by the scripts that compare a group's position with a stream's entries
-- (see scripts.load_script_with).
local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
ams, aseq, bms, bseq = tonumber(ams), tonumber(aseq), tonumber(bms), tonumber(bseq)
return ams < bms or (ams == bms and aseq < bseq)
