/ hdb.q: the historical database (the q twin of pretrade.tick.hdb).
/ usage: q tickerplant/hdb.q DIR -p 5012
/ Loads the date-partitioned database in DIR; r.q's end of day asks it to reload with `.u.reload[]`
/ (and .Q.hdpf reloads it through its own handle).

if[not count .z.x; -2 "usage: q tickerplant/hdb.q DIR -p 5012"; exit 1]
.hdb.dir:hsym `$first .z.x
if[not system"p"; system"p 5012"]
.u.reload:{system"l ",1_string .hdb.dir}
@[.u.reload; ::; {-1 "no partitions yet in ",(string .hdb.dir),": ",x}]
