"""Where a diff is kept in Redis: the log lane, and the set lane it replaced.

**The log lane** (written by default). A diff's body is stored once, in its model's
log, a Redis stream (``<prefix>log:<label>``): the entry's id is the diff's score, its
fields are ``p`` (the object's pk text) and ``m`` (the member, the diff's JSON). Each
object has an index (``<prefix>ix:<label>:<pk>``), a string of 16-byte records, one per
diff, oldest first: the score as the log entry's id in binary (6 bytes of whole
milliseconds, 2 of sequence, big-endian, so that byte order is score order), then the
diff's 8 id bytes. A feed page is one ``XRANGE`` of the log; an object page a binary
search of its index, then one ``XRANGE id id`` per diff.

Why: a sorted set member longer than 64 bytes makes the set a skiplist, and a feed of
more than 128 entries is one too; together they cost about 460 bytes per diff. A
stream stores entries as listpacks with shared field names and delta-coded ids, and
the index costs 16 bytes per diff at any count (measured in
``benchmarks/memory_layouts``: about 200 bytes per diff in all).

**The set lane** (written before, and by ``storage: "sets"``). Each object's sorted
set holds its members; the model's feed sorted set holds ``<id><pk>`` pointers. It is
still written for a diff whose score falls at or below the log's last entry (a fixed
timestamp in the past), and read until it ages out.

**One order.** Every diff is in exactly one lane, scores are strictly increasing per
model across both (the write script scores above the newest of the object's set, the
feed and the log), and every read merges both lanes by score. A cursor is a score, so
"everything after this cursor" means the same thing whichever lane holds a diff: a
cursor given out before an upgrade resumes exactly, and so does one given out after a
downgrade to ``storage: "sets"`` (which still reads the log).

Stream ids: ``sid(score)`` = ``<whole ms>-<fraction in units of the double's spacing at
that magnitude>``, exact and order-keeping for every score a double holds; scores from
2^36 ms (1972) to 2^47 ms (year 6429) fit an index record (its top bit is the
"follows" flag); a diff scored outside them goes to the set lane. The log needs Redis 6.2 or
later (exclusive ``XRANGE`` bounds, ``XTRIM MINID``).

This module holds the Lua both the write and the read scripts use.
"""

from __future__ import annotations

