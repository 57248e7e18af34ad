/ r.q: the real-time database, in kdb+tick's conventions (the q twin of pretrade.tick.rdb).
/ usage: q tickerplant/r.q [TP [HDB]] -p 5011   (TP default :5010, HDB default :5012)
/ Subscribes to every table, replays the tickerplant's journal up to .u.i, then applies live
/ updates. At end of day writes a date partition to the HDB's folder and tells the HDB to reload.

if[not "w"=first string .z.o; system"sleep 1"];

upd:insert

.u.x:.z.x,(count .z.x)_(":5010";":5012")

/ end of day: write every table as partition dt of the HDB (sym enumerated), then clear them
.u.end:{[dt]
  t:tables`.;
  t@:where `g=attr each t@\:`sym;
  .Q.hdpf[`$":",.u.x 1; `:.; dt; `sym];
  @[;`sym;`g#] each t}

/ set each table's empty schema, then replay the journal's first n messages (y is (n; path))
.u.rep:{[schemas;y]
  (.[;();:;].) each schemas;
  if[null first y; :()];
  -11!y;
  system"cd ",1_-10_string first reverse y}

.u.rep . (hopen `$":",.u.x 0)"(.u.sub[`;`];`.u `i`L)"
