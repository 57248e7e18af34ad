/ rte.q: the real-time risk engine hosted in q. The engine is the Python one
/ (py/pretrade/risk/engine.py: features, ONNX scoring, policy), imported through PyKX and
/ driven by q's timer; q does the kdb+tick plumbing: subscribe, replay the journal, publish.
/
/   q q/rte.q -tp localhost:5010 -models models -lateness 1 -p 5013 [-overrideClock wall|event]
/
/ Governance, as in `pretrade rte`:  .rte.kill[`SYM;`;`alice;"why"]  .rte.reset[`SYM;`;`alice]
/   .rte.reduce[`SYM;`mm;`alice]  .rte.deactivate[`alice;"why"]  .rte.activate[`alice]
/   .rte.override[`SYM;`;`maxQty;500f;600f;`alice;"why"]  (600 s of wall clock; event time with
/   -overrideClock event, for replayed data); the timer ends overrides whose time is up.
/ Needs a licensed q with PyKX installed into QHOME (python -c "import pykx;pykx.install_into_QHOME()")
/ and py/ on PYTHONPATH. Tested by tests/test_rte_q.py (marker kdb) where a licensed q exists.

\l pykx.q

.rte.o:.Q.opt .z.x
.rte.arg:{[k;d] $[k in key .rte.o; first .rte.o k; d]}
.rte.py:.pykx.import[`pretrade.risk.engine]
.rte.eng:.rte.py[`:q_engine][.rte.arg[`models;"models"];"F"$.rte.arg[`lateness;"1"];.rte.arg[`limits;""];.rte.arg[`overrideClock;"wall"]]
.rte.buf:()                                  / (table;data) received since the last timer tick
.rte.h:0Ni

/ publish (table;columns) pairs to the tickerplant, asynchronously
.rte.pub:{[outs] {neg[.rte.h](`.u.upd;`$x 0;x 1)} each outs;}
.rte.ingest:{[t;x] .rte.pub .rte.py[`:q_ingest][.rte.eng;t;.pykx.topd x]`}

/ q's timer drives the engine: everything received since the last tick, in order
.rte.inputs:`trade`quote`book`l3`news
.rte.step:{b:.rte.buf; .rte.buf::(); {if[x[0] in .rte.inputs; .rte.ingest . x]} each b;
  .rte.pub .rte.py[`:q_expire][.rte.eng]`;}
.z.ts:{@[.rte.step;::;{-2 "rte: step failed: ",x;}]}

/ kdb+tick subscriber: live updates are buffered for the timer
upd:{[t;x] .rte.buf,:enlist (t;x);}

/ governance, audited by the engine (who and when)
.rte.act:{[k;s;st;who;note] .rte.pub .rte.py[`:q_act][.rte.eng;k;s;st;who;note]`; k}
.rte.kill:{[s;st;who;note] .rte.act[`kill;s;st;who;note]}
.rte.reset:{[s;st;who] .rte.act[`reset;s;st;who;""]}
.rte.reduce:{[s;st;who] .rte.act[`reduce;s;st;who;""]}
.rte.deactivate:{[who;note] .rte.act[`deactivate;`;`;who;note]}
.rte.activate:{[who] .rte.act[`activate;`;`;who;""]}
.rte.override:{[s;st;lim;v;secs;who;note]
  .rte.pub .rte.py[`:q_override][.rte.eng;s;st;lim;v;secs;who;note]`; lim}

/ subscribe as r.q does, rebuild the engine's state from the journal, then go live
.rte.start:{
  .rte.h::hopen `$":",.rte.arg[`tp;"localhost:5010"];
  r:.rte.h "(.u.sub[`;`];`.u `i`L)";
  .rte.recs::();
  if[0<n:r[1;0];
    upd::{[t;x] .rte.recs,:enlist (t;x);};    / replay collects instead of buffering
    -11!(n;r[1;1]);
    .rte.py[`:q_restore][.rte.eng;.rte.recs];
    .rte.pub .rte.py[`:q_reconcile][.rte.eng]`;
    .rte.recs::();
    upd::{[t;x] .rte.buf,:enlist (t;x);}];
  system "t 100";
  -1 "rte: subscribed to ",.rte.arg[`tp;"localhost:5010"],"; replayed ",string[n]," journal messages";}

.rte.start[]