#: Lua: stream ids, bounds and index records (see the module's docstring).
LANES_LUA = r"""
local function fmt(value) return string.format('%.17g', value) end
-- The stream id of a score (whole ms, then the fraction in units of the spacing of
-- doubles at that magnitude): exact, and in the same order as the scores.
local function sid(score)
  local ms = math.floor(score)
  local _, e = math.frexp(ms)
  return string.format('%.0f-%.0f', ms, (score - ms) / 2 ^ (e - 53))
end
local function sid_score(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  ms, seq = tonumber(ms), tonumber(seq)
  local _, e = math.frexp(ms)
  return ms + seq * 2 ^ (e - 53)
end
-- A range bound ("(x", "x", "-inf", "+inf") as (number, exclusive).
local function bound_of(text)
  local exclusive = string.sub(text, 1, 1) == '('
  local body = exclusive and string.sub(text, 2) or text
  if body == '-inf' then return -math.huge, exclusive end
  if body == '+inf' or body == 'inf' then return math.huge, exclusive end
  return tonumber(body), exclusive
end
-- The stream range bounds for scores above (or from) a value, and below (or up to) one;
-- nil when no stream id is in range. A stream id's parts are below 2^64: a bound past
-- that (a cursor far in the future, refused once the page is read) reads nothing.
local ID_LIMIT = 2 ^ 64
local function stream_low(value, exclusive)
  if value < 0 then return '-' end
  if value >= ID_LIMIT then return nil end
  return (exclusive and '(' or '') .. sid(value)
end
local function stream_high(value, exclusive)
  if value >= ID_LIMIT then return '+' end
  if value < 0 then return nil end
  local id = sid(value)
  if exclusive and id == '0-0' then return nil end
  return (exclusive and '(' or '') .. id
end
-- Index records: 16 bytes, the score's stream id in binary (6 bytes of ms, 2 of
-- sequence, big-endian), then the 8 id bytes. The top bit of the ms is the "follows"
-- flag: the record's log entry comes right after the previous record's (no other
-- object's diff between them), so a run of such records is read with one XRANGE.
-- Plain Lua: fakeredis has no struct.
local FOLLOWS = 2 ^ 47
local function packable(score) return score >= 2 ^ 36 and score < FOLLOWS end
local function pack_score(score, follows)
  local ms = math.floor(score)
  local _, e = math.frexp(ms)
  local seq = (score - ms) / 2 ^ (e - 53)
  if follows then ms = ms + FOLLOWS end
  local high, low = math.floor(ms / 16777216), ms % 16777216 -- 3 bytes each
  return string.char(
    math.floor(high / 65536), math.floor(high / 256) % 256, high % 256,
    math.floor(low / 65536), math.floor(low / 256) % 256, low % 256,
    math.floor(seq / 256), seq % 256)
end
-- The score of the record at byte `at` of `text`, and whether it follows the previous.
local function unpack_score(text, at)
  local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(text, at, at + 7)
  local follows = b1 >= 128
  if follows then b1 = b1 - 128 end
  local ms = ((((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6
  local _, e = math.frexp(ms)
  return ms + (b7 * 256 + b8) * 2 ^ (e - 53), follows
end
local function id_bytes(hex) -- 16 hex digits: 8 bytes
  local high, low = tonumber(string.sub(hex, 1, 8), 16), tonumber(string.sub(hex, 9, 16), 16)
  return string.char(
    math.floor(high / 16777216), math.floor(high / 65536) % 256,
    math.floor(high / 256) % 256, high % 256,
    math.floor(low / 16777216), math.floor(low / 65536) % 256,
    math.floor(low / 256) % 256, low % 256)
end
-- Where in the bytes of an index the record of a diff id (16 hex digits) starts
-- (1-based), or nil: the id bytes found at a record's offset 8, not just anywhere.
local function find_record(index, hex)
  local needle, from = id_bytes(hex), 1
  while true do
    local at = string.find(index, needle, from, true)
    if not at then return nil end
    if (at - 1) % 16 == 8 then return at - 8 end
    from = at + 1
  end
end
local function record_count(ix) return math.floor(redis.call('STRLEN', ix) / 16) end
local function record_score(ix, k) -- k: 0-based
  return (unpack_score(redis.call('GETRANGE', ix, 16 * k, 16 * k + 7), 1))
end
-- The score of an index's newest record, or false when it has none; then whether the
-- index is whole records (one that is not was written by something else: its last
-- bytes are no record, and nothing may be appended to it).
local function last_record(ix)
  local length = redis.call('STRLEN', ix)
  if length % 16 ~= 0 then return false, false end
  return length > 0 and record_score(ix, length / 16 - 1), true
end
-- The number of the first record scored above the value (at or above it when not
-- exclusive): a binary search, log2(n) reads of 8 bytes.
local function first_after(ix, value, exclusive)
  local lo, hi = 0, record_count(ix)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local s = record_score(ix, mid)
    if s > value or (not exclusive and s == value) then hi = mid else lo = mid + 1 end
  end
  return lo
end
-- A log entry's pk text and member.
local function entry_fields(entry)
  local f, pk, member = entry[2], '', ''
  for j = 1, #f, 2 do
    local name = f[j]
    if name == 'p' then pk = f[j + 1] elseif name == 'm' then member = f[j + 1] end
  end
  return pk, member
end
-- A log entry's member when its pk is `pk` (the object's pk text; '' takes any), else
-- false: a log deleted and written again could hold another object's diff at a place
-- an old index record names.
local function body_of(entry, pk)
  local entry_pk, member = entry_fields(entry)
  return (pk == '' or entry_pk == pk) and member
end
-- The member of the log entry at a score (see body_of), or false once pruned.
local function log_member(log, score, pk)
  local id = sid(score)
  local found = redis.call('XRANGE', log, id, id)[1]
  return found ~= nil and body_of(found, pk)
end
-- Reads index records from their bytes `block` (16 per record, as GETRANGE returns
-- them), oldest first: returns score_at(k), body(k) (the k-th record's, 1-based; nil
-- once pruned) and the number of records. A run of records that follow one another in
-- the log is read with one XRANGE; any other record with XRANGE id id. Runs are read
-- 4, 8, ... 256 records at a time, so that a page its byte budget stops early has not
-- read more than about twice what it returns. Only entries of `pk` are taken
-- (body_of).
local function block_reader(log, block, pk)
  local bodies, ahead = {}, 4
  local count = math.floor(#block / 16)
  local function score_at(k) return (unpack_score(block, 16 * (k - 1) + 1)) end
  local function follows(k) return string.byte(block, 16 * (k - 1) + 1) >= 128 end
  -- Record k's run, up to `ahead` records around it not read yet: back while a record
  -- follows the one before it, then forward.
  local function fill(k)
    local first, last = k, k
    while first > 1 and follows(first) and bodies[first - 1] == nil
        and last - first < ahead do
      first = first - 1
    end
    while last < count and follows(last + 1) and bodies[last + 1] == nil
        and last - first < ahead do
      last = last + 1
    end
    if first == last then
      bodies[k] = log_member(log, score_at(k), pk)
      return
    end
    if ahead < 256 then ahead = ahead * 2 end
    local low, high = sid(score_at(first)), sid(score_at(last))
    local found = redis.call('XRANGE', log, low, high, 'COUNT', last - first + 1)
    local whole = #found == last - first + 1 and found[1][1] == low and found[#found][1] == high
    if whole then -- all of the run's entries, in its order
      for n, entry in ipairs(found) do bodies[first + n - 1] = body_of(entry, pk) end
      return
    end
    local by_id = {} -- some went (pruned): matched by id
    for _, entry in ipairs(found) do by_id[entry[1]] = body_of(entry, pk) end
    for r = first, last do bodies[r] = by_id[sid(score_at(r))] or false end
  end
  local function body(k)
    if bodies[k] == nil then fill(k) end
    return bodies[k] or nil
  end
  return score_at, body, count
end
-- Whether the model has diffs in either lane (the horizon's "was data lost?" test).
local function has_diffs(feed, log)
  return redis.call('ZCARD', feed) > 0 or redis.call('XLEN', log) > 0
end
"""
